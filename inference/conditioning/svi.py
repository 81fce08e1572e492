"""Stochastic variational inference for the persona models, returning :class:`SVIResult`.

    result = run_svi(persona_model, args, model_kwargs, guide="dirichlet", num_steps=2000)
    result.samples["w"]          # [1, S, K] draws of the persona weights from the fitted guide
    result.discrete["persona"]   # [1, S, D] (mixture) or [1, S] (global), one per guide draw
    result.losses                # [steps] the loss (-ELBO) of every step

The discrete ``persona`` site is summed out of the ELBO (``TraceEnum_ELBO`` with
``max_plate_nesting=1``): no guide ever sees it (the hand-written guide has no
such site, the autoguides get the model with it hidden by ``poutine.block``).
After fitting, each guide draw of the continuous latents is plugged into the
model (``poutine.condition`` *inside* ``infer_discrete``, DESIGN.md §6) and the
persona is drawn from its exact conditional (``temperature=1``).

Guides (``guide=``):

=============  =============================================================
``dirichlet``  (``auto``) a learnable Dirichlet for every Dirichlet latent:
               ``w``, and every row of ``init``/``trans`` when the tables
               are uncertain; initialised at the prior. The natural family
               here: with every document's persona observed the posterior of
               ``w`` *is* a Dirichlet, and with them enumerated it is a
               mixture of Dirichlets.
``delta``      ``AutoDelta`` (MAP) started from a prior draw
               (``init_to_sample``; the default ``init_to_median`` starts
               every persona alike and stays stuck).
``normal``     ``AutoNormal``: mean-field Gaussian on the unconstrained
               (stick-breaking) scale, started from a prior draw.
``mvn``        ``AutoMultivariateNormal``: full-covariance Gaussian there.
=============  =============================================================

Convergence rule: ``s_t = smoothing * s_{t-1} + (1 - smoothing) * loss_t`` (an
exponential moving average, ``s_0 = loss_0``). A step is *calm* when
``|s_t - s_{t-1}| / max(|s_t|, 1) < tol``; training stops, ``converged=True``,
after ``patience`` calm steps in a row, else after ``num_steps``. With a noisy
loss (sampled guides, minibatches) the smoothed change stays near
``(1 - smoothing) * noise / |loss|``, so ``tol`` must sit above that to
trigger; ``tol=0`` always runs every step.

Minibatching: ``subsample_size=B`` scores ``B`` random documents per step (the
model's ``documents`` plate subsamples and rescales by ``D / B``); draws and
discrete recovery always use every document.

Long runs: with ``checkpoint_dir`` and ``checkpoint_every=N`` the state after
every ``N``-th step, and after the last step of training, is saved through
:mod:`inference.storage.checkpoints` (tensors in safetensors, the rest in JSON, no
pickle): the step, the unconstrained guide parameters of the Pyro param store,
the optimiser state (``PyroOptim.get_state()``: per-parameter Adam moments and
step, decayed learning rate), the losses so far, the convergence-rule state and
the torch, Python and NumPy RNG states. ``resume=True`` continues from the
newest checkpoint (a fresh run when there is none): the guide is built, its
parameters are overwritten in place with the saved ones, the optimiser state
is handed to Pyro (loaded when each parameter's optimiser is created) and the
RNG states are restored last, so the remaining steps, the guide draws and the
discrete recovery are bit for bit those of an uninterrupted run (same machine
and thread count). A checkpoint of a run with other options, seed, model or
data is refused (:class:`~models.errors.InputError`); a checkpoint written when
training had ended resumes straight to the draws.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.infer import SVI, TraceEnum_ELBO
from torch import Tensor

from inference.conditioning.latents import (
    GUIDES,
    MAX_PLATE_NESTING,
    check_int,
    check_positive,
    check_unknown_options,
    draw_guide,
    latent_sites,
    make_guide,
    recover_discrete,
)
from inference.conditioning.svi_training import ConvergenceRule, SVIOptions, train  # noqa: F401 (re-exported)
from inference.storage.checkpoints import open_checkpoints
from inference.storage.encoding import fingerprint
from models.errors import InputError

#: gradient norm clipping of the optimiser
CLIP_NORM = 10.0


@dataclass(frozen=True)
class SVIResult:
    """What :func:`run_svi` returns (in the style of NumPyro's ``SVIRunResult``).

    Attributes
    ----------
    params : dict of str to Tensor
        Guide parameters after training (constrained values, detached).
    losses : Tensor
        ``[steps]`` loss (negative ELBO estimate) of every step.
    samples : dict of str to Tensor
        Draws of every continuous latent from the fitted guide, ``[1, S, ...]``
        (one "chain"): ``w`` ``[1, S, K]``; ``init`` ``[1, S, K, V]`` and
        ``trans`` ``[1, S, K, C, V]`` when the tables are uncertain.
    discrete : dict of str to Tensor
        Draws of every discrete latent given each guide draw: ``persona``
        ``[1, S]`` (global) or ``[1, S, D]`` (mixture).
    diagnostics : dict
        JSON-ready: ``final_elbo`` (minus the smoothed loss at the last step),
        ``final_loss``, ``steps``, ``converged``, ``guide``, ``subsample_size``.
    steps : int
        Optimisation steps taken.
    converged : bool
        Whether the convergence rule (module docstring) stopped training.
    seconds : float
        Wall time of this call, drawing included.
    resumed_from : int or None
        The checkpoint step this call continued from (None: it started afresh).
    """

    params: dict[str, Tensor]
    losses: Tensor
    samples: dict[str, Tensor]
    discrete: dict[str, Tensor]
    diagnostics: dict[str, Any]
    steps: int
    converged: bool
    seconds: float
    resumed_from: int | None = None


def run_svi(
    model: Callable,
    args: tuple,
    model_kwargs: dict[str, Any],
    *,
    seed: int = 0,
    progress: bool = False,
    guide: str = "auto",
    num_steps: int = 2000,
    lr: float = 0.05,
    lr_decay: float = 0.1,
    subsample_size: int | None = None,
    num_samples: int = 1000,
    num_particles: int = 1,
    tol: float = 1e-5,
    patience: int = 50,
    smoothing: float = 0.95,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    **unknown: Any,
) -> SVIResult:
    """Fit a guide to ``model(*args, **model_kwargs)`` by SVI and draw from it.

    Parameters
    ----------
    model : callable
        A Pyro model, e.g. :func:`models.mixture.persona_model` (possibly wrapped
        in ``poutine.condition``); discrete latent sites must be enumerable.
    args, model_kwargs : tuple, dict
        Its arguments (``model_kwargs`` may hold the evidence).
    seed : int
        Seed of Pyro's random state (set at entry; the param store is cleared).
    progress : bool
        Show a tqdm progress bar.
    guide : {"auto", "dirichlet", "delta", "normal", "mvn"}
        Variational family (module docstring); ``auto`` is ``dirichlet``.
    num_steps : int
        Maximum optimisation steps.
    lr : float
        Initial learning rate of Adam (``ClippedAdam``, gradient norm clipped at ``CLIP_NORM``).
    lr_decay : float
        Final over initial learning rate, reached geometrically at ``num_steps``
        (a decaying rate lets a noisy guide settle).
    subsample_size : int, optional
        Documents per minibatch (``None``: all).
    num_samples : int
        Guide draws ``S`` returned in ``samples`` and ``discrete``.
    num_particles : int
        ELBO particles per step.
    tol, patience, smoothing : float, int, float
        The convergence rule (module docstring).
    checkpoint_dir : path, optional
        Folder of the checkpoints (``svi-<step>/``; the newest two are kept).
    checkpoint_every : int, optional
        Save a checkpoint every this many steps (and after the last step).
    resume : bool
        Continue from the newest checkpoint in ``checkpoint_dir`` (module docstring).

    Returns
    -------
    SVIResult

    Raises
    ------
    InputError
        For an unknown option or a bad value, or a checkpoint that is damaged or
        from a different run.
    """
    check_unknown_options("SVI", unknown, run_svi)
    opts = _check_options(guide, num_steps, lr, lr_decay, num_samples, num_particles, tol, patience, smoothing)
    kwargs, train_kwargs = _split_subsample(args, model_kwargs, subsample_size)

    def run() -> dict[str, Any]:  # the fingerprint a checkpoint must carry (hashes the data: only when used)
        return {"engine": "svi", "seed": seed, **_fingerprint_options(opts, train_kwargs),
                "model": fingerprint(model), "data": fingerprint(args, model_kwargs)}

    store = open_checkpoints(checkpoint_dir, checkpoint_every, resume, kind="svi", run=run)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    start = time.perf_counter()
    sites = latent_sites(model, args, kwargs)
    guide_fn = make_guide(opts.guide_name, model, sites)
    elbo = TraceEnum_ELBO(max_plate_nesting=MAX_PLATE_NESTING, num_particles=opts.num_particles)
    decay = opts.lr_decay ** (1.0 / opts.num_steps)  # per step, so the last step runs at lr * lr_decay
    optim = pyro.optim.ClippedAdam({"lr": opts.lr, "lrd": decay, "clip_norm": CLIP_NORM})
    state = train(SVI(model, guide_fn, optim, elbo), guide_fn, args, train_kwargs, opts, store, resume, progress)
    samples = draw_guide(guide_fn, args, kwargs, list(sites.continuous), opts.num_samples)  # name -> [S, ...]
    discrete = recover_discrete(model, args, kwargs, samples, sites, progress=progress)
    params = {name: value.detach().clone() for name, value in pyro.get_param_store().items()}
    diagnostics = {
        "final_elbo": -float(state.rule.smoothed), "final_loss": float(state.losses[-1]),
        "steps": len(state.losses), "converged": bool(state.converged), "guide": opts.guide_name,
        "subsample_size": train_kwargs.get("subsample_size"),
    }
    return SVIResult(
        params=params,
        losses=torch.tensor(state.losses, dtype=torch.float64),
        samples={k: v.unsqueeze(0) for k, v in samples.items()},
        discrete={k: v.unsqueeze(0) for k, v in discrete.items()},
        diagnostics=diagnostics,
        steps=len(state.losses),
        converged=bool(state.converged),
        seconds=time.perf_counter() - start,
        resumed_from=state.resumed_from,
    )


def _check_options(guide: str, num_steps: int, lr: float, lr_decay: float, num_samples: int, num_particles: int,
                   tol: float, patience: int, smoothing: float) -> SVIOptions:
    """The options of :func:`run_svi`, checked in this order (one-line :class:`InputError`)."""
    if guide not in GUIDES:
        raise InputError(f"unknown SVI guide {guide!r}; choose one of {', '.join(GUIDES)}")
    num_steps = check_int("num_steps", num_steps, 1)
    lr = check_positive("lr", lr)
    lr_decay = check_positive("lr_decay", lr_decay)
    if lr_decay > 1:
        raise InputError(f"lr_decay (final / initial learning rate) must lie in (0, 1], got {lr_decay}")
    num_samples = check_int("num_samples", num_samples, 1)
    num_particles = check_int("num_particles", num_particles, 1)
    patience = check_int("patience", patience, 1)
    tol = check_positive("tol", tol, allow_zero=True)
    smoothing = check_positive("smoothing", smoothing, allow_zero=True)
    if smoothing >= 1:
        raise InputError(f"smoothing must lie in [0, 1), got {smoothing}")
    return SVIOptions(guide, num_steps, lr, lr_decay, num_samples, num_particles, tol, patience, smoothing)


def _fingerprint_options(opts: SVIOptions, train_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options a checkpoint must have been written with (same keys and order as before the split)."""
    return {
        "guide": opts.guide, "num_steps": opts.num_steps, "lr": opts.lr, "lr_decay": opts.lr_decay,
        "subsample_size": train_kwargs.get("subsample_size"), "num_samples": opts.num_samples,
        "num_particles": opts.num_particles, "tol": opts.tol, "patience": opts.patience, "smoothing": opts.smoothing,
    }


def _split_subsample(args: tuple, model_kwargs: dict[str, Any], subsample_size: int | None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(all-documents kwargs, training kwargs with the minibatch size)."""
    kwargs = dict(model_kwargs)
    size = subsample_size if subsample_size is not None else kwargs.get("subsample_size")
    if "subsample_size" in kwargs or subsample_size is not None:
        kwargs["subsample_size"] = None
    if size is None:
        return kwargs, kwargs
    size = check_int("subsample_size", size, 1)
    num_docs = args[1] if len(args) > 1 and isinstance(args[1], int) else None  # persona_model(personas, D, T)
    if num_docs is not None and size > num_docs:
        raise InputError(f"subsample_size must be at most the number of documents ({num_docs}), got {size}")
    return kwargs, dict(kwargs, subsample_size=size)
