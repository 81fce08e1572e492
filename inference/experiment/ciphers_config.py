"""The ``kind = "ciphers"`` experiment's configuration: dataclasses, validation, the smoke version.

Example (every key optional; the defaults are the shipped ``configs/ciphers.toml``)::

    kind = "ciphers"
    seed = 0
    num_seeds = 3                 # seeds seed, seed + 1, ...: each its own corpus, base and evidence
    [world]                       # rule personas (models.rules) and the pre-training corpus
    num_personas = 3
    vocab_size = 12
    lag = 3                       # the rule reads the token 3 back ...
    rule_prob = 0.5               # ... and writes g(x_{t-3}) half of the time
    [ciphers]
    names = ["random1"]           # the ciphers of the world (models.ciphers names; several allowed)
    evidence = "random1"          # the one the evidence is written in
    shares = [0, 0.001, 0.01, 0.1]  # f: share of pre-training documents enciphered
    [evidence]
    persona = 0
    sizes = [4, 16, 64, 256]      # nested evidence sets, in documents

Every error is one line naming the key, raised before any work.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from inference.experiment.config import build_section, check_keys, coerce
from models.ciphers import cipher_permutation
from models.errors import InputError
from models.limits import FINETUNE_METHODS, MAX_PARAMETERS, MAX_SEED, check_sizes, check_tokens

KIND = "ciphers"


@dataclass(frozen=True)
class RuleWorldConfig:
    """Rule personas (:func:`models.rules.rule_personas`), the corpus and the held-out contexts."""

    num_personas: int = 3
    vocab_size: int = 12
    lag: int = 3
    rule_prob: float = 0.5
    rule_shift: int = 1
    concentration: float = 0.3
    doc_len: int = 24
    corpus_docs: int = 20_000
    heldout_contexts: int = 64  # for E and beta*: half plain, half in the evidence cipher
    seed: int = 0


@dataclass(frozen=True)
class CipherSection:
    """The ciphers of the world and the sweep over their share of the corpus."""

    names: tuple[str, ...] = ("random1",)
    evidence: str = "random1"
    shares: tuple[float, ...] = (0.0, 0.001, 0.01, 0.1)


@dataclass(frozen=True)
class CipherBaseConfig:
    """The base transformer pre-trained for every (share, seed), tagged with the joint persona ``(h, c)``."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 48
    steps: int = 1500
    batch_size: int = 64
    lr: float = 6e-3
    p_tag: float = 0.5


@dataclass(frozen=True)
class CipherEvidenceConfig:
    """The evidence persona, the nested evidence sizes and the target of the data-efficiency measure."""

    persona: int = 0
    sizes: tuple[int, ...] = (4, 16, 64, 256)  # documents
    test_docs: int = 64  # and as many validation documents (they choose the snapshot)
    target_gap: float = 0.3  # target NLL = the writer's own NLL on the test documents + this


@dataclass(frozen=True)
class CipherFinetuneConfig:
    """Fine-tuning on each evidence set (the snapshot with the best validation NLL is kept)."""

    method: str = "full"
    steps: int = 60
    lr: float = 1e-3
    batch_size: int = 32
    snapshots: tuple[int, ...] = (0, 15, 30, 60)
    rank: int = 4
    k: int = 100
    prequential_blocks: int = 4
    prequential_steps: int = 20


@dataclass(frozen=True)
class CipherCompareConfig:
    """``E`` (DESIGN.md §3.3) and ``beta*`` of the model fine-tuned on the largest evidence set."""

    betas: tuple[float, ...] = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
    bootstrap: int = 100
    bootstrap_refit: str = "none"
    decomposition_restarts: int = 1


@dataclass(frozen=True)
class CiphersExperiment:
    """The whole cipher experiment (``psm run ciphers``)."""

    seed: int = 0
    num_seeds: int = 3
    world: RuleWorldConfig = field(default_factory=RuleWorldConfig)
    ciphers: CipherSection = field(default_factory=CipherSection)
    base: CipherBaseConfig = field(default_factory=CipherBaseConfig)
    evidence: CipherEvidenceConfig = field(default_factory=CipherEvidenceConfig)
    finetune: CipherFinetuneConfig = field(default_factory=CipherFinetuneConfig)
    compare: CipherCompareConfig = field(default_factory=CipherCompareConfig)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"world": RuleWorldConfig, "ciphers": CipherSection, "base": CipherBaseConfig,
            "evidence": CipherEvidenceConfig, "finetune": CipherFinetuneConfig, "compare": CipherCompareConfig}


