"""Fixtures of the transformer tests: a one-layer PersonaLM over V = 6 tokens and K = 2 personas."""

import pytest
import torch

from models.transformer import PersonaLM, TransformerConfig

V, K, T = 6, 2, 8


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared cores: one intra-op thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def config():
    return TransformerConfig(vocab_size=V, num_personas=K, block_size=T + 1, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture
def model(config):
    torch.manual_seed(1)
    return PersonaLM(config).eval()


@pytest.fixture
def docs():
    return torch.randint(V, (5, T), generator=torch.Generator().manual_seed(2))
