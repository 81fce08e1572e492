"""Text evidence for a real LM: documents from folders and JSONL files, cut into equal token chunks."""

import gzip
import json

import pytest
import torch

from models.errors import InputError
from models.lm_text import Document, chunk_documents, read_documents


def _encode(text):  # one token per character: easy to check by hand
    return [ord(c) % 50 for c in text]


def test_a_folder_with_a_manifest_and_a_gzipped_file(tmp_path):
    (tmp_path / "b.txt").write_text("bbbb")
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"aaaa"))
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"file": "a.txt", "author": "A"}) + "\n")
    docs = read_documents(tmp_path)
    assert [(d.text, d.author) for d in docs] == [("aaaa", "A"), ("bbbb", None)]


def test_jsonl_and_single_file(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "x y", "author": "A"}\n\n{"text": "z"}\n')
    docs = read_documents(tmp_path / "d.jsonl")
    assert [(d.text, d.author) for d in docs] == [("x y", "A"), ("z", None)]
    (tmp_path / "one.txt").write_text("hello")
    assert read_documents(tmp_path / "one.txt")[0].text == "hello"


@pytest.mark.parametrize("name, content, match", [
    ("d.jsonl", '{"text": 3}\n', "d.jsonl:1.*text"),
    ("d.jsonl", "{oops\n", "d.jsonl:1: not valid JSON"),
    ("d.jsonl", '{"text": "x", "author": 2}\n', "author"),
    ("d.csv", "a,b", "expected a folder"),
])
def test_bad_document_files_name_file_and_line(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=match) as err:
        read_documents(tmp_path / name)
    assert "\n" not in str(err.value)


def test_bad_folders(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_documents(tmp_path / "none")
    with pytest.raises(InputError, match="holds no"):
        read_documents(tmp_path)
    (tmp_path / "a.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match="not UTF-8"):
        read_documents(tmp_path)


def test_chunks_are_consecutive_and_never_span_two_documents():
    docs = [Document("abcdefgh" * 2 + "xyz", "A", "1"), Document("ijklmnop", "B", "2"), Document("qr", None, "3")]
    chunks = chunk_documents(docs, _encode, 4)
    assert chunks.tokens.shape == (6, 4)  # 19 chars -> 4 chunks (3 dropped), 8 -> 2, 2 -> none
    assert chunks.document.tolist() == [0, 0, 0, 0, 1, 1]
    assert chunks.tokens[:4].reshape(-1).tolist() == _encode(docs[0].text)[:16]
    assert chunks.authors == ("A",) * 4 + ("B",) * 2
    assert chunks.writer_index(["B", "A"]).tolist() == [1, 1, 1, 1, 0, 0]
    with pytest.raises(InputError, match="no document"):
        chunk_documents(docs[2:], _encode, 4)
    with pytest.raises(InputError, match="chunk_tokens"):
        chunk_documents(docs, _encode, 0)


def test_a_seeded_choice_of_chunks_and_a_balanced_one():
    docs = [Document("a" * 40, "A", "1"), Document("b" * 8, "B", "2"), Document("c" * 8, "C", "3")]
    first = chunk_documents(docs, _encode, 2, max_chunks=6, seed=1)
    again = chunk_documents(docs, _encode, 2, max_chunks=6, seed=1)
    assert torch.equal(first.tokens, again.tokens) and first.tokens.shape == (6, 2)
    assert first.document.tolist() == sorted(first.document.tolist())  # kept in document order
    balanced = chunk_documents(docs, _encode, 2, max_chunks=6, seed=1, balance=True)
    assert sorted(balanced.authors) == ["A", "A", "B", "B", "C", "C"]
