"""The SVI training loop of :func:`~inference.conditioning.svi.run_svi`: options, convergence rule, checkpoints.

* :class:`SVIOptions` holds the checked options of a run;
* :class:`ConvergenceRule` is the stopping rule (documented in :mod:`inference.conditioning.svi`);
* :func:`train` runs the optimisation steps, saving and resuming checkpoints through
  :mod:`inference.storage.checkpoints` (the state is :func:`training_state`, put back by
  :func:`restore_training`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI
from torch import Tensor
from tqdm.auto import tqdm

from inference.storage.checkpoints import Checkpoints
from inference.storage.encoding import rng_state, set_rng_state
from models.errors import InputError


@dataclass(frozen=True)
class SVIOptions:
    """The checked options of one :func:`~inference.conditioning.svi.run_svi` call (its parameters)."""

    guide: str
    num_steps: int
    lr: float
    lr_decay: float
    num_samples: int
    num_particles: int
    tol: float
    patience: int
    smoothing: float

    @property
    def guide_name(self) -> str:
        """The guide built: ``auto`` is ``dirichlet``."""
        return "dirichlet" if self.guide == "auto" else self.guide


@dataclass
class ConvergenceRule:
    """Relative change of an exponentially smoothed loss below ``tol`` for ``patience`` steps."""

    tol: float
    patience: int
    smoothing: float
    smoothed: float = math.nan
    calm: int = 0

    def update(self, loss: float) -> bool:
        """Feed one loss; return whether training has converged."""
        if math.isnan(self.smoothed):
            self.smoothed = loss
            return False
        previous = self.smoothed
        self.smoothed = self.smoothing * previous + (1 - self.smoothing) * loss
        change = abs(self.smoothed - previous) / max(abs(self.smoothed), 1.0)
        self.calm = self.calm + 1 if change < self.tol else 0
        return self.calm >= self.patience


@dataclass
class Training:
    """Where a training loop stands: losses so far, the rule, and how it ended."""

    rule: ConvergenceRule
    losses: list[float] = field(default_factory=list)
    converged: bool = False
    finished: bool = False
    resumed_from: int | None = None


def train(svi: SVI, guide: Callable, args: tuple, train_kwargs: dict[str, Any], opts: SVIOptions,
          store: Checkpoints | None, resume: bool, progress: bool) -> Training:
    """Run (or resume) the optimisation steps until the rule stops them or ``num_steps`` is reached."""
    state = Training(ConvergenceRule(opts.tol, opts.patience, opts.smoothing))
    latest = store.latest() if store is not None and resume else None
    if latest is not None:
        state.resumed_from, saved = latest
        restore_training(saved, state, svi, guide, args, train_kwargs, store)
        if len(state.losses) != state.resumed_from or len(state.losses) > opts.num_steps:
            raise InputError(f"{store.directory}: damaged SVI checkpoint "
                             f"({len(state.losses)} losses at step {state.resumed_from})")
    losses, rule = state.losses, state.rule
    with tqdm(total=opts.num_steps, initial=len(losses), disable=not progress, desc=f"SVI ({opts.guide_name})") as bar:
        for step in range(len(losses), 0 if state.finished else opts.num_steps):
            loss = float(svi.step(*args, **train_kwargs))
            losses.append(loss)
            finite = math.isfinite(loss)
            if not finite:
                warnings.warn(f"SVI stopped at step {step}: the loss is {loss}", RuntimeWarning, stacklevel=3)
            else:
                state.converged = rule.update(loss)
                bar.update()
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{rule.smoothed:.5g}")
            state.finished = not finite or state.converged or len(losses) == opts.num_steps
            if store is not None and (state.finished or store.due(len(losses))):
                store.save(len(losses), training_state(svi, state))
            if state.finished:
                break
    return state


def training_state(svi: SVI, state: Training) -> dict[str, Any]:
    """The checkpointed state of a training loop (module docstring of :mod:`inference.conditioning.svi`)."""
    store = pyro.get_param_store()
    params = {name: value.detach() for name, value in store.named_parameters()}  # unconstrained
    return {
        "params": params,
        "constraints": {name: str(c) for name, c in store.get_state()["constraints"].items()},
        "optim": svi.optim.get_state(),  # param name -> torch optimiser state_dict
        "losses": torch.tensor(state.losses, dtype=torch.float64),
        "rule": {"smoothed": state.rule.smoothed, "calm": state.rule.calm},
        "converged": bool(state.converged),
        "finished": bool(state.finished),
        "rng": rng_state(),
    }


def restore_training(saved: dict[str, Any], state: Training, svi: SVI, guide: Callable, args: tuple,
                     train_kwargs: dict[str, Any], checkpoints: Checkpoints) -> None:
    """Put a checkpointed state back: params in place, optimiser state, rule, losses, RNG (last)."""
    poutine.trace(guide).get_trace(*args, **train_kwargs)  # creates the guide's params (draws are discarded)
    live = dict(pyro.get_param_store().named_parameters())
    params, optim, losses, rule, ended = _checked_state(saved, live, checkpoints.directory)
    with torch.no_grad():
        for name, value in params.items():
            live[name].copy_(value)  # in place: the guide and the param store keep the same tensors
    svi.optim.set_state(optim)  # consumed when each parameter's optimiser is created
    state.rule.smoothed, state.rule.calm = rule
    state.losses = losses.tolist()
    state.converged, state.finished = ended
    set_rng_state(saved.get("rng"), checkpoints.directory)


def _checked_state(saved: dict[str, Any], live: dict[str, Tensor], where: Any
                   ) -> tuple[dict[str, Tensor], dict, Tensor, tuple[float, int], tuple[bool, bool]]:
    """(params, optimiser state, losses, (smoothed, calm), (converged, finished)) of a checkpoint,
    or a one-line error."""
    try:
        params, optim = saved["params"], saved["optim"]
        kinds = {name: str(c) for name, c in pyro.get_param_store().get_state()["constraints"].items()}
        if set(params) != set(live) or saved["constraints"] != kinds:
            raise InputError(f"{where}: checkpoint parameters {sorted(params)} do not match the guide's {sorted(live)}")
        for name, value in params.items():
            if value.shape != live[name].shape or value.dtype != live[name].dtype:
                raise InputError(f"{where}: checkpoint parameter {name} is {tuple(value.shape)} {value.dtype}, "
                                 f"expected {tuple(live[name].shape)} {live[name].dtype}")
        if not isinstance(optim, dict) or not set(optim) <= set(live) or not all(
            isinstance(sd["param_groups"], list) and all(isinstance(g["params"], list) for g in sd["param_groups"])
            and all(isinstance(v, (int, float)) or (isinstance(v, Tensor) and v.shape == live[name].shape)
                    for entry in sd["state"].values() for v in entry.values())
            for name, sd in optim.items()
        ):
            raise InputError(f"{where}: checkpoint optimiser state does not match the guide's parameters")
        losses = saved["losses"]
        if losses.dtype != torch.float64 or losses.dim() != 1 or not len(losses):
            raise InputError(f"{where}: checkpoint losses must be a non-empty float64 vector")
        rule = (float(saved["rule"]["smoothed"]), int(saved["rule"]["calm"]))
        ended = (bool(saved["converged"]), bool(saved["finished"]))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{where}: damaged SVI checkpoint ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    return params, optim, losses, rule, ended
