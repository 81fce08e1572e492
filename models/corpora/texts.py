"""Reading real text: plain-text files, JSONL manifests of them, and the bundled example data.

A *manifest* is a JSONL file, one JSON object per line, like the shared
``gutenberg_authors/manifest.jsonl``::

    {"file": "Cbronte_Jane_1847.txt", "author": "Charlotte Brontë", "title": "Jane Eyre"}
    {"file": "letters/unsigned.txt", "author": null}

``file`` (required) is a path relative to the manifest's folder; ``author`` (required
key) is a non-empty name, or ``null`` / ``""`` / ``"unknown"`` for a text whose author is
not known. Other keys are kept as metadata. Blank lines are skipped.

A text file is UTF-8 plain text (a ``.gz`` file is decompressed first). Bad input is
refused with a one-line :class:`~models.errors.InputError` naming the file: missing,
a folder, empty, binary (a NUL byte, or not UTF-8), or without a single word.

The bundled example data (``models/data/authorship/``, see its PROVENANCE.md) are the
default when no folder is given: :func:`bundled_manifest` (five novelists, trimmed) and
:data:`FEDERALIST_PATH` (the Federalist Papers, whole).
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.corpora.tokens import WORD, normalise
from models.errors import InputError

#: the bundled example data
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "authorship"
FEDERALIST_PATH = DATA_DIR / "federalist" / "papers.jsonl.gz"
NOVELS_MANIFEST = DATA_DIR / "novels" / "manifest.jsonl"
#: author values that mean "not known"
UNKNOWN_AUTHORS = ("", "unknown")
#: largest text file read (bytes, after decompression)
MAX_TEXT_BYTES = 200_000_000


@dataclass(frozen=True)
class Book:
    """One text of a manifest.

    Attributes
    ----------
    name : str
        The ``file`` entry as written in the manifest.
    author : str or None
        The author, or None when unknown.
    text : str
        The whole text.
    meta : dict
        The manifest line's other keys (title, year, ...).
    """

    name: str
    author: str | None
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def read_text(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file (``.gz`` decompressed); one-line :class:`InputError` for bad files."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a text file")
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    return decode_text(raw, str(path))


def decode_text(raw: bytes, name: str) -> str:
    """``raw`` bytes as text; one-line :class:`InputError` when empty, binary, not UTF-8 or wordless."""
    if len(raw) > MAX_TEXT_BYTES:
        raise InputError(f"{name}: {len(raw)} bytes is too large (limit {MAX_TEXT_BYTES:.0e})")
    if not raw.strip():
        raise InputError(f"{name}: the file is empty")
    if b"\x00" in raw:
        raise InputError(f"{name}: a binary file (it holds NUL bytes), not plain text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text (byte {exc.start}); save it as UTF-8 plain text") from None
    if WORD.search(normalise(text)) is None:
        raise InputError(f"{name}: holds no words (letters a-z)")
    return text.replace("\r\n", "\n")


def read_manifest(path: str | os.PathLike) -> list[Book]:
    """The books of a JSONL manifest (module docstring), their texts read and checked.

    Raises
    ------
    InputError
        The manifest is missing or not JSONL; a line lacks ``file`` or ``author`` or has
        the wrong types; a file is named twice; a named file is missing or bad; no line.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give the manifest file (JSONL, one line per text)")
    lines = read_text(path).splitlines() if path.exists() else None
    if lines is None:
        raise InputError(f"{path}: no such manifest")
    books, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        entry = _manifest_entry(line, f"{path}:{number}")
        if entry["file"] in seen:
            raise InputError(f"{path}:{number}: file {entry['file']!r} is named twice")
        seen.add(entry["file"])
        file = path.parent / entry["file"]
        if not file.exists():
            raise InputError(f"{path}:{number}: names {entry['file']!r}, which does not exist in {path.parent}")
        meta = {k: v for k, v in entry.items() if k not in ("file", "author")}
        books.append(Book(entry["file"], entry["author"], read_text(file), meta))
    if not books:
        raise InputError(f"{path}: the manifest names no file")
    return books


def _manifest_entry(line: str, where: str) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not a JSON object ({exc.msg})") from None
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a JSON object with 'file' and 'author', got {type(entry).__name__}")
    for key in ("file", "author"):
        if key not in entry:
            raise InputError(f"{where}: missing key {key!r}")
    if not isinstance(entry["file"], str) or not entry["file"].strip():
        raise InputError(f"{where}: 'file' must be a non-empty path, got {entry['file']!r}")
    author = entry["author"]
    if author is not None and not isinstance(author, str):
        raise InputError(f"{where}: 'author' must be a name or null, got {author!r}")
    entry["author"] = None if author is None or author.strip().lower() in UNKNOWN_AUTHORS else author.strip()
    return entry


def bundled_manifest() -> Path:
    """Path of the bundled novelists' manifest (five authors, three trimmed novels each)."""
    return NOVELS_MANIFEST


def known_authors(books: list[Book]) -> list[str]:
    """The distinct known authors of ``books``, in order of first appearance."""
    return list(dict.fromkeys(b.author for b in books if b.author is not None))
