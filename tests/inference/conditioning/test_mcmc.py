"""NUTS engine: agreement with exact and closed-form posteriors, both potentials, chains in workers,
torch threads, diagnostics (ArviZ's), options. The potentials themselves: ``test_potentials.py``.

Tolerances are Monte Carlo standard errors from the chains' own effective sample
size: ``MCSE(mean) = sd / sqrt(ESS)`` and ``MCSE(variance) = sqrt((m4 - var^2) / ESS)``
(``m4`` the fourth central moment); each check allows 4 of them.
"""

from __future__ import annotations

import math
import os
import threading

import pytest
import torch
from pyro import poutine

from inference.conditioning.condition import condition
from inference.conditioning.mcmc import MCMCResult, chain_diagnostics, run_mcmc
from inference.diagnostics import convergence
from models.errors import InputError
from models.mixture import persona_model
from tests.inference.conditioning.worlds import D, K, global_world, mixture_world


def mcse(draws: torch.Tensor, ess: float) -> torch.Tensor:
    """Monte Carlo standard error of the mean of ``[chains, draws, K]`` samples."""
    return draws.flatten(0, 1).std(0) / math.sqrt(ess)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_weights_match_exact(seed):
    personas, evidence, _, args, kwargs = mixture_world(seed)
    exact = condition(personas, evidence, model="mixture", method="exact", alpha=1.0).weights
    result = run_mcmc(persona_model, args, kwargs, seed=seed, num_chains=4, num_samples=400, warmup_steps=200)
    w = result.samples["w"]  # [4, 400, K]
    assert w.shape == (4, 400, K) and result.discrete["persona"].shape == (4, 400, D)
    assert result.diagnostics["r_hat_max"] < 1.01
    tolerance = 4 * mcse(w, result.diagnostics["ess_min"])
    assert torch.all((w.mean((0, 1)) - exact).abs() <= tolerance), (w.mean((0, 1)), exact, tolerance)


def test_observed_personas_give_the_closed_form_dirichlet():
    _, _, z, args, kwargs = mixture_world(0)
    model = poutine.condition(persona_model, data={"persona": z})
    result = run_mcmc(model, args, kwargs, seed=0, num_chains=2, num_samples=200, warmup_steps=100)
    assert result.diagnostics["potential"] == "enumerate" and result.discrete == {}
    conc = kwargs["alpha"] + torch.bincount(z, minlength=K).double()  # [K] closed form
    total = conc.sum()
    mean, var = conc / total, conc * (total - conc) / (total**2 * (total + 1))
    w = result.samples["w"].flatten(0, 1)  # [S, K]
    ess = result.diagnostics["ess_min"]
    centred = w - w.mean(0)
    var_mcse = ((centred**4).mean(0) - w.var(0) ** 2).sqrt() / math.sqrt(ess)
    assert torch.all((w.mean(0) - mean).abs() <= 4 * w.std(0) / math.sqrt(ess)), (w.mean(0), mean)
    assert torch.all((w.var(0) - var).abs() <= 4 * var_mcse), (w.var(0), var)


def test_global_model_with_uncertain_tables_matches_exact():
    personas, evidence, prior = global_world()
    exact = condition(personas, evidence, model="global", method="exact", table_prior=prior).weights
    post = condition(personas, evidence, model="global", method="mcmc", table_prior=prior,
                     num_chains=2, num_samples=200, warmup_steps=100)
    probs = post.weight_samples  # [2, 200, K] P(h | D, tables) per draw; its mean is P(h | D)
    ess = chain_diagnostics({"p": probs})["ess_min"]
    assert torch.all((post.weights - exact).abs() <= 4 * mcse(probs, ess)), (post.weights, exact)
    assert post.persona_samples.shape == (2, 200) and post.table_samples.shape == (2, 200, 3, 6)


