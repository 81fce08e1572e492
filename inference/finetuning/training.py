"""Training loops: pre-training the base model, fine-tuning it on evidence, baselines.

* :func:`pretrain` trains ``q0`` on a persona corpus; each sampled document
  gets its persona tag prepended with probability ``p_tag`` (a fresh coin per
  draw), so the tagged model is ``q0(. | h)`` and the untagged one the mixture
  (DESIGN.md §3.2, ``R_self``).
* :func:`finetune` trains a copy of a base model on :class:`~models.counts.Evidence`
  (untagged inputs; only masked-in tokens are targets, like SFT) with one of
  four methods (``full``, ``last_layer``, ``lora``, ``k_params``: see
  :mod:`inference.finetuning.adapters`) and keeps snapshots at chosen steps; a snapshot is
  always a plain :class:`~models.transformer.PersonaLM`.
* the prequential code length is in :mod:`inference.finetuning.prequential`, the
  baselines (from scratch, n-gram) in :mod:`inference.finetuning.baselines`.

Pre-training uses AdamW (betas 0.9, 0.99) with linear warm-up then cosine decay
to ``0.1 lr``; fine-tuning a constant learning rate (so "steps x lr" stays the
amount of training). Measured on 6 bigram personas over 24 tokens
(``benchmarks/bench_training.py``): a 2-layer width-96 model at ``lr=6e-3``,
batch 128, on 100k simulated documents of 48 tokens is 0.051 / 0.034 / 0.022
nats/token above the Bayes-optimal NLL after 1,500 / 2,000 / 3,000 steps; on
20k documents it over-fits (0.045 after 3,000 steps, training-set gap -0.01).

Long runs: with ``checkpoint_dir`` and ``checkpoint_every`` the loop
(:class:`inference.training_loop.TrainingLoop`) writes the weights, optimizer
state, both RNG states, the losses and the snapshots so far every
``checkpoint_every`` steps; ``resume=True`` continues from the newest one, and
a resumed run gives bit-identical weights and losses to an uninterrupted one on
the same machine.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from inference.finetuning.adapters import materialise, model_from_state, prepare
from inference.finetuning.lm_training import LMFinetuneResult, finetune_lm
from inference.finetuning.loop import (
    TrainingLoop,
    check_corpus_tokens,
    check_evidence,
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
from models.transformer import (
    IGNORE_INDEX,
    PersonaLM,
    TransformerConfig,
    make_inputs,
)


@dataclass(frozen=True)
class TrainHistory:
    """What a training run did.

    Attributes
    ----------
    losses : Tensor
        ``[steps]`` float64 training loss (mean NLL per scored token) of every step.
    seconds : float
        Wall time of this call (a resumed run counts only its own part).
    resumed_from : int or None
        The checkpoint step the run continued from.
    """

    losses: Tensor
    seconds: float
    resumed_from: int | None = None


@dataclass(frozen=True)
class FinetuneResult:
    """A fine-tuning run.

    Attributes
    ----------
    snapshots : dict[int, PersonaLM]
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
    """

    snapshots: dict[int, PersonaLM]
    losses: Tensor
    trainable_params: int
    seconds: float
    method: str
    resumed_from: int | None = None


def cosine_schedule(lr: float, warmup: int, steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """Learning rate at each step: linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr``."""

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, steps - warmup)
        return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress_frac)))

    return lr_at


def _check_corpus(config: TransformerConfig, tokens: Tensor, persona: Tensor, p_tag: float) -> tuple[Tensor, Tensor]:
    """Validated ``(tokens [N, T], persona [N] long)`` for :func:`pretrain` (one-line InputErrors)."""
    if not isinstance(config, TransformerConfig):
        raise InputError(f"config must be a TransformerConfig, got {type(config).__name__}")
    tokens = check_corpus_tokens(tokens, config.vocab_size, "tokens")
    persona = torch.as_tensor(persona)
    if persona.shape != tokens.shape[:1] or persona.is_floating_point() or persona.dtype == torch.bool:
        raise InputError(f"persona must be [N={tokens.shape[0]}] integers, got shape {tuple(persona.shape)} {persona.dtype}")
    persona = persona.long()
    if persona.min() < 0 or persona.max() >= config.num_personas:
        raise InputError(f"persona must lie in [0, {config.num_personas}), found {int(persona.min())}..{int(persona.max())}")
    if not (isinstance(p_tag, (int, float)) and 0 <= p_tag <= 1):
        raise InputError(f"p_tag must be a probability, got {p_tag!r}")
    need = tokens.shape[1] + (1 if p_tag > 0 else 0)
    if need > config.block_size:
        raise InputError(f"documents of {tokens.shape[1]} tokens need block_size >= {need}, config has {config.block_size}")
    return tokens, persona


class _Snapshots:
    """The models kept at ``steps`` while ``work`` trains, and their part of a checkpoint."""

    def __init__(self, work: PersonaLM, config: TransformerConfig, steps: list[int]):
        self.work, self.config, self.steps = work, config, steps
        self.models: dict[int, PersonaLM] = {}

    def keep(self, step: int) -> None:
        if step in self.steps:
            self.models[step] = materialise(self.work, self.config)

    def state(self) -> dict[int, dict[str, Tensor]]:
        return {s: m.state_dict() for s, m in self.models.items()}

    def restore(self, state: dict[int, dict[str, Tensor]]) -> None:
        self.models.update({s: model_from_state(self.config, weights) for s, weights in state.items()})


# ------------------------------------------------------------------- pretrain


def pretrain(
    config: TransformerConfig,
    tokens: Tensor,
    persona: Tensor,
    *,
    p_tag: float = 0.5,
    steps: int,
    batch_size: int = 128,
    lr: float = 6e-3,
    warmup: int | None = None,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> tuple[PersonaLM, TrainHistory]:
    """Pre-train a :class:`PersonaLM` on a persona corpus.

    Parameters
    ----------
    config : TransformerConfig
        Model sizes; ``block_size >= T + 1`` when ``p_tag > 0``.
    tokens : Tensor
        ``[N, T]`` corpus documents.
    persona : Tensor
        ``[N]`` persona of each document, in ``[0, K)``.
    p_tag : float
        Probability that a sampled document is read with its persona tag.
    steps, batch_size : int
        Optimizer steps; documents per step (drawn with replacement).
    lr, warmup, min_lr_ratio, weight_decay : float
        AdamW peak learning rate, linear warm-up steps (default ``steps // 20``),
        final learning rate of the cosine decay as a fraction of ``lr``, and the
        decoupled weight decay of the matrices (not of biases, norms or embeddings).
    seed : int
        Seeds the initialisation, the data order and dropout (global RNG untouched).
    device : str
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (:mod:`models.devices`); the model is returned there.
    progress : bool
        Show a tqdm bar.
    checkpoint_dir, checkpoint_every, resume
        Periodic checkpoints and resumption (module docstring).

    Returns
    -------
    model : PersonaLM
        The trained model (eval mode).
    history : TrainHistory
    """
    tokens, persona = _check_corpus(config, tokens, persona, p_tag)
    check_positive_int(steps=steps, batch_size=batch_size)
    check_lr(lr)
    warmup = max(1, steps // 20) if warmup is None else warmup
    check_positive_int(warmup=warmup + 1)
    target = resolve_device(device)
    N = tokens.shape[0]

    def next_batch(generator: torch.Generator, step: int) -> tuple[Tensor, Tensor]:
        rows = torch.randint(N, (batch_size,), generator=generator)  # [B]
        if p_tag == 0:
            return make_inputs(tokens[rows], None, config)
        coin = torch.rand(batch_size, generator=generator) < p_tag  # [B] fresh coin per draw
        tags = torch.where(coin, persona[rows], -1)  # [B]
        return make_inputs(tokens[rows], tags, config)

    run = {
        "kind": "pretrain", "config": config.to_dict(), "steps": steps, "batch_size": batch_size, "lr": lr,
        "warmup": warmup, "min_lr_ratio": min_lr_ratio, "weight_decay": weight_decay, "p_tag": p_tag,
        "seed": seed, "data": fingerprint(tokens, persona),
    }
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PersonaLM(config).to(target)
        decay = [p for p in model.parameters() if p.dim() >= 2 and p is not model.wte.weight and p is not model.wpe.weight]
        rest = [p for p in model.parameters() if all(p is not q for q in decay)]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        loop = TrainingLoop(model, groups, next_batch, cosine_schedule(lr, warmup, steps, min_lr_ratio), steps=steps, seed=seed, run=run,
                     checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume)
        losses, seconds = loop.run(progress, desc="pretrain")
    model.eval()
    return model, TrainHistory(losses, seconds, loop.resumed_from)


# ------------------------------------------------------------------- finetune


def finetune(
    model: PersonaLM,
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
    device: str | None = None,
    progress: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> FinetuneResult | LMFinetuneResult:
    """Fine-tune a copy of ``model`` on evidence (the base is not modified).

    Parameters
    ----------
    model : PersonaLM or LanguageModel
        The base model ``q0``. Any other base model of the interface (:mod:`models.base_model`,
        e.g. a Hugging Face causal LM) is fine-tuned by
        :func:`~inference.finetuning.lm_training.finetune_lm`, which returns an
        :class:`~inference.finetuning.lm_training.LMFinetuneResult`.
    evidence : Evidence
        Documents and loss mask; only masked-in tokens are targets, inputs are untagged.
    method : {"full", "lora", "last_layer", "k_params"}
        What is trained (module docstring).
    steps, lr, batch_size : int, float, int
        Optimizer steps, constant AdamW learning rate, documents per step
        (the whole evidence when ``batch_size >= D``, else a fresh random subset).
    snapshot_steps : list[int], optional
        Steps at which to keep the model (0 = the base); default ``[0, steps]``.
    rank : int
        LoRA rank.
    k : int
        Trainable scalars for ``k_params`` (1 .. all parameters).
    weight_decay : float
        AdamW decoupled weight decay of the trainable tensors (for ``lora`` and
        ``k_params`` it pulls the adapters towards the base).
    seed : int
        Seeds the data order, adapter initialisation, the choice of the k scalars and dropout.
    device : str, optional
        Where to train (:mod:`models.devices`); default the model's own device.
    progress, checkpoint_dir, checkpoint_every, resume
        As in :func:`pretrain`.
    """
    if not isinstance(model, PersonaLM) and isinstance(model, LanguageModel):
        return finetune_lm(model, evidence, method=method, steps=steps, lr=lr, batch_size=batch_size,
                           snapshot_steps=snapshot_steps, rank=rank, k=k, weight_decay=weight_decay, seed=seed,
                           device=device, progress=progress, checkpoint_dir=checkpoint_dir,
                           checkpoint_every=checkpoint_every, resume=resume)
    if not isinstance(model, PersonaLM):
        raise InputError(f"model must be a PersonaLM or a base model of the interface, got {type(model).__name__}")
    if method not in METHODS:
        raise InputError(f"unknown fine-tuning method {method!r}; choose one of {', '.join(METHODS)}")
    config = model.config
    tokens, targets_mask = check_evidence(evidence, config)
    check_positive_int(steps=steps, batch_size=batch_size)
    check_lr(lr)
    snapshot_steps = check_snapshot_steps(snapshot_steps, steps)
    targets_all = torch.where(targets_mask, tokens, IGNORE_INDEX)  # [D, T]
    idx_all, _ = make_inputs(tokens, None, config)  # [D, T]
    next_batch = evidence_batches(idx_all, targets_all, batch_size)

    run = {
        "kind": "finetune", "method": method, "steps": steps, "lr": lr, "batch_size": batch_size,
        "rank": rank if method == "lora" else None, "k": k if method == "k_params" else None,
        "weight_decay": weight_decay, "seed": seed, "snapshot_steps": snapshot_steps,
        "data": fingerprint(tokens, targets_mask), "base": fingerprint(*model.state_dict().values()),
    }
    target = next(model.parameters()).device if device is None else resolve_device(device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        work = copy.deepcopy(model).to(target).train()
        trainable = prepare(work, method, rank=rank, k=k, seed=seed)
        groups = [{"params": trainable, "weight_decay": weight_decay}]
        snapshots = _Snapshots(work, config, snapshot_steps)
        loop = TrainingLoop(work, groups, next_batch, lambda step: lr, steps=steps, seed=seed, run=run,
                     checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                     on_step=snapshots.keep, extra_state=snapshots.state, restore_extra=snapshots.restore)
        losses, seconds = loop.run(progress, desc=f"finetune ({method})")
    return FinetuneResult(
        dict(sorted(snapshots.models.items())), losses, sum(p.numel() for p in trainable), seconds, method, loop.resumed_from
    )
