"""NUTS chains for :func:`inference.conditioning.mcmc.run_mcmc`: one at a time, or in parallel processes.

A chain is one Pyro ``MCMC`` run of ``NUTS``. :func:`run_chain` reseeds torch,
Python and NumPy from the chain's own seed before anything is drawn, so a
chain's draws depend only on that seed and the settings: not on the chains run
before it in the same process, nor on which process runs it.

:func:`run_chains` runs the chains one after another, or ``workers`` at a time
in forked worker processes (on Linux; elsewhere, and inside a daemonic process,
one after another). A worker inherits the task from the parent (nothing is
pickled on the way in), runs whole chains with the parent's torch thread count
and sends back only the finished draws; the chains come back in chain order, so
the caller checkpoints them as they come. On one machine and thread count the
draws are bit for bit those of a run without workers.

Workers pay off when the cores are free: each NUTS step is a few hundred
microseconds of single-threaded Python and tiny tensor operations, so two chains
on two free cores take about the time of one (on cores shared with other jobs
they gain little). :func:`chain_workers` picks the default: as many as there are
chains, at most the usable cores divided by the torch threads each chain uses
(``PSM_THREADS``, :mod:`inference.runtime`), and none in a process that runs other
Python threads (tqdm's monitor aside).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pyro
import torch
from pyro.infer.autoguide import init_to_sample, init_to_uniform, init_to_value
from pyro.infer.mcmc import MCMC, NUTS
from torch import Tensor
from tqdm.auto import tqdm

from inference.conditioning.latents import MAX_PLATE_NESTING
from models.errors import InputError


@dataclass(frozen=True)
class ChainTask:
    """Everything one chain needs (shared by all chains of a run).

    ``potential`` is a hand-written potential (with ``transforms`` and
    ``initial_params``, :mod:`inference.conditioning.potentials`), or None for Pyro's
    enumerated potential of ``model``; ``starts`` holds ``[chains, ...]`` constrained
    starting values for ``init="svi"``.
    """

    model: Callable
    args: tuple
    model_kwargs: dict[str, Any]
    potential: Any
    init: str
    starts: dict[str, Tensor] | None
    num_samples: int
    warmup_steps: int
    target_accept_prob: float
    max_tree_depth: int
    threads: int


@dataclass(frozen=True)
class Chain:
    """One finished chain: ``samples`` ``[draws, ...]`` per latent, the draws whose trajectory
    diverged, the mean acceptance probability and the adapted step size."""

    samples: dict[str, Tensor]
    divergences: list[int]
    acceptance_rate: float
    step_size: float


def run_chain(task: ChainTask, index: int, seed: int, progress: bool = False) -> Chain:
    """Run chain ``index`` of ``task`` from ``seed`` (the global RNGs are reseeded first)."""
    pyro.set_rng_seed(seed)
    start = None if task.starts is None else {k: v[index] for k, v in task.starts.items()}
    options = dict(target_accept_prob=task.target_accept_prob, max_tree_depth=task.max_tree_depth)
    if task.potential is None:
        if task.init == "svi":
            strategy = init_to_value(values=start)
        else:
            strategy = init_to_sample if task.init == "prior" else init_to_uniform
        kernel = NUTS(task.model, max_plate_nesting=MAX_PLATE_NESTING, init_strategy=strategy, **options)
        mcmc = MCMC(kernel, task.num_samples, task.warmup_steps, disable_progbar=not progress)
        mcmc.run(*task.args, **task.model_kwargs)
    else:
        kernel = NUTS(potential_fn=task.potential, **options)
        mcmc = MCMC(kernel, task.num_samples, task.warmup_steps, transforms=task.potential.transforms,
                    initial_params=task.potential.initial_params(task.init, start), disable_progbar=not progress)
        mcmc.run()
    info = mcmc._diagnostics[0]  # the kernel's own numbers; MCMC.diagnostics() adds an R-hat needing 4+ draws
    return Chain(samples={k: v.detach() for k, v in mcmc.get_samples().items()},
                 divergences=[int(i) for i in info["divergences"]],
                 acceptance_rate=float(info["acceptance rate"]), step_size=float(kernel.step_size))


def chain_workers(requested: int | None, num_chains: int, threads: int) -> int:
    """Processes to run chains in: ``requested`` (at most ``num_chains``), or by default
    ``min(num_chains, cores // threads)``, and 1 in a process with other Python threads (a
    notebook kernel, a Ray worker): forking a threaded process may deadlock its child."""
    if requested is not None:
        return min(requested, num_chains)
    if _other_threads():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(num_chains, cores // max(threads, 1)))


def _other_threads() -> list[threading.Thread]:
    """The Python threads besides this one, tqdm's idle monitor left out (progress bars start it)."""
    from tqdm._monitor import TMonitor

    return [t for t in threading.enumerate() if t is not threading.current_thread() and not isinstance(t, TMonitor)]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the chain workers), in seconds."""
    try:
        import resource
    except ImportError:  # not on Unix: this process only
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def can_fork() -> bool:
    """Whether chains may run in forked workers here (Linux, not inside a daemonic worker)."""
    return sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


def run_chains(task: ChainTask, todo: list[tuple[int, int]], workers: int, progress: bool = False
               ) -> Iterator[tuple[int, Chain]]:
    """Run the chains ``todo`` (``(index, seed)`` pairs) and yield ``(index, Chain)`` in that order.

    With ``workers > 1`` (and :func:`can_fork`) the chains run in that many forked processes;
    ``progress`` then shows one bar over the chains instead of Pyro's bar per chain.
    """
    if workers <= 1 or len(todo) <= 1 or not can_fork():
        for index, seed in todo:
            yield index, run_chain(task, index, seed, progress)
        return
    global _TASK
    _TASK = task
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(todo))) as pool:
            done = tqdm(pool.imap(_run_in_worker, todo), total=len(todo), disable=not progress, desc="NUTS chains")
            for (index, _), chain in zip(todo, done, strict=True):  # imap keeps the order of todo
                yield index, replace(chain, samples={k: torch.from_numpy(v) for k, v in chain.samples.items()})
    finally:
        _TASK = None


#: the task forked workers run: set by :func:`run_chains` before the fork, inherited, never pickled
_TASK: ChainTask | None = None


def _run_in_worker(item: tuple[int, int]) -> Chain:
    """In a worker: run one chain of the inherited task; draws go back as NumPy arrays."""
    torch.set_num_threads(_TASK.threads)
    chain = run_chain(_TASK, *item)
    return replace(chain, samples={k: v.numpy() for k, v in chain.samples.items()})


# ------------------------------------------------------------------ checkpoints of finished chains


def chains_state(chains: list[Chain], num_samples: int) -> dict[str, Any]:
    """The checkpoint state of the finished chains (tensors and numbers; no pickle)."""
    return {"chains": [chain.samples for chain in chains], "diverging": diverging_flags(chains, num_samples),
            "acceptance_rate": [chain.acceptance_rate for chain in chains],
            "step_size": [chain.step_size for chain in chains]}


def diverging_flags(chains: list[Chain], num_samples: int) -> Tensor:
    """``[chains, draws]`` bool: the draws whose trajectory diverged."""
    out = torch.zeros(len(chains), num_samples, dtype=torch.bool)
    for c, chain in enumerate(chains):
        out[c, torch.as_tensor(chain.divergences, dtype=torch.long)] = True
    return out


def restore_chains(state: dict[str, Any], num_chains: int, num_samples: int, names: list[str], where: Any
                   ) -> list[Chain]:
    """The finished chains of a checkpoint :func:`chains_state`; :class:`InputError` if it does not fit the run."""
    try:
        chains, flags = state["chains"], state["diverging"]
        accept, step_size = state["acceptance_rate"], state["step_size"]
        done = len(chains)
        ok = (1 <= done <= num_chains and len(accept) == len(step_size) == done
              and flags.shape == (done, num_samples) and flags.dtype == torch.bool
              and all(set(chain) == set(names) and all(v.shape[:1] == (num_samples,) for v in chain.values())
                      for chain in chains))
        if ok:
            return [Chain(chain, flags[c].nonzero().flatten().tolist(), float(accept[c]), float(step_size[c]))
                    for c, chain in enumerate(chains)]
    except (KeyError, TypeError, AttributeError, ValueError):
        pass
    raise InputError(f"{where}: damaged MCMC checkpoint (its chains do not match {num_chains} chains "
                     f"of {num_samples} draws of {', '.join(names)})")
