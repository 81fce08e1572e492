"""NUTS for the persona models, returning :class:`MCMCResult`.

    result = run_mcmc(persona_model, args, model_kwargs, num_chains=4, num_samples=500)
    result.samples["w"]          # [chains, draws, K]
    result.discrete["persona"]   # [chains, draws, D] (mixture) or [chains, draws] (global)
    result.diagnostics           # r_hat_max, ess_min, divergences, ...

NUTS samples the continuous latents (``w``; ``init``/``trans`` when the tables
are uncertain) on their unconstrained scale, with the discrete ``persona``
summed out. Two potentials, the same density (a test checks they agree):

``enumerate``
    Pyro's own: ``NUTS(model, max_plate_nesting=1)`` enumerates the persona
    site through ``TraceEnum``. Works for any enumerable model, e.g. one
    wrapped in ``poutine.condition``.
``marginal``
    By hand (:mod:`inference.conditioning.potentials`): the persona summed out
    from sufficient statistics (DESIGN.md §6), value and analytic gradient
    computed together in NumPy, the latents on Pyro's own stick-breaking scale,
    so from one seed both potentials draw the same chain up to rounding. For
    :func:`models.mixture.persona_model` and any model that offers one
    (:func:`marginal_potential_of`; the attribution model does); about 10x the
    ESS per second of ``enumerate`` on the benchmark (``benchmarks/bench_nuts.py``).
``auto`` (default) takes ``marginal`` when the model has one and ``enumerate``
otherwise.

Chains (:mod:`inference.conditioning.chains`): chain ``c`` is one ``MCMC`` run
seeded by word ``c`` of ``numpy.random.SeedSequence(seed)``; the chains run
``chain_workers`` at a time in forked processes (default: one per chain, up to
the usable cores) or one after another, with the same draws either way, under
:func:`inference.runtime.torch_threads` (one torch thread unless ``PSM_THREADS``
says otherwise). ``MCMC.get_samples`` leaves out the summed-out persona, so
every draw is completed by a draw of the persona given it (temperature 1),
seeded by word ``num_chains``: by the hand-written potential itself
(``marginal``; no model tracing) or by ``infer_discrete``.

Initialisation (``init=``): ``prior`` (a prior draw per chain), ``uniform``
(uniform in ``(-2, 2)`` on the unconstrained scale), ``svi`` (a draw per chain
from a Dirichlet-guide SVI fit of ``svi_steps`` steps; the remedy for multimodal
learned personas). Diagnostics: ArviZ's rank-normalised split R-hat and bulk
ESS over every entry of every continuous latent (:func:`inference.diagnostics.rhat_ess`).

Long runs: with ``checkpoint_dir`` and ``checkpoint_every=N``, after every
``N``-th finished chain (in chain order) and after the last one, every finished
chain is saved (:mod:`inference.storage.checkpoints`, ``mcmc-<chains done>/``;
safetensors and JSON, no pickle). ``resume=True`` loads the newest checkpoint
(a fresh run when there is none), skips the finished chains and re-runs the
others from their start. As the chains and the persona draws have their own
seeds, the result is bit for bit that of an uninterrupted run (same machine and
thread count), at the cost of redoing the chains that were running (one per
worker). Mid-chain checkpoints are not taken: Pyro's ``MCMC`` keeps the NUTS
adaptation state (step size, mass-matrix estimates, adaptation windows) in
private kernel attributes with no public save/restore. ``init="svi"``
recomputes its (seeded, deterministic) SVI starts when chains remain to run.
A checkpoint of a run with other options, seed, model or data is
refused (:class:`~models.errors.InputError`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyro
import torch
from torch import Tensor

from inference.conditioning.chains import (
    ChainTask,
    chain_workers,
    chains_state,
    cpu_seconds,
    diverging_flags,
    restore_chains,
    run_chains,
)
from inference.conditioning.latents import (
    LatentSites,
    check_int,
    check_positive,
    check_unknown_options,
    latent_sites,
    recover_discrete,
)
from inference.conditioning.potentials import persona_potential
from inference.conditioning.svi import run_svi
from inference.runtime import torch_threads
from inference.storage.checkpoints import Checkpoints, open_checkpoints
from inference.storage.encoding import fingerprint
from models.errors import InputError
from models.mixture import persona_model

INITS = ("prior", "uniform", "svi")
POTENTIALS = ("auto", "enumerate", "marginal")
#: draws per chain that split R-hat and ESS need
MIN_DRAWS = 4
#: in every checkpoint's fingerprint: 2 = NumPy potentials with analytic gradients, seeded discrete recovery
SAMPLER_VERSION = 2


@dataclass(frozen=True)
class MCMCResult:
    """What :func:`run_mcmc` returns.

    Attributes
    ----------
    samples : dict of str to Tensor
        ``[chains, draws, ...]`` draws of every continuous latent: ``w`` ``[c, s, K]``;
        ``init`` ``[c, s, K, V]`` and ``trans`` ``[c, s, K, C, V]`` when the tables are uncertain.
    discrete : dict of str to Tensor
        ``persona`` ``[chains, draws]`` (global) or ``[chains, draws, D]`` (mixture),
        drawn given each draw (empty when the persona is observed).
    diverging : Tensor
        ``[chains, draws]`` bool, whether the NUTS trajectory of the draw diverged.
    diagnostics : dict
        JSON-ready: ``r_hat_max``, ``ess_min`` (over every latent entry), ``divergences``
        (total), ``r_hat`` and ``ess`` per site, ``acceptance_rate`` and ``step_size`` per
        chain, ``potential``, ``init``, ``num_chains``, ``num_samples``, ``warmup_steps``,
        ``sampling_seconds`` (set-up, SVI initialisation and NUTS; wall), ``sampling_cpu_seconds``
        (the same, CPU time of this process and its chain workers) and ``discrete_seconds``
        (the persona draws); nothing else depends on ``chain_workers``.
    seconds : float
        Wall time of this call.
    resumed_from : int or None
        Finished chains loaded from a checkpoint (None: the call started afresh).
    """

    samples: dict[str, Tensor]
    discrete: dict[str, Tensor]
    diverging: Tensor
    diagnostics: dict[str, Any]
    seconds: float
    resumed_from: int | None = None


@dataclass(frozen=True)
class _Options:
    """The checked options of one :func:`run_mcmc` call (all but ``chain_workers`` shape the draws)."""

    seed: int
    num_chains: int
    num_samples: int
    warmup_steps: int
    init: str
    target_accept_prob: float
    max_tree_depth: int
    potential: str
    svi_steps: int
    chain_workers: int | None


def run_mcmc(
    model: Callable,
    args: tuple,
    model_kwargs: dict[str, Any],
    *,
    seed: int = 0,
    progress: bool = False,
    num_chains: int = 4,
    num_samples: int = 500,
    warmup_steps: int = 500,
    init: str = "prior",
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    potential: str = "auto",
    svi_steps: int = 500,
    chain_workers: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    **unknown: Any,
) -> MCMCResult:
    """Sample the continuous latents of ``model(*args, **model_kwargs)`` with NUTS.

    Sampling runs with one torch thread (``PSM_THREADS`` overrides) and restores the
    caller's thread count, also after an error (:func:`inference.runtime.torch_threads`).

    Parameters
    ----------
    model, args, model_kwargs : callable, tuple, dict
        A Pyro model with enumerable discrete latents, e.g. :func:`models.mixture.persona_model`
        (possibly wrapped in ``poutine.condition``), and its arguments.
    seed, progress : int, bool
        Seed (chain ``c`` runs from word ``c`` of ``SeedSequence(seed)``); progress bars.
    num_chains, num_samples, warmup_steps : int
        Chains, kept draws per chain, and adaptation steps per chain.
    init, potential : str
        ``prior``/``uniform``/``svi`` starts; ``auto``/``enumerate``/``marginal`` (module docstring).
    target_accept_prob, max_tree_depth : float, int
        NUTS step-size adaptation target, in ``(0, 1)``; largest tree depth.
    svi_steps : int
        SVI steps of ``init="svi"``.
    chain_workers : int, optional
        Processes running chains at once (1: one after another, in this process); by default
        one per chain, up to the usable cores over ``PSM_THREADS``. The draws do not depend on it.
    checkpoint_dir, checkpoint_every, resume : path, int, bool
        Checkpoint folder (``mcmc-<chains done>/``, the newest two kept), every how many finished
        *chains* to save, and whether to continue from the newest (module docstring).

    Returns
    -------
    MCMCResult

    Raises
    ------
    InputError
        An unknown option, a bad value (``PSM_THREADS`` too), or a checkpoint that is
        damaged or from a different run.
    """
    check_unknown_options("MCMC", unknown, run_mcmc)
    builder = marginal_potential_of(model)
    opts = _checked_options(
        model_kwargs, builder, seed=seed, num_chains=num_chains, num_samples=num_samples,
        warmup_steps=warmup_steps, init=init, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
        potential=potential, svi_steps=svi_steps, chain_workers=chain_workers)

    def run() -> dict[str, Any]:  # the fingerprint a checkpoint must carry (hashes the data: only when used)
        fields = {k: v for k, v in asdict(opts).items() if k != "chain_workers"}
        return {"engine": "mcmc", "sampler": SAMPLER_VERSION, **fields,
                "svi_steps": opts.svi_steps if opts.init == "svi" else None,
                "model": fingerprint(model), "data": fingerprint(args, model_kwargs)}

    with torch_threads():
        store = open_checkpoints(checkpoint_dir, checkpoint_every, resume, kind="mcmc", run=run)
        return _sample(model, args, model_kwargs, opts, builder, store, resume, progress)


def _checked_options(model_kwargs: dict[str, Any], builder: Callable | None, **raw: Any) -> _Options:
    """The options of :func:`run_mcmc`, checked, with ``potential="auto"`` resolved."""
    ints = {name: check_int(name, raw[name], low) for name, low in
            (("num_chains", 1), ("num_samples", 1), ("warmup_steps", 0), ("max_tree_depth", 1), ("svi_steps", 1))}
    if raw["chain_workers"] is not None:
        check_int("chain_workers", raw["chain_workers"], 1)
    target = check_positive("target_accept_prob", raw["target_accept_prob"])
    if target >= 1:
        raise InputError(f"target_accept_prob must lie in (0, 1), got {target}")
    if raw["init"] not in INITS:
        raise InputError(f"unknown MCMC init {raw['init']!r}; choose one of {', '.join(INITS)}")
    potential = raw["potential"]
    if potential not in POTENTIALS:
        raise InputError(f"unknown MCMC potential {potential!r}; choose one of {', '.join(POTENTIALS)}")
    if model_kwargs.get("subsample_size"):
        raise InputError("NUTS needs every document: subsample_size is an SVI option")
    if potential == "auto":
        potential = "marginal" if builder is not None else "enumerate"
    if potential == "marginal" and builder is None:
        raise InputError("potential 'marginal' needs a hand-written potential (models.mixture.persona_model and "
                         "inference.attribution.attribution_model have one); use 'enumerate'")
    return _Options(**{**raw, **ints, "target_accept_prob": target, "potential": potential})


def _sample(model: Callable, args: tuple, model_kwargs: dict[str, Any], opts: _Options, builder: Callable | None,
            store: Checkpoints | None, resume: bool, progress: bool) -> MCMCResult:
    """Run (or resume) the chains, recover the discrete sites, and diagnose: the body of :func:`run_mcmc`."""
    start, cpu = time.perf_counter(), cpu_seconds()
    sites = latent_sites(model, args, model_kwargs)
    seeds = np.random.SeedSequence(opts.seed).generate_state(opts.num_chains + 1)  # chains, then discrete
    latest = store.latest() if store is not None and resume else None
    chains = [] if latest is None else restore_chains(latest[1], opts.num_chains, opts.num_samples,
                                                      list(sites.continuous), store.directory)
    resumed_from = None if latest is None else len(chains)
    todo = [(c, int(seeds[c])) for c in range(len(chains), opts.num_chains)]
    hand = builder(*args, **model_kwargs) if opts.potential == "marginal" else None
    task = _task(model, args, model_kwargs, opts, hand) if todo else None
    workers = chain_workers(opts.chain_workers, len(todo) or 1, torch.get_num_threads())
    for c, chain in run_chains(task, todo, workers, progress):
        chains.append(chain)
        if store is not None and (store.due(c + 1) or c + 1 == opts.num_chains):
            store.save(c + 1, chains_state(chains, opts.num_samples))
    samples = {name: torch.stack([chain.samples[name] for chain in chains]) for name in sites.continuous}  # [c, s, ...]
    diverging = diverging_flags(chains, opts.num_samples)
    sampled, cpu = time.perf_counter(), cpu_seconds() - cpu

    pyro.set_rng_seed(int(seeds[-1]))
    discrete = _discrete(model, args, model_kwargs, samples, sites, hand, progress)
    end = time.perf_counter()
    diagnostics = chain_diagnostics(samples)
    diagnostics.update(
        divergences=int(diverging.sum()), acceptance_rate=[chain.acceptance_rate for chain in chains],
        step_size=[chain.step_size for chain in chains], potential=opts.potential, init=opts.init,
        num_chains=opts.num_chains, num_samples=opts.num_samples, warmup_steps=opts.warmup_steps,
        sampling_seconds=sampled - start, sampling_cpu_seconds=cpu, discrete_seconds=end - sampled,
    )
    return MCMCResult(samples=samples, discrete=discrete, diverging=diverging, diagnostics=diagnostics,
                      seconds=end - start, resumed_from=resumed_from)


def _task(model: Callable, args: tuple, model_kwargs: dict[str, Any], opts: _Options, hand: Any) -> ChainTask:
    """What every chain runs: the potential (None: Pyro's) and, for ``init="svi"``, the SVI starts."""
    starts = _svi_starts(model, args, model_kwargs, opts.seed, opts.num_chains, opts.svi_steps) \
        if opts.init == "svi" else None
    return ChainTask(model, args, model_kwargs, hand, opts.init, starts, opts.num_samples, opts.warmup_steps,
                     opts.target_accept_prob, opts.max_tree_depth, torch.get_num_threads())


def _discrete(model: Callable, args: tuple, model_kwargs: dict[str, Any], samples: dict[str, Tensor],
              sites: LatentSites, hand: Any, progress: bool) -> dict[str, Tensor]:
    """Draws of the discrete sites given every draw: ``[chains, draws, ...]``. The hand-written
    potential draws the persona itself (the same conditional, no model tracing); otherwise
    ``infer_discrete``."""
    chains, draws = next(iter(samples.values())).shape[:2]
    flat = {k: v.flatten(0, 1) for k, v in samples.items()}  # [c * s, ...]
    if hand is not None and set(sites.discrete) == {"persona"}:
        discrete = {"persona": hand.sample_personas(flat)}
    else:
        discrete = recover_discrete(model, args, model_kwargs, flat, sites, progress=progress)
    return {k: v.reshape(chains, draws, *v.shape[1:]) for k, v in discrete.items()}


def marginal_potential_of(model: Callable) -> Callable | None:
    """The builder of ``model``'s hand-marginalised potential, or None.

    :func:`~models.mixture.persona_model` has :func:`~inference.potentials.persona_potential`;
    any other model may offer one as an attribute ``model.marginal_potential``: called with
    the model's arguments, it returns a potential with ``transforms`` and ``initial_params``
    (see :class:`~inference.potentials.DirichletPotential`).
    """
    if model is persona_model:
        return persona_potential
    return getattr(model, "marginal_potential", None)


def chain_diagnostics(samples: dict[str, Tensor]) -> dict[str, Any]:
    """Rank-normalised split R-hat and bulk ESS (ArviZ, :func:`inference.diagnostics.rhat_ess`) of
    ``[chains, draws, ...]`` samples.

    Returns
    -------
    dict
        ``r_hat_max`` and ``ess_min`` over every entry of every site, and the
        per-site ``r_hat`` (max) and ``ess`` (min). NaN with fewer than ``MIN_DRAWS``
        draws per chain (or one chain, for R-hat); NaN entries (e.g. a constant
        coordinate) are skipped.
    """
    from inference.diagnostics import rhat_ess  # ArviZ loads on first use, not with the package

    return rhat_ess({name: x.detach().double().numpy() for name, x in samples.items()})


def _svi_starts(model: Callable, args: tuple, model_kwargs: dict, seed: int, num_chains: int, steps: int
                ) -> dict[str, Tensor]:
    """``num_chains`` draws of the continuous latents from a Dirichlet-guide SVI fit: name -> ``[c, ...]``."""
    fit = run_svi(model, args, model_kwargs, seed=seed, guide="dirichlet", num_steps=steps,
                  num_samples=num_chains, tol=0.0)
    return {k: v[0] for k, v in fit.samples.items()}
