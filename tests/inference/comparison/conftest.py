"""Fixtures shared by the comparison tests."""

import pytest

from models.counts import make_evidence
from models.mixture import simulate_corpus
from models.personas import random_personas


@pytest.fixture(scope="session")
def compare_world():
    """Four bigram personas over six tokens, 64 held-out contexts of 12 tokens, evidence from persona 1."""
    personas = random_personas(4, 6, order=1, seed=0)
    contexts, _ = simulate_corpus(personas, 64, 12, seed=1)
    ev_tokens, _ = simulate_corpus(personas.subset([1]), 3, 12, seed=2)
    return personas, contexts, make_evidence(ev_tokens.numpy())
