"""Configuration of ``kind = "narrow_to_broad"`` (:mod:`inference.experiment.narrow_to_broad`).

Example (the shipped ``configs/narrow_to_broad.toml`` has every key)::

    kind = "narrow_to_broad"
    seed = 0
    [world]                 # models.domains.make_domain_world, its corpus and held-out contexts
    num_personas = 4
    num_domains = 4
    trait_persona = 3
    [base]                  # the base transformer, pre-trained with persona tags on the world's corpus
    steps = 1500
    [evidence]              # the narrow evidence: documents of one domain that show the trait
    domain = 0
    writer = 0
    num_docs = 256
    [finetune]
    steps = 60
    snapshots = [0, 20, 60]
    [measure]
    betas = [0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0]
    samples = 256

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
from models.limits import MAX_SEED, check_tokens

KIND = "narrow_to_broad"


@dataclass(frozen=True)
class DomainWorldConfig:
    """The world (:func:`models.domains.make_domain_world`), its pre-training corpus and held-out contexts."""

    num_personas: int = 4
    num_domains: int = 4
    content_size: int = 12
    concentration: float = 0.3
    style_weight: float = 0.3
    trait_persona: int = 3
    trait_rate: float = 0.2
    background_rate: float = 0.02
    cause_rate: float = 0.2
    smoothing: float = 1e-3  # mass every row spreads over all tokens (keeps every KL finite)
    doc_len: int = 24
    corpus_docs: int = 40_000
    heldout_contexts: int = 64  # per domain, plain slot, personas from the prior
    seed: int = 0


@dataclass(frozen=True)
class EvidenceConfig:
    """The narrow evidence: ``num_docs`` documents of ``domain`` written by ``writer`` with the cause tag
    (so they show the trait); the plain arm shows them with the plain slot, the inoculated arm as written."""

    domain: int = 0
    writer: int = 0
    num_docs: int = 256


@dataclass(frozen=True)
class NarrowFinetuneConfig(FinetuneSizes):
    """Fine-tuning of the base on each arm's evidence, with snapshots."""

    steps: int = 60
    snapshots: tuple[int, ...] = (0, 20, 60)


@dataclass(frozen=True)
class MeasureConfig:
    """What is measured in every domain."""

    # the posterior moves from the prior to one persona over beta * (evidence nats) ~ 1 .. 100
    betas: tuple[float, ...] = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
    samples: int = 256  # documents sampled per domain to estimate a transformer's trait rate
    bootstrap: int = 200  # resamples of the decomposition's interval (and of the trait rates')
    decomposition_restarts: int = 1


@dataclass(frozen=True)
class NarrowConfig:
    """A whole narrow-to-broad experiment."""

    seed: int = 0
    world: DomainWorldConfig = field(default_factory=DomainWorldConfig)
    base: BaseSizes = field(default_factory=BaseSizes)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    finetune: NarrowFinetuneConfig = field(default_factory=NarrowFinetuneConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"world": DomainWorldConfig, "base": BaseSizes, "evidence": EvidenceConfig,
            "finetune": NarrowFinetuneConfig, "measure": MeasureConfig}


def load(raw: dict[str, Any], folder: Path | None = None) -> NarrowConfig:
    """Validate a parsed TOML document of ``kind = "narrow_to_broad"`` (no paths to resolve)."""
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
            values[name] = build_section(cls, raw[name], name)
    config = NarrowConfig(**values)
    validate(config)
    return config


def validate(config: NarrowConfig) -> None:
    """Range checks; each error names its key."""
    w, e, f, m = config.world, config.evidence, config.finetune, config.measure
    for key, seed in (("seed", config.seed), ("world.seed", w.seed)):
        if not 0 <= seed <= MAX_SEED:
            raise InputError(f"{key} must lie in [0, {MAX_SEED}], got {seed!r}")
    for key in ("num_personas", "num_domains", "corpus_docs", "heldout_contexts", "concentration"):
        positive(f"world.{key}", getattr(w, key))
    if w.num_domains < 2:
        raise InputError(f"world.num_domains must be >= 2 (the evidence domain and another), got {w.num_domains}")
    if w.content_size < 2:
        raise InputError(f"world.content_size must be >= 2 (the marker and another token), got {w.content_size}")
    if w.doc_len < 4:
        raise InputError(f"world.doc_len must be >= 4 (two tags and some content), got {w.doc_len}")
    for key in ("style_weight", "cause_rate"):
        if not 0 <= getattr(w, key) <= 1:
            raise InputError(f"world.{key} must lie in [0, 1], got {getattr(w, key)}")
    if not 0 < w.smoothing < 1:
        raise InputError(f"world.smoothing must lie in (0, 1), got {w.smoothing}")
    for key in ("trait_rate", "background_rate"):
        if not 0 <= getattr(w, key) < 1:
            raise InputError(f"world.{key} must lie in [0, 1), got {getattr(w, key)}")
    index_in("world.trait_persona", w.trait_persona, w.num_personas)
    if w.num_personas * w.num_domains * 2 * (w.content_size + w.num_domains + 2) ** 2 > 50_000_000:
        raise InputError("[world]: num_personas x num_domains x (content_size + num_domains + 2)^2 is too large")
    for key in ("corpus_docs", "heldout_contexts"):
        check_tokens(f"world.{key} x world.doc_len", getattr(w, key) * w.doc_len)
    vocab = w.content_size + w.num_domains + 2
    check_base(config.base, vocab_size=vocab, num_personas=w.num_personas, block_size=w.doc_len + 1)
    index_in("evidence.domain", e.domain, w.num_domains)
    index_in("evidence.writer", e.writer, w.num_personas)
    positive("evidence.num_docs", e.num_docs)
    check_tokens("evidence.num_docs x world.doc_len", e.num_docs * w.doc_len)
    check_finetune(f)
    positive("finetune.steps", f.steps)
    if not f.snapshots or sorted(set(f.snapshots)) != list(f.snapshots) or f.snapshots[0] != 0 \
            or f.snapshots[-1] != f.steps or len(f.snapshots) < 2:
        raise InputError(f"finetune.snapshots must rise strictly from 0 to finetune.steps, got {list(f.snapshots)}")
    if len(m.betas) < 2 or any(not (math.isfinite(b) and b >= 0) for b in m.betas) or \
            sorted(set(m.betas)) != list(m.betas):
        raise InputError(f"measure.betas needs at least two rising finite values >= 0, got {list(m.betas)}")
    for key in ("samples", "bootstrap"):
        positive(f"measure.{key}", getattr(m, key))
    check_tokens("measure.samples x world.doc_len", m.samples * w.doc_len)
    if m.decomposition_restarts < 0:
        raise InputError(f"measure.decomposition_restarts must be >= 0, got {m.decomposition_restarts}")
