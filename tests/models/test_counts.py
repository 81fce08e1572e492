import zipfile

import numpy as np
import pytest
import torch

from models.counts import (
    count_transitions,
    feature_index,
    load_evidence,
    make_evidence,
    total_counts,
)
from models.errors import InputError
from models.limits import MAX_TOKENS
from models.personas import random_personas


def brute_loglik(personas, tokens, mask):
    """Explicit loops: the log-likelihood of every document under every persona."""
    K, n = personas.num_personas, personas.order
    out = torch.zeros(K, len(tokens), dtype=torch.float64)
    for k in range(K):
        for d, doc in enumerate(tokens.tolist()):
            for t, x in enumerate(doc):
                if not mask[d, t]:
                    continue
                if t == 0:
                    out[k, d] += personas.init[k, x].log()
                else:
                    ctx = tuple(doc[max(t - n + j, 0)] for j in range(n))
                    out[k, d] += personas.trans[(k,) + ctx + (x,)].log()
    return out


@pytest.mark.parametrize("order", [0, 1, 2])
def test_counts_give_the_brute_force_loglik(order):
    p = random_personas(3, 4, order=order, seed=order)
    gen = torch.Generator().manual_seed(order)
    tokens = torch.randint(0, 4, (5, 9), generator=gen)
    mask = torch.rand(5, 9, generator=gen) < 0.7
    mask[:, -1] = True
    ev = make_evidence(tokens.numpy(), mask.numpy())
    counts = count_transitions(ev, 4, order)
    got = counts.loglik(p.log_table()[:, None, :])  # [K, D]
    torch.testing.assert_close(got, brute_loglik(p, tokens, mask), rtol=0, atol=1e-10)
    torch.testing.assert_close(counts.totals(), total_counts(ev, 4, order))
    assert counts.per_doc_tokens().sum() == mask.sum()


def test_select_renumbers_documents():
    ev = make_evidence(np.arange(24).reshape(4, 6) % 3)
    counts = count_transitions(ev, 3, 1)
    sub = counts.select(torch.tensor([2, 0]))
    torch.testing.assert_close(sub.dense(), counts.dense()[[2, 0]])


def test_feature_index_pads_with_the_first_token():
    tokens = torch.tensor([[1, 2, 0]])
    # order 2, V = 3: position 1 reads context (x0, x0) = (1, 1) -> ctx 4 -> 3 + 4*3 + 2
    assert feature_index(tokens, 3, 2).tolist() == [[1, 3 + 4 * 3 + 2, 3 + (1 * 3 + 2) * 3 + 0]]


@pytest.mark.parametrize(
    "tokens, mask, message",
    [
        (np.zeros((2, 3), dtype=np.float32), None, "integers"),
        (np.zeros(3, dtype=np.int64), None, "shape"),
        (np.zeros((0, 3), dtype=np.int64), None, "empty"),
        (np.full((2, 3), 7), None, r"\[0, 4\)"),
        (np.full((2, 3), -1), None, r"\[0, 4\)"),
        (np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3), dtype=bool), "all false"),
        (np.zeros((2, 3), dtype=np.int64), np.ones((3, 2), dtype=bool), "mask has shape"),
        (np.zeros((2, 3), dtype=np.int64), np.full((2, 3), 0.5), "mask must be boolean"),
    ],
)
def test_bad_evidence_is_refused_in_one_line(tokens, mask, message):
    with pytest.raises(InputError, match=message) as err:
        make_evidence(tokens, mask, vocab_size=4)
    assert "\n" not in str(err.value)


def test_evidence_above_max_tokens_is_refused_before_any_copy():
    rows = MAX_TOKENS // 1000 + 1
    view = np.broadcast_to(np.zeros(1, dtype=np.int64), (rows, 1000))  # 50,001,000 tokens, 8 bytes of memory
    with pytest.raises(InputError, match=f"evidence of {rows} x 1000 tokens is too large") as err:
        make_evidence(view, vocab_size=4)
    assert "\n" not in str(err.value)


def test_load_evidence_refuses_arrays_above_max_tokens_from_their_header(tmp_path):
    path = tmp_path / "evidence.npz"
    with zipfile.ZipFile(path, "w") as z, z.open("tokens.npy", "w") as f:  # no data: only the header is read
        np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (10**5, 10**4)})
    with pytest.raises(InputError, match=r"'tokens' of shape \(100000, 10000\) has 1000000000 entries \(limit 5e\+07\)"):
        load_evidence(path)
