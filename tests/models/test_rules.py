"""Rule personas (a Markov persona with a long-range rule) and periodic documents."""

import itertools

import pytest
import torch

from models.ciphers import cipher_permutation, encipher, encipher_personas
from models.errors import InputError
from models.mixture import simulate_corpus
from models.rules import (
    bigram_probs,
    conjugate_rule,
    periodic_documents,
    rule_map,
    rule_personas,
    rule_targets,
)


@pytest.mark.parametrize("lag", [1, 2, 3])
def test_the_table_is_the_rule_mixed_with_the_bigram(lag):
    """Brute force over every context: trans[h, u_1..u_lag, v] = rho 1[v = g(u_1)] + (1 - rho) B_h[u_lag, v]."""
    V, rho, shift = 3, 0.4, 1
    personas, bigram = rule_personas(2, V, lag=lag, rule_prob=rho, shift=shift, seed=lag)
    assert personas.order == lag and bigram.shape == (2, V, V)
    torch.testing.assert_close(personas.trans.sum(-1), torch.ones(personas.trans.shape[:-1], dtype=torch.float64))
    for h, *context, v in itertools.product(range(2), *[range(V)] * (lag + 1)):
        expected = rho * (v == (context[0] + shift) % V) + (1 - rho) * bigram[h, context[-1], v]
        assert float(personas.trans[(h, *context, v)]) == pytest.approx(float(expected), abs=1e-12)


def test_with_rule_probability_one_every_document_follows_the_rule():
    personas, _ = rule_personas(2, 5, lag=3, rule_prob=1.0, shift=2, seed=0)
    tokens, _ = simulate_corpus(personas, 20, 12, seed=1)
    targets = rule_targets(tokens, 3, rule_map(5, 2))
    assert torch.equal(tokens[:, 1:], targets[:, 1:])


def test_simulated_rule_hits_match_the_exact_rate():
    """Simulation vs exact: how often x_t = g(x_{t-lag}) equals the mean of rho + (1 - rho) B[x_{t-1}, g(x_{t-lag})]
    over the same positions, within 4 standard errors."""
    rho, lag = 0.3, 2
    personas, bigram = rule_personas(1, 6, lag=lag, rule_prob=rho, shift=1, seed=2)
    tokens, _ = simulate_corpus(personas, 600, 10, seed=3)
    targets = rule_targets(tokens, lag, rule_map(6, 1))
    hits = (tokens == targets)[:, lag:].double()  # [n, T - lag] genuine lags only
    p = (rho + (1 - rho) * bigram_probs(bigram[0], tokens, targets))[:, lag:]
    se = (p * (1 - p)).sum().sqrt() / p.numel()
    assert abs(float(hits.mean() - p.mean())) <= 4 * float(se)


def test_under_a_cipher_the_rule_is_conjugated():
    V, lag = 6, 2
    personas, _ = rule_personas(2, V, lag=lag, rule_prob=1.0, shift=1, seed=0)
    sigma = cipher_permutation("random5", V)
    tokens, _ = simulate_corpus(encipher_personas(personas, sigma), 10, 9, seed=1)
    conj = conjugate_rule(rule_map(V, 1), sigma)
    assert torch.equal(tokens[:, 1:], rule_targets(tokens, lag, conj)[:, 1:])
    plain, _ = simulate_corpus(personas, 10, 9, seed=1)
    assert torch.equal(encipher(plain, sigma)[:, 1:], encipher(rule_targets(plain, lag, rule_map(V, 1)), sigma)[:, 1:])
    assert torch.equal(conjugate_rule(rule_map(V, 1), cipher_permutation("rot2", V)), rule_map(V, 1))  # shifts commute
    assert torch.equal(conjugate_rule(rule_map(V, 1), cipher_permutation("atbash", V)), rule_map(V, -1))


def test_targets_and_bigram_probabilities_by_hand():
    tokens = torch.tensor([[0, 1, 2, 3]])
    targets = rule_targets(tokens, 2, rule_map(4, 1))
    assert targets.tolist() == [[-1, 1, 1, 2]]  # g(x_0), g(x_0), g(x_1) — before the start reads x_0
    bigram = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    assert bigram_probs(bigram, tokens, targets).tolist() == [[0.0, 1.0, 5.0, 10.0]]


def test_periodic_documents_repeat_and_bad_periods_are_refused():
    personas, _ = rule_personas(1, 5, lag=1, rule_prob=0.0, seed=0)
    docs = periodic_documents(personas, 4, 10, 3, seed=0)
    assert torch.equal(docs[:, 3:], docs[:, :-3])
    for period in (0, 10, 2.5, True):
        with pytest.raises(InputError, match="period"):
            periodic_documents(personas, 4, 10, period)


@pytest.mark.parametrize("kwargs, key", [(dict(lag=0), "lag"), (dict(rule_prob=1.5), "rule_prob"),
                                         (dict(shift=0.5), "shift"), (dict(lag=12), "table entries")])
def test_bad_rule_personas_are_refused_in_one_line(kwargs, key):
    options = dict(lag=2, rule_prob=0.5, shift=1) | kwargs
    with pytest.raises(InputError, match=key) as err:
        rule_personas(2, 16, **options)
    assert "\n" not in str(err.value)
