"""Persona projection and exhaustiveness (DESIGN.md §3, items 2 and 3).

The projection of a model ``q`` (``[n, T, V]`` next-token log-probabilities on
held-out contexts, as in :mod:`inference.comparison.kl`) onto a reachable set (the stack
of its persona components ``[K, n, T, V]``) is the persona mixture ``p_w`` with
in-context updating that is nearest to ``q`` in mean KL:

    w*(s) = argmin_w KL(q_s || p_w),   r(s) = KL(q_s || p_w*(s)),   r(0) the floor (q_0, the base).

Exhaustiveness ``E(s) = 1 - max(0, r(s) - r(0)) / KL(q_s || q_0)`` says how much of
what fine-tuning changed is explained by re-weighting personas; its bootstrap
interval resamples held-out contexts with the projection weights held fixed.

==================================  ============================================
function                            returns
==================================  ============================================
:func:`project`                     :class:`Projection` (``w*``, ``r``, per context)
:func:`projection_floor`            the base model's projection (``r(0)``)
:func:`exhaustiveness`              ``E(s)``
:func:`exhaustiveness_interval`     its bootstrap interval
:func:`exhaustiveness_deviance`     an alternative ``E`` with no floor
==================================  ============================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from inference.comparison.kl import MIN_CHANGE, check_mask
from models.errors import InputError
from models.predictive import (
    check_components,
    check_logprobs,
    in_context_log_weights,
    prefix_loglik,
)


@dataclass(frozen=True)
class Projection:
    """The projection of a model onto a reachable set ``{p_w : w in simplex}``.

    Attributes
    ----------
    weights : Tensor
        ``[K]`` ``w* = argmin_w E_c KL(q || p_w)``.
    residual : float
        ``min_w`` mean ``KL(q || p_w)`` over held-out positions (nats per position).
    kl_per_context : Tensor
        ``[n]`` mean ``KL(q || p_w*)`` over the positions of each context.
    positions : Tensor
        ``[n]`` number of positions each context contributes (for weighted means).
    converged : bool
        The best start stopped on its tolerance before ``max_iter``.
    starts : int
        Number of optimiser starts run.
    """

    weights: Tensor
    residual: float
    kl_per_context: Tensor
    positions: Tensor
    converged: bool
    starts: int


def project(
    q: Tensor,
    components: Tensor,
    contexts: Tensor,
    *,
    positions_mask: Tensor | None = None,
    init: Tensor | None = None,
    restarts: int = 1,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> Projection:
    """Project ``q`` onto the persona mixtures: ``w* = argmin_w mean KL(q || p_w)``.

    The objective is not convex in ``w`` (with in-context updating ``p_w`` is a ratio
    of functions linear in ``w``), so the optimiser is started several times,
    deterministically. Parametrisation ``w = softmax(theta)``; each start runs L-BFGS
    with strong-Wolfe line search in float64. Starts: ``init`` (uniform when
    omitted), then the ``restarts`` best *corner-leaning* points (``w_h = 0.9`` on
    one persona, the rest spread evenly), ranked by their objective (one evaluation
    each). The best optimum wins; then every persona is tried again at small
    weights (:func:`_boundary_scan`: with in-context updating a weight of
    ``1e-8`` can still matter). Only the cross-entropy part of the KL depends on
    ``w``; the entropy of ``q``, the prefix likelihoods and the component
    probabilities are computed once, and ``p_w`` is a weighted sum of probabilities.

    Parameters
    ----------
    q : Tensor
        ``[n, T, V]`` log-probabilities of the model projected.
    components : Tensor
        ``[K, n, T, V]`` the reachable set's components on ``contexts``.
    contexts : Tensor
        ``[n, T]`` held-out tokens.
    positions_mask : Tensor, optional
        ``[n, T]`` bool, positions that count (all when omitted).
    init : Tensor, optional
        ``[K]`` first starting weights (e.g. the prior, or a previous snapshot's ``w*``).
    restarts : int
        Corner-leaning starts beyond the first (at most ``K``).
    max_iter : int
        L-BFGS iterations per start.
    tol : float
        Gradient and change tolerance of L-BFGS.

    Returns
    -------
    Projection
    """
    components, contexts = check_components(components, contexts)
    q = check_logprobs(q, "q")
    K, n, T, V = components.shape
    if q.shape != (n, T, V):
        raise InputError(f"q has shape {tuple(q.shape)}, expected {(n, T, V)} like the components")
    mask = torch.ones(n, T, dtype=torch.bool) if positions_mask is None else check_mask(positions_mask, (n, T))
    positions = mask.sum(-1).to(torch.float64)  # [n]
    if positions.sum() == 0:
        raise InputError("positions_mask selects no position")
    prefix = prefix_loglik(components, contexts)  # [K, n, T], fixed
    comp_prob = components.exp()  # [K, n, T, V], fixed
    q_prob = torch.where(mask[..., None], q.exp(), torch.zeros_like(q))  # [n, T, V]
    support = q_prob > 0
    neg_entropy = torch.where(support, q_prob * q, torch.zeros_like(q)).sum(-1)  # [n, T]
    total = positions.sum()

    def pointwise(theta: Tensor) -> Tensor:  # [n, T] KL at positions in the mask, 0 elsewhere
        post = in_context_log_weights(torch.log_softmax(theta, 0), prefix).exp()  # [K, n, T] w_h(x_<t)
        p = torch.einsum("knt,kntv->ntv", post, comp_prob)  # [n, T, V] p_w(v | x_<t)
        cross = torch.where(support, q_prob * torch.where(support, p, torch.ones_like(p)).log(),
                            torch.zeros_like(p)).sum(-1)  # [n, T]
        return torch.where(mask, neg_entropy - cross, torch.zeros_like(cross))

    def objective(theta: Tensor) -> Tensor:
        return pointwise(theta).sum() / total

    starts = [_start_logits(init, K)]
    if restarts > 0 and K > 1:
        corners = [torch.full((K,), 0.1 / (K - 1), dtype=torch.float64).index_fill(0, torch.tensor([h]), 0.9).log()
                   for h in range(K)]
        with torch.no_grad():
            values = torch.stack([objective(c) for c in corners])  # [K]
        starts += [corners[h] for h in values.argsort()[: min(restarts, K)].tolist()]
    best = None
    for start in starts:
        theta, value, converged = _lbfgs(objective, start, max_iter, tol)
        if best is None or value < best[1]:
            best = (theta, value, converged)
    best = _boundary_scan(objective, best, max_iter, tol)
    theta, value, converged = best
    with torch.no_grad():
        per_position = pointwise(theta)  # [n, T]
    kl_context = per_position.sum(-1) / positions.clamp(min=1)  # [n]
    return Projection(torch.softmax(theta, 0), float(value), kl_context, positions, converged, len(starts))


#: log-weights (relative to the largest) tried for a vanishing persona by the boundary scan
SCAN_LOG_WEIGHTS = (-4.0, -8.0, -12.0, -16.0, -20.0, -24.0, -28.0)


def _boundary_scan(objective, best: tuple[Tensor, float, bool], max_iter: int, tol: float):
    """Try every persona again at a tiny weight: through in-context updating it can pay off.

    With in-context updating a persona with weight ``1e-6`` still takes over the
    contexts that it explains ``1e6`` times better than the others, so the objective
    has minima with some ``log w_h`` far below 0 besides the interior ones, and a
    plateau as ``log w_h -> -inf``; L-BFGS on the softmax logits may stop in an
    interior minimum or slide onto the plateau. For every persona but the heaviest,
    the objective is evaluated with its log-weight set to each of
    :data:`SCAN_LOG_WEIGHTS` (relative to the heaviest); the best improvement
    restarts L-BFGS. Repeated until nothing improves (at most ``K`` rounds). A
    heuristic, checked against a brute-force grid over the simplex in the tests.
    """
    theta, value, converged = best
    for _ in range(theta.shape[0]):
        top = int(theta.argmax())
        trials = [theta.clone().index_fill(0, torch.tensor([h]), float(theta[top]) + c)
                  for h in range(theta.shape[0]) if h != top for c in SCAN_LOG_WEIGHTS]
        if not trials:
            break
        with torch.no_grad():
            values = torch.stack([objective(t) for t in trials])  # [trials]
        i = int(values.argmin())
        if not values[i] < value - max(1e-9, 1e-9 * abs(value)):  # smaller gains are noise
            break
        candidate = _lbfgs(objective, trials[i], max_iter, tol)
        if not candidate[1] < value:
            break
        theta, value, converged = candidate
    return theta, value, converged


def projection_floor(q0: Tensor, components: Tensor, contexts: Tensor, **options) -> Projection:
    """``r(0)``: the projection of the base model ``q0`` itself (see :func:`project`)."""
    return project(q0, components, contexts, **options)


def _start_logits(init: Tensor | None, K: int) -> Tensor:
    if init is None:
        return torch.zeros(K, dtype=torch.float64)
    init = torch.as_tensor(init, dtype=torch.float64)
    if init.shape != (K,) or not torch.isfinite(init).all() or (init < 0).any() or init.sum() <= 0:
        raise InputError(f"init must be {K} non-negative weights, got {init.tolist()}")
    init = init / init.sum()
    return init.clamp(min=1e-12).log()  # a zero weight becomes a very small one, so it can grow


def _lbfgs(objective, start: Tensor, max_iter: int, tol: float) -> tuple[Tensor, float, bool]:
    theta = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=max_iter, max_eval=max_iter * 2, tolerance_grad=tol,
                            tolerance_change=tol, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective(theta)
        value.backward()
        return value

    opt.step(closure)
    iterations = opt.state[theta].get("n_iter", 0)
    with torch.no_grad():
        value = float(objective(theta))
    theta = theta.detach()
    theta = theta - theta.max()  # softmax-invariant; keeps the logits readable
    return theta, value, bool(iterations < max_iter and math.isfinite(value))


# ----------------------------------------------------------------------------- exhaustiveness


def exhaustiveness(
    kl_to_base: float, residual: float, floor: float, *, undefined: float = math.nan, min_change: float = MIN_CHANGE
) -> float:
    """``E = 1 - max(0, r - r0) / KL(q_s || q0)``, clipped to ``[0, 1]`` (DESIGN.md §3.3).

    Parameters
    ----------
    kl_to_base : float
        Mean ``KL(q_s || q0)``: how much the fine-tuned model changed.
    residual : float
        ``r(s)``, the fine-tuned model's projection residual.
    floor : float
        ``r(0)``, the base model's projection residual onto the same reachable set.
    undefined : float
        Value returned when the model has not changed (``KL(q_s || q0) < min_change``):
        NaN by default, because ``E`` is 0/0 there and its limit depends on the
        direction of change (``r - r0`` can shrink like ``sqrt(KL)``, not like ``KL``).
        A caller that must write finite JSON for an unchanged snapshot (step 0) may
        pass ``undefined=1.0`` ("nothing changed, nothing unexplained") and say so.
    min_change : float
        Threshold on ``KL(q_s || q0)`` in nats per position.
    """
    if not (math.isfinite(kl_to_base) and kl_to_base >= min_change):
        return undefined
    return float(min(1.0, max(0.0, 1.0 - max(0.0, residual - floor) / kl_to_base)))


def exhaustiveness_interval(
    kl_to_base: Tensor | np.ndarray,
    residual: Tensor | np.ndarray,
    floor: Tensor | np.ndarray,
    *,
    positions: Tensor | np.ndarray | None = None,
    num_boot: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``E`` over held-out contexts.

    Each replicate resamples the ``n`` contexts with replacement and recomputes the
    three means (``KL(q_s || q0)``, ``r(s)``, ``r(0)``) from the per-context terms,
    **with the projection weights held fixed** at ``w*(s)`` and ``w*(0)``: the
    interval shows the sampling noise of the held-out contexts. Re-projecting
    each replicate would cost ``num_boot`` projections and would lower both
    residuals a little (the weights adapt to the replicate, an effect of order
    ``K / n``); holding them fixed ignores that. All replicates at once: a
    ``[num_boot, n]`` matrix of multinomial counts times the per-context terms.

    Parameters
    ----------
    kl_to_base, residual, floor : array
        ``[n]`` per-context mean ``KL(q_s || q0)``, ``KL(q_s || p_w*(s))`` and
        ``KL(q0 || p_w*(0))`` (``Projection.kl_per_context``).
    positions : array, optional
        ``[n]`` positions per context (weights of the means); equal when omitted.
    num_boot : int
        Bootstrap replicates.
    level : float
        Central coverage of the interval.
    seed : int
        Seed of the NumPy generator.

    Returns
    -------
    (float, float)
        Lower and upper quantiles of the replicates of ``E`` (replicates where ``E``
        is undefined are dropped; NaN, NaN when all are).
    """
    arrays = [np.asarray(torch.as_tensor(a, dtype=torch.float64)) for a in (kl_to_base, residual, floor)]
    n = arrays[0].shape[0]
    if any(a.shape != (n,) for a in arrays) or n == 0:
        raise InputError(f"per-context arrays must share one non-empty shape [n], got {[a.shape for a in arrays]}")
    if not (0 < level < 1) or num_boot < 1:
        raise InputError(f"need 0 < level < 1 and num_boot >= 1, got {level}, {num_boot}")
    size = np.ones(n) if positions is None else np.asarray(torch.as_tensor(positions, dtype=torch.float64))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(num_boot, n))  # [B, n]
    counts = np.zeros((num_boot, n))
    np.add.at(counts, (np.arange(num_boot)[:, None], picks), 1.0)  # [B, n] multinomial counts
    weight = counts * size  # [B, n]
    denom = weight.sum(1)  # [B]
    denom = np.where(denom > 0, denom, np.nan)
    kl_b, r_b, r0_b = (weight @ a / denom for a in arrays)  # [B] each
    with np.errstate(divide="ignore", invalid="ignore"):
        e = 1.0 - np.maximum(0.0, r_b - r0_b) / kl_b
    e = np.where(np.isfinite(kl_b) & (kl_b >= MIN_CHANGE), np.clip(e, 0.0, 1.0), np.nan)
    if np.isnan(e).all():
        return math.nan, math.nan
    tail = (1 - level) / 2
    lo, hi = np.nanquantile(e, [tail, 1 - tail])
    return float(lo), float(hi)


