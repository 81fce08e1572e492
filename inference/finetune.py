"""Training loops: pre-training the base model, fine-tuning it on evidence, baselines.

* :func:`pretrain` trains ``q0`` on a persona corpus; each sampled document
  gets its persona tag prepended with probability ``p_tag`` (a fresh coin per
  draw), so the tagged model is ``q0(. | h)`` and the untagged one the mixture
  (DESIGN.md §3.2, ``R_self``).
* :func:`finetune` trains a copy of a base model on :class:`~models.counts.Evidence`
  (untagged inputs; only masked-in tokens are targets, like SFT) with one of
  four methods and keeps snapshots at chosen steps:

  ``full``        every parameter;
  ``last_layer``  the last transformer block and the output head (``ln_f``, ``lm_head``);
  ``lora``        low-rank adapters ``W + B A`` (rank ``rank``, ``B = 0`` at start) on every
                  linear map inside the blocks; base weights frozen;
  ``k_params``    ``k`` scalars of the whole model chosen at random (seeded): a trainable
                  sparse delta ``W + scatter(delta)`` (Donoway et al. 2025).

  Adapters and deltas are ``torch.nn.utils.parametrize`` parametrizations; a
  snapshot is always a plain :class:`~models.transformer.PersonaLM` with them merged.
* :func:`prequential_code_length` is the online code length of the evidence
  (Blier & Ollivier 2018; Donoway et al. 2025) and the final loss that turns it
  into a description length; :func:`train_from_scratch` is the from-scratch baseline.

Pre-training uses AdamW (betas 0.9, 0.99) with linear warm-up then cosine decay
to ``0.1 lr``; fine-tuning a constant learning rate (so "steps x lr" stays the
amount of training). Measured on 6 bigram personas over 24 tokens
(``benchmarks/bench_training.py``): a 2-layer width-96 model at ``lr=6e-3``,
batch 128, on 100k simulated documents of 48 tokens is 0.051 / 0.034 / 0.022
nats/token above the Bayes-optimal NLL after 1,500 / 2,000 / 3,000 steps; on
20k documents it over-fits (0.045 after 3,000 steps, training-set gap -0.01).

Long runs: with ``checkpoint_dir`` and ``checkpoint_every`` the loop writes the
weights, optimizer state, both RNG states (data order and dropout), the step,
the losses and the snapshots so far every ``checkpoint_every`` steps (tensors in
safetensors, the rest in JSON; no pickle). ``resume=True`` continues from the
newest checkpoint (or starts afresh if there is none); a resumed run gives
bit-identical weights and losses to an uninterrupted one on the same machine.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from models.counts import Evidence
from models.errors import InputError
from models.transformer import (
    IGNORE_INDEX,
    PersonaLM,
    TransformerConfig,
    load_state_dict_file,
    make_inputs,
    next_token_logprobs,
    num_parameters,
)

METHODS = ("full", "lora", "last_layer", "k_params")
STATE_FORMAT = "psm-train-state"
STATE_VERSION = 1
#: checkpoints kept on disk (the newest ones)
KEEP_CHECKPOINTS = 2


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


@dataclass(frozen=True)
class PrequentialCode:
    """Online (prequential) code length of evidence under fine-tuning.

    Attributes
    ----------
    code_length : float
        Total code length in nats: block ``b`` coded by the model fine-tuned on blocks ``< b``.
    block_nats : list[float]
        Code length of each block.
    block_tokens : list[int]
        Evidence tokens in each block.
    final_loss : float
        NLL per evidence token after fine-tuning on all the evidence.
    num_tokens : int
        Evidence tokens in total.
    """

    code_length: float
    block_nats: list[float]
    block_tokens: list[int]
    final_loss: float
    num_tokens: int

    @property
    def description_length(self) -> float:
        """``code_length - num_tokens * final_loss`` (Donoway et al.): small when fine-tuning only elicits."""
        return self.code_length - self.num_tokens * self.final_loss

    def __float__(self) -> float:
        return float(self.code_length)


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
    if not isinstance(config, TransformerConfig):
        raise InputError(f"config must be a TransformerConfig, got {type(config).__name__}")
    tokens = _check_corpus_tokens(tokens, config.vocab_size, "tokens")
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
    _check_positive_int(steps=steps, batch_size=batch_size)
    _check_lr(lr)
    warmup = max(1, steps // 20) if warmup is None else warmup
    _check_positive_int(warmup=warmup + 1)
    N = tokens.shape[0]

    def next_batch(generator: torch.Generator, step: int) -> tuple[Tensor, Tensor]:
        rows = torch.randint(N, (batch_size,), generator=generator)  # [B]
        if p_tag == 0:
            return make_inputs(tokens[rows], None, config)
        coin = torch.rand(batch_size, generator=generator) < p_tag  # [B] fresh coin per draw
        tags = torch.where(coin, persona[rows], -1)  # [B]
        return make_inputs(tokens[rows], tags, config)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, steps - warmup)
        return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress_frac)))

    run = {
        "kind": "pretrain", "config": config.to_dict(), "steps": steps, "batch_size": batch_size, "lr": lr,
        "warmup": warmup, "min_lr_ratio": min_lr_ratio, "weight_decay": weight_decay, "p_tag": p_tag,
        "seed": seed, "data": _fingerprint(tokens, persona),
    }
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PersonaLM(config)
        decay = [p for p in model.parameters() if p.dim() >= 2 and p is not model.wte.weight and p is not model.wpe.weight]
        rest = [p for p in model.parameters() if all(p is not q for q in decay)]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        loop = _Loop(model, groups, next_batch, lr_at, steps=steps, seed=seed, run=run,
                     checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume)
        losses, seconds = loop.run(progress, desc="pretrain")
    model.eval()
    return model, TrainHistory(losses, seconds, loop.resumed_from)


# ------------------------------------------------------------------- finetune


class LoRADelta(nn.Module):
    """Parametrization ``W -> W + scale * B @ A`` with ``A`` [r, in], ``B`` [out, r] (``B = 0`` at start)."""

    def __init__(self, out_features: int, in_features: int, rank: int, scale: float = 1.0):
        super().__init__()
        self.A = nn.Parameter(torch.randn(rank, in_features) / math.sqrt(in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = scale

    def forward(self, W: Tensor) -> Tensor:
        return W + self.scale * (self.B @ self.A)


class SparseDelta(nn.Module):
    """Parametrization ``W -> W + scatter(delta)`` at fixed flat positions ``index`` [k]."""

    def __init__(self, index: Tensor):
        super().__init__()
        self.register_buffer("index", index, persistent=True)
        self.delta = nn.Parameter(torch.zeros(len(index)))

    def forward(self, W: Tensor) -> Tensor:
        return W.reshape(-1).index_add(0, self.index, self.delta.to(W.dtype)).view_as(W)


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
    progress: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` on evidence (the base is not modified).

    Parameters
    ----------
    model : PersonaLM
        The base model ``q0``.
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
    progress, checkpoint_dir, checkpoint_every, resume
        As in :func:`pretrain`.
    """
    if not isinstance(model, PersonaLM):
        raise InputError(f"model must be a PersonaLM, got {type(model).__name__}")
    if method not in METHODS:
        raise InputError(f"unknown fine-tuning method {method!r}; choose one of {', '.join(METHODS)}")
    config = model.config
    tokens, targets_mask = _check_evidence(evidence, config)
    _check_positive_int(steps=steps, batch_size=batch_size)
    _check_lr(lr)
    snapshot_steps = sorted(set([0, steps] if snapshot_steps is None else snapshot_steps))
    if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= steps for s in snapshot_steps):
        raise InputError(f"snapshot_steps must be integers in [0, {steps}], got {snapshot_steps}")
    D = tokens.shape[0]
    targets_all = torch.where(targets_mask, tokens, IGNORE_INDEX)  # [D, T]
    idx_all, _ = make_inputs(tokens, None, config)  # [D, T]

    def next_batch(generator: torch.Generator, step: int) -> tuple[Tensor, Tensor]:
        if batch_size >= D:
            return idx_all, targets_all
        rows = torch.randperm(D, generator=generator)[:batch_size]  # [B]
        return idx_all[rows], targets_all[rows]

    run = {
        "kind": "finetune", "method": method, "steps": steps, "lr": lr, "batch_size": batch_size,
        "rank": rank if method == "lora" else None, "k": k if method == "k_params" else None,
        "weight_decay": weight_decay, "seed": seed, "snapshot_steps": snapshot_steps,
        "data": _fingerprint(tokens, targets_mask), "base": _fingerprint(*model.state_dict().values()),
    }
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        work = copy.deepcopy(model).train()
        trainable = _prepare(work, method, rank=rank, k=k, seed=seed)
        groups = [{"params": trainable, "weight_decay": weight_decay}]
        snapshots: dict[int, PersonaLM] = {}

        def on_step(step: int) -> None:
            if step in snapshot_steps:
                snapshots[step] = _materialise(work, config)

        def snapshot_tensors() -> dict[str, Tensor]:
            return {f"snap.{s}.{n}": v for s, m in snapshots.items() for n, v in m.state_dict().items()}

        def restore_snapshots(tensors: dict[str, Tensor]) -> None:
            for s in sorted({int(key.split(".")[1]) for key in tensors if key.startswith("snap.")}):
                prefix = f"snap.{s}."
                state = {key[len(prefix) :]: v for key, v in tensors.items() if key.startswith(prefix)}
                snapshots[s] = _model_from_state(config, state)

        loop = _Loop(work, groups, next_batch, lambda step: lr, steps=steps, seed=seed, run=run,
                     checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                     on_step=on_step, extra_tensors=snapshot_tensors, restore_extra=restore_snapshots)
        losses, seconds = loop.run(progress, desc=f"finetune ({method})")
    return FinetuneResult(
        dict(sorted(snapshots.items())), losses, sum(p.numel() for p in trainable), seconds, method, loop.resumed_from
    )


