"""``R_self`` of any base model of the interface (:mod:`models.base_model`), and conditioning it.

The comparisons of :mod:`inference.comparison` work on tensors: a model on held-out contexts is
``[n, T, V]`` next-token log-probabilities and a reachable set is ``[K, n, T, V]`` components.
For a real LM (``V`` = 50,257 for GPT-2) those tensors are coarsened onto a kept vocabulary
(:class:`models.base_model.Vocabulary`); this module chooses it and measures what the coarsening
leaves out:

* :func:`comparison_vocabulary`: every held-out context token, then the tokens with the most
  probability under the base model and its prompted personas on the held-out contexts, up to
  ``max_vocab``, plus one rest column;
* :func:`full_kl`: ``KL(q || p)`` of two models over the FULL vocabulary, streamed over blocks of
  contexts (the coarsened KL is a lower bound on it);
* :func:`evidence_loglik` and :func:`conditioned_log_weights`: the persona mixture of ``R_self``
  conditioned on the evidence, exactly (a persona's likelihood of the evidence is a number):
  ``pi_beta(h | D) ∝ w0_h * p(D | h)^beta`` with the base model's own projection ``w0`` as the
  prior; its predictive is :func:`models.predictive.mixture_logprobs` with these weights, the
  ``p_D,beta`` of DESIGN.md §3 item 1 for ``R_self``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.base_model import LanguageModel, Vocabulary, choose_vocabulary
from models.counts import Evidence
from models.errors import InputError

#: float64 elements of one ``[rows, T, V]`` block when streaming full-vocabulary log-probabilities
MAX_BLOCK_ELEMENTS = 2**24


def _row_blocks(contexts: Tensor, vocab_size: int) -> list[slice]:
    n, T = contexts.shape
    rows = max(1, MAX_BLOCK_ELEMENTS // (T * vocab_size))
    return [slice(lo, lo + rows) for lo in range(0, n, rows)]


def comparison_vocabulary(model: LanguageModel, contexts: Tensor, max_vocab: int) -> Vocabulary:
    """The kept vocabulary of the comparisons on ``contexts`` (module docstring).

    Parameters
    ----------
    model : LanguageModel
        The base model; its unprompted and persona-prompted next-token mass ranks the tokens.
    contexts : Tensor
        ``[n, T]`` held-out token ids (all kept, so the in-context update stays exact).
    max_vocab : int
        Kept tokens at most (more only if the contexts alone hold more distinct tokens).
    """
    if isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 1:
        raise InputError(f"max_vocab must be a positive integer, got {max_vocab!r}")
    V = model.vocab_size
    if max_vocab >= V:
        return Vocabulary(torch.arange(V), V)
    mass = torch.zeros(V, dtype=torch.float64)
    for persona in [None, *range(len(model.persona_names))]:
        for rows in _row_blocks(contexts, V):
            mass += model.next_token_logprobs(contexts[rows], persona).exp().sum((0, 1))  # [V]
    return choose_vocabulary(mass, contexts, max_vocab)


def full_kl(q_model: LanguageModel, p_model: LanguageModel, contexts: Tensor) -> float:
    """Mean ``KL(q || p)`` over every held-out position, over the full vocabulary (streamed)."""
    total, count = 0.0, 0
    for rows in _row_blocks(contexts, q_model.vocab_size):
        q, p = q_model.next_token_logprobs(contexts[rows]), p_model.next_token_logprobs(contexts[rows])  # [b, T, V]
        q_prob = q.exp()
        total += float(torch.where(q_prob > 0, q_prob * (q - p), torch.zeros_like(q)).sum())
        count += q.shape[0] * q.shape[1]
    return total / count


def rest_mass(logprobs: Tensor, vocabulary: Vocabulary) -> dict[str, float]:
    """Mean and largest probability a coarsened ``[..., width]`` model puts on the rest column."""
    if vocabulary.full:
        return {"mean": 0.0, "max": 0.0}
    rest = logprobs[..., -1].exp()
    return {"mean": float(rest.mean()), "max": float(rest.max())}


def evidence_loglik(model: LanguageModel, evidence: Evidence) -> Tensor:
    """``[K]`` float64 ``log p(D | h)``: the masked-in evidence tokens read after each persona's prompt."""
    K = len(model.persona_names)
    return torch.stack([model.context_loglik(evidence.tokens, h, evidence.mask).sum() for h in range(K)])


def conditioned_log_weights(log_prior: Tensor, loglik: Tensor, betas) -> dict[float, Tensor]:
    """``{beta: [K] log pi_beta(h | D)}``, normalised: ``log w0_h + beta * log p(D | h)`` (module docstring)."""
    log_prior, loglik = torch.as_tensor(log_prior, dtype=torch.float64), torch.as_tensor(loglik, dtype=torch.float64)
    if log_prior.shape != loglik.shape or log_prior.dim() != 1:
        raise InputError(f"log_prior and loglik must be two [K] vectors, got {tuple(log_prior.shape)}, "
                         f"{tuple(loglik.shape)}")
    out = {}
    for beta in betas:
        logits = log_prior + (float(beta) * loglik if beta else torch.zeros_like(loglik))  # 0 * -inf stays 0
        out[float(beta)] = logits - torch.logsumexp(logits, 0)
    return out
