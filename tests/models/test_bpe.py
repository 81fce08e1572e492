"""The byte-level BPE tokenizer of the author-tagged transformer."""

from __future__ import annotations

import numpy as np
import pytest

from models.corpora.bpe import encode, train_bpe, windows
from models.errors import InputError

TEXTS = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog"] * 20


def test_train_and_encode_are_deterministic_and_in_range():
    one, two = train_bpe(TEXTS, 280), train_bpe(TEXTS, 280)
    ids = encode(one, ["the cat sat", "zebra!"])
    assert all(i.max() < 280 for i in ids)
    assert [list(i) for i in ids] == [list(i) for i in encode(two, ["the cat sat", "zebra!"])]
    assert one.decode(ids[0].tolist()) == "the cat sat"
    with pytest.raises(InputError, match="vocab_size"):
        train_bpe(TEXTS, 100)


def test_windows_cut_each_sequence():
    tokens, source = windows([np.arange(10), np.arange(3), np.arange(8)], 4)
    assert tokens.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3], [4, 5, 6, 7]]
    assert source.tolist() == [0, 0, 2, 2]
    with pytest.raises(InputError, match="no text"):
        windows([np.arange(3)], 4)
