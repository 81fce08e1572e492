"""Where the part of the change that is not re-weighting comes from (DESIGN.md §3.3, last paragraph).

* :func:`split_by_context`: both terms of the decomposition by who wrote the held-out context
  (the evidence persona vs the others) and by position (early ``t < 4``, middle, late ``t >= 12``);
* :func:`forgetting`: held-out NLL per token on the *other* personas' contexts, base against
  fine-tuned (and the Bayes-optimal value): what fine-tuning cost outside the evidence;
* :func:`in_context_strength`: the ``gamma`` that best fits ``q_s`` when the persona
  log-likelihood of the context is scaled by ``gamma`` in the mixture's update,
  ``w_h(c) ∝ w_h p(c | h)^gamma`` (1 = Bayesian updating, 0 = none, above 1 = over-confident).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from inference.comparison.decomposition import Decomposition
from inference.comparison.optim import lbfgs
from models.errors import InputError
from models.predictive import (
    check_components,
    check_logprobs,
    in_context_log_weights,
    mix,
    prefix_loglik,
)

#: positions before this are "early", from ``LATE`` on "late" (the rest "middle")
EARLY, LATE = 4, 12


def split_by_context(
    decomposition: Decomposition, writer: Tensor, evidence_persona: int | None
) -> dict[str, dict[str, float]]:
    """Means of ``total``, ``reweighting`` and ``other`` over groups of held-out positions.

    Parameters
    ----------
    decomposition : Decomposition
        A fitted decomposition (its pointwise terms are split).
    writer : Tensor
        ``[n]`` the persona that wrote each held-out context.
    evidence_persona : int or None
        The persona that wrote the evidence (None: outside the support, every context is "other").

    Returns
    -------
    dict
        Group name -> ``{"total", "reweighting", "other", "positions"}``; groups ``evidence_persona``,
        ``other_personas``, ``early``, ``middle``, ``late`` (a group with no position has NaN means).
    """
    mask = decomposition.mask  # [n, T]
    n, T = mask.shape
    writer = torch.as_tensor(writer).long()
    if writer.shape != (n,):
        raise InputError(f"writer must be [n] = [{n}] personas, got shape {tuple(writer.shape)}")
    by_writer = writer == (-1 if evidence_persona is None else evidence_persona)  # [n]
    t = torch.arange(T)
    groups = {
        "evidence_persona": by_writer[:, None].expand(n, T),
        "other_personas": ~by_writer[:, None].expand(n, T),
        "early": (t < EARLY).expand(n, T),
        "middle": ((t >= EARLY) & (t < LATE)).expand(n, T),
        "late": (t >= LATE).expand(n, T),
    }
    out = {}
    for name, group in groups.items():
        select = group & mask
        count = int(select.sum())
        out[name] = {term: (float(values[select].sum()) / count if count else math.nan)
                     for term, values in decomposition.pointwise.items()}
        out[name]["positions"] = count
    return out


def forgetting(
    q0: Tensor, q_s: Tensor, contexts: Tensor, writer: Tensor, evidence_persona: int | None,
    bayes: Tensor | None = None,
) -> dict[str, float]:
    """Held-out NLL per token on the contexts the evidence persona did not write.

    Parameters
    ----------
    q0, q_s : Tensor
        ``[n, T, V]`` base and fine-tuned log-probabilities on ``contexts``.
    contexts : Tensor
        ``[n, T]`` held-out tokens.
    writer : Tensor
        ``[n]`` the persona that wrote each context.
    evidence_persona : int or None
        The evidence persona (None: every context counts).
    bayes : Tensor, optional
        ``[n, T, V]`` the Bayes-optimal model (the true persona mixture) for reference.

    Returns
    -------
    dict
        ``base_nll``, ``finetuned_nll``, ``bayes_nll`` (None without ``bayes``), ``increase``
        (fine-tuned minus base) and ``contexts`` (how many contexts count).
    """
    keep = torch.as_tensor(writer).long() != (-1 if evidence_persona is None else evidence_persona)  # [n]
    if not keep.any():
        return {"base_nll": None, "finetuned_nll": None, "bayes_nll": None, "increase": None, "contexts": 0}
    tokens = contexts[keep].long()

    def nll(logp: Tensor) -> float:
        return float(-check_logprobs(logp, "log-probabilities")[keep].gather(-1, tokens[..., None]).mean())

    base, tuned = nll(q0), nll(q_s)
    return {"base_nll": base, "finetuned_nll": tuned, "bayes_nll": None if bayes is None else nll(bayes),
            "increase": tuned - base, "contexts": int(keep.sum())}


@dataclass(frozen=True)
class InContextStrength:
    """The in-context updating that best explains a model.

    Attributes
    ----------
    gamma : float
        The fitted scale of the context's persona log-likelihood (1: Bayesian updating).
    weights : Tensor
        ``[K]`` the prior weights fitted with it.
    kl : float
        Mean ``KL(q || p_{w,gamma})`` at the fit.
    kl_at_one : float
        The same with ``gamma`` held at 1 (only ``w`` fitted): how much freeing ``gamma`` helped.
    """

    gamma: float
    weights: Tensor
    kl: float
    kl_at_one: float


def in_context_strength(q: Tensor, components: Tensor, contexts: Tensor, *, init: Tensor | None = None,
                        max_iter: int = 200, tol: float = 1e-10) -> InContextStrength:
    """Fit ``(w, gamma)`` so that ``p_{w,gamma}`` (module docstring) is nearest ``q`` in mean KL.

    Parameters
    ----------
    q : Tensor
        ``[n, T, V]`` the model explained (e.g. a fine-tuned snapshot).
    components : Tensor
        ``[K, n, T, V]`` the reachable set's personas on ``contexts``.
    contexts : Tensor
        ``[n, T]`` held-out tokens.
    init : Tensor, optional
        ``[K]`` starting weights (e.g. the projection ``w*``); uniform by default.
    """
    components, contexts = check_components(components, contexts)
    q = check_logprobs(q, "q")
    K = components.shape[0]
    prefix = prefix_loglik(components, contexts)  # [K, n, T]
    w = torch.full((K,), 1.0 / K, dtype=torch.float64) if init is None else torch.as_tensor(init, dtype=torch.float64)
    start = torch.cat([w.clamp(min=1e-12).log(), torch.zeros(1, dtype=torch.float64)])  # [a, log gamma]

    def kl_at(params: Tensor, gamma: Tensor) -> Tensor:
        return mean_kl_tensor(q, mix(components, in_context_log_weights(params[:K], gamma * prefix)))

    free, _, _ = lbfgs(lambda p: kl_at(p, p[K].exp()), start, max_iter, tol)
    fixed, _, _ = lbfgs(lambda p: kl_at(p, torch.ones((), dtype=torch.float64)), start, max_iter, tol)
    with torch.no_grad():
        value, at_one = float(kl_at(free, free[K].exp())), float(kl_at(fixed, torch.ones((), dtype=torch.float64)))
    return InContextStrength(float(free[K].exp()), torch.softmax(free[:K], 0), value, at_one)


def mean_kl_tensor(q: Tensor, p: Tensor) -> Tensor:
    """Differentiable mean ``KL(q || p)`` over positions (``q`` fixed; 0 log 0 = 0)."""
    q_prob = q.exp()
    support = q_prob > 0
    terms = torch.where(support, q_prob * (q - torch.where(support, p, torch.zeros_like(p))), torch.zeros_like(q))
    return terms.sum(-1).mean()
