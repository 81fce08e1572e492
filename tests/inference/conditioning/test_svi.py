"""SVI engine: agreement with exact and closed-form posteriors, minibatching, convergence, options.

Tolerances. Monte Carlo error of a guide-draw mean is ``sd / sqrt(S)`` (independent
draws); on top of it each check allows a documented *approximation* error, since a
variational family need not hold the posterior:

* mixture weights, Dirichlet guide: 0.03 (the posterior of ``w`` is a mixture of
  Dirichlets, close to one Dirichlet); ``AutoNormal`` (Gaussian on the
  stick-breaking scale): 0.05; posterior standard deviations within 30% of the
  exact ones (600 steps leave the concentrations a little short of the optimum);
* observed personas: the posterior *is* a Dirichlet, in the Dirichlet family; the
  only error left is optimisation noise: 0.02 on means, 25% on variances;
* global model with uncertain tables: 0.05 (a single Dirichlet per table row
  cannot hold the mixture over which persona explained the evidence; on weak
  evidence it comes close).
"""

from __future__ import annotations

import math

import pytest
import torch
from pyro import poutine

from inference.conditioning.condition import condition
from inference.conditioning.latents import GUIDES
from inference.conditioning.svi import ConvergenceRule, SVIResult, run_svi
from models.counts import count_transitions
from models.errors import InputError
from models.mixture import persona_model
from tests.inference.conditioning.worlds import D, K, global_world, mixture_world

BIAS = {"dirichlet": 0.03, "normal": 0.05}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("guide", ["dirichlet", "normal"])
def test_mixture_weights_match_exact(guide, seed):
    personas, evidence, _, args, kwargs = mixture_world(seed)
    exact = condition(personas, evidence, model="mixture", method="exact", alpha=1.0)
    result = run_svi(persona_model, args, kwargs, seed=seed, guide=guide, num_steps=600, num_samples=400, tol=0)
    w = result.samples["w"][0]  # [S, K]
    mcse = w.std(0) / math.sqrt(len(w))
    assert torch.all((w.mean(0) - exact.weights).abs() <= BIAS[guide] + 4 * mcse), (w.mean(0), exact.weights)
    exact_sd = exact.weight_samples.flatten(0, 1).std(0)  # from 1,000 exact draws
    assert torch.all((w.std(0) / exact_sd - 1).abs() <= 0.3), (w.std(0), exact_sd)
    assert result.discrete["persona"].shape == (1, 400, D)
    assert result.steps == 600 and result.losses.shape == (600,)


def test_observed_personas_give_the_closed_form_dirichlet():
    personas, _, z, args, kwargs = mixture_world(0)
    model = poutine.condition(persona_model, data={"persona": z})
    result = run_svi(model, args, kwargs, seed=0, guide="dirichlet", num_steps=800, num_samples=2000, tol=0)
    conc = kwargs["alpha"] + torch.bincount(z, minlength=K).double()  # [K] closed form
    total = conc.sum()
    mean, var = conc / total, conc * (total - conc) / (total**2 * (total + 1))
    w = result.samples["w"][0]  # [S, K]
    assert torch.all((w.mean(0) - mean).abs() <= 0.02 + 4 * w.std(0) / math.sqrt(len(w)))
    assert torch.all((w.var(0) / var - 1).abs() <= 0.25), (w.var(0), var)
    assert result.discrete == {}  # the persona is observed, nothing left to recover


def test_global_model_with_uncertain_tables_matches_exact():
    personas, evidence, prior = global_world()
    exact = condition(personas, evidence, model="global", method="exact", table_prior=prior).weights
    post = condition(personas, evidence, model="global", method="svi", table_prior=prior,
                     num_steps=500, num_samples=300, tol=0)
    assert torch.all((post.weights - exact).abs() <= 0.05), (post.weights, exact)
    result = post.engine
    assert result.samples["init"].shape == (1, 300, 3, 3)
    assert result.samples["trans"].shape == (1, 300, 3, 1, 3)
    assert result.discrete["persona"].shape == (1, 300)


