"""KL curves and the fitted evidence strength (DESIGN.md §3, item 1).

A *model on held-out contexts* is a tensor ``[n, T, V]`` of next-token
log-probabilities for contexts ``[n, T]``: row ``t`` is ``log q(x_t = v | x_<t)``.
Everything here is float64 and vectorised over contexts, positions and tokens.

==============================  ================================================
function                        returns
==============================  ================================================
:func:`kl`                      ``KL(q || p)`` per position ``[n, T]``
:func:`mean_kl`                 its mean over held-out positions
:func:`kl_per_context`          its mean over the positions of each context ``[n]``
:func:`kl_by_beta`              ``KL(q_s || p_D,beta)`` on a grid of ``beta``
:func:`beta_star`               the ``beta`` of the nearest conditioned model
==============================  ================================================

The persona mixtures ``p_w`` of the reachable sets are in :mod:`models.predictive`;
the projection, decomposition, attribution, ELPD and description length are the
other modules of :mod:`inference.comparison`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from models.errors import InputError
from models.predictive import check_logprobs

# ----------------------------------------------------------------------------- KL


def kl(q: Tensor, p: Tensor, positions_mask: Tensor | None = None) -> Tensor:
    """Pointwise ``KL(q || p)`` over the next token: ``[n, T]``.

    Parameters
    ----------
    q, p : Tensor
        ``[n, T, V]`` next-token log-probabilities.
    positions_mask : Tensor, optional
        ``[n, T]`` bool, the positions that count; the others are set to 0.

    Returns
    -------
    Tensor
        ``[n, T]`` float64. Tokens with ``q = 0`` contribute nothing (``0 log 0 = 0``);
        a token with ``q > 0`` and ``p = 0`` makes the entry ``+inf`` (never NaN).
    """
    q, p = check_logprobs(q, "q"), check_logprobs(p, "p")
    if q.shape != p.shape:
        raise InputError(f"q has shape {tuple(q.shape)} but p has shape {tuple(p.shape)}")
    q_prob = q.exp()  # [n, T, V]
    support = q_prob > 0
    # where(): the unused branch may be inf or NaN (q = p = -inf) without reaching the result
    terms = torch.where(support, q_prob * (q - torch.where(support, p, torch.zeros_like(p))), torch.zeros_like(q))
    out = terms.sum(-1)  # [n, T]
    if positions_mask is not None:
        out = torch.where(check_mask(positions_mask, out.shape), out, torch.zeros_like(out))
    return out


def mean_kl(q: Tensor, p: Tensor, positions_mask: Tensor | None = None) -> float:
    """``KL(q || p)`` averaged over the held-out token positions (those in ``positions_mask``).

    Every position counts by default, position 0 (the first token, no context) too;
    a mask leaves positions out (e.g. the prompt of a prompt-completion pair).
    """
    pointwise = kl(q, p, positions_mask)  # [n, T]
    count = pointwise.numel() if positions_mask is None else int(positions_mask.sum())
    if count == 0:
        raise InputError("positions_mask selects no position")
    return float(pointwise.sum() / count)


def kl_per_context(q: Tensor, p: Tensor, positions_mask: Tensor | None = None) -> Tensor:
    """``[n]`` mean ``KL(q || p)`` over the positions of each context (for the bootstrap)."""
    pointwise = kl(q, p, positions_mask)  # [n, T]
    count = torch.full((pointwise.shape[0],), float(pointwise.shape[1]), dtype=torch.float64) \
        if positions_mask is None else positions_mask.sum(-1).to(torch.float64)
    return pointwise.sum(-1) / count.clamp(min=1)


# ----------------------------------------------------------------------------- beta


def kl_by_beta(
    q: Tensor, predictive_by_beta: dict[float, Tensor], positions_mask: Tensor | None = None
) -> dict[float, float]:
    """Mean ``KL(q || p_D,beta)`` for every ``beta`` of a grid: ``{beta: kl}`` (sorted by beta)."""
    if not predictive_by_beta:
        raise InputError("predictive_by_beta is empty")
    return {float(b): mean_kl(q, predictive_by_beta[b], positions_mask) for b in sorted(predictive_by_beta)}


def beta_star(betas, kls) -> float:
    """The ``beta`` minimising ``KL(q_s || p_D,beta)``: grid minimum refined by a parabola in log-beta.

    The grid minimum ``i`` and its two neighbours give a parabola in ``log beta``;
    its vertex (kept inside the neighbours' bracket) is ``beta*``. At the edge of
    the grid, when a neighbour is ``beta = 0`` (no log), or when the three points are
    not convex, the grid value is returned unrefined. Non-finite KLs are skipped.
    """
    b = np.asarray(betas, dtype=np.float64)
    k = np.asarray(kls, dtype=np.float64)
    if b.shape != k.shape or b.ndim != 1 or b.size == 0:
        raise InputError(f"betas and kls must be two 1-d arrays of one length, got {b.shape} and {k.shape}")
    keep = np.isfinite(k) & np.isfinite(b) & (b >= 0)
    if not keep.any():
        raise InputError("no finite KL on the beta grid")
    order = np.argsort(b[keep])
    b, k = b[keep][order], k[keep][order]
    i = int(np.argmin(k))
    if i == 0 or i == len(b) - 1 or b[i - 1] <= 0:
        return float(b[i])
    x = np.log(b[i - 1 : i + 2])
    y = k[i - 1 : i + 2]
    # vertex of the parabola through three points (unequal spacing)
    d1, d2 = (y[1] - y[0]) / (x[1] - x[0]), (y[2] - y[1]) / (x[2] - x[1])
    curvature = (d2 - d1) / (x[2] - x[0])
    if not curvature > 0:
        return float(b[i])
    vertex = 0.5 * (x[0] + x[1]) - d1 / (2 * curvature)
    return float(np.exp(np.clip(vertex, x[0], x[2])))


# ----------------------------------------------------------------------------- checks


def check_mask(mask: Tensor, shape) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.shape != tuple(shape) or mask.dtype != torch.bool:
        raise InputError(f"positions_mask must be a bool tensor of shape {tuple(shape)}, got {mask.dtype} {tuple(mask.shape)}")
    return mask
