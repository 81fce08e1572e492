"""Character n-gram personas: conjugate posterior and the exact Dirichlet-multinomial predictive."""

from __future__ import annotations

import math

import torch

from models import ngrams
from models.corpora.tokens import CHARSET


def test_prior_rows_sum_to_the_strength():
    counts = ngrams.char_counts(["abc abd", "bcd"], order=1)
    per_author = ngrams.author_counts(counts, torch.tensor([0, 1]), 2)
    prior = ngrams.prior_concentration(per_author, strength=7.0)
    rows = ngrams.row_of(torch.arange(len(prior)), ngrams.CHAR_VOCAB)
    totals = torch.zeros(int(rows.max()) + 1, dtype=torch.float64).index_add(0, rows, prior)
    assert torch.allclose(totals, torch.full_like(totals, 7.0))
    posterior = ngrams.posterior_concentration(counts, torch.tensor([0, 1]), 2, strength=7.0)
    assert torch.allclose(posterior - prior, per_author)


def test_predictive_is_the_sequential_polya_urn():
    """log p(text) = sum over characters of log (a_v + n_v) / (A + n), counts updated as the text goes."""
    train = ngrams.char_counts(["the cat sat", "a hat"], order=1)
    conc = ngrams.posterior_concentration(train, torch.tensor([0, 1]), 2, strength=3.0)  # [K, F]
    text = "cat hat"
    got = ngrams.predictive_loglik(conc, ngrams.char_counts([text], order=1))[:, 0]  # [K]
    V = ngrams.CHAR_VOCAB
    codes = [CHARSET.index(c) for c in text]
    for k in range(2):
        alpha = conc[k].clone()
        total = 0.0
        for t, c in enumerate(codes):  # brute force, one character at a time
            feature = c if t == 0 else V + codes[t - 1] * V + c
            row = slice(0, V) if t == 0 else slice(V + codes[t - 1] * V, V + codes[t - 1] * V + V)
            total += math.log(alpha[feature] / alpha[row].sum())
            alpha[feature] += 1
        assert math.isclose(float(got[k]), total, rel_tol=1e-10)


def test_char_evidence_masks_the_padding():
    evidence = ngrams.char_evidence(["ab", "abcd"])
    assert evidence.tokens.shape == (2, 4) and evidence.mask.sum(-1).tolist() == [2, 4]
