"""Configuration of ``kind = "incontext"`` (:mod:`inference.experiment.incontext`).

Example (the shipped ``configs/incontext.toml`` has every key)::

    kind = "incontext"
    seed = 0
    [world]                  # Markov personas and the pre-training contexts
    num_personas = 3
    prior = [0.6, 0.3, 0.1]
    docs_per_context = 17    # every pre-training context holds 17 documents of one persona
    [evidence]
    persona = 2
    shots = [0, 1, 2, 4, 8, 16]
    [finetune]
    epochs = 10
    [posttrain]              # the curve in context after post-training on another persona
    persona = 0
    num_docs = 64
    [fit]                    # the Bayesian scaling law, by NUTS
    num_chains = 4

Every key is optional; :func:`load` validates the whole document before any work, each error one
line naming the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.experiment.base_sizes import (
    BaseSizes,
    FinetuneSizes,
    check_base,
    check_finetune,
    index_in,
    positive,
)
from inference.experiment.config import build_section, check_keys, coerce
from models.errors import InputError
from models.limits import MAX_SEED, check_sizes, check_tokens

KIND = "incontext"


@dataclass(frozen=True)
class ContextWorldConfig:
    """Order-1 Markov personas, and the base's pre-training contexts of several documents of one persona."""

    num_personas: int = 3
    vocab_size: int = 6
    concentration: float = 2.0
    prior: tuple[float, ...] = (0.6, 0.3, 0.1)  # empty: uniform
    doc_len: int = 4
    docs_per_context: int = 17  # pre-training contexts hold this many documents of one persona
    corpus_contexts: int = 20_000
    seed: int = 0


@dataclass(frozen=True)
class ShotsConfig:
    """The evidence: ``shots`` documents of ``persona`` before a fresh one, ``replicates`` evidence sets
    (nested: the first ``n`` documents of each), ``fresh_docs`` fresh documents per set."""

    persona: int = 2
    shots: tuple[int, ...] = (0, 1, 2, 4, 8, 16)
    replicates: int = 16
    fresh_docs: int = 32


@dataclass(frozen=True)
class ContextFinetuneConfig(FinetuneSizes):
    """Fine-tuning on ``n`` documents: ``ceil(epochs * n / batch)`` steps of ``min(batch_size, n)`` documents."""

    lr: float = 3e-4
    batch_size: int = 8
    epochs: int = 5


@dataclass(frozen=True)
class PosttrainConfig:
    """Post-training before in-context learning: fine-tune on ``num_docs`` documents of ``persona`` (0: skip)."""

    persona: int = 0
    num_docs: int = 64
    epochs: int = 2


@dataclass(frozen=True)
class FitConfig:
    """The Bayesian scaling law's NUTS fit (:func:`inference.conditioning.scaling_law.fit_scaling_law`)."""

    num_chains: int = 3
    num_samples: int = 150
    warmup: int = 150
    max_tree_depth: int = 5
    offset: bool = True


@dataclass(frozen=True)
class InContextConfig:
    """A whole in-context-vs-fine-tuning experiment."""

    seed: int = 0
    world: ContextWorldConfig = field(default_factory=ContextWorldConfig)
    base: BaseSizes = field(default_factory=lambda: BaseSizes(p_tag=0.0))
    evidence: ShotsConfig = field(default_factory=ShotsConfig)
    finetune: ContextFinetuneConfig = field(default_factory=ContextFinetuneConfig)
    posttrain: PosttrainConfig = field(default_factory=PosttrainConfig)
    fit: FitConfig = field(default_factory=FitConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def context_len(self) -> int:
        """Tokens of a pre-training context: ``m * (L + 1) - 1``."""
        return self.world.docs_per_context * (self.world.doc_len + 1) - 1


SECTIONS = {"world": ContextWorldConfig, "base": BaseSizes, "evidence": ShotsConfig,
            "finetune": ContextFinetuneConfig, "posttrain": PosttrainConfig, "fit": FitConfig}


def load(raw: dict[str, Any], folder: Path | None = None) -> InContextConfig:
    """Validate a parsed TOML document of ``kind = "incontext"`` (no paths to resolve)."""
    if not isinstance(raw, dict):
        raise InputError(f"an experiment config must be a table of keys, got {type(raw).__name__}")
    check_keys(raw, {"kind", "seed", *SECTIONS}, "")
    if raw.get("kind") != KIND:
        raise InputError(f"kind = {raw.get('kind')!r} is not {KIND!r}")
    values: dict[str, Any] = {}
    if "seed" in raw:
        values["seed"] = coerce("seed", raw["seed"], int)
    for name, cls in SECTIONS.items():
        if name in raw:
            table = raw[name]
            if name == "base" and isinstance(table, dict):  # this kind's base defaults to no persona tags
                table = {"p_tag": 0.0, **table}
            values[name] = build_section(cls, table, name)
    config = InContextConfig(**values)
    validate(config)
    return config


def validate(config: InContextConfig) -> None:
    """Range checks; each error names its key."""
    w, e, f, p, fit = config.world, config.evidence, config.finetune, config.posttrain, config.fit
    for key, seed in (("seed", config.seed), ("world.seed", w.seed)):
        if not 0 <= seed <= MAX_SEED:
            raise InputError(f"{key} must lie in [0, {MAX_SEED}], got {seed!r}")
    try:
        check_sizes(num_personas=w.num_personas, vocab_size=w.vocab_size, order=1)
    except InputError as exc:
        raise InputError(f"[world]: {exc}") from None
    for key in ("concentration", "doc_len", "docs_per_context", "corpus_contexts"):
        positive(f"world.{key}", getattr(w, key))
    if w.prior and (len(w.prior) != w.num_personas or any(not (math.isfinite(v) and v > 0) for v in w.prior)):
        raise InputError(f"world.prior must be empty or {w.num_personas} positive numbers, got {list(w.prior)}")
    check_tokens("world.corpus_contexts x the context length", w.corpus_contexts * config.context_len)
    check_base(config.base, vocab_size=w.vocab_size + 1, num_personas=w.num_personas,
               block_size=config.context_len + 1)
    index_in("evidence.persona", e.persona, w.num_personas)
    if not e.shots or sorted(set(e.shots)) != list(e.shots) or e.shots[0] != 0 or len(e.shots) < 3:
        raise InputError(f"evidence.shots must rise strictly from 0 with at least three values, got {list(e.shots)}")
    if e.shots[-1] + 1 > w.docs_per_context:
        raise InputError(f"evidence.shots reaches {e.shots[-1]} documents but a context holds "
                         f"world.docs_per_context = {w.docs_per_context} (the fresh document needs one more)")
    for key in ("replicates", "fresh_docs"):
        positive(f"evidence.{key}", getattr(e, key))
    if e.replicates < 2:
        raise InputError(f"evidence.replicates must be >= 2 (the standard errors come from them), got {e.replicates}")
    check_tokens("evidence.replicates x evidence.fresh_docs x the context length",
                 e.replicates * e.fresh_docs * config.context_len)
    check_finetune(f)
    positive("finetune.epochs", f.epochs)
    index_in("posttrain.persona", p.persona, w.num_personas)
    if p.num_docs < 0:
        raise InputError(f"posttrain.num_docs must be >= 0 (0 skips post-training), got {p.num_docs}")
    positive("posttrain.epochs", p.epochs)
    for key in ("num_chains", "num_samples", "max_tree_depth"):
        positive(f"fit.{key}", getattr(fit, key))
    if fit.warmup < 0:
        raise InputError(f"fit.warmup must be >= 0, got {fit.warmup}")
