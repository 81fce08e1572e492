"""Fine-tuning any base model of the interface (:mod:`models.base_model`): the toolkit's transformer
(:class:`~models.tagged_lm.TaggedLM`) or a Hugging Face causal LM (:class:`~models.hf_lm.HFCausalLM`).

:func:`finetune_lm` is :func:`inference.finetuning.training.finetune` for the interface: the same
four methods (``full``, ``lora``, ``last_layer``, ``k_params``; for a Hugging Face model
:mod:`inference.finetuning.hf_adapters`, LoRA through ``peft``), the same constant-rate AdamW over
seeded batches of unprompted evidence documents (only masked-in tokens are targets), the same
checkpoints and bit-identical resumption (:class:`~inference.finetuning.loop.TrainingLoop`), on a
chosen ``device`` with bfloat16 autocast on CUDA. Snapshots are frozen models of the interface
with the adapters merged. On a :class:`TaggedLM` it reproduces ``finetune`` on the wrapped
PersonaLM exactly (a test checks it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from inference.finetuning.adapters import merged_state, prepare
from inference.finetuning.loop import (
    TrainingLoop,
    check_evidence_sizes,
    check_lr,
    check_positive_int,
    check_snapshot_steps,
    evidence_batches,
)
from inference.storage.encoding import fingerprint
from models.base_model import LanguageModel
from models.counts import Evidence
from models.devices import resolve_device
from models.errors import InputError
from models.limits import FINETUNE_METHODS as METHODS
from models.transformer import PersonaLM


@dataclass(frozen=True)
class LMFinetuneResult:
    """A fine-tuning run of a base model of the interface.

    Attributes
    ----------
    snapshots : dict[int, LanguageModel]
        The model after ``s`` steps for every requested ``s`` (0 is a copy of the base).
    losses : Tensor
        ``[steps]`` float64 training loss of every step.
    trainable_params : int
        Number of trainable scalars.
    seconds : float
        Wall time of this call.
    method : str
    resumed_from : int or None
        The checkpoint step the run continued from.
    cost : dict
        ``device``, ``autocast`` (dtype name or None), ``seconds_per_step``, ``peak_memory_bytes``
        and ``memory_kind`` (see :mod:`inference.finetuning.loop`).
    """

    snapshots: dict[int, LanguageModel]
    losses: Tensor
    trainable_params: int
    seconds: float
    method: str
    resumed_from: int | None = None
    cost: dict = field(default_factory=dict)


def finetune_lm(
    model: LanguageModel,
    evidence: Evidence,
    *,
    method: str = "full",
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 64,
    snapshot_steps: list[int] | None = None,
    rank: int = 4,
    k: int = 100,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> LMFinetuneResult:
    """Fine-tune a copy of ``model`` on evidence (the base is not modified).

    Parameters are those of :func:`inference.finetuning.training.finetune`, plus

    device : str or torch.device, optional
        Where to train (``cpu``, ``cuda``, ``cuda:N``, ``auto``); default the model's own device.
        Snapshots live on the training device.
    """
    if not isinstance(model, LanguageModel):
        raise InputError(f"model must be a base model of the interface (models.base_model), got {type(model).__name__}")
    if method not in METHODS:
        raise InputError(f"unknown fine-tuning method {method!r}; choose one of {', '.join(METHODS)}")
    tokens, mask = check_evidence_sizes(evidence, model.vocab_size, model.max_positions)
    check_positive_int(steps=steps, batch_size=batch_size)
    check_lr(lr)
    snapshot_steps = check_snapshot_steps(snapshot_steps, steps)
    target = model.device if device is None else resolve_device(device)
    next_batch = evidence_batches(*model.training_batch(tokens, mask), batch_size)  # [D, L] inputs and targets

    def run() -> dict:  # hashed only when checkpointing is on
        return {"kind": "finetune", "model": type(model).__name__, "method": method, "steps": steps, "lr": lr,
                "batch_size": batch_size, "rank": rank if method == "lora" else None,
                "k": k if method == "k_params" else None, "weight_decay": weight_decay, "seed": seed,
                "snapshot_steps": snapshot_steps, "data": fingerprint(tokens, mask),
                "base": fingerprint(*model.training_module().state_dict().values())}

    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        work = model.training_module().to(target)
        trainable, merge = _prepare(work, method, rank=rank, k=k, seed=seed)
        states: dict[int, dict[str, Tensor]] = {}

        def on_step(step: int) -> None:
            if step in snapshot_steps:
                states[step] = merge(work)

        def restore(saved: dict[int, dict[str, Tensor]]) -> None:
            states.update({s: {key: v.to(target) for key, v in weights.items()} for s, weights in saved.items()})

        loop = TrainingLoop(work, [{"params": trainable, "weight_decay": weight_decay}], next_batch,
                            lambda step: lr, steps=steps, seed=seed, run=run, checkpoint_dir=checkpoint_dir,
                            checkpoint_every=checkpoint_every, resume=resume, on_step=on_step,
                            extra_state=lambda: dict(states), restore_extra=restore)
        losses, seconds = loop.run(progress, desc=f"finetune ({method})")
    snapshots = {s: model.with_weights(states[s]) for s in sorted(states)}
    return LMFinetuneResult(snapshots, losses, sum(p.numel() for p in trainable), seconds, method,
                            loop.resumed_from, _cost(loop, target))


def _prepare(work: nn.Module, method: str, **options: Any) -> tuple[list[Tensor], Callable[[nn.Module], dict]]:
    """``(trainable tensors, merged weights of work)`` for ``method``: the toolkit's adapters on a
    :class:`PersonaLM`, peft's (:mod:`inference.finetuning.hf_adapters`) on a Hugging Face module."""
    if isinstance(work, PersonaLM):
        return prepare(work, method, **options), merged_state
    from inference.finetuning.hf_adapters import merged_hf_state, prepare_hf

    return prepare_hf(work, method, **options), merged_hf_state


def _cost(loop: TrainingLoop, target: torch.device) -> dict[str, Any]:
    """Device, autocast dtype, median seconds per step and peak memory of a finished loop."""
    return {"device": str(target), "autocast": None if loop.autocast is None else str(loop.autocast).split(".")[-1],
            "seconds_per_step": loop.seconds_per_step, "peak_memory_bytes": loop.peak_memory_bytes,
            "memory_kind": "cuda max allocated" if target.type == "cuda" else "process peak RSS"}
