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
    By hand, from sufficient statistics (DESIGN.md §6): the per-document,
    per-persona log-likelihoods ``L [K, D]`` come from one sparse count pass
    (and are precomputed once when the tables are known), and the persona
    is summed out with one ``logsumexp``; the latents live on Pyro's own
    stick-breaking scale, computed in log space (:mod:`inference.conditioning.potentials`),
    so from one seed both potentials draw the same chain up to rounding. For
    :func:`models.mixture.persona_model` and any model that offers one
    (:func:`marginal_potential_of`; the attribution model does); about 5x the
    ESS per second of ``enumerate`` on the benchmark (``benchmarks/bench_nuts.py``).
``auto`` (default) takes ``marginal`` when the model has one and ``enumerate``
otherwise.

Chains run one after another, each a separate ``MCMC`` run seeded from
``numpy.random.SeedSequence(seed)`` (on 2 shared cores sequential chains beat
Pyro's multiprocessing, DESIGN.md §6). ``MCMC.get_samples`` leaves out the
enumerated persona, so every draw is completed by ``infer_discrete``
(temperature 1, ``poutine.condition`` inside it).

Initialisation (``init=``): ``prior`` (a prior draw per chain), ``uniform``
(Pyro's ``init_to_uniform``: uniform in ``(-2, 2)`` on the unconstrained
scale), ``svi`` (a draw per chain from a Dirichlet-guide SVI fit of
``svi_steps`` steps; spreads the chains over the posterior, the remedy for
multimodal learned personas).

Diagnostics use Pyro's ``split_gelman_rubin`` and ``effective_sample_size``
over every entry of every continuous latent (the max R-hat and the min ESS).

Long runs: checkpoints are taken at *chain* granularity. With
``checkpoint_dir`` and ``checkpoint_every=N``, after every ``N``-th finished
chain and after the last one, the draws, divergences, acceptance rate and step
size of every finished chain and the torch, Python and NumPy RNG states are
saved through :mod:`inference.storage.checkpoints` (``mcmc-<chains done>/``;
safetensors and JSON, no pickle). ``resume=True`` loads the newest checkpoint
(a fresh run when there is none), skips the finished chains and re-runs the
interrupted chain from its start. Each chain reseeds the global RNGs from its
own ``SeedSequence`` word before it starts, so a chain's draws do not depend
on whether earlier chains ran in this process, and the RNG states restored
from the checkpoint are those an uninterrupted run has before the discrete
recovery: the result is bit for bit that of an uninterrupted run (same machine
and thread count), at the cost of redoing at most one chain. Mid-chain
checkpoints are not taken: Pyro's ``MCMC`` keeps the NUTS adaptation state
(dual-averaging step size, Welford mass-matrix estimates, adaptation windows)
in private kernel attributes with no public save/restore. ``init="svi"``
recomputes its (seeded, deterministic) SVI starts when chains remain to run.
A checkpoint of a run with other options, seed, model or data is refused
(:class:`~models.errors.InputError`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer.autoguide import init_to_sample, init_to_uniform, init_to_value
from pyro.infer.mcmc import MCMC, NUTS
from pyro.ops.stats import effective_sample_size, split_gelman_rubin
from torch import Tensor

from inference.conditioning.latents import (
    MAX_PLATE_NESTING,
    check_int,
    check_positive,
    check_unknown_options,
    latent_sites,
    recover_discrete,
)
from inference.conditioning.potentials import persona_potential
from inference.conditioning.svi import run_svi
from inference.storage.checkpoints import open_checkpoints
from inference.storage.encoding import fingerprint, rng_state, set_rng_state
from models.errors import InputError
from models.mixture import persona_model

INITS = ("prior", "uniform", "svi")
POTENTIALS = ("auto", "enumerate", "marginal")
#: draws per chain that split R-hat and ESS need
MIN_DRAWS = 4


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
        drawn by ``infer_discrete`` given each draw (empty when the persona is observed).
    diverging : Tensor
        ``[chains, draws]`` bool, whether the NUTS trajectory of the draw diverged.
    diagnostics : dict
        JSON-ready: ``r_hat_max``, ``ess_min`` (over every latent entry), ``divergences``
        (total), ``r_hat`` and ``ess`` per site, ``acceptance_rate`` and ``step_size`` per
        chain, ``potential``, ``init``, ``num_chains``, ``num_samples``, ``warmup_steps``,
        ``sampling_seconds`` (set-up, SVI initialisation and NUTS) and ``discrete_seconds``
        (``infer_discrete``).
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
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    **unknown: Any,
) -> MCMCResult:
    """Sample the continuous latents of ``model(*args, **model_kwargs)`` with NUTS.

    Parameters
    ----------
    model : callable
        A Pyro model, e.g. :func:`models.mixture.persona_model` (possibly wrapped in
        ``poutine.condition``); discrete latents must be enumerable.
    args, model_kwargs : tuple, dict
        Its arguments.
    seed : int
        Seed; chain ``c`` runs from the ``c``-th state of ``SeedSequence(seed)``.
    progress : bool
        Show Pyro's progress bars.
    num_chains, num_samples, warmup_steps : int
        Chains, kept draws per chain, and adaptation steps per chain.
    init : {"prior", "uniform", "svi"}
        Initial point of each chain (module docstring).
    target_accept_prob : float
        NUTS step-size adaptation target, in ``(0, 1)``.
    max_tree_depth : int
        Largest NUTS tree depth.
    potential : {"auto", "enumerate", "marginal"}
        Which potential (module docstring).
    svi_steps : int
        SVI steps of ``init="svi"``.
    checkpoint_dir : path, optional
        Folder of the checkpoints (``mcmc-<chains done>/``; the newest two are kept).
    checkpoint_every : int, optional
        Save a checkpoint every this many finished *chains* (and after the last);
        chains are the unit, see the module docstring.
    resume : bool
        Continue from the newest checkpoint in ``checkpoint_dir``: finished chains
        are loaded, the interrupted one re-runs from its start.

    Returns
    -------
    MCMCResult

    Raises
    ------
    InputError
        For an unknown option or a bad value, or a checkpoint that is damaged or
        from a different run.
    """
    check_unknown_options("MCMC", unknown, run_mcmc)
    num_chains = check_int("num_chains", num_chains, 1)
    num_samples = check_int("num_samples", num_samples, 1)
    warmup_steps = check_int("warmup_steps", warmup_steps, 0)
    max_tree_depth = check_int("max_tree_depth", max_tree_depth, 1)
    svi_steps = check_int("svi_steps", svi_steps, 1)
    target_accept_prob = check_positive("target_accept_prob", target_accept_prob)
    if target_accept_prob >= 1:
        raise InputError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}")
    if init not in INITS:
        raise InputError(f"unknown MCMC init {init!r}; choose one of {', '.join(INITS)}")
    if potential not in POTENTIALS:
        raise InputError(f"unknown MCMC potential {potential!r}; choose one of {', '.join(POTENTIALS)}")
    if model_kwargs.get("subsample_size"):
        raise InputError("NUTS needs every document: subsample_size is an SVI option")
    builder = marginal_potential_of(model)
    if potential == "auto":
        potential = "marginal" if builder is not None else "enumerate"
    if potential == "marginal" and builder is None:
        raise InputError("potential 'marginal' needs a hand-written potential (models.mixture.persona_model and "
                         "inference.attribution.attribution_model have one); use 'enumerate'")

    def run() -> dict[str, Any]:  # the fingerprint a checkpoint must carry (hashes the data: only when used)
        return {
            "engine": "mcmc", "seed": seed, "num_chains": num_chains, "num_samples": num_samples,
            "warmup_steps": warmup_steps, "init": init, "target_accept_prob": target_accept_prob,
            "max_tree_depth": max_tree_depth, "potential": potential, "svi_steps": svi_steps if init == "svi" else None,
            "model": fingerprint(model), "data": fingerprint(args, model_kwargs),
        }

    store = open_checkpoints(checkpoint_dir, checkpoint_every, resume, kind="mcmc", run=run)

    start = time.perf_counter()
    sites = latent_sites(model, args, model_kwargs)
    chains: list[dict[str, Tensor]] = []
    diverging = torch.zeros(num_chains, num_samples, dtype=torch.bool)
    accept: list[float] = []
    step_size: list[float] = []
    resumed_from = None
    latest = store.latest() if store is not None and resume else None
    if latest is not None:
        resumed_from, state = latest
        chains, accept, step_size = _restore_chains(state, diverging, list(sites.continuous), store.directory)
        if len(chains) != resumed_from:
            raise InputError(f"{store.directory}: damaged MCMC checkpoint ({len(chains)} chains at {resumed_from})")
    hand = builder(*args, **model_kwargs) if potential == "marginal" else None
    todo = len(chains) < num_chains
    starts = _svi_starts(model, args, model_kwargs, seed, num_chains, svi_steps) if init == "svi" and todo else None
    if latest is not None:
        set_rng_state(state["rng"], store.directory)  # what an uninterrupted run holds after the last saved chain

    for c, chain_seed in enumerate(np.random.SeedSequence(seed).generate_state(num_chains)):
        if c < len(chains):
            continue  # finished before the checkpoint
        pyro.set_rng_seed(int(chain_seed))
        start_value = None if starts is None else {k: v[c] for k, v in starts.items()}
        options = dict(target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth)
        if hand is None:
            if init == "svi":
                strategy = init_to_value(values=start_value)
            else:
                strategy = init_to_sample if init == "prior" else init_to_uniform
            kernel = NUTS(model, max_plate_nesting=MAX_PLATE_NESTING, init_strategy=strategy, **options)
            mcmc = MCMC(kernel, num_samples, warmup_steps, disable_progbar=not progress)
            mcmc.run(*args, **model_kwargs)
        else:
            kernel = NUTS(potential_fn=hand, **options)
            mcmc = MCMC(kernel, num_samples, warmup_steps, initial_params=hand.initial_params(init, start_value),
                        transforms=hand.transforms, disable_progbar=not progress)
            mcmc.run()
        chains.append({k: v.detach() for k, v in mcmc.get_samples().items()})
        info = mcmc._diagnostics[0]  # the kernel's own numbers; MCMC.diagnostics() adds an R-hat needing 4+ draws
        diverging[c, torch.as_tensor(info["divergences"], dtype=torch.long)] = True
        accept.append(float(info["acceptance rate"]))
        step_size.append(float(kernel.step_size))
        if store is not None and (store.due(c + 1) or c + 1 == num_chains):
            store.save(c + 1, {"chains": chains, "diverging": diverging[: c + 1], "acceptance_rate": accept,
                               "step_size": step_size, "rng": rng_state()})
    samples = {name: torch.stack([chain[name] for chain in chains]) for name in sites.continuous}  # [c, s, ...]
    sampled = time.perf_counter()

    flat = {k: v.flatten(0, 1) for k, v in samples.items()}  # [c * s, ...]
    discrete = recover_discrete(model, args, model_kwargs, flat, sites, progress=progress)
    discrete = {k: v.reshape(num_chains, num_samples, *v.shape[1:]) for k, v in discrete.items()}
    end = time.perf_counter()
    diagnostics = chain_diagnostics(samples)
    diagnostics.update(
        divergences=int(diverging.sum()), acceptance_rate=accept, step_size=step_size, potential=potential,
        init=init, num_chains=num_chains, num_samples=num_samples, warmup_steps=warmup_steps,
        sampling_seconds=sampled - start, discrete_seconds=end - sampled,
    )
    return MCMCResult(samples=samples, discrete=discrete, diverging=diverging, diagnostics=diagnostics,
                      seconds=end - start, resumed_from=resumed_from)


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


