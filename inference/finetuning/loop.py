"""The optimisation loop shared by every trainer, with checkpoints and bit-identical resumption.

:class:`TrainingLoop` runs AdamW for a fixed number of steps over batches that
``next_batch(generator, step)`` draws from a seeded data generator. With
``checkpoint_dir`` and ``checkpoint_every`` it saves, every that many steps,
the weights, the optimizer state, both RNG states (data order and dropout),
the losses and any extra state of the caller (e.g. the fine-tuning snapshots)
through :mod:`inference.storage.checkpoints` (safetensors + JSON, never pickled).
``resume=True`` continues from the newest checkpoint, or starts afresh when
there is none; on the same machine and thread count the result is
bit-identical to an uninterrupted run.

Devices. Batches are drawn on the CPU and moved to the device of the model's parameters;
on a CUDA device that supports it the forward pass runs under bfloat16 autocast
(:func:`models.devices.autocast_dtype`; the weights, gradients and AdamW state stay float32),
on the CPU in float32. After :meth:`TrainingLoop.run`, ``seconds_per_step`` is the median over
the steps of drawing the batch, the forward and backward passes and the AdamW update (snapshots
and checkpoints not counted), and ``peak_memory_bytes`` the peak memory: on CUDA what torch
allocated on the device during the run, on the CPU the peak resident memory of the whole
process so far (``getrusage``; it includes everything loaded before).

The argument checks shared by the trainers live here too.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from inference.storage.checkpoints import open_checkpoints
from models.counts import Evidence
from models.devices import autocast_dtype
from models.errors import InputError
from models.transformer import TransformerConfig


class TrainingLoop:
    """AdamW over seeded batches, with periodic checkpoints.

    Parameters
    ----------
    model : nn.Module
        Trained in place; ``forward(idx, targets) -> (logits, loss)``.
    groups : list of dict
        AdamW parameter groups.
    next_batch : callable
        ``(generator, step) -> (idx, targets)``; all randomness from ``generator``.
    lr_at : callable
        Learning rate of each step.
    steps, seed : int
        Steps to run; seed of the data generator.
    run : dict
        JSON-ready fingerprint of the run (settings, data hash): a checkpoint of
        another run is refused.
    checkpoint_dir, checkpoint_every, resume
        Checkpointing (module docstring).
    on_step : callable, optional
        Called with the number of steps done (0 before the first).
    extra_state, restore_extra : callable, optional
        The caller's own state to save with each checkpoint, and how to restore it.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: list[dict],
        next_batch: Callable[[torch.Generator, int], tuple[Tensor, Tensor]],
        lr_at: Callable[[int], float],
        *,
        steps: int,
        seed: int,
        run: dict,
        checkpoint_dir: str | os.PathLike | None,
        checkpoint_every: int | None,
        resume: bool,
        on_step: Callable[[int], None] | None = None,
        extra_state: Callable[[], Any] | None = None,
        restore_extra: Callable[[Any], None] | None = None,
    ):
        self.model, self.next_batch, self.lr_at, self.steps = model, next_batch, lr_at, steps
        self.optimizer = torch.optim.AdamW(groups, lr=lr_at(0), betas=(0.9, 0.99))
        self.generator = torch.Generator().manual_seed(seed)
        self.on_step = on_step or (lambda step: None)
        self.extra_state = extra_state or (lambda: None)
        self.restore_extra = restore_extra or (lambda state: None)
        self.checkpoints = open_checkpoints(checkpoint_dir, checkpoint_every, resume, kind="train", run=run)
        self.resume = resume
        self.resumed_from: int | None = None
        self.device = next(model.parameters()).device
        self.autocast = autocast_dtype(self.device)
        self.seconds_per_step: float | None = None
        self.peak_memory_bytes: int | None = None

    def run(self, progress: bool, desc: str) -> tuple[Tensor, float]:
        """Train; returns the ``[steps]`` float64 losses and the wall time of this call."""
        start_time = time.perf_counter()
        losses: list[float] = []
        start = 0
        latest = self.checkpoints.latest() if self.resume else None
        if latest is not None:
            start, state = latest
            self._restore(state)
            losses = state["losses"].tolist()[:start]
            self.resumed_from = start
        if start == 0:
            self.on_step(0)
        model, optimizer = self.model, self.optimizer
        model.train()
        bar = tqdm(total=self.steps, initial=start, desc=desc, disable=not progress, mininterval=0.5)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        durations = []
        for step in range(start, self.steps):
            step_start = time.perf_counter()
            idx, targets = self.next_batch(self.generator, step)
            idx, targets = idx.to(self.device), targets.to(self.device)
            lr = self.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with self._autocast():
                _, loss = model(idx, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()  # waits for the device: the step is done
            durations.append(time.perf_counter() - step_start)
            if not math.isfinite(value):
                raise InputError(f"{desc}: training diverged at step {step} (loss {value}); lower the learning rate")
            losses.append(value)
            self.on_step(step + 1)
            if progress:
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            if self.checkpoints is not None and self.checkpoints.due(step + 1):
                self._save(step + 1, losses)
        bar.close()
        if durations:
            self.seconds_per_step = statistics.median(durations)
        self.peak_memory_bytes = peak_memory_bytes(self.device)
        return torch.tensor(losses, dtype=torch.float64), time.perf_counter() - start_time

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def _save(self, step: int, losses: list[float]) -> None:
        self.checkpoints.save(step, {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng_data": self.generator.get_state(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "losses": torch.tensor(losses, dtype=torch.float64),
            "extra": self.extra_state(),
        })

    def _restore(self, state: dict[str, Any]) -> None:
        where = self.checkpoints.directory
        if set(state.get("model", {})) != set(self.model.state_dict()):
            raise InputError(f"{where}: checkpoint weights do not match this model")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng_data"])
        torch.set_rng_state(state["rng_torch"])
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.restore_extra(state["extra"])


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory so far: torch's CUDA allocations on ``device`` (since the last reset), else the process's RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, kilobytes on Linux


# ------------------------------------------------------------------ checks shared by the trainers


def check_positive_int(**values) -> None:
    """One-line error unless every value is an integer >= 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def check_lr(lr: float) -> None:
    """One-line error unless ``lr`` is a positive finite number."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise InputError(f"lr must be a positive number, got {lr!r}")


def check_corpus_tokens(tokens: Tensor, vocab_size: int, name: str) -> Tensor:
    """``tokens`` as a non-empty ``[N, T]`` int64 tensor in ``[0, vocab_size)``."""
    tokens = torch.as_tensor(tokens)
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise InputError(f"{name} must be integers, got dtype {tokens.dtype}")
    if tokens.dim() != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty [documents, tokens] array, got shape {tuple(tokens.shape)}")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise InputError(f"{name} must lie in [0, {vocab_size}), found {int(tokens.min())}..{int(tokens.max())}")
    return tokens.long()


def check_evidence(evidence: Evidence, config: TransformerConfig) -> tuple[Tensor, Tensor]:
    """The evidence's tokens and mask, checked against a model's sizes."""
    return check_evidence_sizes(evidence, config.vocab_size, config.block_size)


def check_evidence_sizes(evidence: Evidence, vocab_size: int, max_len: int) -> tuple[Tensor, Tensor]:
    """The evidence's tokens and mask, checked against a vocabulary and a longest document."""
    if not isinstance(evidence, Evidence):
        raise InputError(f"evidence must be an Evidence, got {type(evidence).__name__}")
    tokens = check_corpus_tokens(evidence.tokens, vocab_size, "evidence tokens")
    if evidence.mask.shape != tokens.shape or evidence.mask.dtype != torch.bool:
        raise InputError(f"evidence mask must be a bool tensor of shape {tuple(tokens.shape)}")
    if not evidence.mask.any():
        raise InputError("evidence mask is all false: nothing to train on")
    if tokens.shape[1] > max_len:
        raise InputError(f"evidence documents of {tokens.shape[1]} tokens exceed the model's {max_len} positions")
    return tokens, evidence.mask


def check_snapshot_steps(snapshot_steps: list[int] | None, steps: int) -> list[int]:
    """Sorted distinct snapshot steps in ``[0, steps]`` (default ``[0, steps]``)."""
    snapshot_steps = sorted(set([0, steps] if snapshot_steps is None else snapshot_steps))
    if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= steps for s in snapshot_steps):
        raise InputError(f"snapshot_steps must be integers in [0, {steps}], got {snapshot_steps}")
    return snapshot_steps


def evidence_batches(inputs: Tensor, targets: Tensor, batch_size: int) -> Callable[[torch.Generator, int], tuple[Tensor, Tensor]]:
    """``next_batch`` for fine-tuning: all ``D`` evidence documents when ``batch_size >= D``, else a fresh
    random subset of ``batch_size`` of them at every step (``inputs``, ``targets``: ``[D, L]``)."""
    D = inputs.shape[0]

    def next_batch(generator: torch.Generator, step: int) -> tuple[Tensor, Tensor]:
        if batch_size >= D:
            return inputs, targets
        rows = torch.randperm(D, generator=generator)[:batch_size]  # [B]
        return inputs[rows], targets[rows]

    return next_batch