def ciphers_from_dict(raw: dict[str, Any]) -> CiphersExperiment:
    """Validate a parsed TOML document (module docstring); one-line errors naming the key."""
    if not isinstance(raw, dict):
        raise InputError(f"an experiment config must be a table of keys, got {type(raw).__name__}")
    check_keys(raw, {"kind", "seed", "num_seeds", *SECTIONS}, "")
    if raw.get("kind") != KIND:
        raise InputError(f"kind = {raw.get('kind')!r} is not the cipher experiment (kind = {KIND!r})")
    values: dict[str, Any] = {key: coerce(key, raw[key], int) for key in ("seed", "num_seeds") if key in raw}
    values |= {name: build_section(cls, raw[name], name) for name, cls in SECTIONS.items() if name in raw}
    config = CiphersExperiment(**values)
    validate(config)
    return config


def validate(config: CiphersExperiment) -> None:
    """Range checks of every section; each error names its key."""
    w, c, b, e, f, cmp = (config.world, config.ciphers, config.base, config.evidence, config.finetune,
                          config.compare)
    if not 0 <= config.seed <= MAX_SEED - 1000 or not 1 <= config.num_seeds <= 1000:
        raise InputError(f"seed must lie in [0, {MAX_SEED - 1000}] and num_seeds in [1, 1000], "
                         f"got {config.seed}, {config.num_seeds}")
    _positive("world", w, ("num_personas", "lag", "corpus_docs", "heldout_contexts", "concentration"))
    _at_least("world.vocab_size", w.vocab_size, 2)
    _at_least("world.doc_len", w.doc_len, 2)
    _at_least("world.heldout_contexts", w.heldout_contexts, 2)
    if not 0 <= w.rule_prob <= 1:
        raise InputError(f"world.rule_prob must lie in [0, 1], got {w.rule_prob}")
    if not 0 <= w.seed <= MAX_SEED - 10:
        raise InputError(f"world.seed must lie in [0, {MAX_SEED - 10}], got {w.seed}")
    _check_ciphers(c, w.vocab_size)
    try:
        check_sizes(num_personas=w.num_personas * (1 + len(c.names)), vocab_size=w.vocab_size, order=w.lag)
    except InputError as exc:
        raise InputError(f"[world] lag = {w.lag} with {len(c.names)} cipher(s): {exc}") from None
    check_tokens("world.corpus_docs x world.doc_len", w.corpus_docs * w.doc_len)
    _positive("base", b, ("n_layer", "n_head", "n_embd", "steps", "batch_size", "lr"))
    if b.n_embd % b.n_head:
        raise InputError(f"base.n_embd ({b.n_embd}) must be a multiple of base.n_head ({b.n_head})")
    if 12 * b.n_layer * b.n_embd**2 > MAX_PARAMETERS:
        raise InputError(f"base.n_layer and base.n_embd make a transformer above {MAX_PARAMETERS:.0e} parameters")
    if not 0 <= b.p_tag <= 1:
        raise InputError(f"base.p_tag must lie in [0, 1], got {b.p_tag}")
    if not (isinstance(e.persona, int) and 0 <= e.persona < w.num_personas):
        raise InputError(f"evidence.persona must be an index in [0, {w.num_personas}), got {e.persona!r}")
    if not e.sizes or any(n < 1 for n in e.sizes) or sorted(set(e.sizes)) != list(e.sizes):
        raise InputError(f"evidence.sizes must rise strictly and be >= 1 (documents), got {list(e.sizes)}")
    check_tokens("evidence.sizes[-1] x world.doc_len", e.sizes[-1] * w.doc_len)
    _at_least("evidence.test_docs", e.test_docs, 2)
    if not (math.isfinite(e.target_gap) and e.target_gap >= 0):
        raise InputError(f"evidence.target_gap must be a finite number >= 0, got {e.target_gap}")
    _check_finetune(f, e.sizes[-1])
    if len(cmp.betas) < 2 or any(not (math.isfinite(x) and x >= 0) for x in cmp.betas):
        raise InputError(f"compare.betas needs at least two finite values >= 0, got {list(cmp.betas)}")
    _positive("compare", cmp, ("bootstrap",))
    if cmp.bootstrap_refit not in ("none", "full"):
        raise InputError(f"compare.bootstrap_refit must be 'none' or 'full', got {cmp.bootstrap_refit!r}")
    _at_least("compare.decomposition_restarts", cmp.decomposition_restarts, 0)


