"""A byte-level BPE tokenizer (Hugging Face ``tokenizers``) for the author-tagged transformer.

:func:`train_bpe` learns ``vocab_size`` tokens (the 256 bytes, then merges) from training
texts only; :func:`encode` maps texts to token ids ``0 .. vocab_size - 1``, which are the
data tokens of :class:`models.transformer.PersonaLM` (its tags and BOS come after them).
Texts are the normalised words of a chunk joined by single spaces
(:func:`models.corpora.tokens.word_tokens`), so the byte-level pre-tokeniser sees lowercase
ASCII words. Training is deterministic (no randomness in BPE merges).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from models.errors import InputError

#: the 256 byte tokens of the byte-level alphabet
BYTES = 256


def train_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` of ``vocab_size`` tokens learned from ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < BYTES + 4:
        raise InputError(f"vocab_size must be an integer >= {BYTES + 4} (the bytes and some merges), got {vocab_size!r}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode(tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Token ids of each text (``int64`` arrays)."""
    return [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(list(texts))]


def windows(ids: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of ``length`` tokens of each sequence (the rest dropped).

    Returns
    -------
    tokens : np.ndarray
        ``[N, length]`` int64.
    source : np.ndarray
        ``[N]`` index of the sequence each window comes from.
    """
    rows, source = [], []
    for i, seq in enumerate(ids):  # one slice per text
        n = len(seq) // length
        if n:
            rows.append(np.asarray(seq[: n * length]).reshape(n, length))
            source += [i] * n
    if not rows:
        raise InputError(f"no text is {length} tokens long")
    return np.concatenate(rows), np.asarray(source, dtype=np.int64)
