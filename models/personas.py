"""Markov personas: one table of next-token probabilities per persona.

A persona of order ``n`` over ``V`` tokens is

    x_0 ~ init[h]                              (the first token)
    x_t ~ trans[h, x_{t-n}, ..., x_{t-1}]      (t >= 1)

where positions before the start of a document read as the first token
(``x_{-1} = x_0``): an order-2 persona scores ``x_1`` with the context
``(x_0, x_0)``. Order 0 is a unigram persona (``trans`` has no context axes).

Every persona is also a flat *log table* of ``F = V + V**n * V`` entries: the
``V`` log-probabilities of the first token, then the transition table with
its context axes flattened (row-major). The sufficient statistics in
:mod:`models.counts` index that flat table, so a log-likelihood is a sum of
``count * log_table[feature]``.

File layout (``.npz``, written by :func:`save_personas`):

==========  ==========================  ====================================
array       shape                       meaning
==========  ==========================  ====================================
``prior``   ``[K]`` float64             persona prior ``pi``, sums to one
``init``    ``[K, V]`` float64          first-token distribution per persona
``trans``   ``[K, V, ..., V, V]``       ``order`` context axes, then the next
                                        token; every row sums to one
``order``   scalar int64                the Markov order ``n``
==========  ==========================  ====================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.errors import InputError
from models.limits import MAX_TABLE_ENTRIES, check_seed, check_sizes
from models.npz import load_npz  # noqa: F401 (public here too)

#: how far a probability row may be from summing to one
SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MarkovPersonas:
    """A set of ``K`` Markov personas with a prior over them.

    Built directly or by :func:`make_personas`, the tables are validated (shapes,
    one floating dtype, finite, non-negative, rows summing to one) with the same
    one-line :class:`~models.errors.InputError` as :func:`make_personas`. Methods
    that derive personas from validated ones (:meth:`subset`, :meth:`with_prior`,
    :meth:`to`) skip the table checks.

    Attributes
    ----------
    prior : Tensor
        ``[K]`` persona prior, sums to one.
    init : Tensor
        ``[K, V]`` first-token distributions.
    trans : Tensor
        ``[K] + [V] * order + [V]`` transition tables.
    """

    prior: Tensor
    init: Tensor
    trans: Tensor

    def __post_init__(self) -> None:
        check_tables(self.prior, self.init, self.trans)

    @classmethod
    def _derived(cls, prior: Tensor, init: Tensor, trans: Tensor) -> MarkovPersonas:
        """Personas built from validated ones, without checking the tables again."""
        new = object.__new__(cls)
        for name, value in (("prior", prior), ("init", init), ("trans", trans)):
            object.__setattr__(new, name, value)
        return new

    @property
    def num_personas(self) -> int:
        return self.init.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.init.shape[1]

    @property
    def order(self) -> int:
        return self.trans.dim() - 2

    @property
    def num_contexts(self) -> int:
        return self.vocab_size**self.order

    @property
    def num_features(self) -> int:
        """Entries of the flat log table: ``V + V**order * V``."""
        return self.vocab_size * (1 + self.num_contexts)

    def log_table(self, columns: Tensor | None = None) -> Tensor:
        """Flat log-probability table ``[K, F]`` (first token, then transitions).

        Parameters
        ----------
        columns : Tensor, optional
            ``[C]`` int64 flat feature indices: only these columns, ``[K, C]``, are built (one
            gather and an in-place log; the exact global posterior needs only the features the
            evidence holds). The result is a fresh tensor the caller may change in place.
        """
        K, V = self.num_personas, self.vocab_size
        trans = self.trans.reshape(K, -1)  # [K, V**order * V], a view
        if columns is None:
            return torch.cat([self.init, trans], dim=-1).log()  # [K, F]
        table = trans.index_select(1, (columns - V).clamp(min=0))  # [K, C]
        first = columns < V  # [C] columns of the first-token row
        if first.any():
            table[:, first] = self.init[:, columns[first]]
        return table.log_()

    def subset(self, index: Tensor | list[int]) -> MarkovPersonas:
        """The personas at ``index``, with their prior renormalised."""
        index = torch.as_tensor(index, dtype=torch.long)
        if index.dim() != 1 or len(index) == 0:
            raise InputError(f"subset needs a non-empty list of persona indices, got shape {tuple(index.shape)}")
        prior = self.prior[index]
        total = float(prior.sum())
        if not total > 0:
            raise InputError(f"personas {index.tolist()[:10]} have prior probability 0 in total: cannot renormalise")
        return MarkovPersonas._derived(prior / total, self.init[index], self.trans[index])

    def with_prior(self, prior: Tensor) -> MarkovPersonas:
        """The same personas under another prior."""
        prior = torch.as_tensor(prior, dtype=self.init.dtype)
        check_probabilities(prior, "prior")
        if prior.shape != (self.num_personas,):
            raise InputError(f"prior has shape {tuple(prior.shape)}, expected ({self.num_personas},)")
        return MarkovPersonas._derived(prior, self.init, self.trans)

    def to(self, dtype: torch.dtype) -> MarkovPersonas:
        return MarkovPersonas._derived(self.prior.to(dtype), self.init.to(dtype), self.trans.to(dtype))


@dataclass(frozen=True)
class TablePrior:
    """Dirichlet priors on persona tables ("uncertain persona parameters").

    Attributes
    ----------
    init : Tensor
        ``[K, V]`` Dirichlet concentration of each persona's first-token row.
    trans : Tensor
        ``[K, C, V]`` concentration of each transition row (``C = V**order``).
    """

    init: Tensor
    trans: Tensor

    def flat(self) -> Tensor:
        """``[K, C + 1, V]``: the first-token row, then every transition row."""
        return torch.cat([self.init.unsqueeze(1), self.trans], dim=1)


def anchored_table_prior(personas: MarkovPersonas, strength: float = 50.0, floor: float = 0.1) -> TablePrior:
    """Dirichlet rows centred on known persona tables: ``strength * table + floor``.

    Anchoring each persona's prior to a known table fixes its label, so the
    posterior over learned tables has no label switching (DESIGN.md §6).
    """
    if not (_is_number(strength) and _is_number(floor) and strength >= 0 and floor > 0):
        raise InputError(f"anchored prior needs finite strength >= 0 and floor > 0, got {strength!r}, {floor!r}")
    K, V = personas.num_personas, personas.vocab_size
    init = strength * personas.init + floor  # [K, V]
    trans = strength * personas.trans.reshape(K, -1, V) + floor  # [K, C, V]
    return TablePrior(init, trans)


def check_probabilities(p: Tensor, name: str) -> None:
    """Raise :class:`InputError` unless the last axis of ``p`` holds distributions.

    Rows may be off one by ``SUM_TOLERANCE`` (or by the rounding of the dtype over a
    row, if larger). Two passes over ``p`` (min/max, then the row sums), no large temporaries.
    """
    if not torch.is_floating_point(p):
        raise InputError(f"{name} must hold floating-point probabilities, got dtype {p.dtype}")
    if p.numel() == 0:
        raise InputError(f"{name} is empty")
    low, high = torch.aminmax(p)  # NaN propagates into both
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise InputError(f"{name} has NaN or infinite entries")
    if low < 0:
        raise InputError(f"{name} has negative entries")
    worst = (p.sum(-1) - 1).abs().max().item()
    if worst > max(SUM_TOLERANCE, p.shape[-1] * torch.finfo(p.dtype).eps):
        raise InputError(f"{name} rows must sum to one (off by up to {worst:.3g})")


def check_tables(prior: Tensor, init: Tensor, trans: Tensor) -> None:
    """One-line :class:`InputError` unless ``prior``, ``init``, ``trans`` are valid persona tensors.

    Shapes ``[K]``, ``[K, V]``, ``[K] + [V] * (order + 1)`` with ``K >= 1``, ``V >= 2``; one
    floating dtype; every row a distribution (:func:`check_probabilities`).
    """
    for name, a in (("prior", prior), ("init", init), ("trans", trans)):
        if not isinstance(a, Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(a).__name__} (make_personas takes arrays)")
        if not torch.is_floating_point(a):
            raise InputError(f"{name} must hold floating-point probabilities, got dtype {a.dtype}")
    if not prior.dtype == init.dtype == trans.dtype:
        raise InputError(f"prior, init and trans must share one dtype, got {prior.dtype}, {init.dtype}, {trans.dtype}")
    if init.dim() != 2:
        raise InputError(f"init must be [K, V], got shape {tuple(init.shape)}")
    K, V = init.shape
    if K < 1 or V < 2:
        raise InputError(f"need at least 1 persona and 2 tokens, got K={K}, V={V}")
    if prior.shape != (K,):
        raise InputError(f"prior has shape {tuple(prior.shape)}, expected ({K},)")
    order = trans.dim() - 2
    if order < 0 or trans.shape != (K,) + (V,) * (order + 1):
        raise InputError(f"trans has shape {tuple(trans.shape)}, expected [K={K}] + [V={V}] * (order + 1)")
    check_probabilities(prior, "prior")
    check_probabilities(init, "init")
    check_probabilities(trans, "trans")


def make_personas(prior, init, trans) -> MarkovPersonas:
    """Validate arrays and build :class:`MarkovPersonas` in float64."""
    arrays = {"prior": prior, "init": init, "trans": trans}
    for name, a in arrays.items():
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"{name} must hold floating-point probabilities, got dtype {a.dtype}")
    prior, init, trans = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in arrays.values())
    return MarkovPersonas(prior, init, trans)  # validated in __post_init__


def random_personas(
    num_personas: int,
    vocab_size: int,
    order: int = 1,
    concentration: float = 0.5,
    seed: int = 0,
    prior: Tensor | None = None,
) -> MarkovPersonas:
    """Draw ``K`` personas with every row from a symmetric Dirichlet.

    Parameters
    ----------
    num_personas, vocab_size, order : int
        ``K >= 1``, ``V >= 2``, ``order >= 0``.
    concentration : float
        Dirichlet concentration of every row: small values give peaked,
        distinctive personas; large values give flat, similar ones.
    seed : int
        Seed of the NumPy generator (the draw does not touch torch's RNG).
    prior : Tensor, optional
        ``[K]`` persona prior; uniform when omitted.
    """
    check_sizes(num_personas=num_personas, vocab_size=vocab_size, order=order)
    if not (_is_number(concentration) and concentration > 0):
        raise InputError(f"concentration must be a positive number, got {concentration!r}")
    rng = np.random.default_rng(check_seed(seed))
    K, V = num_personas, vocab_size
    init = rng.dirichlet(np.full(V, concentration), size=K)  # [K, V]
    trans = rng.dirichlet(np.full(V, concentration), size=(K,) + (V,) * order)  # [K, V.., V]
    # Tiny concentrations can underflow a whole row to zero; such a row is renormalised.
    init, trans = (_renormalise(a) for a in (init, trans))
    prior = np.full(K, 1.0 / K) if prior is None else np.asarray(prior, dtype=np.float64)
    return make_personas(prior, init, trans)


def _is_number(x) -> bool:
    """A finite real number (Python or NumPy scalar; not a bool, string or array)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and bool(np.isfinite(x))


def _renormalise(a: np.ndarray) -> np.ndarray:
    a = np.where(np.isfinite(a), a, 0.0)
    s = a.sum(-1, keepdims=True)
    return np.where(s > 0, a / np.where(s > 0, s, 1.0), 1.0 / a.shape[-1])


def save_personas(path: str | os.PathLike, personas: MarkovPersonas) -> None:
    """Write personas to ``.npz`` (layout in the module docstring)."""
    np.savez(
        path,
        prior=personas.prior.double().numpy(),
        init=personas.init.double().numpy(),
        trans=personas.trans.double().numpy(),
        order=np.int64(personas.order),
    )


def load_personas(path: str | os.PathLike) -> MarkovPersonas:
    """Read and validate personas written by :func:`save_personas`."""
    arrays = load_npz(path, required=("prior", "init", "trans"), max_entries=MAX_TABLE_ENTRIES)
    personas = make_personas(arrays["prior"], arrays["init"], arrays["trans"])
    if "order" in arrays:
        order = np.asarray(arrays["order"])
        if order.shape != () or not np.issubdtype(order.dtype, np.integer):
            raise InputError(f"{path}: 'order' must be one integer, got {order.dtype} array of shape {order.shape}")
        if int(order) != personas.order:
            raise InputError(f"{path}: 'order' says {int(order)} but trans has {personas.order} context axes")
    return personas
