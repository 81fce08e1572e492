"""Word-count features: the word list and the ``[D, W]`` count matrix every word-rate model reads.

A document is a list of words (:func:`models.corpora.tokens.word_tokens`). Its features
are the counts of each word of a fixed list and its length (all its words, listed or
not): the word-rate models read counts with the length as exposure, the Delta and
logistic-regression baselines read relative frequencies ``counts / length``.

Word lists, each fixed by a documented rule before any attribution:

* :func:`most_frequent_words`: the ``n`` most frequent words of the *training*
  documents (ties broken alphabetically), Burrows' rule for Delta;
* :data:`models.corpora.federalist.MW_FUNCTION_WORDS`: Mosteller & Wallace's 70.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import InputError


@dataclass(frozen=True)
class WordCounts:
    """Counts of a word list in documents.

    Attributes
    ----------
    counts : np.ndarray
        ``[D, W]`` int64, occurrences of word ``w`` in document ``d``.
    lengths : np.ndarray
        ``[D]`` int64, words in each document (listed or not).
    vocabulary : tuple of str
        ``[W]`` the word list.
    """

    counts: np.ndarray
    lengths: np.ndarray
    vocabulary: tuple[str, ...]

    @property
    def rates(self) -> np.ndarray:
        """``[D, W]`` float64 relative frequencies ``counts / length``."""
        return self.counts / np.maximum(self.lengths, 1)[:, None]

    def select(self, index) -> WordCounts:
        return WordCounts(self.counts[index], self.lengths[index], self.vocabulary)


def most_frequent_words(docs: Sequence[Sequence[str]], n: int) -> tuple[str, ...]:
    """The ``n`` most frequent words of ``docs`` (ties alphabetical); fewer when fewer distinct words."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"the number of most frequent words must be an integer >= 1, got {n!r}")
    totals = Counter(word for doc in docs for word in doc)
    if not totals:
        raise InputError("no words to choose a word list from")
    return tuple(sorted(totals, key=lambda w: (-totals[w], w))[:n])


def count_words(docs: Sequence[Sequence[str]], vocabulary: Sequence[str]) -> WordCounts:
    """The :class:`WordCounts` of ``docs`` over ``vocabulary`` (distinct words)."""
    vocabulary = tuple(vocabulary)
    if not vocabulary or len(set(vocabulary)) != len(vocabulary):
        raise InputError(f"the word list must be non-empty with distinct words, got {len(vocabulary)} words")
    index = {w: i for i, w in enumerate(vocabulary)}
    lengths = np.array([len(doc) for doc in docs], dtype=np.int64)
    rows = np.repeat(np.arange(len(docs)), lengths)  # [N] document of every word
    cols = np.array([index.get(w, -1) for doc in docs for w in doc], dtype=np.int64)  # [N] -1: not listed
    keep = cols >= 0
    counts = np.zeros((len(docs), len(vocabulary)), dtype=np.int64)
    np.add.at(counts, (rows[keep], cols[keep]), 1)
    return WordCounts(counts, lengths, vocabulary)
