"""Experiment configuration: dataclasses, TOML loading, one-line errors that name the key.

An experiment file has a top-level ``seed`` and the tables ``[world]``,
``[base]``, ``[finetune]``, ``[compare]`` and one ``[[arms]]`` table per
evidence arm. Every key is optional: an empty file is the ``psm demo`` experiment
(its world, arms, fine-tuning and comparisons, and the shipped base checkpoint, which
``base.checkpoint = "auto"`` picks whenever the world and ``[base]`` are the ones it was
trained with; change them and a base is pre-trained for the new world first). The whole
file is validated before any work. Example::

    seed = 0
    [world]
    num_personas = 6
    vocab_size = 24
    [[arms]]
    name = "in_support"
    persona = 2            # a known persona's index, or "novel" (outside the support)
    [[arms]]
    name = "novel"
    persona = "novel"
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import InputError
from models.limits import (
    FINETUNE_METHODS,
    MAX_INT,
    MAX_PARAMETERS,
    MAX_SEED,
    check_sizes,
    check_tokens,
)

#: the experiment kind this module describes (``kind = "personas"``, the default of ``psm run``)
KIND = "personas"


@dataclass(frozen=True)
class WorldConfig:
    """The simulated persona world and its pre-training corpus."""

    num_personas: int = 6
    vocab_size: int = 24
    order: int = 1
    concentration: float = 0.2
    corpus_docs: int = 100_000
    doc_len: int = 48
    heldout_contexts: int = 128
    seed: int = 0


@dataclass(frozen=True)
class BaseConfig:
    """The pre-trained base transformer (or a checkpoint of one)."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 96
    steps: int = 3000
    batch_size: int = 128
    lr: float = 6e-3
    p_tag: float = 0.5
    checkpoint: str = "auto"  # "auto": the shipped one if it fits, else pre-train; "default"; "" (pre-train); a folder


@dataclass(frozen=True)
class ArmConfig:
    """One evidence arm: fine-tuning data from one persona."""

    name: str = "in_support"
    persona: int | str = 2  # index of a known persona, or "novel"
    num_docs: int = 1024
    doc_len: int = 48
    prompt_len: int = 0  # tokens before this position are context, not evidence (SFT mask)
    concentration: float = 0.2  # of the novel persona's rows


@dataclass(frozen=True)
class FinetuneConfig:
    """Direct fine-tuning of the base on each arm's evidence."""

    method: str = "full"
    steps: int = 60
    lr: float = 3e-4
    batch_size: int = 32
    snapshots: tuple[int, ...] = (0, 5, 10, 20, 40, 60)
    rank: int = 4
    k: int = 100
    scratch_steps: int = 150
    prequential_blocks: int = 4
    prequential_steps: int = 15


@dataclass(frozen=True)
class CompareConfig:
    """The comparisons of DESIGN.md §3."""

    # the posterior moves from prior to one persona over beta * n_tokens ~ 1 .. 100: a log grid
    betas: tuple[float, ...] = (0.0, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.1, 1.0)
    bootstrap: int = 200
    bootstrap_refit: str = "none"  # "none": q* held at the full fit; "full": (w, theta) refitted per resample
    decomposition_restarts: int = 1  # corner-leaning starts of the decomposition fit beyond w*(s)
    attribution_completions: int = 48
    attribution_prompt_len: int = 8
    attribution_samples: int = 300
    attribution_warmup: int = 300
    attribution_chains: int = 2
    elpd_docs: int = 64


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment (``psm run CONFIG.toml``)."""

    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    arms: tuple[ArmConfig, ...] = (ArmConfig("in_support", 2), ArmConfig("novel", "novel"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def demo_config() -> ExperimentConfig:
    """The ``psm demo`` experiment: the default world with the shipped base checkpoint.

    With the environment variable ``PSM_SMOKE=1`` (the tests' switch, as for the
    notebooks) every size except the world's tables is shrunk to run in seconds.
    """
    config = ExperimentConfig(base=BaseConfig(checkpoint="default"))
    if os.environ.get("PSM_SMOKE") == "1":
        config = dataclasses.replace(
            config,
            world=dataclasses.replace(config.world, heldout_contexts=16),
            finetune=dataclasses.replace(config.finetune, steps=4, snapshots=(0, 2, 4), scratch_steps=5,
                                         prequential_blocks=2, prequential_steps=2),
            compare=dataclasses.replace(config.compare, bootstrap=20, attribution_completions=8,
                                        attribution_samples=30, attribution_warmup=30, attribution_chains=2,
                                        elpd_docs=8),
            arms=tuple(dataclasses.replace(a, num_docs=8) for a in config.arms),
        )
    return config


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed TOML document at ``path``; one-line :class:`InputError` when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({str(exc).splitlines()[0]})") from None


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and validate an experiment TOML file of the default kind (errors name the offending key).

    The whole config is checked before any work starts; an empty file is the
    ``psm demo`` experiment with a base pre-trained for it (every key is optional except
    what the defaults cannot supply). Relative checkpoint paths are read from the file's folder.
    """
    path = Path(path)
    return resolve_paths(config_from_dict(read_toml(path)), path.parent)


