"""Ciphers as a latent next to the persona: named substitutions, enciphered and product persona sets,
the enciphered corpus (conditioning on (h, c) is tested in tests/inference/conditioning/test_cipher_latent.py)."""

import pytest
import torch

from models.ciphers import (
    cipher_permutation,
    cipher_prior,
    encipher,
    encipher_personas,
    enciphered_corpus,
    inverse,
    product_personas,
    support,
)
from models.errors import InputError
from models.markov import MarkovChain
from models.mixture import simulate_corpus
from models.personas import random_personas

NAMES = ["none", "rot3", "atbash", "swap_pairs", "random7"]


def loglik(personas, h, tokens):
    """Brute force: the log-likelihood of each document under persona ``h``, token by token."""
    chain = MarkovChain(personas.log_table()[h], personas.vocab_size, personas.order, tokens.shape[1])
    return chain.log_prob(tokens)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("V", [5, 8])
def test_named_ciphers_are_permutations(name, V):
    sigma = cipher_permutation(name, V)
    assert torch.equal(sigma.sort().values, torch.arange(V))
    assert torch.equal(inverse(sigma)[sigma], torch.arange(V))
    tokens = torch.randint(V, (3, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(encipher(encipher(tokens, sigma), inverse(sigma)), tokens)


def test_named_ciphers_do_what_they_say():
    assert cipher_permutation("rot13", 26)[0] == 13 and cipher_permutation("atbash", 26)[0] == 25
    assert cipher_permutation("swap_pairs", 5).tolist() == [1, 0, 3, 2, 4]
    assert torch.equal(cipher_permutation("random3", 12), cipher_permutation("random3", 12))
    assert not torch.equal(cipher_permutation("random3", 12), cipher_permutation("random4", 12))


@pytest.mark.parametrize("name", ["rot0", "rot8", "vigenere", "random", "ROT3", 3])
def test_unknown_or_identity_ciphers_are_refused_in_one_line(name):
    with pytest.raises(InputError) as err:
        cipher_permutation(name, 8)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_an_enciphered_persona_scores_enciphered_text_as_the_persona_scores_plain_text(order):
    personas = random_personas(3, 5, order, concentration=0.7, seed=order)
    sigma = cipher_permutation("random1", 5)
    tokens, writer = simulate_corpus(personas, 6, 9, seed=1)
    enciphered = encipher_personas(personas, sigma)
    for h in range(3):
        torch.testing.assert_close(loglik(enciphered, h, encipher(tokens, sigma)), loglik(personas, h, tokens))


def test_product_personas_factorise_the_prior_and_put_the_plain_personas_first():
    personas = random_personas(3, 4, 1, seed=0, prior=torch.tensor([0.5, 0.3, 0.2]))
    sigmas = [cipher_permutation(n, 4) for n in ("none", "rot1", "atbash")]
    joint = product_personas(personas, sigmas, cipher_prior(0.1, 2))
    assert joint.num_personas == 9
    torch.testing.assert_close(joint.prior.reshape(3, 3), torch.tensor([0.9, 0.05, 0.05])[:, None] * personas.prior)
    torch.testing.assert_close(joint.trans[:3], personas.trans)
    torch.testing.assert_close(joint.trans[3 + 1], encipher_personas(personas, sigmas[1]).trans[1])
    assert support(joint).tolist() == list(range(9))
    plain_only = product_personas(personas, sigmas, cipher_prior(0.0, 2))
    assert support(plain_only).tolist() == [0, 1, 2]


def test_the_corpus_enciphers_exactly_the_share_asked_for():
    personas = random_personas(3, 6, 1, seed=0)
    tokens, writer = simulate_corpus(personas, 1000, 5, seed=0)
    sigmas = [cipher_permutation("rot2", 6), cipher_permutation("atbash", 6)]
    for share, expected in ((0.0, 0), (0.001, 1), (0.0125, 12), (0.1, 100), (1.0, 1000)):
        out, joint = enciphered_corpus(tokens, writer, sigmas, share, 3, seed=1)
        cipher = joint // 3
        assert int((cipher > 0).sum()) == expected
        assert torch.equal(joint % 3, writer)
        assert abs(int((cipher == 1).sum()) - int((cipher == 2).sum())) <= 1  # the ciphers in turn
        for c, sigma in enumerate([torch.arange(6)] + sigmas):
            assert torch.equal(out[cipher == c], encipher(tokens[cipher == c], sigma))


def test_simulating_the_product_set_draws_persona_and_cipher_from_their_prior():
    """Simulation vs exact: the joint labels of 4,000 documents follow pi(h) P(c) (4 standard errors)."""
    personas = random_personas(2, 4, 1, seed=0)
    joint = product_personas(personas, [cipher_permutation(n, 4) for n in ("none", "rot1")], cipher_prior(0.3, 1))
    n = 4000
    _, label = simulate_corpus(joint, n, 3, seed=5)
    freq = torch.bincount(label, minlength=4).double() / n
    se = (joint.prior * (1 - joint.prior) / n).sqrt()
    assert ((freq - joint.prior).abs() <= 4 * se).all(), (freq, joint.prior)


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan"), "often", True])
def test_shares_outside_zero_one_are_refused(share):
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        cipher_prior(share, 2)
