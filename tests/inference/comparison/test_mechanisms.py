"""The mechanisms behind the non-re-weighting part: by context and position, forgetting, gamma."""

import pytest
import torch

from inference.comparison.decomposition import decompose
from inference.comparison.mechanisms import forgetting, in_context_strength, split_by_context
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import random_personas
from models.predictive import (
    in_context_log_weights,
    mix,
    mixture_logprobs,
    persona_logprobs,
    prefix_loglik,
)


@pytest.fixture(scope="module")
def world():
    personas = random_personas(3, 5, order=1, concentration=0.4, seed=2)
    contexts, writer = simulate_corpus(personas, 40, 16, seed=3)
    components = persona_logprobs(personas, contexts)
    q0 = mixture_logprobs(components, contexts, personas.prior.log())
    return personas, contexts, writer, components, q0


def test_groups_recombine_into_the_overall_means(world):
    personas, contexts, writer, components, q0 = world
    g = torch.Generator().manual_seed(0)
    q_s = torch.log_softmax(q0 + 0.3 * torch.randn(q0.shape, generator=g, dtype=torch.float64), -1)
    d = decompose(q_s, q0, components, contexts, personas.prior)
    groups = split_by_context(d, writer, evidence_persona=1)
    for term, overall in (("total", d.total), ("reweighting", d.reweighting), ("other", d.other)):
        for parts in (("evidence_persona", "other_personas"), ("early", "middle", "late")):
            count = sum(groups[p]["positions"] for p in parts)
            assert count == contexts.numel()
            recombined = sum(groups[p][term] * groups[p]["positions"] for p in parts) / count
            assert recombined == pytest.approx(overall, rel=1e-12)
    assert groups["evidence_persona"]["positions"] == int((writer == 1).sum()) * contexts.shape[1]
    none = split_by_context(d, writer, evidence_persona=None)
    assert none["evidence_persona"]["positions"] == 0 and none["other_personas"]["positions"] == contexts.numel()
    with pytest.raises(InputError):
        split_by_context(d, writer[:3], 1)


def test_forgetting_is_the_nll_on_the_other_personas_contexts(world):
    personas, contexts, writer, components, q0 = world
    q_s = torch.log_softmax(q0 + 0.5 * (contexts[..., None] == torch.arange(5)).double(), -1)  # likes repeats
    out = forgetting(q0, q_s, contexts, writer, 0, bayes=q0)
    keep = writer != 0
    want = float(-q0[keep].gather(-1, contexts[keep][..., None]).mean())
    assert out["base_nll"] == pytest.approx(want) and out["bayes_nll"] == pytest.approx(want)
    assert out["increase"] == pytest.approx(out["finetuned_nll"] - out["base_nll"])
    assert out["contexts"] == int(keep.sum())


@pytest.mark.parametrize("gamma", [0.3, 1.0, 2.0])
def test_gamma_is_recovered_from_a_mixture_with_scaled_updating(world, gamma):
    personas, contexts, writer, components, q0 = world
    w = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = mix(components, in_context_log_weights(w.log(), gamma * prefix_loglik(components, contexts)))
    fit = in_context_strength(q, components, contexts)
    assert fit.gamma == pytest.approx(gamma, rel=1e-3)
    torch.testing.assert_close(fit.weights, w, rtol=0, atol=1e-3)
    assert fit.kl < 1e-8
    if gamma != 1.0:
        assert fit.kl_at_one > 1e-4  # holding gamma at 1 cannot explain it
