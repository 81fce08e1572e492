"""The ``novelists`` experiment kind: its TOML config (every key optional; the defaults are the full run).

    kind = "novelists"
    seed = 0
    [data]
    manifest = ""              # a JSONL manifest (file, author); "" = the bundled five novelists
    chunk_words = 500          # words per document (chunk)
    heldout_fraction = 0.2     # of each book's chapters
    num_words = 150            # most frequent words of the training chunks: the word-count features
    heldout_author = ""        # left out of training for the detection test; "" = the last known author
    max_words_per_book = 0     # > 0: only the first whole chapters up to this many words of each book
    [wordrates]
    likelihoods = ["negbin", "poisson"]
    num_chains = 2
    num_samples = 200
    warmup_steps = 300
    [ngram]
    order = 2                  # characters of context (a character 3-gram)
    strength = 10.0            # Dirichlet pseudo-characters per row
    [support]
    level = 0.05               # flag a chunk when its out-of-support p-value is at most this
    [lm]                       # the persona-selection test on real text (see novelists_lm)
    enabled = true
    ...

``PSM_SMOKE=1`` (:func:`smoke`) shrinks every size to run in seconds.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.experiment.config import build_section, check_keys, coerce
from models.errors import InputError
from models.limits import MAX_CHAINS, MAX_SEED, check_seed
from models.wordrates import LIKELIHOODS

KIND = "novelists"


@dataclass(frozen=True)
class DataSection:
    manifest: str = ""
    chunk_words: int = 500
    heldout_fraction: float = 0.2
    num_words: int = 150
    heldout_author: str = ""
    max_words_per_book: int = 0


@dataclass(frozen=True)
class WordRateSection:
    likelihoods: tuple[str, ...] = ("negbin", "poisson")
    num_chains: int = 2
    num_samples: int = 200
    warmup_steps: int = 300


@dataclass(frozen=True)
class NgramSection:
    order: int = 2
    strength: float = 10.0


@dataclass(frozen=True)
class SupportSection:
    level: float = 0.05


@dataclass(frozen=True)
class LMSection:
    """The author-tagged transformer (DESIGN.md §3.2) and its fine-tuning arms."""

    enabled: bool = True
    vocab_size: int = 512  # byte-level BPE (Hugging Face tokenizers) trained on the training chunks
    doc_tokens: int = 48  # tokens per LM document (a window of a chunk)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    p_tag: float = 0.5
    finetune_author: str = ""  # in-support arm; "" = the first known author
    finetune_steps: int = 60
    finetune_lr: float = 3e-4
    finetune_batch: int = 32
    snapshots: tuple[int, ...] = (0, 10, 30, 60)
    contexts: int = 64  # held-out LM documents the comparisons are measured on
    bootstrap: int = 200


@dataclass(frozen=True)
class NovelistsConfig:
    seed: int = 0
    data: DataSection = field(default_factory=DataSection)
    wordrates: WordRateSection = field(default_factory=WordRateSection)
    ngram: NgramSection = field(default_factory=NgramSection)
    support: SupportSection = field(default_factory=SupportSection)
    lm: LMSection = field(default_factory=LMSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataSection, "wordrates": WordRateSection, "ngram": NgramSection, "support": SupportSection,
            "lm": LMSection}


def smoke(config: NovelistsConfig) -> NovelistsConfig:
    """Tiny sizes: a smoke test, not a result."""
    r = dataclasses.replace
    return r(config, data=r(config.data, num_words=30, max_words_per_book=20_000),
             wordrates=r(config.wordrates, likelihoods=("negbin",), num_chains=2, num_samples=10, warmup_steps=10),
             lm=r(config.lm, vocab_size=300, doc_tokens=16, n_layer=1, n_embd=32, steps=10, batch_size=16,
                  finetune_steps=4, snapshots=(0, 2, 4), contexts=8, bootstrap=10))


def default_config(seed: int = 0) -> NovelistsConfig:
    """The full run, or its smoke version when ``PSM_SMOKE=1``."""
    config = NovelistsConfig(seed=seed)
    return smoke(config) if os.environ.get("PSM_SMOKE") == "1" else config


def load(raw: dict[str, Any], folder: Path) -> NovelistsConfig:
    """Validate a parsed ``kind = "novelists"`` TOML document; a relative manifest is read from ``folder``."""
    check_keys(raw, {"kind", "seed", *SECTIONS}, "")
    if raw.get("kind") != KIND:
        raise InputError(f"kind must be {KIND!r}, got {raw.get('kind')!r}")
    values: dict[str, Any] = {name: build_section(cls, raw[name], name) for name, cls in SECTIONS.items() if name in raw}
    if "seed" in raw:
        values["seed"] = coerce("seed", raw["seed"], int)
    config = NovelistsConfig(**values)
    manifest = config.data.manifest
    if manifest and not Path(manifest).is_absolute():
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, manifest=str(folder / manifest)))
    return validate(config)


def validate(config: NovelistsConfig) -> NovelistsConfig:
    """Range checks, each error naming its key."""
    check_seed(config.seed, "seed", MAX_SEED)
    d, w, n, s, m = config.data, config.wordrates, config.ngram, config.support, config.lm
    positive = {"data.chunk_words": d.chunk_words, "data.num_words": d.num_words, "wordrates.num_chains": w.num_chains,
                "wordrates.num_samples": w.num_samples, "ngram.strength": n.strength, "lm.vocab_size": m.vocab_size,
                "lm.doc_tokens": m.doc_tokens, "lm.n_layer": m.n_layer, "lm.n_head": m.n_head, "lm.n_embd": m.n_embd,
                "lm.steps": m.steps, "lm.batch_size": m.batch_size, "lm.lr": m.lr, "lm.finetune_steps": m.finetune_steps,
                "lm.finetune_lr": m.finetune_lr, "lm.finetune_batch": m.finetune_batch, "lm.contexts": m.contexts,
                "lm.bootstrap": m.bootstrap}
    for key, value in positive.items():
        if not value > 0:
            raise InputError(f"{key} must be > 0, got {value!r}")
    if d.max_words_per_book < 0:
        raise InputError(f"data.max_words_per_book must be >= 0 (0: whole books), got {d.max_words_per_book}")
    if w.warmup_steps < 0 or n.order < 0 or n.order > 3:
        raise InputError("wordrates.warmup_steps must be >= 0 and ngram.order in [0, 3]")
    if w.num_chains > MAX_CHAINS:
        raise InputError(f"wordrates.num_chains must be at most {MAX_CHAINS}, got {w.num_chains}")
    if not w.likelihoods or any(x not in LIKELIHOODS for x in w.likelihoods):
        raise InputError(f"wordrates.likelihoods must be values of {', '.join(LIKELIHOODS)}, got {list(w.likelihoods)}")
    if "negbin" not in w.likelihoods:
        raise InputError("wordrates.likelihoods must include 'negbin' (the posterior and out-of-support score use it)")
    if not 0 < d.heldout_fraction < 1:
        raise InputError(f"data.heldout_fraction must lie in (0, 1), got {d.heldout_fraction}")
    if not 0 < s.level < 1:
        raise InputError(f"support.level must lie in (0, 1), got {s.level}")
    if not 0 <= m.p_tag <= 1:
        raise InputError(f"lm.p_tag must lie in [0, 1], got {m.p_tag}")
    if m.n_embd % m.n_head:
        raise InputError(f"lm.n_embd ({m.n_embd}) must be a multiple of lm.n_head ({m.n_head})")
    if m.vocab_size < 260:
        raise InputError(f"lm.vocab_size must be at least 260 (the 256 bytes and a few merges), got {m.vocab_size}")
    snaps = list(m.snapshots)
    if not snaps or snaps != sorted(set(snaps)) or snaps[0] != 0 or snaps[-1] > m.finetune_steps:
        raise InputError(f"lm.snapshots must rise strictly from 0 to at most lm.finetune_steps, got {snaps}")
    return config
