"""Evidence and its sufficient statistics.

Evidence is a batch of documents ``tokens`` [D, T] with a boolean loss
``mask`` [D, T] that says which tokens are evidence: all of them for
whole-document evidence, only the completion for SFT-style pairs ``(c, y)``
(the context tokens are then read but not scored).

A Markov persona scores a document through its *features*: position 0 is
feature ``x_0`` (the first-token row), position ``t >= 1`` is feature
``V + ctx_t * V + x_t`` where ``ctx_t`` is the flat index of the ``order``
previous tokens (see :mod:`models.personas`). Counting the features of every
evidence token once gives :class:`TransitionCounts`; after that pass every
log-likelihood costs one gather per distinct ``(document, feature)`` pair,
whatever the number of tokens.

Evidence files (``.npz``): ``tokens`` [D, T] integers in ``[0, V)`` and an
optional boolean ``mask`` [D, T]; other arrays are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.errors import InputError
from models.limits import MAX_TOKENS
from models.npz import load_npz


@dataclass(frozen=True)
class Evidence:
    """Fine-tuning evidence: documents and the mask of scored tokens.

    Attributes
    ----------
    tokens : Tensor
        ``[D, T]`` int64 tokens.
    mask : Tensor
        ``[D, T]`` bool, True where a token is evidence.
    """

    tokens: Tensor
    mask: Tensor

    @property
    def num_docs(self) -> int:
        return self.tokens.shape[0]

    @property
    def doc_len(self) -> int:
        return self.tokens.shape[1]

    @property
    def num_tokens(self) -> int:
        """Number of evidence (masked-in) tokens."""
        return int(self.mask.sum())

    def select(self, index: Tensor) -> Evidence:
        return Evidence(self.tokens[index], self.mask[index])


def make_evidence(tokens, mask=None, vocab_size: int | None = None) -> Evidence:
    """Validate arrays and build :class:`Evidence`.

    Raises :class:`InputError` for a wrong shape or dtype, more than
    :data:`~models.limits.MAX_TOKENS` token positions (``D * T``, context
    tokens included; checked before any copy), tokens outside
    ``[0, vocab_size)``, a mask of another shape, and empty or all-masked
    evidence.
    """
    tokens = np.asarray(tokens)
    if tokens.dtype == bool or not np.issubdtype(tokens.dtype, np.integer):
        raise InputError(f"tokens must be integers, got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        raise InputError(f"tokens must be [documents, tokens], got shape {tokens.shape}")
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise InputError(f"evidence is empty (tokens has shape {tokens.shape})")
    if int(tokens.shape[0]) * int(tokens.shape[1]) > MAX_TOKENS:
        raise InputError(f"evidence of {tokens.shape[0]} x {tokens.shape[1]} tokens is too large "
                         f"(limit {MAX_TOKENS:.0e} tokens)")
    high = np.iinfo(np.int64).max if vocab_size is None else vocab_size - 1  # uint64 may not fit in int64
    if tokens.min() < 0 or tokens.max() > high:
        bound = f"[0, {vocab_size})" if vocab_size is not None else "[0, 2**63)"
        raise InputError(f"tokens must lie in {bound}, found values from {tokens.min()} to {tokens.max()}")
    if mask is None:
        mask = np.ones(tokens.shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
            raise InputError(f"mask must be boolean (or 0/1), got dtype {mask.dtype}")
        mask = mask.astype(bool)
    if mask.shape != tokens.shape:
        raise InputError(f"mask has shape {mask.shape} but tokens has shape {tokens.shape}")
    if not mask.any():
        raise InputError("mask is all false: there is no evidence to condition on")
    return Evidence(torch.as_tensor(tokens, dtype=torch.long), torch.as_tensor(mask))


def load_evidence(path: str | os.PathLike, vocab_size: int | None = None) -> Evidence:
    """Read evidence from ``.npz`` (``tokens`` and an optional ``mask``).

    Arrays of more than :data:`~models.limits.MAX_TOKENS` entries are refused from their
    headers, before they are read.
    """
    arrays = load_npz(path, required=("tokens",), max_entries=MAX_TOKENS)
    try:
        return make_evidence(arrays["tokens"], arrays.get("mask"), vocab_size)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def save_evidence(path: str | os.PathLike, evidence: Evidence, **extra: np.ndarray) -> None:
    """Write evidence to ``.npz`` (plus any ``extra`` arrays, e.g. ``persona``)."""
    np.savez(path, tokens=evidence.tokens.numpy(), mask=evidence.mask.numpy(), **extra)


def feature_index(tokens: Tensor, vocab_size: int, order: int) -> Tensor:
    """Flat log-table index of every position: ``[D, T]`` int64.

    Position 0 gets ``x_0``; position ``t`` gets ``V + ctx_t * V + x_t``, with
    context positions before the document start reading as ``x_0``.
    """
    tokens = tokens.long()  # [D, T] (no copy when already int64)
    V = vocab_size
    if order == 0:
        features = tokens + V  # [D, T]
    else:  # in place on one [D, T] buffer: ctx, then V + ctx * V + x_t
        t = torch.arange(tokens.shape[1])
        features = tokens[:, (t - order).clamp(min=0)]  # [D, T] first context slot
        for j in range(1, order):  # loop over context slots, not tokens
            features.mul_(V).add_(tokens[:, (t - order + j).clamp(min=0)])
        features.mul_(V).add_(tokens).add_(V)
    features[:, 0] = tokens[:, 0]
    return features


@dataclass(frozen=True)
class TransitionCounts:
    """Per-document feature counts, stored sparsely.

    Attributes
    ----------
    doc, feature : Tensor
        ``[nnz]`` int64: the document and flat feature of each nonzero count.
    count : Tensor
        ``[nnz]`` float64 counts (all positive).
    num_docs, num_features : int
        ``D`` and ``F``.
    """

    doc: Tensor
    feature: Tensor
    count: Tensor
    num_docs: int
    num_features: int

    def totals(self) -> Tensor:
        """Counts summed over documents: ``[F]``."""
        return torch.zeros(self.num_features, dtype=self.count.dtype).index_add_(0, self.feature, self.count)

    def per_doc_tokens(self) -> Tensor:
        """Number of evidence tokens in each document: ``[D]``."""
        return torch.zeros(self.num_docs, dtype=self.count.dtype).index_add_(0, self.doc, self.count)

    def dense(self) -> Tensor:
        """``[D, F]`` dense counts (only for small problems)."""
        out = torch.zeros(self.num_docs, self.num_features, dtype=self.count.dtype)
        out[self.doc, self.feature] = self.count
        return out

    def select(self, index: Tensor) -> TransitionCounts:
        """Counts of documents ``index`` (renumbered ``0..len(index)-1``)."""
        index = torch.as_tensor(index, dtype=torch.long)
        new_id = torch.full((self.num_docs,), -1, dtype=torch.long)
        new_id[index] = torch.arange(len(index))
        keep = new_id[self.doc] >= 0  # [nnz]
        return TransitionCounts(
            new_id[self.doc[keep]], self.feature[keep], self.count[keep], len(index), self.num_features
        )

    def loglik(self, log_table: Tensor) -> Tensor:
        """Log-likelihood of every document.

        Parameters
        ----------
        log_table : Tensor
            ``[..., F]`` flat log tables whose batch shape broadcasts with
            ``[D]``: ``[K, 1, F]`` scores all documents under ``K`` personas,
            ``[D, F]`` scores each document under its own table.

        Returns
        -------
        Tensor
            ``broadcast(batch, [D])`` summed log-likelihoods.
        """
        batch = torch.broadcast_shapes(log_table.shape[:-1], (self.num_docs,))
        table = log_table.expand(*batch, self.num_features)  # [..., D, F], no copy
        picked = table[..., self.doc, self.feature] * self.count.to(table.dtype)  # [..., nnz]
        out = table.new_zeros(batch)  # [..., D]
        return out.index_add(-1, self.doc, picked)


def count_transitions(evidence: Evidence, vocab_size: int, order: int) -> TransitionCounts:
    """One counting pass over the evidence tokens.

    Returns
    -------
    TransitionCounts
        Sparse per-document counts of the features of masked-in tokens.
    """
    F = vocab_size * (1 + vocab_size**order)
    if int(evidence.tokens.max()) >= vocab_size:
        raise InputError(f"tokens must lie in [0, {vocab_size}), found {int(evidence.tokens.max())}")
    features = feature_index(evidence.tokens, vocab_size, order)[evidence.mask]  # [N]
    docs = torch.arange(evidence.num_docs).unsqueeze(1).expand_as(evidence.tokens)[evidence.mask]  # [N]
    keys, counts = torch.unique(docs * F + features, return_counts=True)  # [nnz]
    return TransitionCounts(keys // F, keys % F, counts.to(torch.float64), evidence.num_docs, F)


def total_counts(evidence: Evidence, vocab_size: int, order: int) -> Tensor:
    """Feature counts summed over all documents, ``[F]`` float64: the cheap global statistic."""
    F = vocab_size * (1 + vocab_size**order)
    features = feature_index(evidence.tokens, vocab_size, order)  # [D, T]
    features = features.flatten() if bool(evidence.mask.all()) else features[evidence.mask]  # [N]
    return torch.bincount(features, minlength=F).to(torch.float64)