def test_both_potentials_draw_the_same_chain():
    _, _, _, args, kwargs = mixture_world(1)
    a, b = (run_mcmc(persona_model, args, kwargs, seed=4, num_chains=1, num_samples=20, warmup_steps=20,
                     potential=p) for p in ("marginal", "enumerate"))
    assert a.diagnostics["potential"] == "marginal" and b.diagnostics["potential"] == "enumerate"
    assert torch.allclose(a.samples["w"], b.samples["w"], atol=1e-8)


def test_svi_initialisation_and_uniform_start():
    personas, evidence, _, args, kwargs = mixture_world(2)
    exact = condition(personas, evidence, model="mixture", method="exact", alpha=1.0).weights
    for init in ("svi", "uniform"):
        result = run_mcmc(persona_model, args, kwargs, seed=1, num_chains=2, num_samples=100, warmup_steps=100,
                          init=init, svi_steps=100)
        w = result.samples["w"]
        assert result.diagnostics["init"] == init
        assert torch.all((w.mean((0, 1)) - exact).abs() <= 4 * mcse(w, result.diagnostics["ess_min"]))


def test_diagnostics_are_arviz_rank_normalised_rhat_and_bulk_ess():
    import arviz as az  # only here: the toolkit reaches ArviZ through inference.diagnostics

    gen = torch.Generator().manual_seed(0)
    samples = {"x": torch.randn(4, 100, 2, generator=gen, dtype=torch.float64),
               "y": torch.rand(4, 100, generator=gen, dtype=torch.float64) + torch.arange(4.0)[:, None]}  # stuck
    diag = chain_diagnostics(samples)
    for name, x in samples.items():
        data = az.convert_to_dataset({name: x.numpy()})
        assert diag["r_hat"][name] == pytest.approx(float(az.rhat(data)[name].max()), rel=1e-12)
        assert diag["ess"][name] == pytest.approx(float(az.ess(data, method="bulk")[name].min()), rel=1e-12)
    assert diag["r_hat_max"] == diag["r_hat"]["y"] > 1.5 and diag["ess_min"] == diag["ess"]["y"]
    assert diag["r_hat"]["x"] < 1.05 and 200 < diag["ess"]["x"] <= 800
    assert math.isnan(chain_diagnostics({"x": samples["x"][:2, :3]})["ess_min"])  # too few draws


def test_divergences_are_recorded_per_draw():
    _, _, _, args, kwargs = mixture_world(0)
    result = run_mcmc(persona_model, args, kwargs, num_chains=2, num_samples=30, warmup_steps=10, max_tree_depth=2)
    assert isinstance(result, MCMCResult)
    assert result.diverging.shape == (2, 30) and result.diverging.dtype == torch.bool
    assert result.diagnostics["divergences"] == int(result.diverging.sum())


@pytest.mark.parametrize("potential", ["marginal", "enumerate"])
def test_chains_in_workers_draw_what_chains_in_turn_draw(potential):
    _, _, _, args, kwargs = mixture_world(1)
    runs = [run_mcmc(persona_model, args, kwargs, seed=3, num_chains=3, num_samples=15, warmup_steps=15,
                     potential=potential, chain_workers=workers) for workers in (1, 2)]
    one, two = runs
    for name in one.samples:
        assert torch.equal(one.samples[name], two.samples[name])
    assert torch.equal(one.discrete["persona"], two.discrete["persona"]) and torch.equal(one.diverging, two.diverging)
    assert {k: v for k, v in one.diagnostics.items() if not k.endswith("seconds")} == \
        {k: v for k, v in two.diagnostics.items() if not k.endswith("seconds")}


def test_default_chain_workers_fit_the_cores_and_threads():
    from inference.conditioning.chains import chain_workers

    cores = len(os.sched_getaffinity(0))
    assert chain_workers(None, 64, 1) == min(64, cores) and chain_workers(None, 64, cores) == 1
    assert chain_workers(None, 1, 1) == 1 and chain_workers(8, 3, 1) == 3 and chain_workers(1, 4, 1) == 1
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert chain_workers(None, 64, 1) == 1  # another thread: forking could deadlock the workers
        assert chain_workers(2, 64, 1) == 2  # unless asked for
    finally:
        stop.set()
        other.join()


