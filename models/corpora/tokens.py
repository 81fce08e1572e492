"""Tokenisation of real text: words for the word-rate models, characters for the n-gram models.

Words (:func:`word_tokens`), the rule every word-rate model, baseline and feature uses:

1. Unicode is normalised (NFKD) and accents are dropped, so ``Brontë`` reads ``bronte``;
   curly quotes and apostrophes become straight ones.
2. The text is lowercased.
3. A word is a run of letters ``a``-``z``, with apostrophes allowed *inside* it:
   ``don't``, ``o'clock`` and ``d'urberville`` are one word each; a quote mark around a
   word is not part of it. Digits, hyphens and every other character separate words, so
   ``to-morrow`` is two words and footnote marks like ``(1)`` are no words at all.

Characters (:func:`char_codes`), for the Dirichlet-smoothed character n-gram personas:
the same normalisation and lowercasing, then every character is mapped onto
:data:`CHARSET` (``a``-``z``, a space, the punctuation ``.,;:!?'"-`` and ``#`` for
anything else); runs of whitespace become one space.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
#: the characters of the n-gram personas; the last one, ``#``, stands for every other character
CHARSET = "abcdefghijklmnopqrstuvwxyz .,;:!?'\"-#"
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": "-", "\u2013": "-"})
_CHAR_INDEX = np.full(128, CHARSET.index("#"), dtype=np.int64)
_CHAR_INDEX[[ord(c) for c in CHARSET]] = np.arange(len(CHARSET))
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """``text`` lowercased, accents dropped (NFKD without combining marks), curly quotes made straight.

    Other non-ASCII characters stay (they are never part of a word; :func:`char_codes` maps them to ``#``).
    """
    text = unicodedata.normalize("NFKD", text.translate(_QUOTES))
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def word_tokens(text: str) -> list[str]:
    """The words of ``text`` by the rule of the module docstring.

    Examples
    --------
    >>> word_tokens("Don't, said Mr. Brontë (1) -- 'to-morrow'!")
    ["don't", 'said', 'mr', 'bronte', 'to', 'morrow']
    """
    return WORD.findall(normalise(text))


def char_codes(text: str) -> np.ndarray:
    """``[n]`` int64 codes of the characters of ``text`` in :data:`CHARSET` (module docstring)."""
    flat = _SPACE.sub(" ", normalise(text)).strip()
    points = np.frombuffer(flat.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)  # one code point each
    return _CHAR_INDEX[np.minimum(points, 127)] if len(flat) else points  # beyond ASCII: '#' (127 is DEL)
