"""The in-context persona mixture, written once.

A persona mixture with prior weights ``w`` predicts the next token by updating
its weights on the tokens seen so far (DESIGN.md §1):

    p_w(x_t | x_<t) = sum_h w_h(x_<t) p(x_t | x_<t, h),     w_h(x_<t) ∝ w_h p(x_<t | h).

Everything that predicts with a persona mixture goes through this module:
exact conditioning (the posterior predictive is the mixture with the posterior
as prior), the comparisons of DESIGN.md §3 (``p_w`` of the reachable sets
``R_true`` and ``R_self``), the projection and the n-gram baseline.

Two inputs describe the components:

* *components*: ``[K, n, T, V]`` next-token log-probabilities of every persona on
  the contexts (any model: Markov tables, a tagged transformer, a prompted LM);
  :func:`mixture_logprobs` mixes them;
* *tables*: ``[K, F]`` flat log tables of Markov personas
  (:meth:`models.personas.MarkovPersonas.log_table`); :func:`mixture_predictive`
  reads their rows on the contexts (:func:`table_logprobs`) chunk by chunk and mixes
  them the same way.

A context that is impossible under every component keeps the prior weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from models.counts import feature_index
from models.errors import InputError

#: default memory bound of :func:`mixture_predictive`: elements of one ``[K, chunk, T, V]`` block
MAX_ELEMENTS = 20_000_000


def table_logprobs(log_table: Tensor, contexts: Tensor, vocab_size: int, order: int) -> Tensor:
    """Next-token log-probabilities of Markov tables on contexts: ``[K, n, T, V]``.

    Row ``t`` of persona ``h`` is ``log p(x_t = v | x_<t, h)``: the first-token
    distribution at ``t = 0``, the transition row of the ``order`` previous tokens after.

    Parameters
    ----------
    log_table : Tensor
        ``[K, F]`` flat log tables.
    contexts : Tensor
        ``[n, T]`` int64 tokens in ``[0, V)`` (checked by the callers).
    vocab_size, order : int
        ``V`` and the Markov order.
    """
    V = vocab_size
    row_start = feature_index(contexts, V, order) - contexts  # [n, T] offset of each position's row
    row_start[:, 0] = 0
    return log_table[:, row_start[..., None] + torch.arange(V)]  # [K, n, T, V]


def persona_logprobs(personas, contexts) -> Tensor:
    """``[K, n, T, V]`` float64 next-token log-probabilities of every Markov persona (``R_true``).

    Parameters
    ----------
    personas : MarkovPersonas
    contexts : array
        ``[n, T]`` tokens in ``[0, V)``.
    """
    contexts = check_contexts(contexts, personas.vocab_size, allow_empty=False)
    log_table = personas.log_table().to(torch.float64)  # [K, F]
    return table_logprobs(log_table, contexts, personas.vocab_size, personas.order)


def prefix_loglik(components: Tensor, contexts: Tensor) -> Tensor:
    """``log p(x_<t | h)`` of every component at every position: ``[K, n, T]`` (0 at ``t = 0``)."""
    index = contexts.expand(components.shape[0], -1, -1)[..., None]  # [K, n, T, 1]
    token_lp = components.gather(-1, index).squeeze(-1)  # [K, n, T]
    cumulative = torch.cumsum(token_lp, -1)  # [K, n, T] log p(x_<=t | h)
    # shift right by one (not cumsum - token_lp: -inf - -inf would be NaN)
    return torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative[..., :-1]], -1)


def in_context_log_weights(log_w: Tensor, prefix: Tensor) -> Tensor:
    """``log w_h(x_<t)``, the persona weights after the prefix: ``[K, n, T]``, normalised over ``K``.

    Parameters
    ----------
    log_w : Tensor
        ``[K]`` log prior weights (need not be normalised).
    prefix : Tensor
        ``[K, n, T]`` ``log p(x_<t | h)`` (:func:`prefix_loglik`); scale it to weaken or
        strengthen the in-context update (the ``gamma`` of DESIGN.md §3.3).
    """
    log_w = (log_w - torch.logsumexp(log_w, 0))[:, None, None]  # [K, 1, 1]
    log_post = log_w + prefix  # [K, n, T]
    norm = torch.logsumexp(log_post, 0, keepdim=True)  # [1, n, T]
    finite = torch.isfinite(norm)  # else: impossible under every component, keep the prior
    return torch.where(finite, log_post - torch.where(finite, norm, torch.zeros_like(norm)), log_w.expand_as(log_post))


def mix(components: Tensor, log_weights: Tensor) -> Tensor:
    """``log sum_h w_h(x_<t) comp_h(x_t | x_<t)``: ``[n, T, V]`` from ``[K, n, T, V]`` and ``[K, n, T]``."""
    return torch.logsumexp(log_weights[..., None] + components, 0)


def mixture_logprobs(components: Tensor, contexts: Tensor, log_w: Tensor) -> Tensor:
    """Next-token log-probabilities ``[n, T, V]`` of the persona mixture ``p_w`` with in-context updating.

    Parameters
    ----------
    components : Tensor
        ``[K, n, T, V]`` component next-token log-probabilities on ``contexts``.
    contexts : Tensor
        ``[n, T]`` int64 tokens.
    log_w : Tensor
        ``[K]`` log mixture weights (need not be normalised). Differentiable.
    """
    components, contexts = check_components(components, contexts)
    if log_w.shape != (components.shape[0],):
        raise InputError(f"log_w has shape {tuple(log_w.shape)}, expected ({components.shape[0]},)")
    return mix(components, in_context_log_weights(log_w, prefix_loglik(components, contexts)))


def mixture_predictive(
    log_table: Tensor,
    log_weights: Tensor,
    contexts,
    vocab_size: int,
    order: int,
    max_elements: int = MAX_ELEMENTS,
) -> Tensor:
    """Next-token log-probabilities ``[n, T, V]`` of a mixture of Markov tables with in-context updating.

    Parameters
    ----------
    log_table : Tensor
        ``[M, F]`` flat log tables of the components.
    log_weights : Tensor
        ``[M]`` log mixture weights (need not be normalised).
    contexts : array
        ``[n, T]`` token sequences in ``[0, V)``.
    vocab_size, order : int
        ``V`` and the Markov order.
    max_elements : int
        Memory bound: contexts are mixed in chunks of ``M * chunk * T * V`` elements.

    Returns
    -------
    Tensor
        ``[n, T, V]``: row ``t`` is the distribution of token ``t`` given tokens ``< t``.
    """
    contexts = check_contexts(contexts, vocab_size)
    n, T = contexts.shape
    M = log_table.shape[0]
    if n == 0 or T == 0:
        return log_table.new_zeros(n, T, vocab_size)
    chunk = max(1, max_elements // max(1, M * T * vocab_size))
    out = []
    for lo in range(0, n, chunk):  # memory chunks, not a per-document loop
        ctx = contexts[lo : lo + chunk]  # [c, T]
        components = table_logprobs(log_table, ctx, vocab_size, order)  # [M, c, T, V]
        weights = in_context_log_weights(log_weights, prefix_loglik(components, ctx))  # [M, c, T]
        out.append(mix(components, weights))  # [c, T, V]
    return torch.cat(out, 0)


# ----------------------------------------------------------------------------- checks


def check_contexts(contexts, vocab_size: int, allow_empty: bool = True) -> Tensor:
    """``contexts`` as an ``[n, T]`` int64 tensor; one-line :class:`InputError` unless its tokens lie in ``[0, V)``."""
    import numpy as np

    try:  # through NumPy: torch has no min/max for every integer dtype (uint64)
        array = contexts.detach().cpu().numpy() if isinstance(contexts, Tensor) else np.asarray(contexts)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"contexts must be an [n, T] array of tokens, got {type(contexts).__name__}") from None
    if array.dtype == bool or array.dtype.kind not in "iu":
        raise InputError(f"contexts must hold integer tokens, got dtype {array.dtype}")
    if array.ndim != 2:
        raise InputError(f"contexts must be [n, T], got shape {array.shape}")
    if array.size == 0 and not allow_empty:
        raise InputError("contexts is empty")
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise InputError(f"context tokens must lie in [0, {vocab_size}), found {array.min()}..{array.max()}")
    return torch.as_tensor(array.astype(np.int64))


def check_components(components: Tensor, contexts) -> tuple[Tensor, Tensor]:
    """``(components, contexts)`` as float64 ``[K, n, T, V]`` and int64 ``[n, T]``, checked against each other."""
    if not isinstance(components, Tensor) or components.dim() != 4 or not torch.is_floating_point(components):
        shape = tuple(getattr(components, "shape", ()))
        raise InputError(f"components must be a float [K, n, T, V] tensor, got shape {shape}")
    K, n, T, V = components.shape
    contexts = check_contexts(contexts, V, allow_empty=False)
    if contexts.shape != (n, T):
        raise InputError(f"contexts has shape {tuple(contexts.shape)} but the components are on {(n, T)}")
    if torch.isnan(components).any():
        raise InputError("components has NaN log-probabilities")
    return components.to(torch.float64), contexts


def check_logprobs(x: Tensor, name: str) -> Tensor:
    """``x`` as float64 ``[n, T, V]`` log-probabilities; one-line error for NaN, ``+inf`` or a wrong shape."""
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        raise InputError(f"{name} must be a floating-point tensor of log-probabilities")
    if x.dim() != 3:
        raise InputError(f"{name} must be [contexts, positions, vocabulary], got shape {tuple(x.shape)}")
    if torch.isnan(x).any() or (x == math.inf).any():
        raise InputError(f"{name} has NaN or +inf log-probabilities")
    return x.to(torch.float64)
