"""Exhaustiveness: the exact split of what fine-tuning changed into persona re-weighting and the rest.

DESIGN.md §3.3. Conditioning applied to the base model itself is a tilt of ``q0`` by a
ratio of two persona mixtures of a reachable set (``R_true`` or ``R_self``):

    log q_{w,theta}(y | c) = log q0(y | c) + theta * phi_w(y | c) - log Z_{w,theta}(c),
    phi_w(y | c)           = log p_w(y | c) - log p_{w0}(y | c),

where ``p_w`` is the in-context persona mixture with prior ``w`` (:mod:`models.predictive`) and
``w0 = w*(0)`` the base model's own projection. ``w = w0`` (or ``theta = 0``) gives ``q0``; if
``q0`` were exactly ``p_{w0}``, ``theta = 1`` would give ``p_w``: conditioning. The fit
``(w*, theta*) = argmin mean KL(q_s || q_{w,theta})`` over held-out positions gives ``q*``. The
family is exponential in ``theta`` with carrier ``q0``, so at ``theta*`` the position-averaged
moment condition ``mean E_{q*}[phi] = mean E_{q_s}[phi]`` holds and the change splits exactly
(Pythagoras for the I-projection):

    KL(q_s || q0) = KL(q* || q0)  [re-weighting]  +  KL(q_s || q*)  [everything else],
    E = KL(q* || q0) / KL(q_s || q0)  in [0, 1]   (undefined when the model has not moved).

:func:`decompose` fits the tilt (L-BFGS over ``w = softmax(a)`` and ``theta`` from several
starts, then Newton steps in ``theta`` so the moment condition, hence the identity, holds to
rounding); :func:`decomposition_interval` is the bootstrap over held-out contexts (``q*`` held at
the full-data fit by default, or refitted on every resample with ``refit="full"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from inference.comparison.optim import boundary_scan, lbfgs
from inference.comparison.tilt import Tilt, check_weights
from models.errors import InputError

#: below this ``KL(q_s || q0)`` (nats per position) the model has not moved and ``E`` is undefined
MIN_CHANGE = 1e-8
#: Newton steps in ``theta`` after L-BFGS (each one squares the error of the moment condition)
NEWTON_STEPS = 20


@dataclass(frozen=True)
class Decomposition:
    """The fitted tilt and the split of ``KL(q_s || q0)`` (module docstring).

    Attributes
    ----------
    weights : Tensor
        ``[K]`` ``w*``, the persona mixture the tilt points to.
    theta : float
        ``theta*``, the strength of the tilt (1: conditioning, 0: no change).
    total, reweighting, other : float
        ``KL(q_s || q0)``, ``KL(q* || q0)`` and ``KL(q_s || q*)``, means over held-out positions.
    exhaustiveness : float or None
        ``E = reweighting / total``; None when the model has not moved (see ``reason``).
    reason : str or None
        Why ``E`` is undefined.
    identity_gap : float
        ``total - reweighting - other`` (0 up to rounding at a converged fit).
    pointwise : dict of str to Tensor
        ``total``, ``reweighting``, ``other``: ``[n, T]`` per position (0 outside the mask).
    mask : Tensor
        ``[n, T]`` bool, the positions that count.
    log_q_star : Tensor
        ``[n, T, V]`` the fitted ``q*``.
    converged : bool
        The best start stopped on its tolerance.
    """

    weights: Tensor
    theta: float
    total: float
    reweighting: float
    other: float
    exhaustiveness: float | None
    reason: str | None
    identity_gap: float
    pointwise: dict[str, Tensor]
    mask: Tensor
    log_q_star: Tensor
    converged: bool

    def terms(self) -> dict[str, float]:
        """``{"total", "reweighting", "other", "theta"}`` as plain floats (for ``summary.json``)."""
        return {"total": self.total, "reweighting": self.reweighting, "other": self.other, "theta": self.theta}


def decompose(
    q_s: Tensor,
    q0: Tensor,
    components: Tensor,
    contexts: Tensor,
    w0: Tensor,
    *,
    positions_mask: Tensor | None = None,
    init: Tensor | None = None,
    restarts: int = 2,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> Decomposition:
    """Fit the tilt ``q*`` of ``q0`` towards ``q_s`` and split ``KL(q_s || q0)`` (module docstring).

    Parameters
    ----------
    q_s, q0 : Tensor
        ``[n, T, V]`` next-token log-probabilities of the fine-tuned and the base model.
    components : Tensor
        ``[K, n, T, V]`` the reachable set (``R_true``: the true personas; ``R_self``: the base
        prompted with each persona tag) on ``contexts``.
    contexts : Tensor
        ``[n, T]`` held-out tokens.
    w0 : Tensor
        ``[K]`` the base model's own projection weights ``w*(0)``.
    positions_mask : Tensor, optional
        ``[n, T]`` bool, positions that count.
    init : Tensor, optional
        ``[K]`` first starting weights (e.g. the projection ``w*(s)`` of ``q_s``); ``theta`` starts at 1.
    restarts : int
        Further starts: the best ``restarts`` corner-leaning weight vectors (0.9 on one persona).
    max_iter, tol : int, float
        L-BFGS iterations per start and its tolerance.

    Returns
    -------
    Decomposition
    """
    tilt = Tilt(q_s, q0, components, contexts, w0, positions_mask)
    return fit(tilt, init=init, restarts=restarts, max_iter=max_iter, tol=tol)


def fit(tilt: Tilt, *, init: Tensor | None = None, restarts: int = 2, max_iter: int = 200, tol: float = 1e-10,
        context_weights: Tensor | None = None) -> Decomposition:
    """:func:`decompose` on a prepared :class:`Tilt` (optionally with bootstrap ``context_weights`` ``[n]``)."""
    K = tilt.num_personas
    best = None
    for start in _starts(tilt, init, restarts, context_weights):
        params, value, converged = lbfgs(lambda p: tilt.objective(p, context_weights), start, max_iter, tol)
        if best is None or value < best[1]:
            best = (params, value, converged)
    params, _, converged = boundary_scan(lambda p: tilt.objective(p, context_weights), best, K, max_iter, tol)
    log_w = torch.log_softmax(params[:K], 0)
    theta = _newton_theta(tilt, log_w, float(params[K]), context_weights)
    return _split(tilt, log_w, theta, converged)


def _starts(tilt: Tilt, init: Tensor | None, restarts: int, context_weights: Tensor | None) -> list[Tensor]:
    """Starting ``[a, theta]``: ``init`` (else the base's ``w0``, nudged) at ``theta = 1``, then corners."""
    K = tilt.num_personas
    first = tilt.log_w0.exp() if init is None else check_weights(init, K)
    if init is None:
        first = 0.5 * first + 0.5 / K  # w0 itself is a flat direction (phi = 0)
    starts = [torch.cat([first.clamp(min=1e-12).log(), torch.ones(1, dtype=torch.float64)])]
    if restarts > 0 and K > 1:
        corners = [torch.cat([torch.full((K,), 0.1 / (K - 1), dtype=torch.float64)
                              .index_fill(0, torch.tensor([h]), 0.9).log(), torch.ones(1, dtype=torch.float64)])
                   for h in range(K)]
        with torch.no_grad():
            values = torch.stack([tilt.objective(c, context_weights) for c in corners])  # [K]
        starts += [corners[h] for h in values.argsort()[: min(restarts, K)].tolist()]
    return starts


def _newton_theta(tilt: Tilt, log_w: Tensor, theta: float, context_weights: Tensor | None) -> float:
    """Solve the moment condition ``mean E_q[phi] = mean E_{q_s}[phi]`` in ``theta`` at fixed ``w``.

    The objective is convex in ``theta`` (its second derivative is the position-averaged variance
    of ``phi`` under ``q``), so Newton's method from the L-BFGS solution converges quadratically.
    """
    with torch.no_grad():
        phi = tilt.phi(log_w)  # [n, T, V]
        weight = tilt.mask.to(torch.float64)  # [n, T]
        if context_weights is not None:
            weight = weight * context_weights[:, None]
        weight = weight / weight.sum()
        target = (weight * (tilt.q_prob * phi).sum(-1)).sum()  # mean E_{q_s}[phi] (q_prob is 0 off the mask)
        for _ in range(NEWTON_STEPS):
            q = tilt.log_q(log_w, theta, phi).exp()  # [n, T, V]
            mean = (q * phi).sum(-1)  # [n, T]
            var = (q * phi * phi).sum(-1) - mean**2
            g, h = float((weight * mean).sum() - target), float((weight * var).sum())
            if not h > 0 or abs(g) < 1e-15:
                break
            theta -= g / h
    return theta


def _split(tilt: Tilt, log_w: Tensor, theta: float, converged: bool) -> Decomposition:
    """The three KL terms of the fitted tilt, pointwise and as means over the masked positions."""
    with torch.no_grad():
        log_q = tilt.log_q(log_w, theta)  # [n, T, V]
        other = tilt.kl_from_q_s(log_q)  # [n, T]
        total = tilt.kl_from_q_s(torch.where(tilt.mask[..., None], tilt.q0, tilt.q_s))
        q_star = log_q.exp()
        reweighting = torch.where(tilt.mask, (q_star * (log_q - tilt.q0)).sum(-1), torch.zeros_like(other))
    count = float(tilt.positions.sum())
    t, r, o = (float(x.sum()) / count for x in (total, reweighting, other))
    reason = None
    if not (math.isfinite(t) and t >= MIN_CHANGE):
        reason = f"the model has not moved: KL(q_s || q0) = {t:.3g} nats per position < {MIN_CHANGE:g}"
    return Decomposition(
        weights=log_w.exp(), theta=float(theta), total=t, reweighting=r, other=o,
        exhaustiveness=None if reason else min(1.0, max(0.0, r / t)), reason=reason, identity_gap=t - r - o,
        pointwise={"total": total, "reweighting": reweighting, "other": other}, mask=tilt.mask,
        log_q_star=log_q, converged=converged,
    )


# ----------------------------------------------------------------------------- bootstrap

#: how a bootstrap replicate treats the fit: refit ``(w, theta)`` on the resample, or hold ``q*`` fixed
REFITS = ("full", "none")


def decomposition_interval(
    tilt: Tilt,
    decomposition: Decomposition,
    *,
    num_boot: int = 200,
    level: float = 0.9,
    seed: int = 0,
    refit: str = "none",
    max_iter: int = 25,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``E`` over held-out contexts.

    Each replicate resamples the ``n`` contexts with replacement (multinomial weights ``m``):

    * ``none`` (default): ``q*`` is held at the full-data fit and only the per-context terms are
      resampled, ``E_m = sum_c m_c KL_c(q* || q0) / sum_c m_c KL_c(q_s || q0)`` (all replicates at once);
      it leaves out the variability of the fit itself;
    * ``full``: ``(w, theta)`` is refitted on every resample, L-BFGS from the full-data fit (at most
      ``max_iter`` iterations) and the Newton steps in ``theta`` (about 0.3-0.7 s per replicate at the
      demo's size; README "Findings" compares the two).

    Returns
    -------
    (float, float)
        Lower and upper quantiles of the replicates (NaN, NaN when ``E`` is undefined).
    """
    if decomposition.exhaustiveness is None:
        return math.nan, math.nan
    if not (0 < level < 1) or num_boot < 1:
        raise InputError(f"need 0 < level < 1 and num_boot >= 1, got {level}, {num_boot}")
    if refit not in REFITS:
        raise InputError(f"unknown bootstrap refit {refit!r}; choose one of {', '.join(REFITS)}")
    n = tilt.positions.shape[0]
    rng = np.random.default_rng(seed)
    counts = np.zeros((num_boot, n))
    np.add.at(counts, (np.arange(num_boot)[:, None], rng.integers(0, n, size=(num_boot, n))), 1.0)  # [B, n]
    counts = torch.as_tensor(counts)
    total = decomposition.pointwise["total"].sum(-1)  # [n]
    if refit == "full":
        values = torch.tensor([_refit_share(tilt, decomposition, c, max_iter) for c in counts])
    else:
        values = (counts @ decomposition.pointwise["reweighting"].sum(-1)) / (counts @ total)
    values = values[torch.isfinite(values)].clamp(0.0, 1.0).numpy()
    if values.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


def _per_context(tilt: Tilt, params: Tensor) -> tuple[Tensor, Tensor]:
    """``[n]`` per-context sums of ``KL(q_s || q_{w,theta})`` and of ``KL(q_{w,theta} || q0)``."""
    K = tilt.num_personas
    log_q = tilt.log_q(torch.log_softmax(params[:K], 0), params[K])  # [n, T, V]
    fit = tilt.kl_from_q_s(log_q).sum(-1)
    rw = torch.where(tilt.mask, (log_q.exp() * (log_q - tilt.q0)).sum(-1), torch.zeros_like(tilt.q0[..., 0]))
    return fit, rw.sum(-1)


def _refit_share(tilt: Tilt, decomposition: Decomposition, counts: Tensor, max_iter: int) -> float:
    """``E`` of one bootstrap resample (context weights ``counts`` ``[n]``), refitted from the full fit."""
    start = torch.cat([decomposition.weights.clamp(min=1e-300).log(),
                       torch.tensor([decomposition.theta], dtype=torch.float64)])
    params, _, _ = lbfgs(lambda p: tilt.objective(p, counts), start, max_iter, 1e-9)
    K = tilt.num_personas
    log_w = torch.log_softmax(params[:K], 0)
    theta = _newton_theta(tilt, log_w, float(params[K]), counts)
    with torch.no_grad():
        _, rw = _per_context(tilt, torch.cat([log_w, torch.tensor([theta], dtype=torch.float64)]))
    total = decomposition.pointwise["total"].sum(-1)  # [n]
    return float((counts * rw).sum() / (counts * total).sum())
