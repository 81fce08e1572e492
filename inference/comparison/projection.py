"""Persona projection (DESIGN.md §3, item 2).

The projection of a model ``q`` (``[n, T, V]`` next-token log-probabilities on held-out
contexts) onto a reachable set (the stack of its persona components ``[K, n, T, V]``) is the
persona mixture ``p_w`` with in-context updating that is nearest to ``q`` in mean KL:

    w*(s) = argmin_w KL(q_s || p_w),   r(s) = KL(q_s || p_w*(s)),   r(0) the floor (q_0, the base).

The base's own projection ``w*(0)`` is the reference of the exhaustiveness decomposition
(:mod:`inference.comparison.decomposition`), and ``w*(s)`` its natural starting point.

==================================  ============================================
function                            returns
==================================  ============================================
:func:`project`                     :class:`Projection` (``w*``, ``r``, per context)
:func:`projection_floor`            the base model's projection (``r(0)``)
==================================  ============================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inference.comparison.kl import check_mask
from inference.comparison.optim import boundary_scan, lbfgs
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
        theta, value, converged = lbfgs_centred(objective, start, max_iter, tol)
        if best is None or value < best[1]:
            best = (theta, value, converged)
    best = boundary_scan(objective, best, K, max_iter, tol, lbfgs_centred)
    theta, value, converged = best
    with torch.no_grad():
        per_position = pointwise(theta)  # [n, T]
    kl_context = per_position.sum(-1) / positions.clamp(min=1)  # [n]
    return Projection(torch.softmax(theta, 0), float(value), kl_context, positions, converged, len(starts))


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


def lbfgs_centred(objective, start: Tensor, max_iter: int, tol: float) -> tuple[Tensor, float, bool]:
    """:func:`~inference.comparison.optim.lbfgs` with the softmax logits shifted so the largest is 0."""
    theta, value, converged = lbfgs(objective, start, max_iter, tol)
    return theta - theta.max(), value, converged
