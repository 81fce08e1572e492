"""The tilted family of the exhaustiveness decomposition, on fixed held-out contexts.

    log q_{w,theta}(y | c) = log q0(y | c) + theta * phi_w(y | c) - log Z_{w,theta}(c),
    phi_w(y | c)           = log p_w(y | c) - log p_{w0}(y | c)

(DESIGN.md §3.3; :mod:`inference.comparison.decomposition` fits it). :class:`Tilt` computes once
everything that does not depend on ``(w, theta)``: the components' prefix likelihoods and
probabilities, ``log p_{w0}``, and ``q_s`` restricted to the held-out positions that count.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inference.comparison.kl import check_mask
from models.errors import InputError
from models.predictive import (
    check_components,
    check_logprobs,
    in_context_log_weights,
    mix,
    prefix_loglik,
)

#: log-probabilities are floored here before ``phi`` is formed (``exp(-700)`` is still a float64)
LOG_FLOOR = -700.0


class Tilt:
    """The tilted family ``q_{w,theta}`` on fixed held-out contexts, with everything that does not
    depend on ``(w, theta)`` computed once.

    Parameters
    ----------
    q_s, q0 : Tensor
        ``[n, T, V]`` log-probabilities of the fine-tuned and the base model.
    components : Tensor
        ``[K, n, T, V]`` the reachable set's personas on the contexts.
    contexts : Tensor
        ``[n, T]`` held-out tokens.
    w0 : Tensor
        ``[K]`` the base model's projection weights ``w*(0)``.
    positions_mask : Tensor, optional
        ``[n, T]`` bool, the positions that count (all by default).
    """

    def __init__(self, q_s: Tensor, q0: Tensor, components: Tensor, contexts: Tensor, w0: Tensor,
                 positions_mask: Tensor | None = None):
        components, contexts = check_components(components, contexts)
        K, n, T, V = components.shape
        self.q_s, self.q0 = check_logprobs(q_s, "q_s"), check_logprobs(q0, "q0")
        for name, x in (("q_s", self.q_s), ("q0", self.q0)):
            if x.shape != (n, T, V):
                raise InputError(f"{name} has shape {tuple(x.shape)}, expected {(n, T, V)} like the components")
        self.log_w0 = check_weights(w0, K).log()
        self.mask = torch.ones(n, T, dtype=torch.bool) if positions_mask is None else check_mask(positions_mask, (n, T))
        self.positions = self.mask.sum(-1).to(torch.float64)  # [n]
        if self.positions.sum() == 0:
            raise InputError("positions_mask selects no position")
        self.prefix = prefix_loglik(components, contexts)  # [K, n, T]
        self.comp_prob = components.exp()  # [K, n, T, V]
        self.log_p0 = mix(components, in_context_log_weights(self.log_w0, self.prefix)).clamp(min=LOG_FLOOR)
        q_prob = torch.where(self.mask[..., None], self.q_s.exp(), torch.zeros_like(self.q_s))
        self.q_prob, self.support = q_prob, q_prob > 0  # [n, T, V]
        self.num_personas = K

    def phi(self, log_w: Tensor) -> Tensor:
        """``[n, T, V]`` ``log p_w - log p_{w0}`` (floored, 0 where both mixtures forbid the token)."""
        post = in_context_log_weights(log_w, self.prefix).exp()  # [K, n, T] w_h(x_<t)
        p = torch.einsum("knt,kntv->ntv", post, self.comp_prob)  # [n, T, V] p_w(v | x_<t)
        return p.clamp(min=math.exp(LOG_FLOOR)).log() - self.log_p0

    def log_q(self, log_w: Tensor, theta: Tensor | float, phi: Tensor | None = None) -> Tensor:
        """``[n, T, V]`` ``log q_{w,theta}``."""
        phi = self.phi(log_w) if phi is None else phi
        return torch.log_softmax(self.q0 + theta * phi, -1)

    def kl_from_q_s(self, log_q: Tensor) -> Tensor:
        """``[n, T]`` ``KL(q_s || q)`` at the masked positions (0 elsewhere)."""
        ratio = torch.where(self.support, self.q_s - torch.where(self.support, log_q, torch.zeros_like(log_q)),
                            torch.zeros_like(log_q))
        return (self.q_prob * ratio).sum(-1)

    def objective(self, params: Tensor, context_weights: Tensor | None = None) -> Tensor:
        """Mean ``KL(q_s || q_{w,theta})`` over positions, ``params = [a (K logits of w), theta]``."""
        log_w, theta = torch.log_softmax(params[:-1], 0), params[-1]
        per_context = self.kl_from_q_s(self.log_q(log_w, theta)).sum(-1)  # [n]
        if context_weights is None:
            return per_context.sum() / self.positions.sum()
        return (context_weights * per_context).sum() / (context_weights * self.positions).sum()


def check_weights(w: Tensor, K: int) -> Tensor:
    """``w`` as ``[K]`` float64 weights summing to one; one-line error unless non-negative with a positive sum."""
    w = torch.as_tensor(w, dtype=torch.float64)
    if w.shape != (K,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise InputError(f"persona weights must be {K} non-negative numbers with a positive sum, got {w.tolist()}")
    return w / w.sum()