def test_minibatches_give_a_comparable_answer():
    personas, evidence, _, args, kwargs = mixture_world(1)
    exact = condition(personas, evidence, model="mixture", method="exact", alpha=1.0).weights
    result = run_svi(persona_model, args, kwargs, seed=1, subsample_size=5, num_steps=800, num_samples=400, tol=0)
    w = result.samples["w"][0]
    assert torch.all((w.mean(0) - exact).abs() <= 0.05 + 4 * w.std(0) / math.sqrt(len(w))), (w.mean(0), exact)
    assert result.diagnostics["subsample_size"] == 5
    assert result.discrete["persona"].shape == (1, 400, D)  # recovered for every document


def test_convergence_rule_stops_early_on_an_easy_problem():
    _, _, _, args, kwargs = mixture_world(0)
    result = run_svi(persona_model, args, kwargs, guide="delta", num_steps=2000, lr=0.05, num_samples=5,
                     tol=1e-5, patience=20)
    assert result.converged and result.diagnostics["converged"]
    assert result.steps < 2000 and len(result.losses) == result.steps
    assert result.diagnostics["final_elbo"] == pytest.approx(-result.losses[-20:].mean().item(), rel=1e-3)


def test_convergence_rule():
    flat = ConvergenceRule(tol=1e-4, patience=5, smoothing=0.9)
    assert [flat.update(10.0) for _ in range(7)] == [False] * 5 + [True] * 2
    falling = ConvergenceRule(tol=1e-4, patience=5, smoothing=0.9)
    assert not any(falling.update(1000.0 - step) for step in range(200))  # steady descent never calms


def test_every_guide_hides_the_persona_and_returns_named_draws():
    personas, evidence, prior = global_world()
    counts = count_transitions(evidence, 3, 0)
    kwargs = dict(tokens=evidence.tokens, mask=evidence.mask, counts=counts, evidence="global", table_prior=prior)
    for guide in GUIDES:
        result = run_svi(persona_model, (personas, 4, 8), kwargs, guide=guide, num_steps=20, num_samples=7)
        assert isinstance(result, SVIResult)
        assert set(result.samples) == {"init", "trans"} and result.samples["init"].shape == (1, 7, 3, 3)
        assert result.discrete["persona"].shape == (1, 7)
        assert torch.allclose(result.samples["init"].sum(-1), torch.ones((), dtype=torch.float64))
        assert result.params and result.diagnostics["guide"] == ("dirichlet" if guide == "auto" else guide)


def test_same_seed_same_answer():
    _, _, _, args, kwargs = mixture_world(2)
    a, b = (run_svi(persona_model, args, kwargs, seed=5, num_steps=30, num_samples=10) for _ in range(2))
    assert torch.equal(a.losses, b.losses) and torch.equal(a.samples["w"], b.samples["w"])
    assert torch.equal(a.discrete["persona"], b.discrete["persona"])


def test_through_condition_with_arviz():
    personas, evidence, _, _, _ = mixture_world(0)
    post = condition(personas, evidence, model="mixture", method="svi", guide="normal", num_steps=200,
                     num_samples=100, seed=3)
    assert post.weight_samples.shape == (1, 100, K) and post.persona_samples.shape == (1, 100, D)
    assert set(post.diagnostics) >= {"final_elbo", "steps", "converged"}
    assert post.weights.sum().item() == pytest.approx(1.0)
    idata = post.to_arviz()
    assert {"posterior", "log_likelihood", "sample_stats", "observed_data", "posterior_predictive"} <= set(idata.groups())
    assert idata.posterior["w"].shape == (1, 100, K)


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(nonsense=1), ["nonsense", "valid options", "num_steps", "guide"]),
        (dict(num_steps=0), ["num_steps"]),
        (dict(lr=0.0), ["lr"]),
        (dict(lr=-1), ["lr"]),
        (dict(lr_decay=2.0), ["lr_decay"]),
        (dict(guide="laplace"), ["laplace", "dirichlet", "normal", "mvn", "delta"]),
        (dict(num_samples=0), ["num_samples"]),
        (dict(subsample_size=D + 1), ["subsample_size"]),
        (dict(smoothing=1.0), ["smoothing"]),
    ],
)
def test_bad_options_raise_input_error(options, words):
    _, _, _, args, kwargs = mixture_world(0)
    with pytest.raises(InputError) as info:
        run_svi(persona_model, args, kwargs, **options)
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_bad_options_through_condition():
    personas, evidence, _, _, _ = mixture_world(0)
    with pytest.raises(InputError, match="valid options"):
        condition(personas, evidence, model="mixture", method="svi", num_chains=4)
