"""Reading ``.npz`` files safely: no pickles, one-line errors, sizes checked before reading.

    arrays = load_npz("evidence.npz", required=("tokens",), max_entries=MAX_TOKENS)

An ``.npz`` file is a zip archive of ``.npy`` arrays (what ``numpy.savez`` writes).
A file that is not one (text, a pickle, a lone ``.npy``) is refused as such, rather
than with NumPy's advice to pass ``allow_pickle``; object arrays (pickles) are never
loaded; each array's header is read before its data, so a huge declared shape is
refused before anything large is allocated.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from models.errors import InputError

#: the first bytes of a zip archive (an ``.npz`` file is one): a local file header, or an empty archive
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def load_npz(path: str | os.PathLike, required: tuple[str, ...], max_entries: int | None = None
             ) -> dict[str, np.ndarray]:
    """Load an ``.npz`` without pickles; one-line errors for missing, corrupt or incomplete files.

    Parameters
    ----------
    path : path
        The file.
    required : tuple of str
        Arrays it must hold.
    max_entries : int, optional
        Refuse (from its header, before reading it) any array with more entries than this.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    _check_zip_magic(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            _check_headers(path, data, max_entries)
            arrays = {name: data[name] for name in data.files}
    # zipfile and NumPy raise many types for corrupt files (BadZipFile, EOFError, KeyError,
    # NotImplementedError for an unknown compression flag, zlib.error, MemoryError for a huge
    # declared shape, ...): nothing else happens in this block, so every failure means "unreadable".
    except InputError:
        raise
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable .npz file ({first_line})") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise InputError(f"{path}: missing array(s) {', '.join(missing)} (has {', '.join(arrays) or 'none'})")
    return arrays


def _check_zip_magic(path: Path) -> None:
    """Say plainly that a file is no ``.npz`` archive (NumPy would try it as a pickle, and advise ``allow_pickle``)."""
    with open(path, "rb") as f:
        head = f.read(6)
    what = "an .npz archive (a zip of .npy arrays, as numpy.savez writes)"
    if not head:
        raise InputError(f"{path}: not a readable .npz file: the file is empty, not {what}")
    if head.startswith(b"\x93NUMPY"):
        raise InputError(f"{path}: not a readable .npz file: it is a single .npy array, not {what}")
    if not head.startswith(ZIP_MAGIC):
        raise InputError(f"{path}: not a readable .npz file: it is not {what}")


def _check_headers(path: Path, data: np.lib.npyio.NpzFile, max_entries: int | None) -> None:
    """Refuse object (pickled) arrays and arrays above ``max_entries``, reading only their ``.npy`` headers."""
    members = set(data.zip.namelist())
    for name in data.files:
        with data.zip.open(name + ".npy" if name + ".npy" in members else name) as f:
            try:
                version = np.lib.format.read_magic(f)
            except ValueError:
                continue  # not an .npy member: NumPy hands it over as bytes
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        if dtype.hasobject:
            raise InputError(f"{path}: array {name!r} holds Python objects (a pickle), which are never loaded")
        entries = math.prod(shape)
        if max_entries is not None and entries > max_entries:
            raise InputError(f"{path}: array {name!r} of shape {tuple(shape)} has {entries} entries "
                             f"(limit {max_entries:.0e})")
