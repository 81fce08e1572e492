"""``psm sweep``: is the exhaustiveness measure stable across seeds, methods, learning rates, steps and sizes?

A sweep file names an experiment (``"demo"``, or a ``psm run`` config of the default kind) and a grid::

    experiment = "demo"
    [grid]                        # every combination is one point; each point runs every arm
    seed = [0, 1, 2]
    method = ["full", "lora", "last_layer", "k_params"]
    lr = [3e-4, 3e-3]
    steps = [60]
    num_docs = [32, 1024]         # evidence documents per arm
    [measure]
    bootstrap = 100               # replicates of each E interval

Each point fine-tunes the experiment's base on every arm's evidence with its settings and measures
the final snapshot (:func:`measure_point`): ``KL(q_s || q0)``, ``E`` against ``R_true`` and ``R_self``
with bootstrap intervals, ``beta*``, forgetting, the in-context ``gamma`` and the final training loss
(not the attribution, ELPD or code length of ``psm run``: they cost minutes per point). Points are
independent jobs: with Ray installed (``pip install -e '.[sweep]'``) they run as Ray tasks on a local
cluster, or on an existing one with ``address``; without Ray, one after another in this process.
Every finished point is written to ``points/<id>.json`` at once, so a sweep killed midway resumes
without redoing them (``resume=True``); a point that fails is recorded with its error and does not
stop the others. :func:`merge_points` makes ``sweep.csv`` (one row per point and arm).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import InputError
from models.limits import FINETUNE_METHODS, MAX_SEED

#: the settings a grid may vary, and their types
GRID_KEYS = {"seed": int, "method": str, "lr": float, "steps": int, "num_docs": int}
EXECUTORS = ("auto", "ray", "local")
#: the columns of ``sweep.csv``, in order
COLUMNS = ["point", *GRID_KEYS, "arm", "evidence_persona", "kl_to_base", "E_true", "E_true_low", "E_true_high",
           "E_self", "E_self_low", "E_self_high", "beta_star", "forgetting", "gamma_true", "gamma_self",
           "final_training_loss", "seconds", "error"]


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the experiment it varies, the grid, and the measurement settings."""

    experiment: str = "demo"
    grid: dict[str, tuple] = field(default_factory=lambda: {"seed": (0,), "method": ("full",)})
    bootstrap: int = 100
    folder: str = "."  # where a relative experiment path is read from

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the grid, in a fixed order, each with its ``point`` id."""
        keys = [k for k in GRID_KEYS if k in self.grid]
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            settings = dict(zip(keys, values, strict=True))
            out.append({"point": point_id(settings), **settings})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "grid": {k: list(v) for k, v in self.grid.items()},
                "bootstrap": self.bootstrap}


def point_id(settings: dict[str, Any]) -> str:
    """A short stable name for a grid point (its settings hashed)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file (module docstring); one-line errors naming the key."""
    from inference.experiment.config import check_keys, read_toml

    path = Path(path)
    raw = read_toml(path)
    check_keys(raw, {"experiment", "grid", "measure"}, "")
    experiment = raw.get("experiment", "demo")
    if not isinstance(experiment, str) or not experiment:
        raise InputError(f"experiment must be 'demo' or the path of a psm run config, got {experiment!r}")
    grid = raw.get("grid", {})
    if not isinstance(grid, dict) or not grid:
        raise InputError("grid: need a [grid] table with at least one of " + ", ".join(GRID_KEYS))
    check_keys(grid, set(GRID_KEYS), "grid.")
    measure = raw.get("measure", {})
    check_keys(measure if isinstance(measure, dict) else {}, {"bootstrap"}, "measure.")
    config = SweepConfig(experiment, {k: _grid_values(k, v) for k, v in grid.items()},
                         bootstrap=int(measure.get("bootstrap", 100)), folder=str(path.parent))
    if isinstance(measure.get("bootstrap", 100), bool) or not 1 <= config.bootstrap <= 100_000:
        raise InputError(f"measure.bootstrap must be an integer in [1, 100000], got {measure.get('bootstrap')!r}")
    base_experiment(config)  # the experiment itself must load, before any work
    return config


def _grid_values(key: str, values: Any) -> tuple:
    kind = GRID_KEYS[key]
    if not isinstance(values, list) or not values:
        raise InputError(f"grid.{key} must be a non-empty list, got {values!r}")
    out = []
    for v in values:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) or not isinstance(v, kind):
            raise InputError(f"grid.{key} must hold {kind.__name__} values, got {v!r}")
        if key == "method" and v not in FINETUNE_METHODS:
            raise InputError(f"grid.method must be among {', '.join(FINETUNE_METHODS)}, got {v!r}")
        if key == "seed" and not 0 <= v <= MAX_SEED:
            raise InputError(f"grid.seed must lie in [0, {MAX_SEED}], got {v}")
        if kind is not str and key != "seed" and not v > 0:
            raise InputError(f"grid.{key} must be > 0, got {v!r}")
        out.append(v)
    if len(set(out)) != len(out):
        raise InputError(f"grid.{key} repeats a value: {values}")
    return tuple(out)


def base_experiment(config: SweepConfig):
    """The experiment the sweep varies (an :class:`~inference.experiment.config.ExperimentConfig`)."""
    from inference.experiment.config import demo_config, load_config

    if config.experiment == "demo":
        return demo_config()
    path = Path(config.experiment)
    return load_config(path if path.is_absolute() else Path(config.folder) / path)


def point_experiment(config: SweepConfig, point: dict[str, Any]):
    """The experiment of one grid point: the base experiment with the point's settings."""
    experiment = base_experiment(config)
    f = experiment.finetune
    steps = point.get("steps", f.steps)
    finetune = dataclasses.replace(f, method=point.get("method", f.method), lr=point.get("lr", f.lr), steps=steps,
                                   snapshots=(0, steps))
    arms = tuple(dataclasses.replace(a, num_docs=point.get("num_docs", a.num_docs)) for a in experiment.arms)
    compare = dataclasses.replace(experiment.compare, bootstrap=config.bootstrap)
    return dataclasses.replace(experiment, seed=point.get("seed", experiment.seed), finetune=finetune, arms=arms,
                               compare=compare)


