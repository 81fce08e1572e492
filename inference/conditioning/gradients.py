"""The NumPy pieces of the NUTS potentials, each with its gradient written out.

On the toolkit's problems (a few persona weights, a ``[D, K]`` matrix) a NUTS
potential is a few dozen operations on tiny arrays: their per-call overhead, not
the arithmetic, sets its cost. A NumPy operation costs a fraction of a torch
one and no autograd graph is recorded, so :mod:`inference.conditioning.potentials`
computes its value and gradient here, in one pass, and hands autograd a single node.

* :class:`StickBreaking`: Pyro's simplex bijection in log space, and the
  gradient back through it to the unconstrained scale;
* :class:`MixtureTerm`: ``sum_d logsumexp_k(log w_k + L[d, k])`` for a fixed ``L``
  and its gradient in ``log w``; :func:`mixture_grad` for an ``L`` that changes.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


class StickBreaking:
    """Pyro's ``StickBreakingTransform`` of ``[..., n - 1]`` values in log space, with its gradient.

    With ``t = x - log(n - k)`` (``k = 1 .. n - 1``), ``z = sigmoid(t)``,
    ``log_y_k = log z_k + sum_{j<k} log(1 - z_j)`` (the last entry has no ``log z``
    term) and ``log_det = sum_{k<n} (-t_k + log z_k + log_y_k)`` (Pyro's
    ``log_abs_det_jacobian``), the gradient in ``x`` of ``sum(g * log_y) + log_det``
    is ``h_j (1 - z_j) - z_j (1 + sum_{k>j} h_k)`` with ``h = g + [1, ..., 1, 0]``.
    ``log_y`` is never ``-inf``, unlike ``log`` of the transform.
    """

    def __init__(self, n: int):
        self.log_offset = np.log(n - np.arange(1, n))  # [n - 1]
        self.ones = np.append(np.ones(n - 1), 0.0)  # [n]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, float, tuple[np.ndarray, np.ndarray]]:
        """``log_y`` ``[..., n]``, ``sum(log_det)`` and what :meth:`grad` needs."""
        t = x - self.log_offset  # [..., n - 1]
        log_z = -np.logaddexp(0.0, -t)
        log_rest = log_z - t  # log(1 - z)
        done = np.cumsum(log_rest, -1)  # sum_{j<=k} log(1 - z_j)
        head = done + t  # log z_k + sum_{j<k} log(1 - z_j)
        log_y = np.concatenate([head, done[..., -1:]], -1)  # [..., n]
        return log_y, float((log_rest + head).sum()), (log_z, log_rest)

    def grad(self, saved: tuple[np.ndarray, np.ndarray], g: np.ndarray) -> np.ndarray:
        """Gradient in ``x`` ``[..., n - 1]`` of ``sum(g * log_y) + sum(log_det)``, for ``g`` ``[..., n]``."""
        log_z, log_rest = saved
        h = g + self.ones
        upto = np.cumsum(h, -1)  # [..., n]
        after = upto[..., -1:] - upto[..., :-1]  # [..., n - 1] sum_{k>j} h_k
        return h[..., :-1] * np.exp(log_rest) - np.exp(log_z) * (after + 1.0)


def mixture_grad(logits: np.ndarray, axis: int) -> tuple[float, np.ndarray]:
    """``sum(logsumexp(logits, axis))`` and the responsibilities ``softmax(logits, axis)``, its gradient."""
    with np.errstate(divide="ignore", invalid="ignore"):  # a row of -inf gives -inf and NaN, as torch does
        lse = logsumexp(logits, axis, keepdims=True)
        return float(lse.sum()), np.exp(logits - lse)


class MixtureTerm:
    """``E(log w) = sum_d logsumexp_k(log w_k + L[d, k])`` and ``dE / dlog w`` for a fixed ``L`` ``[D, K]``.

    ``E`` is the log-likelihood of documents each written by one persona ``z_d ~ w`` (summed
    out); its gradient is the documents' summed responsibilities. Every row of ``L`` is
    shifted by its maximum once (``scaled = exp(L - max_k L)``, entries in ``[0, 1]``), so a call
    is two matrix-vector products: ``E = sum_d log(scaled_d . w) + sum_d max_k L[d, k]`` and
    ``dE / dlog w = w * scaled^T (1 / (scaled w))``. When some ``scaled_d . w`` falls below
    ``sqrt`` of the smallest normal float (about 1e-154: only for a persona weight near
    ``exp(-350)``) the call takes the log-space :func:`mixture_grad` instead.
    """

    def __init__(self, loglik: np.ndarray):
        shift = loglik.max(-1)  # [D]
        shift = np.where(np.isfinite(shift), shift, 0.0)  # a row of -inf stays -inf
        self.loglik = loglik  # [D, K]
        self.scaled = np.exp(loglik - shift[:, None])  # [D, K]
        self.scaled_t = np.ascontiguousarray(self.scaled.T)  # [K, D]
        self.offset = float(shift.sum())
        self.floor = np.sqrt(np.finfo(loglik.dtype).tiny)

    def __call__(self, log_w: np.ndarray) -> tuple[float, np.ndarray]:
        """``E`` and its gradient ``[K]`` at ``log_w`` ``[K]``."""
        w = np.exp(log_w)  # [K]
        p = self.scaled @ w  # [D]
        if p.min() > self.floor:
            return float(np.log(p).sum()) + self.offset, w * (self.scaled_t @ (1.0 / p))
        value, resp = mixture_grad(log_w + self.loglik, -1)  # [D, K]
        return value, resp.sum(0)
