"""The Federalist Papers: loading, the editorial cleaning, and Mosteller & Wallace's word list.

:func:`load_papers` reads ``papers.jsonl`` (the bundled copy by default; see
``models/data/authorship/PROVENANCE.md``): 85 papers with the Mosteller–Wallace labels
``HAMILTON`` (51), ``MADISON`` (14), ``JAY`` (5), ``HAMILTON OR MADISON`` (12 disputed:
Nos. 49–58, 62, 63) and ``HAMILTON AND MADISON`` (3 joint: Nos. 18–20).

Cleaning (:func:`clean_text`), applied before tokenising
(:func:`models.corpora.tokens.word_tokens`):

1. The salutation "To the People of the State of New York:" (the first line; No. 15 ends it
   with a full stop) is dropped.
2. The text is cut at the line that starts with the signature ``PUBLIUS``: the signature,
   Publius's numbered footnotes and the editorial "E1." notes after it are dropped (in
   No. 11 a footnote follows the signature on its line; No. 37 has no signature and is
   kept whole).
3. Editorial variants. A passage in parentheses followed by ``(E1)`` is one edition's
   reading; where two such passages follow one another (two versions of a paragraph in
   Nos. 36, 56 and 70, two endings of a sentence in No. 77) the **first** is kept, without
   its parentheses, and the second is dropped. A lone ``(E1)`` mark (No. 68, a one-word
   variant noted at the end) is removed.

The word list (:data:`MW_FUNCTION_WORDS`) is the 70 function words of Mosteller & Wallace
(1964) as used by Tweedie, Singh & Holmes (1996) and many later studies; it was fixed in
advance and is not chosen by looking at the disputed papers.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from models.corpora.texts import FEDERALIST_PATH
from models.errors import InputError

HAMILTON, MADISON, JAY = "HAMILTON", "MADISON", "JAY"
DISPUTED, JOINT = "HAMILTON OR MADISON", "HAMILTON AND MADISON"
#: the three authors (personas), in the order of every array over authors
AUTHORS = (HAMILTON, MADISON, JAY)
LABELS = (*AUTHORS, DISPUTED, JOINT)
#: the 70 function words of Mosteller & Wallace (module docstring), alphabetical
MW_FUNCTION_WORDS = (
    "a", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can", "do", "down",
    "even", "every", "for", "from", "had", "has", "have", "her", "his", "if", "in", "into", "is", "it", "its",
    "may", "more", "must", "my", "no", "not", "now", "of", "on", "one", "only", "or", "our", "shall", "should",
    "so", "some", "such", "than", "that", "the", "their", "then", "there", "things", "this", "to", "up", "upon",
    "was", "were", "what", "when", "which", "who", "will", "with", "would", "your",
)
SALUTATION = "To the People of the State of New York"
_SIGNATURE = re.compile(r"^\s*PUBLIUS\b", re.MULTILINE)
_MARK = "(E1)"


@dataclass(frozen=True)
class Paper:
    """One Federalist paper: ``number``, ``title``, ``author`` (a label of :data:`LABELS`) and raw ``text``."""

    number: int
    title: str
    author: str
    text: str


def load_papers(path: str | os.PathLike | None = None) -> list[Paper]:
    """The 85 papers of ``papers.jsonl`` (``.gz`` read too); the bundled copy when ``path`` is None.

    Raises
    ------
    InputError
        A missing or malformed file, a line without the keys ``number``, ``title``,
        ``author``, ``text``, or an author outside :data:`LABELS`.
    """
    path = FEDERALIST_PATH if path is None else Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        lines = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8").splitlines()
    except (OSError, EOFError, UnicodeDecodeError):
        raise InputError(f"{path}: not a UTF-8 JSONL file") from None
    papers = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            papers.append(_paper(line, f"{path}:{number}"))
    if not papers:
        raise InputError(f"{path}: holds no paper")
    return papers


def _paper(line: str, where: str) -> Paper:
    try:
        entry = json.loads(line)
        paper = Paper(int(entry["number"]), str(entry["title"]), str(entry["author"]), str(entry["text"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError(f"{where}: expected a JSON object with number, title, author and text") from None
    if paper.author not in LABELS:
        raise InputError(f"{where}: unknown author label {paper.author!r} (expected one of {', '.join(LABELS)})")
    return paper


def clean_text(text: str) -> str:
    """The text of a paper without salutation, signature, notes and second variants (module docstring)."""
    if text.startswith(SALUTATION):  # "...New York:" (No. 15: "...New York.")
        text = text[len(SALUTATION) + 1 :]
    signature = _SIGNATURE.search(text)
    if signature:
        text = text[: signature.start()]
    return drop_variants(text)


def drop_variants(text: str) -> str:
    """Keep the first of two consecutive ``(...)(E1)`` variants, drop the second, remove the marks."""
    out, pos, previous_end = [], 0, None
    while (mark := text.find(_MARK, pos)) >= 0:
        start = _opening(text, mark) if text[mark - 1 : mark] == ")" else None
        if start is None:  # a lone mark: remove it
            out.append(text[pos:mark])
            previous_end = None
        elif previous_end is not None and not text[previous_end:start].strip():
            previous_end = None  # the second variant of a pair: drop it
        else:
            out.append(text[pos:start] + text[start + 1 : mark - 1])  # the first: keep, without parentheses
            previous_end = mark + len(_MARK)
        pos = mark + len(_MARK)
    out.append(text[pos:])
    return "".join(out)


def _opening(text: str, close: int) -> int | None:
    """Index of the ``(`` that matches the ``)`` just before ``close``, or None."""
    depth = 0
    for i in range(close - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None