def _restore_chains(state: dict[str, Any], diverging: Tensor, names: list[str], where: os.PathLike
                    ) -> tuple[list[dict[str, Tensor]], list[float], list[float]]:
    """The finished chains of a checkpoint (their draws, acceptance rates, step sizes); fills ``diverging``."""
    num_chains, num_samples = diverging.shape
    try:
        chains, accept, step_size = state["chains"], state["acceptance_rate"], state["step_size"]
        done = len(chains)
        flags = state["diverging"]
        ok = (1 <= done <= num_chains and len(accept) == len(step_size) == done
              and flags.shape == (done, num_samples) and flags.dtype == torch.bool
              and all(set(chain) == set(names) and all(v.shape[:1] == (num_samples,) for v in chain.values())
                      for chain in chains))
        if ok:
            diverging[:done] = flags
            return chains, [float(a) for a in accept], [float(h) for h in step_size]
    except (KeyError, TypeError, AttributeError, ValueError):
        pass
    raise InputError(f"{where}: damaged MCMC checkpoint (its chains do not match {num_chains} chains of "
                     f"{num_samples} draws of {', '.join(names)})")


def chain_diagnostics(samples: dict[str, Tensor]) -> dict[str, Any]:
    """Split R-hat and ESS (Pyro's estimators) of ``[chains, draws, ...]`` samples.

    Returns
    -------
    dict
        ``r_hat_max`` and ``ess_min`` over every entry of every site, and the
        per-site ``r_hat`` (max) and ``ess`` (min). NaN with fewer than ``MIN_DRAWS``
        draws per chain; NaN entries (e.g. a constant coordinate) are skipped.
    """
    r_hat, ess = {}, {}
    for name, x in samples.items():
        x = x.reshape(*x.shape[:2], -1).double()  # [c, s, n]
        if x.shape[1] < MIN_DRAWS:
            r_hat[name] = ess[name] = float("nan")
            continue
        r_hat[name] = _nan_reduce(split_gelman_rubin(x, chain_dim=0, sample_dim=1), max)
        ess[name] = _nan_reduce(effective_sample_size(x, chain_dim=0, sample_dim=1), min)
    values = [v for v in r_hat.values() if v == v]
    sizes = [v for v in ess.values() if v == v]
    return {"r_hat_max": max(values) if values else float("nan"), "ess_min": min(sizes) if sizes else float("nan"),
            "r_hat": r_hat, "ess": ess}


def _nan_reduce(x: Tensor, reduce: Callable) -> float:
    x = x[~torch.isnan(x)]
    return float(reduce(x)) if x.numel() else float("nan")


def _svi_starts(model: Callable, args: tuple, model_kwargs: dict, seed: int, num_chains: int, steps: int
                ) -> dict[str, Tensor]:
    """``num_chains`` draws of the continuous latents from a Dirichlet-guide SVI fit: name -> ``[c, ...]``."""
    fit = run_svi(model, args, model_kwargs, seed=seed, guide="dirichlet", num_steps=steps,
                  num_samples=num_chains, tol=0.0)
    return {k: v[0] for k, v in fit.samples.items()}