def k_param_positions(model: nn.Module, k: int, seed: int) -> Tensor:
    """The ``k`` scalars that ``k_params`` trains: sorted ``[k]`` positions in the concatenation
    of ``model.named_parameters()`` flattened in order (a seeded uniform draw without replacement)."""
    total = num_parameters(model)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
        raise InputError(f"k must be an integer in [1, {total}] (the model's parameter count), got {k!r}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:k].sort().values


def _prepare(work: PersonaLM, method: str, *, rank: int, k: int, seed: int) -> list[nn.Parameter]:
    """Freeze and parametrize ``work`` for ``method``; return the trainable parameters."""
    if method == "full":
        return list(work.parameters())
    work.requires_grad_(False)
    if method == "last_layer":
        for module in (work.blocks[-1], work.ln_f, work.lm_head):
            module.requires_grad_(True)
    elif method == "lora":
        _check_positive_int(rank=rank)
        for block in work.blocks:
            for linear in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                out_f, in_f = linear.weight.shape
                parametrize.register_parametrization(linear, "weight", LoRADelta(out_f, in_f, min(rank, out_f, in_f)))
    else:  # k_params
        named = list(work.named_parameters())
        chosen = k_param_positions(work, k, seed)  # [k]
        start = 0
        for name, p in named:
            local = chosen[(chosen >= start) & (chosen < start + p.numel())] - start
            if len(local):
                module = work.get_submodule(name.rpartition(".")[0])
                parametrize.register_parametrization(module, name.rpartition(".")[2], SparseDelta(local))
            start += p.numel()
    return [p for p in work.parameters() if p.requires_grad]


def _materialise(work: PersonaLM, config: TransformerConfig) -> PersonaLM:
    """A plain PersonaLM with the current (merged) weights of ``work``."""
    state = {}
    for mod_name, module in work.named_modules():
        if "parametrizations" in mod_name.split("."):
            continue
        prefix = f"{mod_name}." if mod_name else ""
        for name, p in module.named_parameters(recurse=False):
            state[prefix + name] = p.detach().clone()
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                state[prefix + name] = getattr(module, name).detach().clone()
    return _model_from_state(config, state)


def _model_from_state(config: TransformerConfig, state: dict[str, Tensor]) -> PersonaLM:
    """A PersonaLM that takes ``state``'s tensors as its own: built on the meta device, so
    nothing is initialised and the global RNG (dropout) is untouched."""
    with torch.device("meta"):
        model = PersonaLM(config)
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------- baselines


def train_from_scratch(
    config: TransformerConfig,
    evidence: Evidence,
    *,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    **checkpointing,
) -> PersonaLM:
    """The "trained from scratch on D" baseline: same architecture, random init, full training."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PersonaLM(config)
    result = finetune(model, evidence, method="full", steps=steps, lr=lr, batch_size=batch_size,
                      snapshot_steps=[steps], seed=seed, progress=progress, **checkpointing)
    return result.snapshots[steps]


def masked_nll(model: PersonaLM, evidence: Evidence) -> float:
    """Summed NLL (nats) of the masked-in evidence tokens under the untagged model."""
    logp = next_token_logprobs(model, evidence.tokens)  # [D, T, V]
    picked = logp.gather(-1, evidence.tokens.unsqueeze(-1)).squeeze(-1)  # [D, T]
    return float(-(picked * evidence.mask).sum())


def prequential_code_length(
    model: PersonaLM,
    evidence: Evidence,
    *,
    method: str = "full",
    lr: float = 1e-3,
    steps: int = 50,
    batch_size: int = 64,
    block_size_docs: int = 8,
    rank: int = 4,
    k: int = 100,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = False,
) -> PrequentialCode:
    """Prequential (online) code length of the evidence under fine-tuning, in nats.

    The documents are split into consecutive blocks of ``block_size_docs``;
    block 0 is coded by the base model, block ``b`` by the base fine-tuned
    (``method``, ``lr``, ``steps``) on blocks ``< b``. The returned object also
    holds the final loss per token after fine-tuning on all of it, and
    ``description_length = code_length - num_tokens * final_loss``.
    ``float(result)`` is the code length.
    """
    _check_positive_int(block_size_docs=block_size_docs)
    _check_evidence(evidence, model.config)
    opts = dict(method=method, lr=lr, steps=steps, batch_size=batch_size, rank=rank, k=k,
                weight_decay=weight_decay, seed=seed, snapshot_steps=[steps])
    D = evidence.num_docs
    bounds = list(range(0, D, block_size_docs)) + [D]
    block_nats, block_tokens = [], []
    for b in tqdm(range(len(bounds) - 1), desc="prequential", disable=not progress):
        block = evidence.select(torch.arange(bounds[b], bounds[b + 1]))
        block_tokens.append(block.num_tokens)
        if block.num_tokens == 0:
            block_nats.append(0.0)
            continue
        seen = evidence.select(torch.arange(bounds[b]))
        coder = model if b == 0 or seen.num_tokens == 0 else finetune(model, seen, **opts).snapshots[steps]
        block_nats.append(masked_nll(coder, block))
    final = finetune(model, evidence, **opts).snapshots[steps]
    return PrequentialCode(
        float(sum(block_nats)), block_nats, block_tokens, masked_nll(final, evidence) / evidence.num_tokens,
        evidence.num_tokens,
    )


# ------------------------------------------------------------ the loop itself


class _Loop:
    """The optimisation loop shared by every trainer, with checkpoints and resumption."""

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
        extra_tensors: Callable[[], dict[str, Tensor]] | None = None,
        restore_extra: Callable[[dict[str, Tensor]], None] | None = None,
    ):
        self.model, self.next_batch, self.lr_at, self.steps = model, next_batch, lr_at, steps
        self.optimizer = torch.optim.AdamW(groups, lr=lr_at(0), betas=(0.9, 0.99))
        self.generator = torch.Generator().manual_seed(seed)
        self.on_step = on_step or (lambda step: None)
        self.extra_tensors = extra_tensors or dict
        self.restore_extra = restore_extra or (lambda tensors: None)
        self.checkpoints = None
        if checkpoint_dir is not None or checkpoint_every is not None or resume:
            if checkpoint_dir is None or checkpoint_every is None:
                raise InputError("checkpointing needs both checkpoint_dir and checkpoint_every (and resume needs both)")
            _check_positive_int(checkpoint_every=checkpoint_every)
            self.checkpoints = _Checkpoints(Path(checkpoint_dir), checkpoint_every, _jsonable(run))
        self.resume = resume
        self.resumed_from: int | None = None

    def run(self, progress: bool, desc: str) -> tuple[Tensor, float]:
        start_time = time.perf_counter()
        losses: list[float] = []
        start = 0
        if self.resume:
            latest = self.checkpoints.latest()
            if latest is not None:
                start, tensors, info = latest
                self._restore(tensors, info)
                losses = tensors["losses"].tolist()[:start]
                self.resumed_from = start
        if start == 0:
            self.on_step(0)
        model, optimizer = self.model, self.optimizer
        model.train()
        bar = tqdm(total=self.steps, initial=start, desc=desc, disable=not progress, mininterval=0.5)
        for step in range(start, self.steps):
            idx, targets = self.next_batch(self.generator, step)
            lr = self.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            _, loss = model(idx, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                raise InputError(f"{desc}: training diverged at step {step} (loss {value}); lower the learning rate")
            losses.append(value)
            self.on_step(step + 1)
            if progress:
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{value:.4f}", refresh=False)
            if self.checkpoints is not None and (step + 1) % self.checkpoints.every == 0:
                self._save(step + 1, losses)
        bar.close()
        return torch.tensor(losses, dtype=torch.float64), time.perf_counter() - start_time

    def _save(self, step: int, losses: list[float]) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for pid, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value)
        tensors["rng.data"] = self.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
        tensors.update(self.extra_tensors())
        self.checkpoints.save(step, tensors, {"param_groups": opt["param_groups"]})

    def _restore(self, tensors: dict[str, Tensor], info: dict) -> None:
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        if set(model_state) != set(self.model.state_dict()):
            raise InputError(f"{self.checkpoints.directory}: checkpoint weights do not match this model")
        self.model.load_state_dict(model_state)
        state: dict[int, dict[str, Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        groups = info["param_groups"]
        for group in groups:
            group["betas"] = tuple(group["betas"])
        self.optimizer.load_state_dict({"state": state, "param_groups": groups})
        self.generator.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
        self.restore_extra(tensors)


class _Checkpoints:
    """``directory/step-000123/{state.safetensors, state.json}``, written atomically, newest kept."""

    def __init__(self, directory: Path, every: int, run: dict):
        self.directory, self.every, self.run = directory, every, run

    def save(self, step: int, tensors: dict[str, Tensor], info: dict) -> None:
        final = self.directory / f"step-{step:09d}"
        tmp = self.directory / f".step-{step:09d}.tmp-{os.getpid()}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
            safetensors.torch.save_file(tensors, str(tmp / "state.safetensors"))
            meta = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "step": step, "run": self.run, **info}
            (tmp / "state.json").write_text(json.dumps(_jsonable(meta), sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except OSError as exc:
            raise InputError(f"{self.directory}: cannot write checkpoint ({exc.strerror or exc})") from None
        for old in self._complete()[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(self.directory / f"step-{old:09d}", ignore_errors=True)

    def _complete(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        steps = [int(m.group(1)) for p in self.directory.iterdir() if (m := re.fullmatch(r"step-(\d+)", p.name))]
        return sorted(s for s in steps if (self.directory / f"step-{s:09d}" / "state.json").is_file())

    def latest(self) -> tuple[int, dict[str, Tensor], dict] | None:
        """The newest complete checkpoint ``(step, tensors, info)``, or None."""
        complete = self._complete()
        if not complete:
            return None
        folder = self.directory / f"step-{complete[-1]:09d}"
        try:
            info = json.loads((folder / "state.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{folder}/state.json: not valid JSON ({exc})") from None
        if not isinstance(info, dict) or info.get("format") != STATE_FORMAT or info.get("format_version") != STATE_VERSION:
            raise InputError(f"{folder}/state.json: not a {STATE_FORMAT} v{STATE_VERSION} file")
        if info.get("run") != self.run:
            theirs = info.get("run") if isinstance(info.get("run"), dict) else {}
            diff = sorted(key for key in set(self.run) | set(theirs) if self.run.get(key) != theirs.get(key))
            raise InputError(f"{folder}: checkpoint is from a different run (differs in {', '.join(diff)})")
        tensors = load_state_dict_file(folder / "state.safetensors")
        return int(info["step"]), tensors, info


# ------------------------------------------------------------------ checks


def _check_positive_int(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def _check_lr(lr: float) -> None:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise InputError(f"lr must be a positive number, got {lr!r}")


def _check_corpus_tokens(tokens: Tensor, vocab_size: int, name: str) -> Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise InputError(f"{name} must be integers, got dtype {tokens.dtype}")
    if tokens.dim() != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty [documents, tokens] array, got shape {tuple(tokens.shape)}")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise InputError(f"{name} must lie in [0, {vocab_size}), found {int(tokens.min())}..{int(tokens.max())}")
    return tokens.long()


def _check_evidence(evidence: Evidence, config: TransformerConfig) -> tuple[Tensor, Tensor]:
    if not isinstance(evidence, Evidence):
        raise InputError(f"evidence must be an Evidence, got {type(evidence).__name__}")
    tokens = _check_corpus_tokens(evidence.tokens, config.vocab_size, "evidence tokens")
    if evidence.mask.shape != tokens.shape or evidence.mask.dtype != torch.bool:
        raise InputError(f"evidence mask must be a bool tensor of shape {tuple(tokens.shape)}")
    if not evidence.mask.any():
        raise InputError("evidence mask is all false: nothing to train on")
    if tokens.shape[1] > config.block_size:
        raise InputError(f"evidence documents of {tokens.shape[1]} tokens exceed block_size {config.block_size}")
    return tokens, evidence.mask


def _fingerprint(*tensors: Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _jsonable(obj):
    """JSON round-trip (tuples become lists) so that a saved run compares equal to a fresh one."""
    return json.loads(json.dumps(obj))
