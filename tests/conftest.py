"""Shared fixtures: tiny persona worlds in float64."""

import pytest
import torch

# Small tensors: one thread is faster than two on these 2-core machines (and steadier when shared).
torch.set_num_threads(1)

from models.counts import make_evidence  # noqa: E402
from models.mixture import simulate_corpus  # noqa: E402
from models.personas import random_personas  # noqa: E402


@pytest.fixture
def tiny_world():
    """Three bigram personas over four tokens, and ten simulated documents of twelve tokens."""
    personas = random_personas(3, 4, order=1, concentration=0.7, seed=3)
    tokens, persona = simulate_corpus(personas, 10, 12, seed=4)
    return personas, make_evidence(tokens.numpy()), persona


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_hf_folder(tmp_path_factory):
    """A tiny GPT-2 and its tokenizer, built and briefly pre-trained locally (tests/tiny_hf.py); needs the hf extra."""
    pytest.importorskip("transformers")
    from tests.tiny_hf import write_tiny_gpt2

    return write_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))
