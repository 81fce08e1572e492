"""Output folders that are never left half-written, and never mixed with an earlier run.

Every command that writes files does so through :func:`atomic_output_dir`::

    out = check_output_dir(out, overwrite)     # before any work: refuse a bad --out early
    ...                                        # load, validate, compute
    with atomic_output_dir(out, overwrite) as tmp:   # a fresh sibling folder, e.g. out/../.out.tmp-x1y2
        write_json_atomic(tmp / "summary.json", summary)
    # on success tmp becomes out; on any error tmp is removed and out is left exactly as it was.

An output folder holds the files of one run. A folder that exists and is not empty
is refused (:class:`~models.errors.InputError`) unless ``overwrite=True``; then it is
replaced whole, after the run succeeded (renamed aside, the new folder renamed in, the
old one deleted), so no stale file of the earlier run survives. Problems with the
location itself (an empty name, a file where a folder should be, a folder that cannot
be written) are found by :func:`check_output_dir` before any work, by writing and
removing a probe file next to where ``out`` will be.
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

from models.errors import InputError


def check_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an output folder that cannot be used, without leaving anything behind.

    Parameters
    ----------
    out : path
        The folder a command will write into; it may not exist yet (it and its
        missing parents are created on commit).
    overwrite : bool
        Accept an existing, non-empty ``out`` (it will be replaced whole).

    Returns
    -------
    Path
        ``out`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        ``out`` is empty text; ``out`` (or an ancestor) is an existing non-folder;
        ``out`` holds files and ``overwrite`` is False; or the nearest existing
        ancestor cannot be written (checked by creating and removing a probe file).
    """
    if isinstance(out, str) and not out.strip():
        raise InputError("--out must name a folder, got an empty string")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: the folder exists and is not empty (an earlier run?); "
                         "choose another --out, or pass --overwrite to replace it")
    existing = out.parent if out.exists() else out
    while not existing.exists():
        if existing.is_symlink():
            raise InputError(f"{existing}: is a broken symbolic link")
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{out}: cannot create a folder inside {existing}, which is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".psm-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{out}: cannot write in {existing} ({_reason(exc)})") from None
    return out


@contextmanager
def atomic_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``out``; it becomes ``out`` on success.

    When the ``with`` block raises, the temporary folder and any parent folders this
    call created are removed and ``out`` is untouched. When it succeeds, the temporary
    folder is renamed to ``out`` (an existing empty ``out`` is replaced; an existing
    non-empty one only with ``overwrite``, see the module docstring).

    Raises
    ------
    InputError
        The output location cannot be created or written, or holds an earlier run.
    """
    out = check_output_dir(out, overwrite)
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
        _commit(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


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
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
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


def _commit(tmp: Path, out: Path, overwrite: bool) -> None:
    """Make ``tmp`` the folder ``out``: a rename, with an existing ``out`` renamed aside first."""
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the folder private; give it the usual mode
        if out.is_dir() and any(out.iterdir()) and not overwrite:  # appeared while the command ran
            raise InputError(f"{out}: the folder was filled while this command ran; nothing was written")
        aside = None
        if out.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, aside / "old")
        os.replace(tmp, out)
    except OSError as exc:
        raise InputError(f"{out}: cannot write output ({_reason(exc)})") from None
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


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
