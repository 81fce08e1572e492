import itertools

import pytest
import torch

from inference.conditioning.exact import (
    global_posterior,
    global_posterior_dirichlet,
    global_posterior_of,
    mixture_posterior,
)
from models.counts import count_transitions, total_counts
from models.errors import InputError
from models.personas import anchored_table_prior
from tests.models.test_counts import brute_loglik


def brute_mixture(doc_loglik, alpha, beta):
    """Sum over all K^D assignments (Dirichlet-categorical conjugacy)."""
    D, K = doc_loglik.shape

    def log_beta(a):
        return torch.lgamma(a).sum(-1) - torch.lgamma(a.sum(-1))

    terms, means = [], []
    for z in itertools.product(range(K), repeat=D):
        z = torch.tensor(z)
        m = torch.bincount(z, minlength=K).double()
        terms.append(log_beta(alpha + m) - log_beta(alpha) + beta * doc_loglik[torch.arange(D), z].sum())
        means.append((alpha + m) / (alpha.sum() + D))
    terms = torch.stack(terms)
    log_z = torch.logsumexp(terms, 0)
    return ((terms - log_z).exp()[:, None] * torch.stack(means)).sum(0), log_z


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 2.5])
def test_global_posterior_equals_brute_force(tiny_world, beta):
    personas, ev, _ = tiny_world
    L = brute_loglik(personas, ev.tokens, ev.mask).sum(1)  # [K] explicit loops
    joint = personas.prior.log() + beta * L
    expected_z = torch.logsumexp(joint, 0)
    log_w, log_z = global_posterior(personas.prior.log(), personas.log_table(), total_counts(ev, 4, 1), beta)
    torch.testing.assert_close(log_w.exp(), (joint - expected_z).exp(), rtol=0, atol=1e-6)
    assert float(log_z) == pytest.approx(float(expected_z), abs=1e-6)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_mixture_posterior_equals_brute_force(tiny_world, beta):
    personas, ev, _ = tiny_world
    ev = ev.select(torch.arange(7))
    doc_loglik = count_transitions(ev, 4, 1).loglik(personas.log_table()[:, None, :]).T  # [D, K]
    alpha = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    expected_mean, expected_z = brute_mixture(doc_loglik, alpha, beta)
    result = mixture_posterior(doc_loglik, alpha, beta)
    torch.testing.assert_close(result.mean_weights, expected_mean, rtol=0, atol=1e-6)
    assert float(result.log_evidence) == pytest.approx(float(expected_z), abs=1e-6)
    assert result.count_log_probs.exp().sum() == pytest.approx(1.0)


def test_exact_weight_draws_have_the_exact_mean(tiny_world):
    personas, ev, _ = tiny_world
    doc_loglik = count_transitions(ev, 4, 1).loglik(personas.log_table()[:, None, :]).T
    result = mixture_posterior(doc_loglik, torch.ones(3, dtype=torch.float64), 1.0)
    draws = result.sample_weights(4000, seed=0)
    mcse = draws.std(0) / 4000**0.5
    assert ((draws.mean(0) - result.mean_weights).abs() < 4 * mcse).all()


def test_mixture_refuses_too_many_states():
    doc_loglik = torch.zeros(400, 12, dtype=torch.float64)
    with pytest.raises(InputError, match="svi"):
        mixture_posterior(doc_loglik, torch.ones(12, dtype=torch.float64), 1.0)


def polya_log_marginal(prior_rows, tokens, order, V):
    """Sequential Polya-urn probability of the documents (brute force, beta = 1)."""
    a = prior_rows.clone()  # [R, V]
    total = 0.0
    for doc in tokens.tolist():
        for t, x in enumerate(doc):
            r = 0 if t == 0 else 1 + sum(doc[max(t - order + j, 0)] * V ** (order - 1 - j) for j in range(order))
            total += float((a[r, x] / a[r].sum()).log())
            a[r, x] += 1
    return total


def test_dirichlet_global_posterior_equals_a_polya_urn(tiny_world):
    personas, ev, _ = tiny_world
    prior = anchored_table_prior(personas, strength=5.0, floor=0.5)
    log_w, log_z = global_posterior_dirichlet(personas.prior.log(), prior, total_counts(ev, 4, 1), 1.0)
    marginals = torch.tensor([polya_log_marginal(prior.flat()[k], ev.tokens, 1, 4) for k in range(3)], dtype=torch.float64)
    joint = personas.prior.log() + marginals
    torch.testing.assert_close(log_w, joint - torch.logsumexp(joint, 0), rtol=0, atol=1e-6)
    assert float(log_z) == pytest.approx(float(torch.logsumexp(joint, 0)), abs=1e-6)


def test_dirichlet_global_posterior_tends_to_known_tables(tiny_world):
    personas, ev, _ = tiny_world
    totals = total_counts(ev, 4, 1)
    known, _ = global_posterior(personas.prior.log(), personas.log_table(), totals, 1.0)
    sharp, _ = global_posterior_dirichlet(personas.prior.log(), anchored_table_prior(personas, 1e7, 1e-9), totals, 1.0)
    torch.testing.assert_close(sharp.exp(), known.exp(), rtol=0, atol=1e-4)


def test_impossible_evidence_is_a_clear_error(tiny_world):
    personas, ev, _ = tiny_world
    table = personas.log_table().clone()
    table[:, : 4] = -torch.inf  # no persona can start a document
    with pytest.raises(InputError, match="zero probability"):
        global_posterior(personas.prior.log(), table, total_counts(ev, 4, 1), 1.0)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_global_posterior_of_personas_is_global_posterior_bit_for_bit(tiny_world, beta):
    personas, ev, _ = tiny_world
    totals = total_counts(ev.select(torch.arange(3)), personas.vocab_size, personas.order)
    assert (totals == 0).any()  # some features unseen: only the seen columns are built
    fast = global_posterior_of(personas, totals, beta)
    reference = global_posterior(personas.prior.log(), personas.log_table(), totals, beta)
    assert all(torch.equal(a, b) for a, b in zip(fast, reference, strict=True))