def measure_point(config_dict: dict[str, Any], point: dict[str, Any]) -> list[dict[str, Any]]:
    """Run one grid point (every arm) and return its rows; errors become a row with ``error`` set.

    Takes plain data (the sweep config as a dict) so that it runs unchanged as a Ray task.
    """
    from inference.experiment.sweep_point import point_rows

    config = SweepConfig(**config_dict)
    start = time.perf_counter()
    try:
        rows = point_rows(point_experiment(config, point))
    except Exception as exc:  # a failing point is a finding, not the end of the sweep
        message = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        rows = [{"arm": None, "error": message}]
    seconds = time.perf_counter() - start
    return [{**{k: None for k in COLUMNS}, **point, **row, "seconds": seconds} for row in rows]


def run_points(config: SweepConfig, todo: list[dict[str, Any]], executor: str = "auto", address: str | None = None,
               on_done: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None,
               progress: bool = False) -> str:
    """Run ``todo`` points; ``on_done(point, rows)`` as each finishes. Returns the executor used."""
    from tqdm.auto import tqdm

    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    use_ray = executor == "ray" or (executor == "auto" and (address is not None or _ray_available()))
    if use_ray and not _ray_available():
        raise InputError("executor 'ray' needs Ray: pip install -e '.[sweep]' (or use --executor local)")
    on_done = on_done or (lambda point, rows: None)
    with tqdm(total=len(todo), desc="sweep points", disable=not progress) as bar:
        for point, rows in (_ray_results(config, todo, address) if use_ray else _local_results(config, todo)):
            on_done(point, rows)
            bar.update()
    return "ray" if use_ray else "local"


def _local_results(config: SweepConfig, todo: list[dict[str, Any]]) -> Iterator[tuple[dict, list[dict]]]:
    for point in todo:
        yield point, measure_point(config.to_dict() | {"folder": config.folder}, point)


def _ray_results(config: SweepConfig, todo: list[dict[str, Any]], address: str | None
                 ) -> Iterator[tuple[dict, list[dict]]]:
    import ray

    started = not ray.is_initialized()
    if started:
        import logging

        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        task = ray.remote(num_cpus=1)(measure_point)
        data = config.to_dict() | {"folder": config.folder}
        pending = {task.remote(data, point): point for point in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True
