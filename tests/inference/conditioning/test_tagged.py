import itertools
import math

import pytest
import torch

from inference.conditioning.condition import condition
from inference.conditioning.tagged import condition_tagged
from models.counts import make_evidence
from models.domains import CONTENT_START, make_domain_world, marker_share
from models.errors import InputError


@pytest.fixture(scope="module")
def world():
    return make_domain_world(2, 2, 3, trait_persona=1, trait_rate=0.4, background_rate=0.05, cause_rate=0.25,
                             smoothing=0.02, seed=1)


def brute_doc_prob(world, doc, h):
    """``p(doc | h)`` by summing every (domain, slot) of the document and multiplying token probabilities."""
    total = 0.0
    for d, c in itertools.product(range(world.num_domains), range(2)):
        f = world.family_index(h, d, c)
        p = float(world.domain_prior[d]) * (world.cause_rate if c else 1 - world.cause_rate)
        p *= float(world.families.init[f, doc[0]])
        for t in range(1, len(doc)):
            p *= float(world.families.trans[f, doc[t - 1], doc[t]])
        total += p
    return total


def test_exact_conditioning_equals_brute_force_on_a_tiny_world(world):
    tokens, _ = world.simulate(3, 5, seed=4, persona=1, domain=0)
    evidence = make_evidence(tokens.numpy(), vocab_size=world.vocab_size)
    for beta in (0.0, 0.5, 1.0):
        post = condition_tagged(world, evidence, beta)
        joint = torch.tensor([float(world.persona_prior[h]) * math.prod(brute_doc_prob(world, doc, h)
                              for doc in tokens.tolist()) ** beta for h in range(2)], dtype=torch.float64)
        assert torch.allclose(post.weights, joint / joint.sum(), rtol=1e-10, atol=1e-12)
    # the predictive with in-context updating, token by token, in another domain
    post = condition_tagged(world, evidence, 1.0)
    context, _ = world.simulate(1, 5, seed=9, domain=1)
    predictive = post.predictive(context)[0]  # [T, V]
    doc = context[0].tolist()
    for t in range(5):
        for v in range(world.vocab_size):
            num = sum(float(post.weights[h]) * brute_doc_prob_prefix(world, doc[:t] + [v], h) for h in range(2))
            den = sum(float(post.weights[h]) * brute_doc_prob_prefix(world, doc[:t], h) for h in range(2))
            assert math.exp(float(predictive[t, v])) == pytest.approx(num / den, rel=1e-9)


def brute_doc_prob_prefix(world, prefix, h):
    return 1.0 if not prefix else brute_doc_prob(world, prefix, h)


def test_agrees_with_condition_on_the_families_for_single_tag_evidence():
    """``condition()`` over the families puts all weight on the evidence's domain and slot; summed per
    persona it is the same posterior (up to the smoothing mass the other families give the tags, which
    is below 1e-9 here)."""
    world = make_domain_world(2, 2, 3, trait_persona=1, trait_rate=0.4, cause_rate=0.25, smoothing=1e-6, seed=1)
    tokens, _ = world.simulate(6, 7, seed=2, persona=0, domain=1, cause=1)
    evidence = make_evidence(tokens.numpy(), vocab_size=world.vocab_size)
    for beta in (0.3, 1.0):
        families = condition(world.families, evidence, model="global", method="exact", beta=beta)
        per_persona = families.weights.reshape(2, world.num_domains, 2).sum((1, 2))
        # condition() tempers the tag tokens too; their probability is the same under every persona
        assert torch.allclose(condition_tagged(world, evidence, beta).weights, per_persona, atol=1e-9)


def test_masking_the_tags_changes_nothing(world):
    tokens, _ = world.simulate(4, 6, seed=3, persona=1, domain=0, cause=0)
    whole = make_evidence(tokens.numpy(), vocab_size=world.vocab_size)
    mask = (torch.arange(6) >= CONTENT_START).expand(4, -1)
    content = make_evidence(tokens.numpy(), mask.numpy(), vocab_size=world.vocab_size)
    assert torch.allclose(condition_tagged(world, whole).weights, condition_tagged(world, content).weights)


def test_trait_rate_of_the_conditioned_model_two_ways(world):
    """Exact (posterior-weighted state marginals) against documents simulated from the conditioned
    model: persona from the posterior, then its family; within 4 Monte Carlo standard errors."""
    tokens, _ = world.simulate(2, 6, seed=7, persona=1, domain=0, cause=0)
    post = condition_tagged(world, make_evidence(tokens.numpy(), vocab_size=world.vocab_size), 0.1)
    assert 0.05 < float(post.weights[1]) < 0.95  # a real mixture, not a single persona
    T, N = 10, 4000
    exact = post.trait_rates(T)  # [D, 2]
    gen = torch.Generator().manual_seed(0)
    persona = torch.multinomial(post.weights, N, replacement=True, generator=gen)
    for d in range(world.num_domains):
        shares = []
        for h in range(2):
            count = int((persona == h).sum())
            docs, _ = world.simulate(count, T, seed=20 + 2 * d + h, persona=h, domain=d, cause=0)
            shares.append(marker_share(docs))
        share = torch.cat(shares)
        se = float(share.std() / math.sqrt(N))
        assert abs(float(share.mean()) - float(exact[d, 0])) <= 4 * se
    # teacher-forced: the expected marker probability under the predictive equals the exact rate on
    # documents the conditioned model writes (the tower property)
    docs = torch.cat([world.simulate(int((persona[:600] == h).sum()), T, seed=60 + h, persona=h, domain=1,
                                     cause=0)[0] for h in range(2)])
    forced = post.predictive(docs)[:, CONTENT_START:, world.marker].exp().mean(-1)  # [n]
    se = float(forced.std() / math.sqrt(len(forced)))
    assert abs(float(forced.mean()) - float(exact[1, 0])) <= 4 * se


def test_bad_arguments(world):
    tokens, _ = world.simulate(2, 5, seed=0)
    evidence = make_evidence(tokens.numpy(), vocab_size=world.vocab_size)
    with pytest.raises(InputError, match="beta"):
        condition_tagged(world, evidence, -1.0)
    with pytest.raises(InputError, match="Evidence"):
        condition_tagged(world, tokens, 1.0)
