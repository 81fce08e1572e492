"""Output folders that are never left half-written.

Every command that writes files does so through :func:`atomic_output_dir`::

    check_output_dir(out)                      # before any work: refuse a bad --out early
    ...                                        # load, validate, compute
    with atomic_output_dir(out) as tmp:        # a fresh sibling folder, e.g. out/../.out.tmp-x1y2
        write_json_atomic(tmp / "summary.json", summary)
        np.savez(tmp / "arrays.npz", ...)
    # on success every file in tmp is moved into out (os.replace, one file at a time);
    # on any error tmp is removed and out is left exactly as it was.

Files already in ``out`` that the command does not write are never touched.
Problems with the output location itself (a file where a folder should be, no
permission, a read-only disk) raise :class:`~models.errors.InputError` with a
one-line message.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import InputError


def check_output_dir(out: str | os.PathLike) -> Path:
    """Refuse an output folder that cannot be created or written, without creating anything.

    Parameters
    ----------
    out : path
        The folder a command will write into; it may not exist yet (it and
        its missing parents are created on commit).

    Returns
    -------
    Path
        ``out`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        ``out`` (or one of its ancestors) is an existing non-folder, or the
        nearest existing ancestor is not writable.
    """
    out = Path(out)
    if str(out) == "":
        raise InputError("--out must name a folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    existing = out
    while not existing.exists():
        if existing.is_symlink():
            raise InputError(f"{existing}: is a broken symbolic link")
        parent = existing.parent
        if parent == existing:
            break
        existing = parent
    if not existing.is_dir():
        raise InputError(f"{out}: cannot create a folder inside {existing}, which is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{out}: no permission to write in {existing}")
    return out


@contextmanager
def atomic_output_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``out``; move its files into ``out`` on success.

    The temporary folder is created next to ``out`` (same file system, so the
    final moves are renames). When the ``with`` block raises, the temporary
    folder and any folders this call created are removed and ``out`` is
    untouched. When it succeeds, every file in the temporary folder replaces
    the file of the same name in ``out`` with :func:`os.replace`.

    Raises
    ------
    InputError
        The output location cannot be created or written.
    """
    out = check_output_dir(out)
    created = _make_parents(out.parent)
    try:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        except OSError as exc:
            raise InputError(f"{out}: cannot write here ({_reason(exc)})") from None
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield tmp
        _commit(tmp, out, created)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON through a temporary file and a rename.

    NaN and infinities become ``null`` (strict JSON); NumPy and torch scalars
    and arrays become plain numbers and lists.
    """
    path = Path(path)
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_jsonable(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``None`` and array types as lists (recursively)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy / torch values
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created (outermost first)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    created: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_empty(created)
            raise InputError(f"{path}: cannot create folder ({_reason(exc)})") from None
        created.append(path)
    return created


def _commit(tmp: Path, out: Path, created: list[Path]) -> None:
    """Move every file of ``tmp`` into ``out`` (created if missing)."""
    try:
        if not out.is_dir():
            out.mkdir()
            created.append(out)
        for item in sorted(tmp.iterdir()):
            os.replace(item, out / item.name)
    except OSError as exc:
        raise InputError(f"{out}: cannot write output ({_reason(exc)})") from None


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders this module created, innermost first, if they are still empty."""
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