def exhaustiveness_deviance(residual: float, kl_to_base_fit: float) -> float:
    """An alternative ``E`` that needs no floor: the share of deviance that re-weighting removes.

    ``E_dev = 1 - r(s) / KL(q_s || p_w*(0))``, where ``p_w*(0)`` is the mixture that best
    describes the *base* model (the "no re-weighting" reference) and ``r(s) =
    KL(q_s || p_w*(s))``. It is the analogue of deviance explained (McFadden's
    pseudo-R^2) with the base model's mixture as the null model and re-weighting as
    the fitted one.

    Why it is better founded than the default: both KLs are taken *from the same
    q_s*, so their difference ``E_qs[log p_w*(s) - log p_w*(0)]`` is an expected
    log-likelihood ratio and ``0 <= r(s) <= KL(q_s || p_w*(0))`` holds exactly
    (``w*(0)`` is one of the candidates of the minimum): ``E_dev`` lies in ``[0, 1]``
    with no clipping and no floor subtracted. The default ``r(s) - r(0)`` compares KLs
    from two different models (``q_s`` and ``q0``) and divides by a third reference
    (``KL(q_s || q0)``), so it can leave ``[0, 1]`` and needs the clip.

    Its weakness: network imperfection that ``q_s`` inherits from ``q0`` stays in both
    terms, so when the fine-tuning change is small next to the floor ``E_dev`` is small
    even for pure selection (and 0 for ``q_s = q0``): read it next to ``r(0)``.

    Parameters
    ----------
    residual : float
        ``r(s)``.
    kl_to_base_fit : float
        ``KL(q_s || p_w*(0))``: e.g. ``mean_kl(q_s, mixture_logprobs(components, contexts,
        floor.weights.log()))``.

    Returns
    -------
    float
        ``E_dev``; NaN when ``KL(q_s || p_w*(0))`` is below :data:`MIN_CHANGE`.
    """
    if not (math.isfinite(kl_to_base_fit) and kl_to_base_fit >= MIN_CHANGE):
        return math.nan
    return float(min(1.0, max(0.0, 1.0 - residual / kl_to_base_fit)))
