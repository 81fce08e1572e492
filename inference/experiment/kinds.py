"""The kinds of experiment ``psm run CONFIG.toml`` runs: the config's top-level ``kind`` names one.

=====================  ==========================================  ===================================
``kind``               what it runs                                module
=====================  ==========================================  ===================================
``personas`` (default) fine-tuning vs conditioning in a persona    :mod:`inference.experiment.runner`
                       world (``psm demo``; DESIGN.md §3)
``ciphers``            a latent cipher next to the persona, swept  :mod:`inference.experiment.ciphers`
                       over its share f of pre-training (Guo,
                       Sleight & Roger 2025)
``elicitation``        training only k random parameters, for in-  :mod:`inference.experiment.elicitation`
                       support and rule evidence (Donoway et al.
                       2025)
``narrow_to_broad``    narrow evidence, broad shift, inoculation   :mod:`inference.experiment.narrow_to_broad`
``incontext``          in context vs fine-tuning vs exact Bayes,   :mod:`inference.experiment.incontext`
                       with the Bayesian scaling law
``hf``                 the comparison on a local Hugging Face      :mod:`inference.experiment.hf_runner`
                       causal LM, personas given by prompts
``novelists``          authorship of real text: five novelists,    :mod:`inference.experiment.novelists`
                       out-of-support test, author-tagged LM
=====================  ==========================================  ===================================

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
    "ciphers": "inference.experiment.ciphers",
    "elicitation": "inference.experiment.elicitation",
    "narrow_to_broad": "inference.experiment.narrow_to_broad",
    "incontext": "inference.experiment.incontext",
    "hf": "inference.experiment.hf_runner",
    "novelists": "inference.experiment.novelists",
}
DEFAULT_KIND = "personas"
#: the configs shipped with the toolkit (package data)
SHIPPED_CONFIGS = Path(__file__).with_name("configs")


def kind_module(kind: Any) -> ModuleType:
    """The module that runs ``kind``; one-line error for an unknown kind."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise InputError(f"unknown experiment kind {kind!r}; choose one of {', '.join(sorted(KINDS))}")
    return importlib.import_module(KINDS[kind])


def resolve_config(path: str | Path) -> Path:
    """``path``, or the shipped ``configs/<path>.toml`` when ``path`` is a bare name (no folder, no
    suffix) of no existing file and such a config is shipped."""
    path = Path(path)
    shipped = SHIPPED_CONFIGS / f"{path.name}.toml"
    if not path.exists() and len(path.parts) == 1 and not path.suffix and shipped.is_file():
        return shipped
    return path


def load_experiment(path: str | Path, seed: int | None = None, device: str | None = None) -> tuple[ModuleType, Any]:
    """Read, validate and (with ``seed``, ``device``) override the experiment at ``path`` (a file, or the bare
    name of a shipped config, see :func:`resolve_config`): ``(kind module, config)``.

    ``device`` applies to the kinds whose config has a ``device`` (a one-line error for the others).
    """
    from inference.experiment.config import read_toml

    path = resolve_config(path)
    raw = read_toml(path)
    kind = raw.get("kind", DEFAULT_KIND)
    module = kind_module(kind)
    config = module.load(raw, path.parent)
    if device is not None:
        if not any(f.name == "device" for f in dataclasses.fields(config)):
            raise InputError(f"--device: experiments of kind {kind!r} run on the CPU; --device applies to kind 'hf'")
        config = dataclasses.replace(config, device=device)
    return module, (config if seed is None else dataclasses.replace(config, seed=seed))
