"""Configuration of ``psm run`` kind ``hf``: the comparison on a local Hugging Face causal LM.

Example (the shipped ``inference/experiment/configs/hf.toml``)::

    kind = "hf"
    seed = 0
    device = "auto"                       # cpu | cuda | cuda:N | auto (CUDA when torch sees one)
    [model]
    path = "gpt2"                         # a LOCAL model folder (save_pretrained layout)
    personas = "novelists_prompts.toml"   # persona prompts (models.persona_prompts)
    [data]
    evidence = "evidence/"                # folder of .txt files, a .txt file or a .jsonl of documents
    heldout = "heldout/"                  # held-out text (a manifest.jsonl gives each file's author)
    evidence_persona = "Charles Dickens"  # who wrote the evidence ("" when none of the personas did)
    [finetune]
    method = "lora"
    [compare]
    max_vocab = 2048

Every key but ``model.path``, ``model.personas``, ``data.evidence`` and ``data.heldout`` has a
default; relative paths are read from the config file's folder. The whole config is checked
before any model is loaded (one-line errors naming the key); the files it names are checked when
the run starts (model folder, prompt file, documents), still before any training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.experiment.config import build_section, check_keys, coerce
from models.devices import check_device_name
from models.errors import InputError
from models.limits import FINETUNE_METHODS, MAX_SEED, check_tokens

KIND = "hf"


@dataclass(frozen=True)
class HFModelConfig:
    """The base model and its personas."""

    path: str = ""  # local Hugging Face model folder (required)
    personas: str = ""  # persona prompt file, TOML or JSON (required)


@dataclass(frozen=True)
class HFDataConfig:
    """Evidence and held-out text, and how it is cut into token chunks (models.lm_text)."""

    evidence: str = ""  # fine-tuning text (required)
    heldout: str = ""  # held-out text the comparisons read (required)
    evidence_persona: str = ""  # the persona that wrote the evidence, by name ("" = none of them)
    chunk_tokens: int = 64  # tokens per evidence document
    evidence_docs: int = 128  # evidence chunks (a seeded choice)
    fresh_docs: int = 16  # further chunks of the evidence text, never trained on: held-out ELPD
    prompt_tokens: int = 0  # tokens of each evidence chunk that are context, not evidence (SFT mask)
    heldout_contexts: int = 32  # held-out contexts, round-robin over their writers
    heldout_tokens: int = 64  # tokens per held-out context (T)


@dataclass(frozen=True)
class HFFinetuneConfig:
    """Direct fine-tuning of the base on the evidence."""

    method: str = "lora"
    steps: int = 40
    lr: float = 1e-4
    batch_size: int = 8
    snapshots: tuple[int, ...] = (0, 10, 20, 40)
    rank: int = 8
    k: int = 1000
    weight_decay: float = 0.0
    checkpoint_dir: str = ""  # "" = no checkpoints; else a folder (resumed from when it holds some)
    checkpoint_every: int = 10
    prequential_blocks: int = 4  # 0 = no description length (it fine-tunes once per block)
    prequential_steps: int = 10


@dataclass(frozen=True)
class HFCompareConfig:
    """The comparisons that exist for a real LM (no R_true, no exact conditioning of the true text)."""

    max_vocab: int = 2048  # kept tokens of the coarsened next-token distributions
    betas: tuple[float, ...] = (0.0, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.1, 1.0)
    bootstrap: int = 200
    bootstrap_refit: str = "none"
    decomposition_restarts: int = 1
    attribution_completions: int = 16  # 0 = no attribution
    attribution_prompt_tokens: int = 16
    attribution_tokens: int = 16
    attribution_samples: int = 300
    attribution_warmup: int = 300
    attribution_chains: int = 2


@dataclass(frozen=True)
class HFExperimentConfig:
    """A whole ``kind = "hf"`` experiment."""

    seed: int = 0
    device: str = "cpu"
    model: HFModelConfig = field(default_factory=HFModelConfig)
    data: HFDataConfig = field(default_factory=HFDataConfig)
    finetune: HFFinetuneConfig = field(default_factory=HFFinetuneConfig)
    compare: HFCompareConfig = field(default_factory=HFCompareConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **dataclasses.asdict(self)}


SECTIONS = {"model": HFModelConfig, "data": HFDataConfig, "finetune": HFFinetuneConfig, "compare": HFCompareConfig}
#: keys that hold paths, read relative to the config file's folder
PATH_KEYS = (("model", "path"), ("model", "personas"), ("data", "evidence"), ("data", "heldout"),
             ("finetune", "checkpoint_dir"))


def load(raw: dict[str, Any], folder: Path) -> HFExperimentConfig:
    """``kind = "hf"`` (:mod:`inference.experiment.kinds`): validate a parsed config; paths from ``folder``."""
    if not isinstance(raw, dict):
        raise InputError(f"an experiment config must be a table of keys, got {type(raw).__name__}")
    check_keys(raw, {"kind", "seed", "device", *SECTIONS}, "")
    values: dict[str, Any] = {}
    if "seed" in raw:
        values["seed"] = coerce("seed", raw["seed"], int)
    if "device" in raw:
        values["device"] = coerce("device", raw["device"], str)
    for name, cls in SECTIONS.items():
        if name in raw:
            values[name] = build_section(cls, raw[name], name)
    config = HFExperimentConfig(**values)
    validate(config)
    for section, key in PATH_KEYS:
        value = getattr(getattr(config, section), key)
        if value and not Path(value).expanduser().is_absolute():
            value = str(Path(folder) / Path(value).expanduser())
        part = dataclasses.replace(getattr(config, section), **{key: str(Path(value).expanduser()) if value else ""})
        config = dataclasses.replace(config, **{section: part})
    return config


def validate(config: HFExperimentConfig) -> None:
    """Range checks; each error names its key."""
    m, d, f, c = config.model, config.data, config.finetune, config.compare
    if not 0 <= config.seed <= MAX_SEED:
        raise InputError(f"seed must lie in [0, {MAX_SEED}], got {config.seed!r}")
    try:
        check_device_name(config.device)
    except InputError as exc:
        raise InputError(f"device: {exc}") from None
    for key, value in (("model.path", m.path), ("model.personas", m.personas), ("data.evidence", d.evidence),
                       ("data.heldout", d.heldout)):
        if not value.strip():
            raise InputError(f"{key} is required (a path)")
    if Path(d.evidence) == Path(d.heldout):
        raise InputError("data.heldout must differ from data.evidence (the comparisons read held-out text)")
    for key in ("chunk_tokens", "evidence_docs", "heldout_contexts", "heldout_tokens"):
        _at_least(f"data.{key}", getattr(d, key), 1)
    for key in ("fresh_docs", "prompt_tokens"):
        _at_least(f"data.{key}", getattr(d, key), 0)
    _at_least("data.heldout_tokens", d.heldout_tokens, 2)
    if d.prompt_tokens >= d.chunk_tokens:
        raise InputError(f"data.prompt_tokens must be < data.chunk_tokens ({d.chunk_tokens}), got {d.prompt_tokens}")
    check_tokens("data.evidence_docs x data.chunk_tokens", d.evidence_docs * d.chunk_tokens)
    check_tokens("data.heldout_contexts x data.heldout_tokens", d.heldout_contexts * d.heldout_tokens)
    if f.method not in FINETUNE_METHODS:
        raise InputError(f"finetune.method must be one of {', '.join(FINETUNE_METHODS)}, got {f.method!r}")
    for key in ("steps", "batch_size", "rank", "k", "checkpoint_every", "prequential_steps"):
        _at_least(f"finetune.{key}", getattr(f, key), 1)
    _at_least("finetune.prequential_blocks", f.prequential_blocks, 0)
    if not f.lr > 0:
        raise InputError(f"finetune.lr must be > 0, got {f.lr!r}")
    if not f.weight_decay >= 0:
        raise InputError(f"finetune.weight_decay must be >= 0, got {f.weight_decay!r}")
    s = list(f.snapshots)
    if not s or sorted(set(s)) != s or s[0] != 0 or s[-1] > f.steps or len(s) < 2:
        raise InputError(f"finetune.snapshots must rise strictly from 0 to at most finetune.steps "
                         f"(at least one step > 0), got {s}")
    _at_least("compare.max_vocab", c.max_vocab, 2)
    if len(c.betas) < 2 or any(not b >= 0 for b in c.betas):
        raise InputError(f"compare.betas needs at least two finite values >= 0, got {list(c.betas)}")
    if c.bootstrap_refit not in ("none", "full"):
        raise InputError(f"compare.bootstrap_refit must be 'none' or 'full', got {c.bootstrap_refit!r}")
    for key in ("bootstrap", "attribution_samples", "attribution_warmup", "attribution_chains",
                "attribution_prompt_tokens", "attribution_tokens"):
        _at_least(f"compare.{key}", getattr(c, key), 1)
    for key in ("decomposition_restarts", "attribution_completions"):
        _at_least(f"compare.{key}", getattr(c, key), 0)
    if c.attribution_prompt_tokens > d.heldout_tokens:
        raise InputError(f"compare.attribution_prompt_tokens must be <= data.heldout_tokens ({d.heldout_tokens})")
    if c.attribution_completions > d.heldout_contexts:
        raise InputError(f"compare.attribution_completions must be <= data.heldout_contexts ({d.heldout_contexts})")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise InputError(f"{key} must be >= {low}, got {value!r}")
