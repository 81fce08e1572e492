import math

import pytest
import torch

from models.domains import CONTENT_START, MARKER, make_domain_world, marker_share
from models.errors import InputError


@pytest.fixture(scope="module")
def world():
    return make_domain_world(3, 2, 4, trait_persona=2, trait_rate=0.3, background_rate=0.05, cause_rate=0.3,
                             smoothing=0.01, seed=3)


def test_the_families_are_markov_personas_over_the_extended_vocabulary(world):
    K, D, C = 3, 2, 4
    assert world.vocab_size == C + D + 2
    assert world.families.num_personas == K * D * 2
    prior = world.families.prior.reshape(K, D, 2)
    assert torch.allclose(prior.sum((1, 2)), world.persona_prior)
    assert torch.allclose(prior[:, :, 1].sum(), torch.tensor(0.3, dtype=torch.float64))
    assert (world.families.trans > 0).all() and (world.families.init > 0).all()  # smoothing: nothing impossible
    f = world.family_index(2, 1, 1)
    assert world.family_parts(torch.tensor([f])) == (torch.tensor([2]), torch.tensor([1]), torch.tensor([1]))


def test_simulated_documents_follow_the_tables(world):
    """Tag frequencies match the prior and the transition frequencies of one family match its table,
    within 4 Monte Carlo standard errors."""
    N, T = 6000, 10
    tokens, family = world.simulate(N, T, seed=5)
    h, d, c = world.family_parts(family)
    for values, probs in ((h, world.persona_prior), (d, world.domain_prior),
                          (c, torch.tensor([0.7, 0.3], dtype=torch.float64))):
        freq = torch.bincount(values, minlength=len(probs)).double() / N
        se = (probs * (1 - probs) / N).sqrt()
        assert ((freq - probs).abs() <= 4 * se + 1e-12).all()
    tokens, _ = world.simulate(N, T, seed=6, persona=2, domain=0, cause=0)
    trans = world.families.trans[world.family_index(2, 0, 0)]  # [V, V]
    prev, nxt = tokens[:, CONTENT_START:-1].reshape(-1), tokens[:, CONTENT_START + 1:].reshape(-1)
    for u in range(world.content_size):
        rows = nxt[prev == u]
        freq = torch.bincount(rows, minlength=world.vocab_size).double() / len(rows)
        se = (trans[u] * (1 - trans[u]) / len(rows)).sqrt()
        assert ((freq - trans[u]).abs() <= 4 * se + 1e-3).all()
    assert (tokens[:, 0] == world.domain_tag(0)).float().mean() > 0.95


def test_trait_rates_exact_against_simulation(world):
    """The exact state-marginal trait rates equal the marker share of simulated documents (4 MC standard errors)."""
    T, N = 12, 3000
    exact = world.trait_rates(T)  # [K, D, 2]
    assert exact[2, :, 0].min() > 4 * exact[0, :, 0].max()  # the trait persona shows the trait in every domain
    assert (exact[:, :, 1] > 0.25).all()  # and the cause tag makes everyone show it
    for h, d, c in ((0, 1, 0), (2, 0, 0), (1, 1, 1)):
        tokens, _ = world.simulate(N, T, seed=10 + h, persona=h, domain=d, cause=c)
        share = marker_share(tokens)
        se = float(share.std() / math.sqrt(N))
        assert abs(float(share.mean()) - float(exact[h, d, c])) <= 4 * se


def test_persona_logprobs_are_normalised_and_tags_carry_no_persona_information(world):
    tokens, _ = world.simulate(20, 8, seed=2)
    logp = world.persona_logprobs(tokens)  # [K, n, T, V]
    assert torch.allclose(logp.exp().sum(-1), torch.ones(logp.shape[:-1], dtype=torch.float64))
    tags_only = torch.zeros_like(tokens, dtype=torch.bool)
    tags_only[:, :CONTENT_START] = True
    ll = world.doc_loglik(tokens, tags_only)  # [K, n]
    assert torch.allclose(ll, ll[:1].expand_as(ll))  # the same under every persona
    content = world.doc_loglik(tokens, ~tags_only)
    assert not torch.allclose(content, content[:1].expand_as(content))


def test_the_marker_share_counts_content_only():
    tokens = torch.tensor([[5, 6, MARKER, 1, MARKER, 2]])
    assert float(marker_share(tokens)) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"trait_persona": 3}, "trait_persona"),
    ({"trait_rate": 1.0}, "below 1"),
    ({"smoothing": 0.0}, "smoothing"),
    ({"cause_rate": -0.1}, "cause_rate"),
    ({"style_weight": 2}, "style_weight"),
    ({"concentration": 0}, "concentration"),
    ({"persona_prior": [0.5, 0.5]}, "persona_prior"),
])
def test_bad_worlds_are_one_line_errors(kwargs, message):
    with pytest.raises(InputError, match=message) as err:
        make_domain_world(3, 2, 4, **kwargs)
    assert "\n" not in str(err.value)


def test_bad_simulation_and_rate_arguments(world):
    with pytest.raises(InputError, match="domain"):
        world.simulate(3, 5, domain=2)
    with pytest.raises(InputError, match="doc_len"):
        world.trait_rates(2)
