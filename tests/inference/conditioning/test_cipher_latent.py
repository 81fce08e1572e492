"""Conditioning on the joint latent (persona, cipher): the product persona set of models.ciphers goes
through ``condition`` unchanged. Exact enumeration equals brute force; SVI and NUTS agree with it.

Tolerances as in test_svi / test_mcmc: 4 Monte Carlo standard errors (plus the Dirichlet guide's
known bias for SVI), the MCSE from the chains' effective sample size for NUTS.
"""

import itertools
import math

import pytest
import torch

from inference.conditioning.condition import condition
from models.ciphers import cipher_permutation, cipher_prior, encipher, inverse, product_personas
from models.counts import make_evidence
from models.markov import MarkovChain
from models.mixture import simulate_corpus
from models.personas import random_personas


def loglik(personas, h, tokens):
    """Brute force: the log-likelihood of each document under persona ``h``, token by token."""
    chain = MarkovChain(personas.log_table()[h], personas.vocab_size, personas.order, tokens.shape[1])
    return chain.log_prob(tokens)


@pytest.mark.parametrize("share", [0.0, 0.2])
@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_exact_conditioning_on_persona_and_cipher_equals_brute_force(share, beta):
    """P(h, c | D) by ``condition`` on the product set = pi(h) P(c) prod_d p(sigma_c^-1(y_d) | h)^beta, enumerated."""
    personas = random_personas(2, 4, 1, concentration=0.6, seed=3)
    sigmas = [cipher_permutation(n, 4) for n in ("none", "rot1", "random2")]
    prior_c = cipher_prior(share, 2)
    joint = product_personas(personas, sigmas, prior_c)
    plain, _ = simulate_corpus(personas.subset([1]), 3, 6, seed=4)
    evidence = make_evidence(encipher(plain, sigmas[2]))
    exact = condition(joint, evidence, model="global", method="exact", beta=beta).weights.reshape(3, 2)
    brute = torch.zeros(3, 2, dtype=torch.float64)
    for c, h in itertools.product(range(3), range(2)):
        deciphered = encipher(evidence.tokens, inverse(sigmas[c]))
        brute[c, h] = (prior_c[c] * personas.prior[h]).log() + beta * loglik(personas, h, deciphered).sum()
    torch.testing.assert_close(exact, torch.softmax(brute.flatten(), 0).reshape(3, 2))
    if share == 0:
        assert exact[1:].abs().max() == 0  # outside the support: no evidence reaches the ciphers


@pytest.fixture(scope="module")
def cipher_mixture():
    """Eight documents, each from its own (persona, cipher): mostly persona 0 through rot1."""
    personas = random_personas(2, 4, 1, concentration=0.5, seed=0)
    joint = product_personas(personas, [cipher_permutation(n, 4) for n in ("none", "rot1")], cipher_prior(0.5, 1))
    writers = joint.with_prior(torch.tensor([0.15, 0.05, 0.7, 0.1], dtype=torch.float64))
    tokens, _ = simulate_corpus(writers, 8, 8, seed=1)
    evidence = make_evidence(tokens)
    exact = condition(joint, evidence, model="mixture", method="exact", alpha=1.0)
    return joint, evidence, exact


def test_svi_on_persona_and_cipher_agrees_with_exact(cipher_mixture):
    joint, evidence, exact = cipher_mixture
    post = condition(joint, evidence, model="mixture", method="svi", alpha=1.0, seed=0,
                     guide="dirichlet", num_steps=600, num_samples=400, tol=0)
    w = post.weight_samples[0]  # [S, 4]
    mcse = w.std(0) / math.sqrt(len(w))
    assert torch.all((w.mean(0) - exact.weights).abs() <= 0.03 + 4 * mcse), (w.mean(0), exact.weights)


def test_nuts_on_persona_and_cipher_agrees_with_exact(cipher_mixture):
    joint, evidence, exact = cipher_mixture
    post = condition(joint, evidence, model="mixture", method="mcmc", alpha=1.0, seed=0,
                     num_chains=2, num_samples=300, warmup_steps=150)
    w = post.weight_samples  # [2, 300, 4]
    assert post.diagnostics["r_hat_max"] < 1.05  # rank-normalised split R-hat of 2 x 300 draws: 1.01 is for long runs
    mcse = w.flatten(0, 1).std(0) / math.sqrt(post.diagnostics["ess_min"])
    assert torch.all((w.mean((0, 1)) - exact.weights).abs() <= 4 * mcse), (w.mean((0, 1)), exact.weights)
    assert post.persona_samples.shape == (2, 300, evidence.num_docs)
    assert int(post.persona_samples.max()) < joint.num_personas  # draws of the joint index c * K + h
