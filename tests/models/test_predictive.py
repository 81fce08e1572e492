"""The in-context persona mixture (models.predictive): tables, components, and their agreement."""

import itertools

import pytest
import torch

from models.mixture import simulate_corpus
from models.personas import random_personas
from models.predictive import mixture_logprobs, mixture_predictive, persona_logprobs
from tests.models.test_counts import brute_loglik


@pytest.fixture(scope="module")
def compare_world():
    """Four bigram personas over six tokens and 64 contexts of 12 tokens."""
    personas = random_personas(4, 6, order=1, seed=0)
    contexts, _ = simulate_corpus(personas, 64, 12, seed=1)
    return personas, contexts, None


def test_predictive_updates_in_context(tiny_world):
    personas, ev, _ = tiny_world
    contexts = ev.tokens[:3]
    log_w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64).log()
    got = mixture_predictive(personas.log_table(), log_w, contexts, 4, 1)
    assert got.shape == (3, 12, 4)
    for n in range(3):
        for t in range(12):
            prefix = brute_loglik(personas, contexts[n : n + 1, :t], torch.ones(1, t, dtype=torch.bool))[:, 0] if t else torch.zeros(3, dtype=torch.float64)
            post = torch.softmax(log_w + prefix, 0)
            nxt = personas.init if t == 0 else personas.trans[:, contexts[n, t - 1]]  # [K, V]
            torch.testing.assert_close(got[n, t].exp(), (post[:, None] * nxt).sum(0), rtol=0, atol=1e-10)


def test_predictive_chunks_agree(tiny_world):
    personas, ev, _ = tiny_world
    log_w = personas.prior.log()
    whole = mixture_predictive(personas.log_table(), log_w, ev.tokens, 4, 1)
    chunked = mixture_predictive(personas.log_table(), log_w, ev.tokens, 4, 1, max_elements=1)
    torch.testing.assert_close(whole, chunked)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_persona_logprobs_read_the_tables(order):
    p = random_personas(2, 3, order=order, seed=order)
    ctx = torch.randint(0, 3, (4, 5), generator=torch.Generator().manual_seed(order))
    got = persona_logprobs(p, ctx)
    for k, d, t in itertools.product(range(2), range(4), range(5)):  # explicit loops
        doc = ctx[d].tolist()
        row = p.init[k] if t == 0 else p.trans[(k,) + tuple(doc[max(t - order + j, 0)] for j in range(order))]
        torch.testing.assert_close(got[k, d, t], row.log(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_mixture_logprobs_equal_the_exact_predictive(order):
    p = random_personas(3, 4, order=order, seed=5)
    ctx, _ = simulate_corpus(p, 16, 9, seed=6)
    for w in ([0.2, 0.3, 0.5], [0.0, 0.4, 0.6]):  # a zero weight too
        log_w = torch.tensor(w, dtype=torch.float64).log()
        got = mixture_logprobs(persona_logprobs(p, ctx), ctx, log_w)
        want = mixture_predictive(p.log_table(), log_w, ctx, 4, order)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_mixture_logprobs_are_differentiable_in_the_weights(compare_world):
    personas, contexts, _ = compare_world
    comp = persona_logprobs(personas, contexts[:3, :5])
    theta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mixture_logprobs(comp, contexts[:3, :5], t), (theta,))
