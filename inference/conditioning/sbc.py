"""Simulation-based calibration (Talts et al. 2018) of every model and method, and ``psm sbc``.

    result = simulation_based_calibration("mixture", "svi", num_sims=200, seed=0)
    result.ranks["w[0]"]      # [N] rank of the true w_0 among L posterior draws, in 0..L
    result.p_values           # parameter -> p-value of a chi-square test of uniform ranks
    plot_ranks(result)        # rank histograms with the 99% band of a uniform histogram

For ``i = 1..N``: draw parameters from the prior and evidence from the model
(:func:`models.mixture.persona_model` run forward under ``poutine.trace``),
condition with the method (:func:`inference.condition.condition`), and count
the posterior draws below the true value. When the posterior is right, the
true value is one more draw from it, so its rank among ``L`` draws is uniform
on ``{0..L}`` (exact methods: ``L`` iid draws; SVI: ``L`` draws from the
guide fitted in ``num_steps=400`` steps; MCMC: one NUTS chain of 200 warm-up
steps and ``L * thin`` draws, every ``thin``-th kept, ``thin=4``; each engine
option can be overridden). Ties (the discrete persona ``h``, a chain
that did not move) are broken at random, which keeps the rank uniform
(Talts et al. 2018, Modrák et al. 2023).

Models (``MODELS``; fixed known quantities are drawn once per run from the seed):

=================  ==================  =================================================
model              methods             parameters checked
=================  ==================  =================================================
``mixture``        exact, svi, mcmc    ``w[k]``: ``w ~ Dirichlet(alpha)`` over known personas
``global``         exact               ``h``: ``h ~ pi``, known tables
``global-tables``  exact, svi, mcmc    ``h`` and ``trans[hmap,0,v]``: the first transition
                                       row of persona ``hmap``, tables ~ anchored Dirichlet
=================  ==================  =================================================

``hmap`` is the persona of highest exact posterior probability given the
evidence: a function of the data only, so ranks of ``trans[hmap, 0, v]`` stay
uniform (a quantity chosen by the *true* ``h`` would not be: the true value
and the posterior draws would no longer be exchangeable). It is the row the
evidence informs most. Persona and table draws are joint for every method.

Uniformity: a chi-square test over near-equal bins of ranks (:mod:`inference.conditioning.sbc_ranks`).

``beta`` is the exponent the method conditions with; simulations always use
``beta = 1``, so ``beta != 1`` is a deliberately mis-calibrated posterior
(over-confident above 1), which the test must detect. SBC cannot see every
error: ``beta = 0`` (posterior = prior, the data ignored) passes it.

The default world is small and ambiguous on purpose: 3 personas over 4
tokens, order 1, every row ~ Dirichlet(3) (flat-ish personas), evidence of
``WORLD_SIZES[model]`` documents x tokens, so the posterior is neither the
prior nor certain (a certain discrete posterior makes every rank a tie).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pyro import poutine
from torch import Tensor
from tqdm.auto import tqdm

from inference.conditioning import exact
from inference.conditioning.condition import condition
from inference.conditioning.sbc_models import (  # noqa: F401 (re-exported)
    DEFAULT_DRAWS,
    ENGINE_DEFAULTS,
    MAX_DRAWS,
    MAX_SIMS,
    MODEL_HELP,
    MODELS,
    WORLD_SIZES,
)
from inference.conditioning.sbc_ranks import (  # noqa: F401 (re-exported: the public SBC API)
    BAND,
    MAX_BINS,
    SBCResult,
    bin_edges,
    default_bins,
    plot_ranks,
    rank_histogram,
    rank_statistic,
    uniformity_p_value,
)
from models.counts import Evidence, make_evidence, total_counts
from models.errors import InputError
from models.mixture import persona_model
from models.personas import MarkovPersonas, TablePrior, anchored_table_prior, random_personas


@dataclass(frozen=True)
class _Setup:
    model: str
    method: str
    personas: MarkovPersonas
    num_docs: int
    doc_len: int
    alpha: Tensor | None  # [K], mixture only
    table_prior: TablePrior | None
    beta: float
    num_draws: int
    thin: int
    engine: dict[str, Any]


def check_model_method(model: str, method: str) -> None:
    """One-line :class:`InputError` for an unknown model or a method the model does not offer."""
    if model not in MODELS:
        raise InputError(f"unknown SBC model {model!r}; choose one of {', '.join(MODELS)}")
    if method not in MODELS[model]:
        raise InputError(f"method {method!r} is not available for SBC model {model!r}; "
                         f"choose one of {', '.join(MODELS[model])}")


def simulation_based_calibration(
    model: str = "mixture",
    method: str = "exact",
    num_sims: int = 200,
    seed: int = 0,
    num_draws: int = DEFAULT_DRAWS,
    progress: bool = False,
    *,
    num_personas: int = 3,
    vocab_size: int = 4,
    order: int = 1,
    concentration: float = 3.0,
    num_docs: int | None = None,
    doc_len: int | None = None,
    alpha: float = 1.0,
    table_strength: float = 10.0,
    beta: float = 1.0,
    thin: int = 4,
    num_bins: int | None = None,
    **engine_options: Any,
) -> SBCResult:
    """Run simulation-based calibration of ``method`` on ``model``.

    Parameters
    ----------
    model : {"mixture", "global", "global-tables"}
        The SBC model (module docstring).
    method : {"exact", "svi", "mcmc"}
        Inference method (``MODELS[model]`` lists those available).
    num_sims : int
        ``N >= 1`` simulations.
    seed : int
        Seed of the personas, of every simulation and of every conditioning.
    num_draws : int
        ``L`` posterior draws per simulation, ``1 <= L <= MAX_DRAWS``.
    progress : bool
        tqdm progress bar over simulations.
    num_personas, vocab_size, order, concentration : int, int, int, float
        The known personas, drawn once by :func:`models.personas.random_personas`.
    num_docs, doc_len : int, optional
        Evidence size per simulation (default ``WORLD_SIZES[model]``).
    alpha : float
        Dirichlet concentration of the mixture weights (``mixture``).
    table_strength : float
        Strength of the anchored table prior (``global-tables``).
    beta : float
        Exponent the method conditions with (simulation uses 1; see the module docstring).
    thin : int
        MCMC thinning: ``L * thin`` draws are made and every ``thin``-th kept.
    num_bins : int, optional
        Chi-square / histogram bins (default ``min(20, L + 1, N // 5)``, at least 2).
    **engine_options
        Passed to :func:`inference.condition.condition` over ``ENGINE_DEFAULTS``
        (e.g. ``guide="normal"``, ``num_steps``, ``warmup_steps``).

    Returns
    -------
    SBCResult
    """
    check_model_method(model, method)
    num_sims = _check_int("num_sims", num_sims, 1, MAX_SIMS)
    seed = _check_int("seed", seed, 0, 2**32 - 1)
    num_draws = _check_int("num_draws", num_draws, 1, MAX_DRAWS)
    thin = _check_int("thin", thin, 1, 1000)
    num_bins = _check_int("num_bins", default_bins(num_sims, num_draws) if num_bins is None else num_bins,
                          2, num_draws + 1)
    _check_engine_options(method, engine_options)
    default_docs, default_len = WORLD_SIZES[model]
    num_docs = _check_int("num_docs", default_docs if num_docs is None else num_docs, 1, 10_000)
    doc_len = _check_int("doc_len", default_len if doc_len is None else doc_len, 1, 10_000)
    _check_world(alpha, table_strength, concentration, beta)

    start = time.perf_counter()
    personas = random_personas(num_personas, vocab_size, order, concentration, seed=seed)
    engine = {**ENGINE_DEFAULTS.get(method, {}), **engine_options}
    if method == "svi":
        engine["num_samples"] = num_draws
    elif method == "mcmc":
        engine["num_samples"] = math.ceil(num_draws * thin / engine["num_chains"])
    setup = _Setup(
        model, method, personas, num_docs, doc_len,
        alpha=torch.full((num_personas,), float(alpha), dtype=torch.float64) if model == "mixture" else None,
        table_prior=anchored_table_prior(personas, table_strength) if model == "global-tables" else None,
        beta=float(beta), num_draws=num_draws, thin=thin, engine=engine,
    )
    ranks, engine_stats = _simulate_and_rank(setup, num_sims, seed, progress)
    p_values = {name: uniformity_p_value(r, num_draws, num_bins) for name, r in ranks.items()}
    options = dict(num_personas=num_personas, vocab_size=vocab_size, order=order, concentration=concentration,
                   num_docs=num_docs, doc_len=doc_len, beta=float(beta), seed=seed,
                   **({"alpha": alpha} if model == "mixture" else {}),
                   **({"table_strength": table_strength} if model == "global-tables" else {}),
                   **({"thin": thin} if method == "mcmc" else {}), engine=engine)
    return SBCResult(model, method, num_sims, num_draws, ranks, p_values, min(p_values.values()), num_bins,
                     time.perf_counter() - start, options, _summarise(method, engine_stats))


def _simulate_and_rank(setup: _Setup, num_sims: int, seed: int, progress: bool
                       ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """For each simulation: truth and evidence, the posterior, the rank of every truth; and the engine stats."""
    seeds = np.random.SeedSequence(seed).generate_state(3 * num_sims).reshape(num_sims, 3)  # uint32
    ranks: dict[str, list[int]] = {}
    engine_stats: list[dict[str, Any]] = []
    mixture = setup.model == "mixture"
    for sim_seed, cond_seed, tie_seed in tqdm(seeds, disable=not progress, desc=f"SBC {setup.model}/{setup.method}"):
        truth, evidence = simulate(setup, int(sim_seed))
        posterior = condition(setup.personas, evidence, "mixture" if mixture else "global", setup.method,
                              setup.beta, alpha=setup.alpha if mixture else 1.0,
                              table_prior=setup.table_prior, seed=int(cond_seed), **setup.engine)
        draws = posterior_draws(setup, posterior)
        gen = np.random.default_rng(int(tie_seed))
        for name, value in truth.items():
            ranks.setdefault(name, []).append(rank_statistic(value, draws[name], gen))
        engine_stats.append(posterior.diagnostics)
    return {name: np.asarray(r, dtype=np.int64) for name, r in ranks.items()}, engine_stats


def _check_engine_options(method: str, engine_options: dict[str, Any]) -> None:
    if method == "exact" and engine_options:
        raise InputError(f"method 'exact' takes no engine options, got {', '.join(sorted(engine_options))}")
    if method == "svi" and engine_options.get("guide") is not None:
        from inference.conditioning.latents import GUIDES

        if engine_options["guide"] not in GUIDES:
            raise InputError(f"unknown SVI guide {engine_options['guide']!r}; choose one of {', '.join(GUIDES)}")


def _check_world(alpha: float, table_strength: float, concentration: float, beta: float) -> None:
    for name, value in (("alpha", alpha), ("table_strength", table_strength), ("concentration", concentration)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
        raise InputError(f"beta must be a finite number >= 0, got {beta!r}")


def simulate(setup: _Setup, seed: int) -> tuple[dict[str, Tensor], Evidence]:
    """Draw parameters from the prior and evidence given them, by running the model forward.

    Returns
    -------
    truth : dict of str to Tensor
        Scalar true value of every checked parameter (module docstring).
    evidence : Evidence
        ``[D, T]`` simulated documents.
    """
    model = "mixture" if setup.model == "mixture" else "global"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        trace = poutine.trace(persona_model).get_trace(
            setup.personas, setup.num_docs, setup.doc_len, evidence=model, alpha=setup.alpha,
            table_prior=setup.table_prior,
        )
    nodes = trace.nodes
    evidence = make_evidence(nodes["tokens"]["value"].long().numpy(), vocab_size=setup.personas.vocab_size)
    if setup.model == "mixture":
        return {f"w[{k}]": w for k, w in enumerate(nodes["w"]["value"])}, evidence
    truth = {"h": nodes["persona"]["value"].reshape(())}
    if setup.table_prior is not None:
        row = nodes["trans"]["value"][focus_persona(setup, evidence), 0]  # [V] first transition row of hmap
        truth.update({f"trans[hmap,0,{v}]": p for v, p in enumerate(row)})
    return truth, evidence


def focus_persona(setup: _Setup, evidence: Evidence) -> int:
    """``hmap``: the persona of highest exact posterior probability (beta = 1), a function of the evidence only."""
    totals = total_counts(evidence, setup.personas.vocab_size, setup.personas.order)  # [F]
    log_w, _ = exact.global_posterior_dirichlet(setup.personas.prior.log(), setup.table_prior, totals, 1.0)
    return int(log_w.argmax())


def posterior_draws(setup: _Setup, posterior: Any) -> dict[str, Tensor]:
    """``[L]`` posterior draws of every checked parameter from a :class:`~inference.condition.Posterior`.

    Persona and table draws are joint for every method (for ``exact``: ``h_l ~ P(h | D)``,
    then the rows of ``h_l`` from their posterior and the other rows from their prior).
    """
    V = setup.personas.vocab_size
    if setup.model == "mixture":
        w = _select(posterior.weight_samples, setup)  # [L, K]
        return {f"w[{k}]": w[:, k] for k in range(w.shape[-1])}
    draws = {"h": _select(posterior.persona_samples, setup)}  # [L]
    if setup.table_prior is None:
        return draws
    hmap = focus_persona(setup, posterior.evidence)
    rows = _select(posterior.table_samples[..., hmap, V : 2 * V].exp(), setup)  # [L, V] trans[hmap, 0, :]
    draws.update({f"trans[hmap,0,{v}]": rows[:, v] for v in range(V)})
    return draws


def _select(samples: Tensor, setup: _Setup) -> Tensor:
    """``[L, ...]`` from ``[chains, draws, ...]``: every ``thin``-th MCMC draw, else the first ``L`` (iid)."""
    flat = samples.flatten(0, 1)
    step = setup.thin if setup.method == "mcmc" else 1
    out = flat[::step][: setup.num_draws]
    if len(out) < setup.num_draws:
        raise InputError(f"the method returned {len(flat)} draws, fewer than num_draws={setup.num_draws} x thin={step}")
    return out


def _summarise(method: str, stats: list[dict[str, Any]]) -> dict[str, Any]:
    if method == "svi":
        return {"converged_fraction": float(np.mean([s["converged"] for s in stats])),
                "median_steps": float(np.median([s["steps"] for s in stats]))}
    if method == "mcmc":
        ess = [s["ess_min"] for s in stats if s.get("ess_min") == s.get("ess_min")]
        return {"divergences": int(sum(s["divergences"] for s in stats)),
                "median_ess_min": float(np.median(ess)) if ess else float("nan")}
    return {}


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise InputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)
