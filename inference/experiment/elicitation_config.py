"""The ``kind = "elicitation"`` experiment's configuration: dataclasses, validation, the smoke version.

Example (every key optional; the defaults are the shipped ``configs/elicitation.toml``)::

    kind = "elicitation"
    seed = 0
    num_seeds = 3                     # k-parameter subsets (and data orders) per k
    [base]
    checkpoint = "default"            # the base shipped for the default world (psm demo's)
    [evidence]
    persona = 2                       # in-support evidence: a persona the base knows
    period = 8                        # rule evidence: the first 8 tokens repeat (no persona does that)
    [finetune]
    ks = [10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000]   # and "all" (full fine-tuning)

``[world]`` and ``[base]`` are those of the ``personas`` kind (:mod:`inference.experiment.config`).
Every error is one line naming the key, raised before any work; a ``k`` above the base's
parameter count is refused with the count.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.experiment.config import (
    ArmConfig,
    BaseConfig,
    CompareConfig,
    ExperimentConfig,
    WorldConfig,
    build_section,
    check_keys,
    coerce,
    resolve_paths,
    validate,
)
from models.errors import InputError
from models.limits import MAX_SEED, check_tokens

KIND = "elicitation"
#: the two kinds of evidence
EVIDENCE_KINDS = ("in_support", "rule")


@dataclass(frozen=True)
class ElicitationEvidenceConfig:
    """The two kinds of evidence on the same base, and their held-out documents."""

    persona: int = 2
    doc_len: int = 16
    period: int = 8
    num_docs: int = 512
    validation_docs: int = 64  # choose the learning rate and the snapshot
    test_docs: int = 128  # measure the share of the gain


@dataclass(frozen=True)
class ElicitationFinetuneConfig:
    """Training only ``k`` random parameters, and full fine-tuning as the reference."""

    ks: tuple[int, ...] = (10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
    lr_all: float = 1e-3  # the centre of the learning-rate grid when every parameter trains ...
    lr_exponent: float = 0.5  # ... and with k of N parameters: lr_all * (N / k) ** lr_exponent
    lr_factors: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0)  # the grid: the centre times these
    steps: int = 100
    batch_size: int = 32
    snapshots: tuple[int, ...] = (25, 50, 100)
    prequential_blocks: int = 4
    prequential_steps: int = 30
    prequential_lr: float = 1e-3


@dataclass(frozen=True)
class FitConfig:
    """The logistic curve in ``log10 k`` (:func:`inference.comparison.logistic.fit_logistic`)."""

    num_samples: int = 300
    warmup_steps: int = 300
    num_chains: int = 4
    level: float = 0.9


@dataclass(frozen=True)
class ElicitationCompareConfig:
    """``E`` (DESIGN.md §3.3) of the first seed's model at every ``k`` on the world's held-out contexts."""

    exhaustiveness: bool = True
    bootstrap: int = 100
    decomposition_restarts: int = 1


@dataclass(frozen=True)
class ElicitationExperiment:
    """The whole elicitation experiment (``psm run elicitation``)."""

    seed: int = 0
    num_seeds: int = 3
    world: WorldConfig = field(default_factory=WorldConfig)
    base: BaseConfig = field(default_factory=lambda: BaseConfig(checkpoint="default"))
    evidence: ElicitationEvidenceConfig = field(default_factory=ElicitationEvidenceConfig)
    finetune: ElicitationFinetuneConfig = field(default_factory=ElicitationFinetuneConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    compare: ElicitationCompareConfig = field(default_factory=ElicitationCompareConfig)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]

    def experiment(self) -> ExperimentConfig:
        """The ``personas``-kind config of the same world and base (to load, pre-train and check the base).

        Its arm and comparisons are placeholders that fit any valid world, so that validating it checks
        ``[world]`` and ``[base]`` only.
        """
        return ExperimentConfig(seed=self.seed, world=self.world, base=self.base,
                                arms=(ArmConfig("evidence", 0, doc_len=self.world.doc_len),),
                                compare=CompareConfig(attribution_prompt_len=1))

    def compare_config(self) -> CompareConfig:
        return CompareConfig(bootstrap=self.compare.bootstrap, decomposition_restarts=self.compare.decomposition_restarts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"world": WorldConfig, "base": BaseConfig, "evidence": ElicitationEvidenceConfig,
            "finetune": ElicitationFinetuneConfig, "fit": FitConfig, "compare": ElicitationCompareConfig}


def elicitation_from_dict(raw: dict[str, Any], folder: Path) -> ElicitationExperiment:
    """Validate a parsed TOML document (module docstring); relative checkpoints are read from ``folder``."""
    if not isinstance(raw, dict):
        raise InputError(f"an experiment config must be a table of keys, got {type(raw).__name__}")
    check_keys(raw, {"kind", "seed", "num_seeds", *SECTIONS}, "")
    if raw.get("kind") != KIND:
        raise InputError(f"kind = {raw.get('kind')!r} is not the elicitation experiment (kind = {KIND!r})")
    values: dict[str, Any] = {key: coerce(key, raw[key], int) for key in ("seed", "num_seeds") if key in raw}
    for name, cls in SECTIONS.items():
        if name in raw:
            section = raw[name]
            if name == "base" and isinstance(section, dict) and "checkpoint" not in section:
                section = {**section, "checkpoint": ""}  # a [base] without a checkpoint pre-trains one
            values[name] = build_section(cls, section, name)
    config = ElicitationExperiment(**values)
    check(config)
    experiment = resolve_paths(config.experiment(), folder)
    return dataclasses.replace(config, base=experiment.base)


def check(config: ElicitationExperiment) -> None:
    """Range checks of every section (the world and base through the ``personas`` kind's checks)."""
    if not 0 <= config.seed <= MAX_SEED - 1000 or not 1 <= config.num_seeds <= 1000:
        raise InputError(f"seed must lie in [0, {MAX_SEED - 1000}] and num_seeds in [1, 1000], "
                         f"got {config.seed}, {config.num_seeds}")
    validate(config.experiment())  # [world] and [base], as for `psm run` of the default kind
    e, f, fit = config.evidence, config.finetune, config.fit
    if not 0 <= e.persona < config.world.num_personas:
        raise InputError(f"evidence.persona must be an index in [0, {config.world.num_personas}), got {e.persona}")
    if not 2 <= e.doc_len <= config.world.doc_len:
        raise InputError(f"evidence.doc_len must lie in [2, world.doc_len={config.world.doc_len}] (the base's "
                         f"positions), got {e.doc_len}")
    if not 1 <= e.period < e.doc_len:
        raise InputError(f"evidence.period must lie in [1, evidence.doc_len={e.doc_len}), got {e.period}")
    for key in ("num_docs", "validation_docs", "test_docs"):
        if getattr(e, key) < 2:
            raise InputError(f"evidence.{key} must be >= 2, got {getattr(e, key)}")
        check_tokens(f"evidence.{key} x evidence.doc_len", getattr(e, key) * e.doc_len)
    total = num_parameters(config)
    if not f.ks or sorted(set(f.ks)) != list(f.ks):
        raise InputError(f"finetune.ks must rise strictly, got {list(f.ks)}")
    for i, k in enumerate(f.ks):
        if not 1 <= k < total:
            raise InputError(f"finetune.ks[{i}] = {k}: k must lie in [1, {total}) — the base has {total} parameters "
                             "(all of them is the full fine-tuning reference, always run)")
    if not f.lr_factors or any(not (math.isfinite(v) and v > 0) for v in f.lr_factors):
        raise InputError(f"finetune.lr_factors needs at least one finite factor > 0, got {list(f.lr_factors)}")
    if not (math.isfinite(f.lr_all) and f.lr_all > 0):
        raise InputError(f"finetune.lr_all must be a finite number > 0, got {f.lr_all}")
    if not 0 <= f.lr_exponent <= 2:
        raise InputError(f"finetune.lr_exponent must lie in [0, 2], got {f.lr_exponent}")
    for key in ("steps", "batch_size", "prequential_blocks", "prequential_steps"):
        if getattr(f, key) < 1:
            raise InputError(f"finetune.{key} must be >= 1, got {getattr(f, key)}")
    if not (math.isfinite(f.prequential_lr) and f.prequential_lr > 0):
        raise InputError(f"finetune.prequential_lr must be a finite number > 0, got {f.prequential_lr}")
    if not f.snapshots or sorted(set(f.snapshots)) != list(f.snapshots) or f.snapshots[0] < 1 \
            or f.snapshots[-1] != f.steps:
        raise InputError(f"finetune.snapshots must rise strictly from >= 1 to finetune.steps, got {list(f.snapshots)}")
    if f.prequential_blocks > e.num_docs:
        raise InputError(f"finetune.prequential_blocks ({f.prequential_blocks}) exceeds evidence.num_docs ({e.num_docs})")
    for key, low in (("num_samples", 4), ("warmup_steps", 1), ("num_chains", 1)):
        if getattr(fit, key) < low:
            raise InputError(f"fit.{key} must be >= {low}, got {getattr(fit, key)}")
    if not 0 < fit.level < 1:
        raise InputError(f"fit.level must lie in (0, 1), got {fit.level}")
    if config.compare.bootstrap < 1 or config.compare.decomposition_restarts < 0:
        raise InputError("compare.bootstrap must be >= 1 and compare.decomposition_restarts >= 0")


def learning_rates(config: ElicitationExperiment, k: int, total: int) -> list[float]:
    """The learning rates tried with ``k`` of ``total`` parameters: ``lr_all * (total / k) ** lr_exponent``
    times each of ``lr_factors`` (Adam moves each trained scalar by about the learning rate, so fewer
    scalars need larger steps to change the model as much)."""
    f = config.finetune
    centre = f.lr_all * (total / k) ** f.lr_exponent
    return [centre * factor for factor in f.lr_factors]


def num_parameters(config: ElicitationExperiment) -> int:
    """The base's parameter count, from its sizes alone (a model on the meta device: no memory, no RNG)."""
    import torch

    from inference.experiment.world import model_config
    from models.transformer import PersonaLM
    from models.transformer import num_parameters as count

    with torch.device("meta"):
        return count(PersonaLM(model_config(config.experiment())))


def smoke(config: ElicitationExperiment) -> ElicitationExperiment:
    """A seconds-sized version of ``config`` (the notebooks' ``PSM_SMOKE=1``)."""
    r = dataclasses.replace
    return r(config, num_seeds=2,
             world=r(config.world, heldout_contexts=8),
             evidence=r(config.evidence, num_docs=32, validation_docs=8, test_docs=16),
             finetune=r(config.finetune, ks=(10, 1000), lr_all=3e-3, lr_factors=(1.0,), steps=4, snapshots=(2, 4),
                        prequential_blocks=2, prequential_steps=2),
             fit=r(config.fit, num_samples=20, warmup_steps=20, num_chains=2),
             compare=r(config.compare, bootstrap=10))


def smoke_if_asked(config: ElicitationExperiment) -> ElicitationExperiment:
    """``smoke(config)`` when the environment says ``PSM_SMOKE=1``, else ``config``."""
    return smoke(config) if os.environ.get("PSM_SMOKE") == "1" else config
