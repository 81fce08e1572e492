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
:func:`kl_by_beta`              ``KL(q_s || p_D,beta)`` and ``beta*`` (item 1)
:func:`heldout_elpd`            held-out ELPD of a candidate (item 5)
:func:`description_length`      prequential code length minus ``n`` x final loss (item 6)
==============================  ================================================

The persona projection ``w*``, residual ``r`` and floor ``r(0)`` (item 2) and
exhaustiveness ``E(s)`` with its bootstrap interval (item 3) are in
:mod:`inference.projection`; persona attribution by NUTS (item 4) is in
:mod:`inference.attribution`; the
ArviZ comparison table of item 5 is :func:`inference.diagnostics.elpd_table`.
"""

from __future__ import annotations

import math

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
    contexts = check_contexts(contexts, personas.vocab_size)
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
    q, p = as_logprobs(q, "q"), as_logprobs(p, "p")
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
    components, contexts = check_components(components, contexts)
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


def as_logprobs(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        raise InputError(f"{name} must be a floating-point tensor of log-probabilities")
    if x.dim() != 3:
        raise InputError(f"{name} must be [contexts, positions, vocabulary], got shape {tuple(x.shape)}")
    if torch.isnan(x).any() or (x == math.inf).any():
        raise InputError(f"{name} has NaN or +inf log-probabilities")
    return x.to(torch.float64)


def check_contexts(contexts: Tensor, vocab_size: int) -> Tensor:
    contexts = torch.as_tensor(contexts)
    if contexts.dim() != 2 or contexts.dtype in (torch.bool,) or torch.is_floating_point(contexts):
        raise InputError(f"contexts must be an integer [n, T] tensor, got {contexts.dtype} {tuple(contexts.shape)}")
    if contexts.numel() == 0:
        raise InputError("contexts is empty")
    if contexts.min() < 0 or contexts.max() >= vocab_size:
        raise InputError(f"context tokens must lie in [0, {vocab_size}), found {int(contexts.min())}..{int(contexts.max())}")
    return contexts.long()


def check_components(components: Tensor, contexts: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(components, Tensor) or components.dim() != 4 or not torch.is_floating_point(components):
        raise InputError(f"components must be a float [K, n, T, V] tensor, got shape {tuple(getattr(components, 'shape', ()))}")
    K, n, T, V = components.shape
    contexts = check_contexts(contexts, V)
    if contexts.shape != (n, T):
        raise InputError(f"contexts has shape {tuple(contexts.shape)} but the components are on {(n, T)}")
    if torch.isnan(components).any():
        raise InputError("components has NaN log-probabilities")
    return components.to(torch.float64), contexts


def check_mask(mask: Tensor, shape) -> Tensor:
    mask = torch.as_tensor(mask)
    if mask.shape != tuple(shape) or mask.dtype != torch.bool:
        raise InputError(f"positions_mask must be a bool tensor of shape {tuple(shape)}, got {mask.dtype} {tuple(mask.shape)}")
    return mask
