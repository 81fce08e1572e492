import math

import pytest
import torch

from models.contexts import (
    document_positions,
    expected_doc_loglik,
    pack,
    simulate_contexts,
    simulate_documents,
)
from models.counts import count_transitions, make_evidence
from models.errors import InputError
from models.personas import random_personas


@pytest.fixture(scope="module")
def personas():
    return random_personas(3, 4, order=1, concentration=1.0, seed=2, prior=torch.tensor([0.5, 0.3, 0.2]))


def test_pack_and_positions_find_every_document():
    docs = torch.arange(2 * 3 * 4).reshape(2, 3, 4) % 5
    packed = pack(docs, sep=9)
    assert packed.shape == (2, 3 * 5 - 1)
    where = document_positions(3, 4)
    assert torch.equal(packed[:, where], docs)
    assert (packed[:, 4::5] == 9).all()


def test_contexts_hold_documents_of_their_persona(personas):
    contexts, persona = simulate_contexts(personas, 3000, 3, 5, seed=1)
    assert contexts.shape == (3000, 3 * 6 - 1) and int(contexts.max()) == 4  # 4 is the separator
    freq = torch.bincount(persona, minlength=3).double() / 3000
    se = (personas.prior * (1 - personas.prior) / 3000).sqrt()
    assert ((freq - personas.prior).abs() <= 4 * se).all()
    docs = contexts[:, document_positions(3, 5)]  # [N, 3, 5]
    # every document of a context is best explained by the context's persona more often than not
    ll = count_transitions(make_evidence(docs.reshape(-1, 5).numpy()), 4, 1).loglik(
        personas.log_table()[:, None, :]).T.reshape(3000, 3, 3)  # [N, m, K]
    best = ll.sum(1).argmax(-1)
    assert float((best == persona).double().mean()) > 0.6


def test_expected_doc_loglik_against_monte_carlo(personas):
    L, N = 6, 20000
    exact = expected_doc_loglik(personas, 1, L)  # [K]
    docs = simulate_documents(personas, 1, N, L, seed=3)
    ll = count_transitions(make_evidence(docs.numpy()), 4, 1).loglik(personas.log_table()[:, None, :])  # [K, N]
    se = ll.std(-1) / math.sqrt(N)
    assert ((ll.mean(-1) - exact).abs() <= 4 * se).all()
    assert int(exact.argmax()) == 1  # the writer explains its own documents best on average


def test_bad_arguments(personas):
    with pytest.raises(InputError, match="docs"):
        pack(torch.zeros(2, 3, dtype=torch.long), 4)
    with pytest.raises(InputError, match="persona"):
        simulate_documents(personas, 3, 2, 2)
    with pytest.raises(InputError, match="order-1"):
        expected_doc_loglik(random_personas(2, 3, order=2, seed=0), 0, 3)
    with pytest.raises(InputError, match="docs_per_context"):
        simulate_contexts(personas, 2, 0, 3)
