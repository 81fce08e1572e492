"""The comparisons of DESIGN.md §3, as tensor functions on next-token log-probabilities.

A *model on held-out contexts* is a tensor ``[n, T, V]`` of next-token
log-probabilities for contexts ``[n, T]``: row ``t`` is ``log q(x_t = v | x_<t)``.
A *reachable set* of personas is the stack of its components on the same
contexts, ``[K, n, T, V]`` (:func:`persona_logprobs` for the true Markov
personas, ``R_true``; the base LM prompted with each persona tag for ``R_self``).
Everything here is float64 and vectorised over contexts, positions and tokens.

==============================  ================================================
function                        DESIGN.md §3
==============================  ================================================
:func:`kl`, :func:`mean_kl`     ``KL(q || p)`` per position, averaged (item 1);
                                :func:`kl_per_context` per context
:func:`mixture_logprobs`        ``p_w`` with in-context updating (item 2)
:func:`project`                 ``w*``, residual ``r`` and floor ``r(0)`` (item 2)
:func:`exhaustiveness`          ``E(s)`` and its bootstrap interval (item 3)
:func:`kl_by_beta`              ``KL(q_s || p_D,beta)`` and ``beta*`` (item 1)
:func:`heldout_elpd`            held-out ELPD of a candidate (item 5)
:func:`description_length`      prequential code length minus ``n`` x final loss (item 6)
==============================  ================================================

Persona attribution by NUTS (item 4) is in :mod:`inference.attribution`; the
ArviZ comparison table of item 5 is :func:`inference.diagnostics.elpd_table`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.counts import feature_index
from models.errors import InputError
from models.personas import MarkovPersonas

#: below this ``KL(q_s || q0)`` (nats per position) the model has not changed and ``E`` is undefined
MIN_CHANGE = 1e-8


# ----------------------------------------------------------------------------- components


def persona_logprobs(personas: MarkovPersonas, contexts: Tensor) -> Tensor:
    """Next-token log-probabilities of every persona on the contexts: ``[K, n, T, V]``.

    Row ``t`` of persona ``h`` is ``log p(x_t = v | x_<t, h)``: the first-token
    distribution at ``t = 0``, the transition row of the ``order`` previous
    tokens after that (the same rows :func:`inference.exact.mixture_predictive` reads).
    """
    contexts = _check_contexts(contexts, personas.vocab_size)
    V = personas.vocab_size
    log_table = personas.log_table().to(torch.float64)  # [K, F]
    row_start = feature_index(contexts, V, personas.order) - contexts  # [n, T] offset of each row
    row_start[:, 0] = 0
    return log_table[:, row_start[..., None] + torch.arange(V)]  # [K, n, T, V]


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
    q, p = _as_logprobs(q, "q"), _as_logprobs(p, "p")
    if q.shape != p.shape:
        raise InputError(f"q has shape {tuple(q.shape)} but p has shape {tuple(p.shape)}")
    q_prob = q.exp()  # [n, T, V]
    support = q_prob > 0
    # where(): the unused branch may be inf or NaN (q = p = -inf) without reaching the result
    terms = torch.where(support, q_prob * (q - torch.where(support, p, torch.zeros_like(p))), torch.zeros_like(q))
    out = terms.sum(-1)  # [n, T]
    if positions_mask is not None:
        out = torch.where(_check_mask(positions_mask, out.shape), out, torch.zeros_like(out))
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


# ----------------------------------------------------------------------------- mixtures


def prefix_loglik(components: Tensor, contexts: Tensor) -> Tensor:
    """``log p(x_<t | h)`` of every component at every position: ``[K, n, T]`` (0 at ``t = 0``)."""
    token_lp = components.gather(-1, contexts.expand(components.shape[0], -1, -1)[..., None]).squeeze(-1)  # [K, n, T]
    cumulative = torch.cumsum(token_lp, -1)  # [K, n, T] log p(x_<=t | h)
    # shift right by one (not cumsum - token_lp: -inf - -inf would be NaN)
    return torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], -1)


def mixture_logprobs(components: Tensor, contexts: Tensor, log_w: Tensor) -> Tensor:
    """Next-token log-probabilities of the persona mixture ``p_w`` with in-context updating.

    ``p_w(x_t | x_<t) = sum_h w_h(x_<t) comp_h(x_t | x_<t)`` with
    ``w_h(x_<t) ∝ w_h prod_{s<t} comp_h(x_s | x_<s)``; a context impossible under
    every component keeps the weights ``w`` (as :func:`inference.exact.mixture_predictive`).

    Parameters
    ----------
    components : Tensor
        ``[K, n, T, V]`` component next-token log-probabilities on ``contexts``.
    contexts : Tensor
        ``[n, T]`` int64 tokens.
    log_w : Tensor
        ``[K]`` log mixture weights (need not be normalised). Differentiable.

    Returns
    -------
    Tensor
        ``[n, T, V]``.
    """
    components, contexts = _check_components(components, contexts)
    if log_w.shape != (components.shape[0],):
        raise InputError(f"log_w has shape {tuple(log_w.shape)}, expected ({components.shape[0]},)")
    return _mixture_from_prefix(components, prefix_loglik(components, contexts), log_w)


def _mixture_from_prefix(components: Tensor, prefix: Tensor, log_w: Tensor) -> Tensor:
    log_w = (log_w - torch.logsumexp(log_w, 0))[:, None, None]  # [K, 1, 1]
    log_post = log_w + prefix  # [K, n, T]
    norm = torch.logsumexp(log_post, 0, keepdim=True)  # [1, n, T]
    finite = torch.isfinite(norm)
    log_post = torch.where(finite, log_post - torch.where(finite, norm, torch.zeros_like(norm)), log_w.expand_as(log_post))
    return torch.logsumexp(log_post[..., None] + components, 0)  # [n, T, V]


# ----------------------------------------------------------------------------- projection


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
    components, contexts = _check_components(components, contexts)
    q = _as_logprobs(q, "q")
    K, n, T, V = components.shape
    if q.shape != (n, T, V):
        raise InputError(f"q has shape {tuple(q.shape)}, expected {(n, T, V)} like the components")
    mask = torch.ones(n, T, dtype=torch.bool) if positions_mask is None else _check_mask(positions_mask, (n, T))
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
        log_w = torch.log_softmax(theta, 0)[:, None, None]  # [K, 1, 1]
        log_post = log_w + prefix  # [K, n, T]
        norm = torch.logsumexp(log_post, 0, keepdim=True)
        finite = torch.isfinite(norm)  # else: impossible under every component, keep w
        post = torch.where(finite, (log_post - torch.where(finite, norm, torch.zeros_like(norm))).exp(),
                           log_w.exp().expand_as(log_post))  # [K, n, T] w_h(x_<t)
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


# ----------------------------------------------------------------------------- ELPD, code length


def heldout_elpd(doc_loglik_draws: Tensor | np.ndarray) -> tuple[float, float, np.ndarray]:
    """Held-out expected log predictive density of a candidate on fresh documents.

    ``elpd = sum_d log mean_s p(y_d | theta_s)``; ``se = sqrt(N var_d(elpd_d))``
    (ArviZ's convention). A point-estimate model has ``S = 1``.

    Parameters
    ----------
    doc_loglik_draws : array
        ``[S, N]`` log-likelihood of each held-out document under each posterior draw.

    Returns
    -------
    elpd : float
    se : float
    pointwise : np.ndarray
        ``[N]`` ``log mean_s p(y_d | theta_s)``.
    """
    ll = torch.as_tensor(np.asarray(doc_loglik_draws), dtype=torch.float64)
    if ll.dim() != 2 or ll.numel() == 0:
        raise InputError(f"doc_loglik_draws must be a non-empty [draws, documents] array, got shape {tuple(ll.shape)}")
    if torch.isnan(ll).any():
        raise InputError("doc_loglik_draws has NaN entries")
    S, N = ll.shape
    pointwise = (torch.logsumexp(ll, 0) - math.log(S)).numpy()  # [N]
    elpd = float(pointwise.sum())
    se = float(math.sqrt(N * pointwise.var())) if np.isfinite(pointwise).all() else math.nan
    return elpd, se, pointwise


def description_length(prequential_nats: float, num_tokens: int, final_loss_per_token: float) -> float:
    """Donoway et al.'s description length: prequential code length minus ``n`` x final loss.

    ``prequential_nats`` is the online code length of the evidence (the sum, over
    training, of each batch's loss *before* the model is updated on it); subtracting
    ``num_tokens * final_loss_per_token`` leaves what the model had to learn on top of
    what it can finally predict: small when fine-tuning elicits, large when it teaches.
    In nats.
    """
    if num_tokens < 0 or not (math.isfinite(prequential_nats) and math.isfinite(final_loss_per_token)):
        raise InputError(f"description length needs finite losses and num_tokens >= 0, got "
                         f"{prequential_nats}, {num_tokens}, {final_loss_per_token}")
    return float(prequential_nats - num_tokens * final_loss_per_token)


# ----------------------------------------------------------------------------- checks


def _as_logprobs(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        raise InputError(f"{name} must be a floating-point tensor of log-probabilities")
    if x.dim() != 3:
        raise InputError(f"{name} must be [contexts, positions, vocabulary], got shape {tuple(x.shape)}")
    if torch.isnan(x).any() or (x == math.inf).any():
        raise InputError(f"{name} has NaN or +inf log-probabilities")
    return x.to(torch.float64)


def _check_contexts(contexts: Tensor, vocab_size: int) -> Tensor:
    contexts = torch.as_tensor(contexts)
    if contexts.dim() != 2 or contexts.dtype in (torch.bool,) or torch.is_floating_point(contexts):
        raise InputError(f"contexts must be an integer [n, T] tensor, got {contexts.dtype} {tuple(contexts.shape)}")
    if contexts.numel() == 0:
        raise InputError("contexts is empty")
    if contexts.min() < 0 or contexts.max() >= vocab_size:
        raise InputError(f"context tokens must lie in [0, {vocab_size}), found {int(contexts.min())}..{int(contexts.max())}")
    return contexts.long()


def _check_components(components: Tensor, contexts: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(components, Tensor) or components.dim() != 4 or not torch.is_floating_point(components):
        raise InputError(f"components must be a float [K, n, T, V] tensor, got shape {tuple(getattr(components, 'shape', ()))}")
    K, n, T, V = components.shape
    contexts = _check_contexts(contexts, V)
    if contexts.shape != (n, T):
        raise InputError(f"contexts has shape {tuple(contexts.shape)} but the components are on {(n, T)}")
    if torch.isnan(components).any():
        raise InputError("components has NaN log-probabilities")
    return components.to(torch.float64), contexts


def _check_mask(mask: Tensor, shape) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.shape != tuple(shape) or mask.dtype != torch.bool:
        raise InputError(f"positions_mask must be a bool tensor of shape {tuple(shape)}, got {mask.dtype} {tuple(mask.shape)}")
    return mask
