"""Exact conditioning of a domain world whose documents open with observed tags (issue 11).

In a :class:`~models.domains.DomainWorld` one persona ``h ~ pi`` writes all the evidence (the
``global`` model of persona selection), while each document's domain and cause slot are its own,
drawn independently of ``h`` and observed as its first two tokens. The tempered posterior is

    pi_beta(h | D) ∝ pi(h) * prod_d p(x_d | h)^beta,
    p(x_d | h)     = p(domain_d) p(slot_d) * p(x_d | family(h, domain_d, slot_d)),

where the tag factor is the same for every persona and cancels. The posterior predictive mixes the
personas (each its families mixed in context) with these weights and updates them in context:
:meth:`TaggedPosterior.predictive`. Note that ``condition(world.families, ...)`` would treat each
*family* as a persona: its posterior puts no weight on the other domains' families, so its
predictive is only right inside the evidence's own domain and slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inference.conditioning import exact
from models.counts import Evidence
from models.domains import DomainWorld
from models.errors import InputError
from models.predictive import mixture_logprobs


@dataclass(frozen=True)
class TaggedPosterior:
    """``pi_beta(h | D)`` of a domain world, and its predictive.

    Attributes
    ----------
    world : DomainWorld
    weights : Tensor
        ``[K]`` posterior persona probabilities.
    log_evidence : float
        ``log sum_h pi(h) prod_d p(x_d | family)^beta`` (the tag factor left out).
    beta : float
    """

    world: DomainWorld
    weights: Tensor
    log_evidence: float
    beta: float

    def predictive(self, contexts: Tensor) -> Tensor:
        """``[n, T, V]`` next-token log-probabilities of the conditioned model, with in-context updating."""
        components = self.world.persona_logprobs(contexts)  # [K, n, T, V]
        return mixture_logprobs(components, contexts, self.weights.log())

    def trait_rates(self, doc_len: int) -> Tensor:
        """``[D, 2]`` exact expected marker share of a document the conditioned model writes in each
        domain and slot: ``sum_h pi_beta(h | D) rate[h, d, c]`` (the tags leave the weights unchanged)."""
        return torch.einsum("k,kdc->dc", self.weights, self.world.trait_rates(doc_len))


def condition_tagged(world: DomainWorld, evidence: Evidence, beta: float = 1.0) -> TaggedPosterior:
    """Exact ``pi_beta(h | D)`` of the persona that wrote ``evidence`` (module docstring).

    Parameters
    ----------
    world : DomainWorld
    evidence : Evidence
        Documents (each opening with its domain tag and slot) and the mask of scored tokens; the
        tags may be masked out (their probability is the same under every persona).
    beta : float
        Evidence strength, ``>= 0``.
    """
    if not isinstance(evidence, Evidence):
        raise InputError(f"evidence must be Evidence, got {type(evidence).__name__}")
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise InputError(f"beta must be a number, got {beta!r}") from None
    if not 0 <= beta < float("inf"):
        raise InputError(f"beta must be finite and >= 0, got {beta}")
    doc_loglik = world.doc_loglik(evidence.tokens, evidence.mask)  # [K, N]
    # each document is a "feature" with count one: exact.global_posterior sums beta * loglik over them
    ones = torch.ones(doc_loglik.shape[1], dtype=doc_loglik.dtype)
    log_w, log_z = exact.global_posterior(world.persona_prior.log(), doc_loglik, ones, beta)
    return TaggedPosterior(world, log_w.exp(), float(log_z), beta)
