"""Checkpoint folders for long inference runs (SVI, MCMC): atomic, never pickled, newest kept.

    store = open_checkpoints(checkpoint_dir, checkpoint_every, resume, kind="svi", run=run)
    if store is not None and resume and (latest := store.latest()) is not None:
        step, state = latest                     # the state tree saved at ``step``
    ...
    if store is not None and store.due(step):
        store.save(step, {"losses": losses, "rng": rng_state(), ...})

Layout: ``directory/{kind}-{step:09d}/state.safetensors`` (every tensor of the
state) and ``state.json`` (everything else: format, kind, step, the ``run``
fingerprint, the SHA-256 of the safetensors file, and the state tree with each
tensor replaced by a reference). A checkpoint is written in a hidden sibling
folder and renamed into place, so a run killed at any instant leaves either
the previous checkpoints or the new one complete; only the newest ``keep``
are kept.

The state tree is made of dicts, lists, tuples, ``str``/``int``/``float``/
``bool``/``None``, tensors and NumPy arrays; tuples, non-string dict keys,
NumPy arrays and non-finite floats survive the round trip exactly (see
:func:`encode`), so e.g. a torch optimizer ``state_dict`` (int keys, tuple
``betas``) or ``pyro.util.get_rng_state()`` comes back equal.

Loading reads only JSON and safetensors (nothing is unpickled); a damaged,
foreign or mismatched checkpoint raises :class:`~models.errors.InputError`
with a one-line message: a file that is not valid JSON, a safetensors file
whose checksum differs from the recorded one, or a checkpoint written by a
different run (``run`` differs: other settings, seed or data).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch

from inference.storage.encoding import decode, encode
from models.errors import InputError

FORMAT = "psm-inference-checkpoint"
VERSION = 1
#: checkpoints kept on disk by default (the newest ones)
KEEP = 2
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"


def open_checkpoints(
    checkpoint_dir: str | os.PathLike | None,
    checkpoint_every: int | None,
    resume: bool,
    *,
    kind: str,
    run: dict[str, Any] | Callable[[], dict[str, Any]],
    keep: int = KEEP,
) -> Checkpoints | None:
    """Validate the checkpoint options of an engine and open its checkpoint folder.

    Parameters
    ----------
    checkpoint_dir : path, optional
        Folder of the checkpoints (created on the first save).
    checkpoint_every : int, optional
        Save every this many units (SVI steps, MCMC chains); ``>= 1``.
    resume : bool
        Continue from the newest checkpoint; needs both options above.
    kind : str
        Name of the engine (``svi``/``mcmc``): prefix of the checkpoint folders.
    run : dict or callable returning one
        JSON-ready fingerprint of the run (settings, seed, data hash); a
        checkpoint with another ``run`` is refused. A callable is only called
        when checkpointing is on (hashing large data costs time).
    keep : int
        Checkpoints kept.

    Returns
    -------
    Checkpoints or None
        None when checkpointing is off (all three options unset).

    Raises
    ------
    InputError
        Only one of ``checkpoint_dir``/``checkpoint_every`` given, ``resume``
        without them, a bad ``checkpoint_every``, ``checkpoint_dir`` not a folder,
        or (without ``resume``) a folder holding another run's checkpoints.

    Notes
    -----
    Without ``resume``, this run's old checkpoints in the folder are removed (the
    run rewrites them identically); another run's are refused, never overwritten.
    """
    if not isinstance(resume, bool):
        raise InputError(f"resume must be True or False, got {resume!r}")
    if checkpoint_dir is None and checkpoint_every is None and not resume:
        return None
    if checkpoint_dir is None or checkpoint_every is None:
        raise InputError("checkpointing needs both checkpoint_dir and checkpoint_every (and resume needs both)")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise InputError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    directory = Path(checkpoint_dir)
    if str(checkpoint_dir) == "" or (directory.exists() and not directory.is_dir()):
        raise InputError(f"{checkpoint_dir}: the checkpoint folder exists and is not a folder")
    store = Checkpoints(directory, checkpoint_every, kind, jsonable(run() if callable(run) else run), keep)
    store.remove_stale_temporaries()
    if not resume:
        store.start_fresh()
    return store


class Checkpoints:
    """``directory/{kind}-{step:09d}/{state.safetensors, state.json}``, written atomically, newest kept.

    Attributes
    ----------
    directory : Path
    every : int
        Units between checkpoints (:meth:`due`).
    kind : str
    run : dict
        The run fingerprint every checkpoint must carry.
    keep : int
    """

    def __init__(self, directory: Path, every: int, kind: str, run: dict[str, Any], keep: int = KEEP):
        self.directory, self.every, self.kind, self.run, self.keep = Path(directory), every, kind, run, keep

    def due(self, step: int) -> bool:
        """Whether a checkpoint belongs at ``step``."""
        return step % self.every == 0

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``state`` (a tree, see :func:`encode`) as the checkpoint of ``step``; drop old ones."""
        final = self._folder(step)
        tmp = self.directory / f".{final.name}.tmp-{os.getpid()}"
        tree, tensors = encode(state)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            data = safetensors.torch.save(tensors)
            (tmp / STATE_TENSORS).write_bytes(data)
            meta = {"format": FORMAT, "format_version": VERSION, "kind": self.kind, "step": step, "run": self.run,
                    "sha256": hashlib.sha256(data).hexdigest(), "state": tree}
            (tmp / STATE_JSON).write_text(json.dumps(meta, sort_keys=True))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(f"{self.directory}: cannot write checkpoint ({exc.strerror or exc})") from None
        for old in self.steps()[: -self.keep]:
            shutil.rmtree(self._folder(old), ignore_errors=True)
        return final

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints of this kind, oldest first."""
        if not self.directory.is_dir():
            return []
        pattern = re.compile(rf"{re.escape(self.kind)}-(\d+)")
        found = [int(m.group(1)) for p in self.directory.iterdir() if (m := pattern.fullmatch(p.name))]
        return sorted(s for s in found if (self._folder(s) / STATE_JSON).is_file())

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        """The newest checkpoint ``(step, state)``, or None when there is none.

        Raises
        ------
        InputError
            The newest checkpoint is damaged, of another format, or from another run.
        """
        steps = self.steps()
        return None if not steps else self.load(steps[-1])

    def load(self, step: int) -> tuple[int, dict[str, Any]]:
        """The checkpoint of ``step``, checked (see :meth:`latest`)."""
        folder = self._folder(step)
        meta = self._meta(folder)
        self._check_run(folder, meta)
        path = folder / STATE_TENSORS
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise InputError(f"{path}: damaged checkpoint (checksum differs from {folder.name}/{STATE_JSON})")
        try:
            tensors = safetensors.torch.load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise InputError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
        try:
            state = decode(meta["state"], tensors)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise InputError(f"{folder}: damaged checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None
        if not isinstance(state, dict):
            raise InputError(f"{folder}: damaged checkpoint (the state is not a mapping)")
        return int(meta["step"]), state

    def start_fresh(self) -> None:
        """Before a fresh (not resumed) run: remove this run's old checkpoints; refuse another run's."""
        steps = self.steps()
        if not steps:
            return
        folder = self._folder(steps[-1])
        try:
            self._check_run(folder, self._meta(folder))
        except InputError as exc:
            raise InputError(f"{exc}; use another checkpoint folder, or delete this one") from None
        for step in steps:
            shutil.rmtree(self._folder(step), ignore_errors=True)

    def remove_stale_temporaries(self) -> None:
        """Remove half-written checkpoint folders of this kind left by a killed run."""
        if self.directory.is_dir():
            pattern = re.compile(rf"\.{re.escape(self.kind)}-\d+\.tmp-\d+")
            for p in self.directory.iterdir():
                if pattern.fullmatch(p.name):
                    shutil.rmtree(p, ignore_errors=True)

    def _folder(self, step: int) -> Path:
        return self.directory / f"{self.kind}-{step:09d}"

    def _meta(self, folder: Path) -> dict[str, Any]:
        path = folder / STATE_JSON
        try:
            meta = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a readable checkpoint ({_first_line(exc)})") from None
        if (not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != VERSION
                or meta.get("kind") != self.kind or not isinstance(meta.get("step"), int)):
            raise InputError(f"{path}: not a {FORMAT} v{VERSION} file of a {self.kind} run")
        return meta

    def _check_run(self, folder: Path, meta: dict[str, Any]) -> None:
        theirs = meta.get("run")
        if theirs != self.run:
            theirs = theirs if isinstance(theirs, dict) else {}
            diff = sorted(key for key in set(self.run) | set(theirs) if self.run.get(key) != theirs.get(key))
            raise InputError(f"{folder}: checkpoint is from a different run (differs in {', '.join(diff)})")


def jsonable(obj: Any) -> Any:
    """JSON round trip (tuples become lists), so that a saved ``run`` compares equal to a fresh one."""
    return json.loads(json.dumps(obj))


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
