"""Text evidence for a real LM: documents from files, tokenised and cut into equal chunks.

Documents (:func:`read_documents`) come from

* a folder of ``*.txt`` (or gzipped ``*.txt.gz``) files, one document per file, read in name
  order; an optional ``manifest.jsonl`` in the folder gives each file's writer
  (``{"file": "Dickens_Oliver_1839.txt", "author": "Charles Dickens"}`` lines; the layout of
  ``/work/shared/data/gutenberg_authors`` and of the bundled novels);
* a ``.jsonl`` file, one document per line: ``{"text": ..., "author": ...}`` (``author`` optional);
* a single ``.txt`` / ``.txt.gz`` file (one document).

Chunking (:func:`chunk_documents`). Each document is tokenised whole by the model's tokenizer
(no special tokens added) and cut into consecutive, non-overlapping chunks of exactly
``chunk_tokens`` tokens; the remainder of a document, shorter than a chunk, is dropped, so a
chunk never spans two documents. When there are more chunks than ``max_chunks``, a seeded
choice keeps ``max_chunks`` of them: uniformly at random, or (``balance=True``, for held-out
contexts) round-robin over the writers, each writer's chunks in a random order, so that every
writer is represented as evenly as the data allow. The kept chunks stay in document order.
A chunk is a document of the fine-tuning evidence or a held-out context ``c``.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from models.errors import InputError
from models.limits import check_tokens

#: file names read from a folder of documents
TEXT_SUFFIXES = (".txt", ".txt.gz")
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class Document:
    """One document: its text, its writer (``None`` when unknown) and where it came from."""

    text: str
    author: str | None
    source: str


@dataclass(frozen=True)
class TokenChunks:
    """Equal-length token chunks of documents.

    Attributes
    ----------
    tokens : Tensor
        ``[N, T]`` int64 token ids.
    document : Tensor
        ``[N]`` index of the document each chunk was cut from.
    authors : tuple of (str or None)
        ``[N]`` the writer of each chunk's document.
    """

    tokens: Tensor
    document: Tensor
    authors: tuple[str | None, ...]

    def writer_index(self, names: Sequence[str]) -> Tensor:
        """``[N]`` index of each chunk's writer in ``names`` (the persona names), ``-1`` when not among them."""
        lookup = {name: h for h, name in enumerate(names)}
        return torch.tensor([lookup.get(a, -1) if a is not None else -1 for a in self.authors], dtype=torch.long)


def read_documents(path: str | os.PathLike) -> list[Document]:
    """The documents at ``path`` (module docstring); one-line errors naming the file or line."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder of documents")
    if path.name.endswith(".jsonl"):
        return _read_jsonl(path)
    if path.name.endswith(TEXT_SUFFIXES):
        return [Document(_read_text(path), None, str(path))]
    raise InputError(f"{path}: expected a folder of .txt files, a .txt file or a .jsonl of documents")


def _read_text(path: Path) -> str:
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        return data.decode("utf-8")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None


def _read_folder(folder: Path) -> list[Document]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
    if not files:
        raise InputError(f"{folder}: holds no {' or '.join(TEXT_SUFFIXES)} files")
    authors: dict[str, str] = {}
    manifest = folder / MANIFEST
    if manifest.is_file():
        for line_no, record in _jsonl_records(manifest):
            if not isinstance(record.get("file"), str) or not isinstance(record.get("author"), str):
                raise InputError(f"{manifest}:{line_no}: needs string keys 'file' and 'author'")
            authors[record["file"]] = record["author"]
            authors[record["file"] + ".gz"] = record["author"]  # the gzipped copy of a listed file
    return [Document(_read_text(p), authors.get(p.name), str(p)) for p in files]


def _read_jsonl(path: Path) -> list[Document]:
    docs = []
    for line_no, record in _jsonl_records(path):
        text, author = record.get("text"), record.get("author")
        if not isinstance(text, str):
            raise InputError(f"{path}:{line_no}: needs a string 'text'")
        if author is not None and not isinstance(author, str):
            raise InputError(f"{path}:{line_no}: 'author' must be a string, got {author!r}")
        docs.append(Document(text, author, f"{path}:{line_no}"))
    if not docs:
        raise InputError(f"{path}: holds no documents")
    return docs


def _jsonl_records(path: Path):
    text = _read_text(path)
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{line_no}: expected a JSON object")
        yield line_no, record


def chunk_documents(
    documents: Sequence[Document],
    encode: Callable[[str], list[int]],
    chunk_tokens: int,
    *,
    max_chunks: int | None = None,
    seed: int = 0,
    balance: bool = False,
) -> TokenChunks:
    """Tokenise every document and cut it into chunks of ``chunk_tokens`` tokens (module docstring).

    Parameters
    ----------
    documents : sequence of Document
    encode : callable
        Text to token ids (the model's tokenizer, no special tokens).
    chunk_tokens : int
        Tokens per chunk, ``T``.
    max_chunks : int, optional
        Keep at most this many chunks (a seeded choice).
    seed : int
        Seed of that choice.
    balance : bool
        Choose round-robin over the writers instead of uniformly.
    """
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise InputError(f"chunk_tokens must be a positive integer, got {chunk_tokens!r}")
    pieces, owner = [], []
    for d, doc in enumerate(documents):
        ids = torch.as_tensor(encode(doc.text), dtype=torch.long)  # [L]
        usable = ids.numel() // chunk_tokens * chunk_tokens
        if usable:
            pieces.append(ids[:usable].view(-1, chunk_tokens))  # [L // T, T]
            owner += [d] * (usable // chunk_tokens)
    if not pieces:
        raise InputError(f"no document is {chunk_tokens} tokens long: nothing to cut into chunks")
    tokens, document = torch.cat(pieces), torch.tensor(owner, dtype=torch.long)
    if max_chunks is not None and max_chunks < tokens.shape[0]:
        chosen = _choose(document, [documents[d].author for d in owner], max_chunks, seed, balance)
        tokens, document = tokens[chosen], document[chosen]
    check_tokens("chunks x chunk_tokens", tokens.numel())
    return TokenChunks(tokens, document, tuple(documents[int(d)].author for d in document))


def _choose(document: Tensor, authors: list[str | None], k: int, seed: int, balance: bool) -> Tensor:
    """Sorted indices of ``k`` chunks: uniform, or round-robin over writers (each writer shuffled)."""
    generator = torch.Generator().manual_seed(seed)
    N = document.numel()
    if not balance:
        return torch.randperm(N, generator=generator)[:k].sort().values
    order = torch.randperm(N, generator=generator).tolist()
    queues: dict[str | None, list[int]] = {}
    for i in order:
        queues.setdefault(authors[i], []).append(i)
    chosen: list[int] = []
    while len(chosen) < k:
        for queue in queues.values():
            if queue and len(chosen) < k:
                chosen.append(queue.pop())
    return torch.tensor(sorted(chosen), dtype=torch.long)
