"""Documents from long texts: chapters, fixed-size word chunks, and a train / held-out split by chapter.

Chapters (:func:`split_chapters`). A line is a chapter heading when, stripped, it is at
most 80 characters long and either is a bare Roman or Arabic number (``XIV``, ``XIV.``,
``12``), or starts with one of the words ``Chapter``, ``Chap.``, ``Book``, ``Part``,
``Volume``, ``Phase``, ``Stave`` or ``Letter`` (capitalised or in capitals) followed by
nothing or by a number (Roman, Arabic, ``one`` .. ``ten``, ``first`` .. ``tenth``,
``last``) or ``the``: ``CHAPTER XII. THE BRAVO``, ``Part First``, ``Phase the First``,
but not a wrapped line like ``part of the harness``. A chapter runs from one heading to the
next; the text before the first heading (title page, author's name, contents, preface) is
dropped, so that no document carries its author's name.
A text with fewer than two chapters of at least ``min_words`` words (no headings found,
e.g. a user's letter) is cut instead into consecutive sections of ``fallback_words``
words, at line breaks, which then play the part of chapters.

Chunks (:func:`chunk_books`). Each chapter's words (:func:`models.corpora.tokens.word_tokens`)
are cut into consecutive chunks of exactly ``chunk_words`` words; the rest of a chapter,
shorter than a chunk, is dropped. A chunk never crosses a chapter boundary.

Split. In every book, a seeded random ``heldout_fraction`` of the chapters that hold
chunks (at least one, and never all of them when there are two or more) is held out;
all of a chapter's chunks go to the same side, so training and held-out chunks never
overlap nor share a chapter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from models.corpora.texts import Book
from models.corpora.tokens import word_tokens
from models.errors import InputError

_WORDS = "chapter|chap\\.|book|part|volume|phase|stave|letter"
_NUMBERS = ("[ivxlcdm]+|\\d+|the|one|two|three|four|five|six|seven|eight|nine|ten|first|second|third|fourth|fifth|"
            "sixth|seventh|eighth|ninth|tenth|last")
HEADING = re.compile(
    rf"^(?:(?:{_WORDS.upper()}|{'|'.join(w.capitalize() for w in _WORDS.split('|'))})"
    rf"(?:[\s.:]*$|\s+(?i:{_NUMBERS})\b.*)|[IVXLCDM]+\.?|\d{{1,3}}\.?)$"
)
MAX_HEADING_CHARS = 80
#: words per chunk, the documents of the novelists experiment
CHUNK_WORDS = 500
#: section length when a text has no usable chapter headings
FALLBACK_WORDS = 5000


@dataclass(frozen=True)
class Chunks:
    """Fixed-size word chunks of a set of books.

    Attributes
    ----------
    words : list of list of str
        ``[D]`` the words of each chunk (``chunk_words`` each).
    book : np.ndarray
        ``[D]`` int64 index of the chunk's book.
    chapter : np.ndarray
        ``[D]`` int64 index of the chunk's chapter within its book.
    heldout : np.ndarray
        ``[D]`` bool, the chunk's chapter is held out.
    books : list of Book
        The books, in the order ``book`` indexes.
    """

    words: list[list[str]]
    book: np.ndarray
    chapter: np.ndarray
    heldout: np.ndarray
    books: list[Book]

    @property
    def authors(self) -> list[str | None]:
        """``[D]`` the author of each chunk (None when unknown)."""
        return [self.books[b].author for b in self.book]

    def select(self, mask: np.ndarray) -> Chunks:
        """The chunks where ``mask`` ([D] bool) is True."""
        index = np.flatnonzero(mask)
        return Chunks([self.words[i] for i in index], self.book[index], self.chapter[index],
                      self.heldout[index], self.books)


def _is_heading(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and len(stripped) <= MAX_HEADING_CHARS and HEADING.match(stripped) is not None


def chapter_spans(text: str) -> list[tuple[int, int]]:
    """``[(start, end)]`` character spans of the chapters of ``text`` by headings (module docstring)."""
    starts, offset = [0], 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if _is_heading(stripped) and offset > 0:
            starts.append(offset)
        offset += len(line)
    starts = sorted(set(starts))
    return list(zip(starts, starts[1:] + [len(text)], strict=True))


def split_chapters(text: str, min_words: int = CHUNK_WORDS, fallback_words: int = FALLBACK_WORDS) -> list[str]:
    """The chapters of ``text``: by headings, else sections of ``fallback_words`` words (module docstring)."""
    chapters = [text[a:b] for a, b in chapter_spans(text)]
    if len(chapters) > 1 and not _is_heading(next((line for line in chapters[0].splitlines() if line.strip()), "")):
        chapters = chapters[1:]  # the front matter before the first heading
    if sum(len(word_tokens(c)) >= min_words for c in chapters) >= 2:
        return chapters
    sections, current, count = [], [], 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        count += len(word_tokens(line))
        if count >= fallback_words:
            sections.append("".join(current))
            current, count = [], 0
    if current:
        sections.append("".join(current))
    return sections


def chunk_words_of(words: list[str], chunk_words: int) -> list[list[str]]:
    """Consecutive chunks of exactly ``chunk_words`` words; the shorter rest is dropped."""
    return [words[i : i + chunk_words] for i in range(0, len(words) - chunk_words + 1, chunk_words)]


def chunk_books(
    books: list[Book],
    *,
    chunk_words: int = CHUNK_WORDS,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    fallback_words: int = FALLBACK_WORDS,
) -> Chunks:
    """Chunks of every book, split train / held-out by whole chapters (module docstring).

    Parameters
    ----------
    books : list of Book
    chunk_words : int
        Words per chunk.
    heldout_fraction : float
        Fraction of each book's chapters held out, in ``[0, 1)``.
    seed : int
        Seed of the choice of held-out chapters.
    fallback_words : int
        Section length for a book without usable chapter headings.

    Raises
    ------
    InputError
        A bad size, or a book too short for one chunk.
    """
    if isinstance(chunk_words, bool) or not isinstance(chunk_words, int) or chunk_words < 1:
        raise InputError(f"chunk_words must be an integer >= 1, got {chunk_words!r}")
    if not 0 <= heldout_fraction < 1:
        raise InputError(f"heldout_fraction must lie in [0, 1), got {heldout_fraction!r}")
    rng = np.random.default_rng(seed)
    words, book, chapter, heldout = [], [], [], []
    for b, item in enumerate(books):
        chapters = [chunk_words_of(word_tokens(c), chunk_words)
                    for c in split_chapters(item.text, chunk_words, fallback_words)]
        used = [c for c, chunks in enumerate(chapters) if chunks]
        if not used:
            raise InputError(f"{item.name}: shorter than one chunk of {chunk_words} words")
        n_out = 0 if heldout_fraction == 0 else min(max(1, round(heldout_fraction * len(used))), len(used) - 1)
        out = set(rng.permutation(used)[:n_out].tolist())
        for c in used:
            words += chapters[c]
            book += [b] * len(chapters[c])
            chapter += [c] * len(chapters[c])
            heldout += [c in out] * len(chapters[c])
    return Chunks(words, np.array(book, dtype=np.int64), np.array(chapter, dtype=np.int64),
                  np.array(heldout, dtype=bool), list(books))


def chunk_text(text: str, chunk_words: int = CHUNK_WORDS, min_words: int = 50) -> list[list[str]]:
    """The words of any text in consecutive chunks of ``chunk_words`` (``psm attribute``).

    The rest after the last whole chunk is a shorter chunk of its own when it has at least
    ``min_words`` words (or when it is the whole text), else it is dropped.
    """
    words = word_tokens(text)
    chunks = chunk_words_of(words, chunk_words)
    rest = words[len(chunks) * chunk_words :]
    if rest and (len(rest) >= min_words or not chunks):
        chunks.append(rest)
    return chunks


def trim_to_chapters(text: str, max_words: int) -> str:
    """The start of ``text`` up to the end of the last whole chapter within ``max_words`` words.

    How the bundled novels were trimmed (``models/data/authorship/PROVENANCE.md``): whole
    chapters by the headings of :func:`chapter_spans`, from the start, while the running
    word count stays at most ``max_words`` (the first chapter is always kept).
    """
    end, total = 0, 0
    for a, b in chapter_spans(text):
        total += len(word_tokens(text[a:b]))
        if total > max_words and end > 0:
            break
        end = b
    return text[:end]
