"""The kinds of experiment ``psm run CONFIG.toml`` runs: the config's top-level ``kind`` names one.

=====================  ==========================================  ===========================
``kind``               what it runs                                module
=====================  ==========================================  ===========================
``personas`` (default) fine-tuning vs conditioning in a persona    :mod:`inference.experiment.runner`
                       world (``psm demo``; DESIGN.md §3)
``novelists``          authorship of real text: five novelists,    :mod:`inference.experiment.novelists`
                       out-of-support test, author-tagged LM
=====================  ==========================================  ===========================

A kind is a module with two functions::

    load(raw: dict, folder: Path) -> config
        validate the whole parsed TOML document (``kind`` included) before any work, with
        one-line InputErrors naming the key; relative paths are read from ``folder``;
        the config is a frozen dataclass with a top-level ``seed``
    run_and_write(config, out: Path, *, overwrite: bool, progress: bool) -> str
        run it, write every output into ``out`` through
        :func:`inference.storage.outputs.atomic_output_dir`, and return the closing lines
        that ``psm run`` prints (what came out, and where)

Registering a kind is one line in :data:`KINDS`; nothing is imported until a config asks
for the kind, so ``psm --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from models.errors import InputError

#: kind -> module that runs it
KINDS: dict[str, str] = {
    "personas": "inference.experiment.runner",
    "novelists": "inference.experiment.novelists",
}
DEFAULT_KIND = "personas"


def kind_module(kind: Any) -> ModuleType:
    """The module that runs ``kind``; one-line error for an unknown kind."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise InputError(f"unknown experiment kind {kind!r}; choose one of {', '.join(sorted(KINDS))}")
    return importlib.import_module(KINDS[kind])


def load_experiment(path: str | Path, seed: int | None = None) -> tuple[ModuleType, Any]:
    """Read, validate and (with ``seed``) re-seed the experiment at ``path``: ``(kind module, config)``."""
    from inference.experiment.config import read_toml

    path = Path(path)
    raw = read_toml(path)
    module = kind_module(raw.get("kind", DEFAULT_KIND))
    config = module.load(raw, path.parent)
    return module, (config if seed is None else dataclasses.replace(config, seed=seed))
