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
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.errors import InputError
from models.limits import check_seed, check_sizes

#: how far a probability row may be from summing to one
SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MarkovPersonas:
    """A set of ``K`` Markov personas with a prior over them.

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

    def log_table(self) -> Tensor:
        """Flat log-probability table ``[K, F]`` (first token, then transitions)."""
        K = self.num_personas
        table = torch.cat([self.init, self.trans.reshape(K, -1)], dim=-1)  # [K, F]
        return table.log()

    def subset(self, index: Tensor | list[int]) -> MarkovPersonas:
        """The personas at ``index``, with their prior renormalised."""
        index = torch.as_tensor(index, dtype=torch.long)
        prior = self.prior[index]
        return MarkovPersonas(prior / prior.sum(), self.init[index], self.trans[index])

    def with_prior(self, prior: Tensor) -> MarkovPersonas:
        """The same personas under another prior."""
        prior = torch.as_tensor(prior, dtype=self.init.dtype)
        check_probabilities(prior, "prior")
        if prior.shape != (self.num_personas,):
            raise InputError(f"prior has shape {tuple(prior.shape)}, expected ({self.num_personas},)")
        return MarkovPersonas(prior, self.init, self.trans)

    def to(self, dtype: torch.dtype) -> MarkovPersonas:
        return MarkovPersonas(self.prior.to(dtype), self.init.to(dtype), self.trans.to(dtype))


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
    """Raise :class:`InputError` unless the last axis of ``p`` holds distributions."""
    if not torch.is_floating_point(p):
        raise InputError(f"{name} must hold floating-point probabilities, got dtype {p.dtype}")
    if p.numel() == 0:
        raise InputError(f"{name} is empty")
    if not torch.isfinite(p).all():
        raise InputError(f"{name} has NaN or infinite entries")
    if (p < 0).any():
        raise InputError(f"{name} has negative entries")
    worst = (p.sum(-1) - 1).abs().max().item()
    if worst > SUM_TOLERANCE:
        raise InputError(f"{name} rows must sum to one (off by up to {worst:.3g})")


def make_personas(prior, init, trans) -> MarkovPersonas:
    """Validate arrays and build :class:`MarkovPersonas` in float64."""
    arrays = {"prior": prior, "init": init, "trans": trans}
    for name, a in arrays.items():
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"{name} must hold floating-point probabilities, got dtype {a.dtype}")
    prior, init, trans = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in arrays.values())
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
    return MarkovPersonas(prior, init, trans)


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
    arrays = load_npz(path, required=("prior", "init", "trans"))
    personas = make_personas(arrays["prior"], arrays["init"], arrays["trans"])
    if "order" in arrays:
        order = np.asarray(arrays["order"])
        if order.shape != () or not np.issubdtype(order.dtype, np.integer):
            raise InputError(f"{path}: 'order' must be one integer, got {order.dtype} array of shape {order.shape}")
        if int(order) != personas.order:
            raise InputError(f"{path}: 'order' says {int(order)} but trans has {personas.order} context axes")
    return personas


def load_npz(path: str | os.PathLike, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load an ``.npz`` without pickles; one-line errors for missing, corrupt or incomplete files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    # zipfile and NumPy raise many types for corrupt files (BadZipFile, EOFError, KeyError,
    # NotImplementedError for an unknown compression flag, zlib.error, MemoryError for a huge
    # declared shape, ...): nothing else happens in this block, so every failure means "unreadable".
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable .npz file ({first_line})") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise InputError(f"{path}: missing array(s) {', '.join(missing)} (has {', '.join(arrays) or 'none'})")
    return arrays