def resolve_paths(config: ExperimentConfig, folder: Path) -> ExperimentConfig:
    """``base.checkpoint`` relative to ``folder`` (the config file's), unless absolute or ``default``."""
    if config.base.checkpoint not in ("", "auto", "default"):
        ckpt = Path(config.base.checkpoint)
        if not ckpt.is_absolute():
            ckpt = folder / ckpt
        config = dataclasses.replace(config, base=dataclasses.replace(config.base, checkpoint=str(ckpt)))
    return config


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a parsed TOML document against the dataclasses above."""
    sections = {"world": WorldConfig, "base": BaseConfig, "finetune": FinetuneConfig, "compare": CompareConfig}
    if not isinstance(raw, dict):
        raise InputError(f"an experiment config must be a table of keys, got {type(raw).__name__}")
    check_keys(raw, {"kind", "seed", "arms", *sections}, "")
    if raw.get("kind", KIND) != KIND:
        raise InputError(f"kind = {raw['kind']!r} is not a persona-world experiment; run it with 'psm run'")
    values: dict[str, Any] = {}
    if "seed" in raw:
        values["seed"] = coerce("seed", raw["seed"], int)
    for name, cls in sections.items():
        if name in raw:
            values[name] = build_section(cls, raw[name], name)
    if "arms" in raw:
        arms = raw["arms"]
        if not isinstance(arms, (list, tuple)) or not arms:
            raise InputError("arms: need at least one [[arms]] table")
        values["arms"] = tuple(build_section(ArmConfig, arm, f"arms[{i}]") for i, arm in enumerate(arms))
    config = ExperimentConfig(**values)
    validate(config)
    return config


def validate(config: ExperimentConfig) -> None:
    """Range checks of the whole config; each error names its key."""
    for key, seed in (("seed", config.seed), ("world.seed", config.world.seed)):
        if not 0 <= seed <= MAX_SEED:
            raise InputError(f"{key} must lie in [0, {MAX_SEED}], got {seed!r}")
    _validate_world(config.world)
    _validate_base(config.base, config.world)
    _validate_finetune(config.finetune)
    _validate_compare(config.compare, config.world)
    _validate_arms(config.arms, config.world, config.compare)


def _validate_world(w: WorldConfig) -> None:
    _positive("world.num_personas", w.num_personas)
    _at_least("world.vocab_size", w.vocab_size, 2)
    _at_least("world.order", w.order, 0)
    _positive("world.concentration", w.concentration)
    for key in ("corpus_docs", "doc_len", "heldout_contexts"):
        _positive(f"world.{key}", getattr(w, key))
    try:
        check_sizes(num_personas=w.num_personas, vocab_size=w.vocab_size, order=w.order)
    except InputError as exc:
        raise InputError(f"[world]: {exc}") from None
    for key in ("corpus_docs", "heldout_contexts"):
        check_tokens(f"world.{key} x world.doc_len", getattr(w, key) * w.doc_len)


def _validate_base(b: BaseConfig, w: WorldConfig) -> None:
    for key in ("n_layer", "n_head", "n_embd", "steps", "batch_size"):
        _positive(f"base.{key}", getattr(b, key))
    if b.n_embd % b.n_head:
        raise InputError(f"base.n_embd ({b.n_embd}) must be a multiple of base.n_head ({b.n_head})")
    parameters = 12 * b.n_layer * b.n_embd**2 + (w.vocab_size + w.num_personas + w.doc_len + 3) * b.n_embd
    if parameters > MAX_PARAMETERS:
        raise InputError(f"base.n_layer = {b.n_layer} and base.n_embd = {b.n_embd} make a transformer of about "
                         f"{parameters:.2g} parameters (limit {MAX_PARAMETERS:.0e})")
    check_tokens("base.batch_size x world.doc_len", b.batch_size * w.doc_len)
    _positive("base.lr", b.lr)
    if not 0 <= b.p_tag <= 1:
        raise InputError(f"base.p_tag must lie in [0, 1], got {b.p_tag}")


def _validate_finetune(f: FinetuneConfig) -> None:
    if f.method not in FINETUNE_METHODS:
        raise InputError(f"finetune.method must be one of {', '.join(FINETUNE_METHODS)}, got {f.method!r}")
    for key in ("steps", "batch_size", "rank", "k", "scratch_steps", "prequential_blocks", "prequential_steps"):
        _positive(f"finetune.{key}", getattr(f, key))
    _positive("finetune.lr", f.lr)
    if not f.snapshots or sorted(set(f.snapshots)) != list(f.snapshots) or f.snapshots[0] != 0 or f.snapshots[-1] > f.steps:
        raise InputError(f"finetune.snapshots must rise strictly from 0 to at most finetune.steps, got {list(f.snapshots)}")


def _validate_compare(c: CompareConfig, w: WorldConfig) -> None:
    if len(c.betas) < 2 or any(not (math.isfinite(x) and x >= 0) for x in c.betas):
        raise InputError(f"compare.betas needs at least two finite values >= 0, got {list(c.betas)}")
    if c.bootstrap_refit not in ("none", "full"):
        raise InputError(f"compare.bootstrap_refit must be 'none' or 'full', got {c.bootstrap_refit!r}")
    if c.decomposition_restarts < 0:
        raise InputError(f"compare.decomposition_restarts must be >= 0, got {c.decomposition_restarts}")
    for key in ("bootstrap", "attribution_completions", "attribution_samples", "attribution_warmup",
                "attribution_chains", "elpd_docs"):
        _positive(f"compare.{key}", getattr(c, key))
    if not 0 < c.attribution_prompt_len < w.doc_len:
        raise InputError(f"compare.attribution_prompt_len must lie in (0, world.doc_len={w.doc_len})")


def _validate_arms(arms: tuple[ArmConfig, ...], w: WorldConfig, c: CompareConfig) -> None:
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise InputError(f"arms: names must be unique, got {names}")
    for i, arm in enumerate(arms):
        key = f"arms[{i}]"
        if arm.persona != "novel" and not (isinstance(arm.persona, int) and 0 <= arm.persona < w.num_personas):
            raise InputError(f"{key}.persona must be 'novel' or an index in [0, {w.num_personas}), got {arm.persona!r}")
        _positive(f"{key}.num_docs", arm.num_docs)
        _positive(f"{key}.doc_len", arm.doc_len)
        check_tokens(f"{key}.num_docs x {key}.doc_len", arm.num_docs * arm.doc_len)
        check_tokens(f"compare.elpd_docs x {key}.doc_len", c.elpd_docs * arm.doc_len)
        _positive(f"{key}.concentration", arm.concentration)
        if arm.doc_len > w.doc_len:
            raise InputError(f"{key}.doc_len = {arm.doc_len} is longer than the world's documents "
                             f"(world.doc_len = {w.doc_len}): the base never read positions beyond them")
        if not 0 <= arm.prompt_len < arm.doc_len:
            raise InputError(f"{key}.prompt_len must lie in [0, {key}.doc_len), got {arm.prompt_len}")
        if not arm.name.replace("_", "").replace("-", "").isalnum():
            raise InputError(f"{key}.name must be letters, digits, '_' or '-', got {arm.name!r}")


def build_section(cls, raw: Any, prefix: str):
    """A dataclass ``cls`` from a TOML table: unknown keys and mistyped values are one-line errors
    naming ``prefix.key``; missing keys take the dataclass defaults (any experiment kind can use it)."""
    if not isinstance(raw, dict):
        raise InputError(f"{prefix}: expected a table, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(raw, set(fields), prefix + ".")
    kwargs = {}
    for key, value in raw.items():
        default = getattr(cls(), key)
        kwargs[key] = coerce(f"{prefix}.{key}", value, type(default), default)
    return cls(**kwargs)


def check_keys(raw: dict, allowed: set[str], prefix: str) -> None:
    """One-line error naming the first key of ``raw`` outside ``allowed``."""
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InputError(f"unknown key {prefix}{unknown[0]} (allowed: {', '.join(sorted(allowed))})")


def coerce(key: str, value: Any, kind: type, default: Any = None) -> Any:
    """``value`` as the type of a config field (ints as floats, lists as tuples), or a one-line error."""
    if key.endswith(".persona"):
        if value == "novel" or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise InputError(f"{key} must be 'novel' or an integer, got {value!r}")
    if kind is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key} must be a list, got {value!r}")
        element = type(default[0]) if default else float
        return tuple(coerce(key, v, element) for v in value)
    if kind is bool or isinstance(value, bool):
        if kind is bool and isinstance(value, bool):
            return value
        raise InputError(f"{key} must be {kind.__name__}, got {value!r}")
    if kind is float and isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise InputError(f"{key} must be a finite number, got an integer of {len(str(abs(value)))} digits") from None
    if kind is int and isinstance(value, int) and abs(value) > MAX_INT:
        raise InputError(f"{key} must be an integer of magnitude <= {MAX_INT}, got {value!r}")
    if not isinstance(value, kind):
        raise InputError(f"{key} must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise InputError(f"{key} must be finite, got {value!r}")
    return value


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise InputError(f"{key} must be > 0, got {value!r}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise InputError(f"{key} must be >= {low}, got {value!r}")
