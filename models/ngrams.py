"""Dirichlet-smoothed character n-gram personas: the Markov personas of :mod:`models.personas` over characters.

Author ``a`` is a Markov chain of order ``n`` over the characters of
:data:`models.corpora.tokens.CHARSET`, with uncertain tables (the Pyro model is
:func:`models.mixture.persona_model` with a :class:`~models.personas.TablePrior`)::

    row[a, c] ~ Dirichlet(strength * base[c])        every context c (and the first-character row)
    text      ~ MarkovChain(row[a])

``base[c]`` is the row of all training text pooled (every author), add-half smoothed, so
an author's row is shrunk towards the common usage, by ``strength`` pseudo-characters.
The posterior is conjugate: ``row[a, c] | training ~ Dirichlet(strength * base[c] +
counts[a, c])`` (:func:`posterior_concentration`). A new text is scored by its exact
posterior predictive, the Dirichlet-multinomial (Pólya) likelihood of its counts
(:func:`predictive_loglik`): the plug-in posterior mean with the text's own counts
updating the rows as it goes, no point estimate. A *new* author's rows are drawn from
the prior ``Dirichlet(strength * base)`` (:func:`prior_concentration`): the same
predictive with that concentration scores a text by someone else.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from models.corpora.tokens import CHARSET, char_codes
from models.counts import Evidence, TransitionCounts, count_transitions
from models.errors import InputError

#: characters of the n-gram personas
CHAR_VOCAB = len(CHARSET)
#: default Markov order (a character 3-gram: two characters of context)
ORDER = 2
#: default prior strength, in pseudo-characters per row (fixed, not fitted)
STRENGTH = 10.0


def char_evidence(texts: list[str]) -> Evidence:
    """Character codes of ``texts`` as evidence: ``[D, T]`` tokens, padded, with the padding masked out."""
    codes = [char_codes(t) for t in texts]
    if not codes or min(len(c) for c in codes) == 0:
        raise InputError("every text needs at least one character")
    T = max(len(c) for c in codes)
    tokens = np.zeros((len(codes), T), dtype=np.int64)
    mask = np.zeros((len(codes), T), dtype=bool)
    for i, c in enumerate(codes):  # one row per text (a copy, not a loop over characters)
        tokens[i, : len(c)], mask[i, : len(c)] = c, True
    return Evidence(torch.from_numpy(tokens), torch.from_numpy(mask))


def char_counts(texts: list[str], order: int = ORDER) -> TransitionCounts:
    """Sparse per-text counts of the flat n-gram features (:mod:`models.counts`)."""
    return count_transitions(char_evidence(texts), CHAR_VOCAB, order)


def row_of(features: Tensor, vocab_size: int) -> Tensor:
    """``[n]`` the table row of each flat feature: 0 for the first-character row, ``1 + context`` after."""
    return torch.where(features < vocab_size, 0, (features - vocab_size) // vocab_size + 1)


def author_counts(counts: TransitionCounts, author: Tensor, num_authors: int) -> Tensor:
    """``[K, F]`` feature counts of each author's texts."""
    author = torch.as_tensor(author, dtype=torch.long)
    per_author = torch.zeros(num_authors, counts.num_features, dtype=torch.float64)
    per_author.index_put_((author[counts.doc], counts.feature), counts.count, accumulate=True)
    return per_author


def prior_concentration(per_author: Tensor, strength: float = STRENGTH) -> Tensor:
    """``[F]`` the prior ``strength * base`` of every author's rows: ``base`` is the pooled rows, add-half smoothed."""
    if not strength > 0:
        raise InputError(f"strength must be > 0, got {strength!r}")
    pooled = per_author.sum(0) + 0.5  # [F]
    rows = row_of(torch.arange(per_author.shape[1]), CHAR_VOCAB)  # [F]
    row_total = torch.zeros(int(rows.max()) + 1, dtype=torch.float64).index_add(0, rows, pooled)
    return strength * pooled / row_total[rows]


def posterior_concentration(counts: TransitionCounts, author: Tensor, num_authors: int,
                            strength: float = STRENGTH) -> Tensor:
    """``[K, F]`` Dirichlet concentration of every author's rows given the training texts.

    Parameters
    ----------
    counts : TransitionCounts
        Counts of the training texts.
    author : Tensor
        ``[D]`` author index of each training text.
    strength : float
        Prior pseudo-characters per row (module docstring).
    """
    per_author = author_counts(counts, author, num_authors)  # [K, F]
    return prior_concentration(per_author, strength) + per_author


def predictive_loglik(concentration: Tensor, counts: TransitionCounts) -> Tensor:
    """``[K, D]`` exact posterior predictive ``log p(text_d | author k)``: the Dirichlet-multinomial.

    Per row: ``lgamma(A) - lgamma(A + n) + sum_v [lgamma(a_v + n_v) - lgamma(a_v)]`` with
    ``a`` the author's posterior concentration, ``A`` its row total and ``n`` the text's counts.
    """
    K, F = concentration.shape
    if F != counts.num_features:
        raise InputError(f"concentration has {F} features, the counts {counts.num_features}")
    rows = row_of(torch.arange(F), CHAR_VOCAB)  # [F]
    R = int(rows.max()) + 1
    row_alpha = torch.zeros(K, R, dtype=torch.float64).index_add(1, rows, concentration)  # [K, R]
    a = concentration[:, counts.feature]  # [K, nnz]
    cells = torch.lgamma(a + counts.count) - torch.lgamma(a)  # [K, nnz]
    out = torch.zeros(K, counts.num_docs, dtype=torch.float64).index_add(1, counts.doc, cells)  # [K, D]
    doc_row = counts.doc * R + rows[counts.feature]  # [nnz]
    keys, inverse = torch.unique(doc_row, return_inverse=True)
    n_row = torch.zeros(len(keys), dtype=torch.float64).index_add(0, inverse, counts.count)  # [pairs]
    A = row_alpha[:, keys % R]  # [K, pairs]
    norm = torch.lgamma(A) - torch.lgamma(A + n_row)  # [K, pairs]
    return out.index_add(1, keys // R, norm)