def test_sampling_uses_one_thread_and_restores_the_callers(monkeypatch):
    from inference.conditioning import chains

    _, _, _, args, kwargs = mixture_world(0)
    seen, original = [], chains.run_chain

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return original(*a, **k)

    def broken(*a, **k):
        seen.append(torch.get_num_threads())
        raise RuntimeError("chain failed")

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.delenv("PSM_THREADS", raising=False)
        monkeypatch.setattr(chains, "run_chain", spy)
        run_mcmc(persona_model, args, kwargs, num_chains=1, num_samples=5, warmup_steps=5)
        assert seen == [1] and torch.get_num_threads() == 2
        monkeypatch.setenv("PSM_THREADS", "2")
        torch.set_num_threads(1)
        run_mcmc(persona_model, args, kwargs, num_chains=1, num_samples=5, warmup_steps=5)
        assert seen == [1, 2] and torch.get_num_threads() == 1
        monkeypatch.setattr(chains, "run_chain", broken)
        with pytest.raises(RuntimeError, match="chain failed"):
            run_mcmc(persona_model, args, kwargs, num_chains=1, num_samples=5, warmup_steps=5)
        assert seen == [1, 2, 2] and torch.get_num_threads() == 1  # restored after the error too
        monkeypatch.setenv("PSM_THREADS", "many")
        with pytest.raises(InputError, match="PSM_THREADS.*'many'") as info:
            run_mcmc(persona_model, args, kwargs, num_chains=1, num_samples=5, warmup_steps=5)
        assert "\n" not in str(info.value) and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_through_condition_with_arviz():
    personas, evidence, _, _, _ = mixture_world(0)
    post = condition(personas, evidence, model="mixture", method="mcmc", seed=2, num_chains=2, num_samples=60,
                     warmup_steps=60)
    assert post.weight_samples.shape == (2, 60, K) and post.persona_samples.shape == (2, 60, D)
    assert {"r_hat_max", "ess_min", "divergences"} <= set(post.diagnostics)
    idata = post.to_arviz()
    assert idata.sample_stats["diverging"].shape == (2, 60)
    numbers = convergence(idata)
    assert numbers["divergences"] == post.diagnostics["divergences"]
    assert math.isfinite(numbers["r_hat_max"]) and math.isfinite(numbers["ess_min"])


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(nonsense=1), ["nonsense", "valid options", "num_chains", "warmup_steps"]),
        (dict(num_chains=0), ["num_chains"]),
        (dict(num_samples=0), ["num_samples"]),
        (dict(warmup_steps=-1), ["warmup_steps"]),
        (dict(target_accept_prob=1.0), ["target_accept_prob"]),
        (dict(init="median"), ["median", "prior", "svi", "uniform"]),
        (dict(potential="jit"), ["jit", "enumerate", "marginal"]),
        (dict(chain_workers=0), ["chain_workers"]),
    ],
)
def test_bad_options_raise_input_error(options, words):
    _, _, _, args, kwargs = mixture_world(0)
    with pytest.raises(InputError) as info:
        run_mcmc(persona_model, args, kwargs, **options)
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_marginal_potential_refuses_other_models_and_minibatches():
    _, _, z, args, kwargs = mixture_world(0)
    with pytest.raises(InputError, match="enumerate"):
        run_mcmc(poutine.condition(persona_model, data={"persona": z}), args, kwargs, potential="marginal")
    with pytest.raises(InputError, match="subsample_size"):
        run_mcmc(persona_model, args, dict(kwargs, subsample_size=5))
    personas, evidence, _, _, _ = mixture_world(0)
    with pytest.raises(InputError, match="valid options"):
        condition(personas, evidence, model="mixture", method="mcmc", guide="normal")
