"""Real-text loading: tokenisers, files and manifests, chapters and chunks, word counts, the bundled data."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import numpy as np
import pytest

from models.corpora.chunks import (
    chapter_spans,
    chunk_books,
    chunk_text,
    split_chapters,
    trim_to_chapters,
)
from models.corpora.features import count_words, most_frequent_words
from models.corpora.texts import Book, bundled_manifest, known_authors, read_manifest, read_text
from models.corpora.tokens import CHARSET, char_codes, word_tokens
from models.errors import InputError


def chapter_text(n_chapters: int, words_per_chapter: int, word: str = "alpha") -> str:
    return "".join(f"CHAPTER {i + 1}\n\n" + " ".join([word] * words_per_chapter) + "\n\n" for i in range(n_chapters))


# ---------------------------------------------------------------- tokens


def test_word_tokens_rules():
    text = "Don't -- said Mr. Brontë (1), 'to-morrow'! It's 12 o\u2019clock."
    assert word_tokens(text) == ["don't", "said", "mr", "bronte", "to", "morrow", "it's", "o'clock"]


def test_char_codes_map_onto_the_charset():
    codes = char_codes("Ab,  ç\n€!")
    assert "".join(CHARSET[c] for c in codes) == "ab, c #!"
    assert codes.dtype == np.int64


# ---------------------------------------------------------------- files and manifests


def test_read_text_reads_utf8_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_text("Hello world", encoding="utf-8")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress(b"Hello again"))
    assert read_text(tmp_path / "a.txt") == "Hello world"
    assert read_text(tmp_path / "b.txt.gz") == "Hello again"


@pytest.mark.parametrize("content, message", [
    (b"", "empty"), (b"  \n ", "empty"), (b"abc\x00def", "binary"), (b"caf\xe9 latte", "not UTF-8"),
    (b"1234 -- 5678", "no words"),
])
def test_read_text_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_text(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_text_refuses_missing_and_folders(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="folder"):
        read_text(tmp_path)


def write_manifest(folder, entries, name="manifest.jsonl"):
    path = folder / name
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n", encoding="utf-8")
    return path


def test_read_manifest_paths_relative_and_unknown_authors(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("one two three")
    (tmp_path / "y.txt").write_text("four five")
    (tmp_path / "z.txt").write_text("six")
    path = write_manifest(tmp_path, [{"file": "sub/x.txt", "author": "Ann", "title": "X"},
                                     {"file": "y.txt", "author": None}, {"file": "z.txt", "author": "unknown"}])
    books = read_manifest(path)
    assert [b.author for b in books] == ["Ann", None, None]
    assert books[0].text == "one two three" and books[0].meta == {"title": "X"}
    assert known_authors(books) == ["Ann"]


@pytest.mark.parametrize("entries, message", [
    ([{"file": "missing.txt", "author": "A"}], "does not exist"),
    ([{"author": "A"}], "missing key 'file'"),
    ([{"file": "a.txt"}], "missing key 'author'"),
    ([{"file": "a.txt", "author": 3}], "'author' must be"),
    ([{"file": "a.txt", "author": "A"}, {"file": "a.txt", "author": "B"}], "named twice"),
    ([], "empty"),
])
def test_read_manifest_refuses_bad_manifests(tmp_path, entries, message):
    (tmp_path / "a.txt").write_text("some words")
    with pytest.raises(InputError, match=message) as info:
        read_manifest(write_manifest(tmp_path, entries))
    assert "\n" not in str(info.value)


def test_read_manifest_refuses_non_json_and_folders(tmp_path):
    (tmp_path / "m.jsonl").write_text("{not json}\n")
    with pytest.raises(InputError, match="not a JSON object"):
        read_manifest(tmp_path / "m.jsonl")
    with pytest.raises(InputError, match="is a folder"):
        read_manifest(tmp_path)
    with pytest.raises(InputError, match="no such manifest"):
        read_manifest(tmp_path / "nothing.jsonl")


# ---------------------------------------------------------------- chapters and chunks


@pytest.mark.parametrize("line, heading", [
    ("CHAPTER XII. THE BRAVO", True), ("Chapter 3", True), ("Part First", True), ("Phase the First: The Maiden", True),
    ("XIV.", True), ("12", True), ("part of the harness, said he", False), ("did.", False), ('Book."', False),
])
def test_chapter_headings(line, heading):
    spans = chapter_spans(f"front matter\n{line}\nsome text here\n")
    assert (len(spans) == 2) is heading


def test_split_chapters_falls_back_to_sections():
    text = "\n".join(["word " * 100] * 30)  # 3000 words, no heading
    sections = split_chapters(text, min_words=500, fallback_words=1000)
    assert len(sections) == 3 and "".join(sections) == text


def test_split_chapters_drops_the_front_matter_but_not_a_first_chapter():
    front = "JANE EYRE\n\nby Charlotte Bronte\n\nPREFACE\n\n" + "preface " * 600 + "\n\n"
    chapters = split_chapters(front + chapter_text(3, 600), min_words=500)
    assert len(chapters) == 3 and not any("bronte" in c.lower() for c in chapters)
    assert split_chapters(chapter_text(3, 600), min_words=500)[0].startswith("CHAPTER 1")  # no front matter


def test_no_bundled_book_opens_with_its_title_page():
    for book in (b for b in read_manifest(bundled_manifest()) if b.author is not None):
        surname = book.author.split()[-1].lower()
        opening = word_tokens(split_chapters(book.text)[0])[:200]
        assert surname not in opening and surname.replace("\u00eb", "e") not in opening, book.name


def test_chunk_books_split_by_whole_chapters():
    books = [Book("a", "A", chapter_text(10, 1200, "alpha")), Book("b", "B", chapter_text(8, 1000, "beta"))]
    chunks = chunk_books(books, chunk_words=500, heldout_fraction=0.25, seed=3)
    assert all(len(w) == 500 for w in chunks.words)
    assert len(chunks.words) == 10 * 2 + 8 * 2
    for b in (0, 1):  # a chapter is never on both sides
        rows = chunks.book == b
        sides = {c: set(chunks.heldout[rows & (chunks.chapter == c)]) for c in np.unique(chunks.chapter[rows])}
        assert all(len(s) == 1 for s in sides.values())
        assert 0 < sum(s == {True} for s in sides.values()) < len(sides)
    again = chunk_books(books, chunk_words=500, heldout_fraction=0.25, seed=3)
    assert np.array_equal(again.heldout, chunks.heldout)
    assert chunks.authors[0] == "A" and chunks.authors[-1] == "B"


def test_chunk_books_refuses_a_short_book():
    with pytest.raises(InputError, match="shorter than one chunk"):
        chunk_books([Book("tiny.txt", "A", "just a few words")], chunk_words=500)


def test_chunk_text_keeps_a_long_enough_rest():
    text = " ".join(["w"] * 1230)
    assert [len(c) for c in chunk_text(text, 500, min_words=50)] == [500, 500, 230]
    assert [len(c) for c in chunk_text(" ".join(["w"] * 1020), 500, min_words=50)] == [500, 500]
    assert [len(c) for c in chunk_text("a short text", 500)] == [3]


def test_trim_to_chapters_keeps_whole_chapters_from_the_start():
    text = chapter_text(6, 1000)
    trimmed = trim_to_chapters(text, 3500)
    assert text.startswith(trimmed) and trimmed.count("CHAPTER") == 3
    assert len(word_tokens(trimmed)) <= 3500


# ---------------------------------------------------------------- features


def test_count_words_matches_a_direct_count():
    docs = [["a", "b", "a", "c"], ["c", "c"], []]
    wc = count_words(docs, ("a", "c", "z"))
    assert wc.counts.tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert wc.lengths.tolist() == [4, 2, 0]
    assert np.allclose(wc.rates[0], [0.5, 0.25, 0.0])
    with pytest.raises(InputError, match="distinct"):
        count_words(docs, ("a", "a"))


def test_most_frequent_words_breaks_ties_alphabetically():
    assert most_frequent_words([["b", "a", "c", "c"], ["b", "a"]], 2) == ("a", "b")
    assert most_frequent_words([["b", "a", "c", "c"], ["b", "a"]], 3) == ("a", "b", "c")
    assert most_frequent_words([["x", "y", "y"]], 1) == ("y",)


# ---------------------------------------------------------------- the bundled novels


def test_bundled_novels_are_five_authors_of_three_trimmed_books():
    books = read_manifest(bundled_manifest())
    authors = Counter(b.author for b in books)
    assert len(authors) == 5 and set(authors.values()) == {3}
    assert all(len(word_tokens(b.text)) <= 60_000 for b in books)