def _check_ciphers(c: CipherSection, vocab_size: int) -> None:
    if not c.names:
        raise InputError("ciphers.names needs at least one cipher")
    for i, name in enumerate(c.names):
        if name == "none":
            raise InputError(f"ciphers.names[{i}] = 'none': the plain text is always there; name only real ciphers")
        try:
            cipher_permutation(name, vocab_size)
        except InputError as exc:
            raise InputError(f"ciphers.names[{i}]: {exc}") from None
    if len(set(c.names)) != len(c.names):
        raise InputError(f"ciphers.names must be unique, got {list(c.names)}")
    if c.evidence not in c.names:
        raise InputError(f"ciphers.evidence = {c.evidence!r} must be one of ciphers.names {list(c.names)}")
    if not c.shares:
        raise InputError("ciphers.shares needs at least one share f")
    for i, share in enumerate(c.shares):
        if not 0 <= share <= 1:
            raise InputError(f"ciphers.shares[{i}] = {share!r}: a share of documents must lie in [0, 1]")
    if len(set(c.shares)) != len(c.shares):
        raise InputError(f"ciphers.shares must be distinct, got {list(c.shares)}")


def _check_finetune(f: CipherFinetuneConfig, max_docs: int) -> None:
    if f.method not in FINETUNE_METHODS:
        raise InputError(f"finetune.method must be one of {', '.join(FINETUNE_METHODS)}, got {f.method!r}")
    _positive("finetune", f, ("steps", "lr", "batch_size", "rank", "k", "prequential_blocks", "prequential_steps"))
    if not f.snapshots or sorted(set(f.snapshots)) != list(f.snapshots) or f.snapshots[0] != 0 \
            or f.snapshots[-1] != f.steps or len(f.snapshots) < 2:
        raise InputError(f"finetune.snapshots must rise strictly from 0 to finetune.steps, got {list(f.snapshots)}")
    if f.prequential_blocks > max_docs:
        raise InputError(f"finetune.prequential_blocks ({f.prequential_blocks}) exceeds the largest evidence set "
                         f"({max_docs} documents)")


def _positive(section: str, obj: Any, keys: tuple[str, ...]) -> None:
    for key in keys:
        value = getattr(obj, key)
        if not value > 0:
            raise InputError(f"{section}.{key} must be > 0, got {value!r}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise InputError(f"{key} must be >= {low}, got {value!r}")


def smoke(config: CiphersExperiment) -> CiphersExperiment:
    """A seconds-sized version of ``config`` (the notebooks' ``PSM_SMOKE=1``): tiny corpus, base and sets."""
    r = dataclasses.replace
    return r(config, num_seeds=1,
             world=r(config.world, corpus_docs=400, heldout_contexts=8, doc_len=12),
             ciphers=r(config.ciphers, shares=(0.0, 0.1)),
             base=r(config.base, n_layer=1, n_head=2, n_embd=16, steps=20, batch_size=32),
             evidence=r(config.evidence, sizes=(2, 4), test_docs=4),
             finetune=r(config.finetune, steps=4, snapshots=(0, 2, 4), prequential_blocks=2, prequential_steps=2),
             compare=r(config.compare, betas=(0.0, 0.1, 1.0), bootstrap=10))


def smoke_if_asked(config: CiphersExperiment) -> CiphersExperiment:
    """``smoke(config)`` when the environment says ``PSM_SMOKE=1``, else ``config``."""
    return smoke(config) if os.environ.get("PSM_SMOKE") == "1" else config
