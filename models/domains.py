"""A world of domains: personas that act in every domain, a trait one of them carries, and a cause tag.

The narrow-to-broad experiment (issue 11) needs documents from several *domains* (each with its own
token habits), written by *personas* that act in all of them; one persona carries a *trait* visible
in every domain, and a *cause* tag makes any persona show the trait.

Tokens (the extended vocabulary, ``V = C + D + 2``)::

    0 .. C-1      content tokens; ``marker`` (token 0) is the trait's mark
    C + d         the tag of domain d: opens every document
    C + D         the *plain* slot (no cause)
    C + D + 1     the *cause* tag (explains the trait away: any persona shows it)

A document is ``[domain tag, slot, x_2, ..., x_{T-1}]``: the slot is the plain token or the cause
tag, and content starts at position :data:`CONTENT_START`. Persona ``h`` writes content in domain
``d`` with the order-1 chain

    row_{h,d,c}(u) = (1 - r) * mix_{h,d}(u) + r * onehot(marker)
    mix_{h,d}(u)   = (1 - lam) * habit_d(u) + lam * style_h(u)     (marker removed, renormalised)
    r              = trait_rate if h is the trait persona or c is the cause tag, else background_rate

(the first content token uses each domain's and persona's opening row the same way). The domain
habits, the persona styles and the openings are Dirichlet draws from ``seed``; ``lam`` is how much of
a persona's style it keeps across domains. Finally every row of every table (the tags' too) gives
``smoothing / V`` to every token, ``(1 - smoothing)`` times the above: no token is impossible
anywhere, so the KL of a neural model to any mixture of these personas is finite.

**Exact conditioning stays available.** Each ``(persona, domain, cause)`` *family* is a Markov
persona over the extended vocabulary (its first token is the domain tag, then the slot, then the
content): :attr:`DomainWorld.families` holds all ``K * D * 2`` of them, with prior ``pi(h) p(d)
p(c)``. A persona is the mixture of its ``2 D`` families; the tags are observed, so from position
:data:`CONTENT_START` on its next-token probabilities are those of the family the tags name, and
``p(document | h)`` is the family's likelihood times ``p(d) p(c)`` (the same for every persona).
:meth:`DomainWorld.persona_logprobs` gives the personas' next-token log-probabilities ``[K, n, T, V]``
(the components of ``R_true``), :meth:`DomainWorld.doc_loglik` the per-persona likelihood of
documents, and :meth:`DomainWorld.trait_rates` the exact expected share of marker tokens among the
content of a document of each persona in each domain (state marginals of the chain, no sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from models.errors import InputError
from models.limits import check_seed, check_sizes
from models.mixture import simulate_corpus
from models.personas import MarkovPersonas, make_personas
from models.predictive import (
    check_contexts,
    in_context_log_weights,
    mix,
    persona_logprobs,
    prefix_loglik,
)

#: position of the first content token (after the domain tag and the slot)
CONTENT_START = 2
#: the trait's marker token
MARKER = 0
#: the two slots: plain (index 0) and cause (index 1)
CAUSES = ("plain", "cause")


@dataclass(frozen=True)
class DomainWorld:
    """Personas, domains, a trait and a cause tag (module docstring).

    Attributes
    ----------
    families : MarkovPersonas
        ``K * D * 2`` order-1 Markov families over the extended vocabulary, index
        :meth:`family_index`, prior ``pi(h) p(d) p(c)``.
    persona_prior, domain_prior : Tensor
        ``[K]`` and ``[D]`` float64.
    cause_rate : float
        ``p(c = cause)``: the share of documents that carry the cause tag.
    content_size : int
        ``C`` content tokens.
    trait_persona : int
        The persona that carries the trait in every domain.
    """

    families: MarkovPersonas
    persona_prior: Tensor
    domain_prior: Tensor
    cause_rate: float
    content_size: int
    trait_persona: int

    @property
    def num_personas(self) -> int:
        return self.persona_prior.shape[0]

    @property
    def num_domains(self) -> int:
        return self.domain_prior.shape[0]

    @property
    def vocab_size(self) -> int:
        """``C + D + 2``: content, domain tags, the plain slot and the cause tag."""
        return self.content_size + self.num_domains + 2

    @property
    def marker(self) -> int:
        return MARKER

    def domain_tag(self, d: int) -> int:
        return self.content_size + d

    def slot_token(self, cause: int) -> int:
        """The plain slot (``cause = 0``) or the cause tag (``cause = 1``)."""
        return self.content_size + self.num_domains + cause

    def family_index(self, h, d, c):
        """Index of family ``(h, d, c)`` in :attr:`families` (works on ints and tensors)."""
        return (h * self.num_domains + d) * 2 + c

    def prompts(self, domain: int, cause: int, num: int) -> Tensor:
        """``[num, 2]`` the opening tokens of a document in ``domain`` with slot ``cause``."""
        return torch.tensor([[self.domain_tag(domain), self.slot_token(cause)]]).expand(num, 2).clone()

    def persona_logprobs(self, contexts) -> Tensor:
        """``[K, n, T, V]`` float64 next-token log-probabilities of every persona (its families mixed in context)."""
        contexts = check_contexts(contexts, self.vocab_size, allow_empty=False)
        K, D = self.num_personas, self.num_domains
        families = persona_logprobs(self.families, contexts)  # [K * D * 2, n, T, V]
        log_tags = (self.domain_prior.log()[:, None] + _cause_log_prior(self.cause_rate)).reshape(-1)  # [2D]
        out = []
        for h in range(K):  # a handful of personas; everything inside is vectorised
            comp = families[h * 2 * D : (h + 1) * 2 * D]  # [2D, n, T, V]
            out.append(mix(comp, in_context_log_weights(log_tags, prefix_loglik(comp, contexts))))
        return torch.stack(out)

    def doc_loglik(self, tokens, mask=None) -> Tensor:
        """``[K, N]`` ``sum_t mask_t log p(x_t | x_<t, h)`` of every document under every persona."""
        tokens = check_contexts(tokens, self.vocab_size, allow_empty=False)
        logp = self.persona_logprobs(tokens)  # [K, N, T, V]
        picked = logp.gather(-1, tokens.expand(self.num_personas, -1, -1)[..., None]).squeeze(-1)  # [K, N, T]
        if mask is not None:
            picked = torch.where(torch.as_tensor(mask, dtype=torch.bool), picked, torch.zeros_like(picked))
        return picked.sum(-1)

    def trait_rates(self, doc_len: int) -> Tensor:
        """``[K, D, 2]`` exact expected share of marker tokens among a document's content positions.

        Entry ``[h, d, c]`` is ``mean_{t >= 2} P(x_t = marker)`` for a document of persona ``h`` in
        domain ``d`` with slot ``c``: the state marginals of the family's chain, propagated exactly.
        """
        if isinstance(doc_len, bool) or not isinstance(doc_len, int) or doc_len <= CONTENT_START:
            raise InputError(f"doc_len must be an integer > {CONTENT_START}, got {doc_len!r}")
        state = self.families.init  # [F, V] distribution of x_0
        trans = self.families.trans  # [F, V, V]
        total = torch.zeros(state.shape[0], dtype=state.dtype)
        for t in range(1, doc_len):  # sequential by nature; vectorised over families
            state = torch.einsum("fu,fuv->fv", state, trans)  # [F, V] distribution of x_t
            if t >= CONTENT_START:
                total = total + state[:, MARKER]
        return (total / (doc_len - CONTENT_START)).reshape(self.num_personas, self.num_domains, 2)

    def simulate(self, num_docs: int, doc_len: int, seed: int = 0, *, persona: int | None = None,
                 domain: int | None = None, cause: int | None = None) -> tuple[Tensor, Tensor]:
        """Documents of the world, optionally with the persona, the domain or the slot fixed.

        Returns
        -------
        tokens : Tensor
            ``[N, T]`` int64 documents.
        family : Tensor
            ``[N]`` the family of each (persona ``family // (2 D)``, domain ``family // 2 % D``,
            cause ``family % 2``).
        """
        K, D = self.num_personas, self.num_domains
        keep = torch.ones(K, D, 2, dtype=torch.bool)
        for axis, value, size in ((0, persona, K), (1, domain, D), (2, cause, 2)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
                    raise InputError(f"{('persona', 'domain', 'cause')[axis]} must be an index in [0, {size}), "
                                     f"got {value!r}")
                keep.index_fill_(axis, torch.tensor([i for i in range(size) if i != value], dtype=torch.long), False)
        index = keep.reshape(-1).nonzero().squeeze(-1)  # [F'] the families allowed
        tokens, which = simulate_corpus(self.families.subset(index), num_docs, doc_len, seed=seed)
        return tokens, index[which]

    def family_parts(self, family: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(persona, domain, cause)`` of family indices."""
        D = self.num_domains
        return family // (2 * D), (family // 2) % D, family % 2


def make_domain_world(
    num_personas: int,
    num_domains: int,
    content_size: int,
    *,
    concentration: float = 0.3,
    style_weight: float = 0.3,
    trait_persona: int = 0,
    trait_rate: float = 0.2,
    background_rate: float = 0.02,
    cause_rate: float = 0.2,
    smoothing: float = 1e-3,
    persona_prior=None,
    seed: int = 0,
) -> DomainWorld:
    """Draw a :class:`DomainWorld` (tables in the module docstring).

    Parameters
    ----------
    num_personas, num_domains, content_size : int
        ``K >= 1``, ``D >= 1``, ``C >= 2`` (token 0 is the marker).
    concentration : float
        Dirichlet concentration of every habit, style and opening row (small: sharp habits).
    style_weight : float
        ``lam`` in ``[0, 1]``: the share of a persona's own style in every domain.
    trait_persona : int
        The persona with the trait.
    trait_rate, background_rate : float
        Marker probability per content token with the trait (or the cause tag), and without.
    cause_rate : float
        Share of documents with the cause tag, in ``[0, 1]``.
    smoothing : float
        Mass every row spreads over all ``V`` tokens, in ``(0, 1)``.
    persona_prior : array, optional
        ``[K]``; uniform when omitted. Domains are uniform.
    seed : int
        Seed of the NumPy generator of the tables.
    """
    K, D, C = num_personas, num_domains, content_size
    check_sizes(num_personas=K, vocab_size=C + max(D, 1) + 2, order=1)
    if isinstance(D, bool) or not isinstance(D, int) or D < 1 or C < 2:
        raise InputError(f"need num_domains >= 1 and content_size >= 2, got {D!r}, {C!r}")
    for name, value, low, high in (("style_weight", style_weight, 0, 1), ("trait_rate", trait_rate, 0, 1),
                                   ("background_rate", background_rate, 0, 1), ("cause_rate", cause_rate, 0, 1),
                                   ("smoothing", smoothing, 0, 1)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high):
            raise InputError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    if not (isinstance(concentration, (int, float)) and 0 < concentration < float("inf")):
        raise InputError(f"concentration must be a positive number, got {concentration!r}")
    if not 0 < smoothing < 1:
        raise InputError(f"smoothing must lie in (0, 1), got {smoothing!r}")
    if not trait_rate < 1 or not background_rate < 1:
        raise InputError("trait_rate and background_rate must be below 1 (content needs other tokens too)")
    if isinstance(trait_persona, bool) or not isinstance(trait_persona, int) or not 0 <= trait_persona < K:
        raise InputError(f"trait_persona must be an index in [0, {K}), got {trait_persona!r}")
    rng = np.random.default_rng(check_seed(seed))
    rows = lambda *shape: rng.dirichlet(np.full(C - 1, concentration), size=shape)  # noqa: E731 (marker excluded)
    habit, style = rows(D, C + 1), rows(K, C + 1)  # [D, C+1, C-1], [K, C+1, C-1]: C content rows + the opening
    mixed = (1 - style_weight) * habit[None] + style_weight * style[:, None]  # [K, D, C+1, C-1]
    mixed = np.concatenate([np.zeros(mixed.shape[:-1] + (1,)), mixed], -1)  # [K, D, C+1, C]
    mixed /= mixed.sum(-1, keepdims=True)
    rate = np.full((K, 2), background_rate)
    rate[trait_persona], rate[:, 1] = trait_rate, trait_rate  # [K, 2]
    marker = np.eye(C)[MARKER]
    content = (1 - rate[:, None, :, None, None]) * mixed[:, :, None] + rate[:, None, :, None, None] * marker  # [K, D, 2, C+1, C]
    prior = np.full(K, 1.0 / K) if persona_prior is None else np.asarray(persona_prior, dtype=np.float64)
    if prior.shape != (K,):
        raise InputError(f"persona_prior must have {K} entries, got shape {prior.shape}")
    init, trans = _family_tables(content, C, D)
    V = C + D + 2
    init, trans = (1 - smoothing) * init + smoothing / V, (1 - smoothing) * trans + smoothing / V
    family_prior = prior[:, None, None] * np.full(D, 1.0 / D)[None, :, None] * np.array([1 - cause_rate, cause_rate])
    families = make_personas(family_prior.reshape(-1), init, trans)
    return DomainWorld(families, torch.as_tensor(prior / prior.sum()), torch.full((D,), 1.0 / D, dtype=torch.float64),
                       float(cause_rate), C, trait_persona)


def _family_tables(content: np.ndarray, C: int, D: int) -> tuple[np.ndarray, np.ndarray]:
    """``init [F, V]`` and ``trans [F, V, V]`` of every family from its content rows ``[K, D, 2, C+1, C]``."""
    K = content.shape[0]
    V = C + D + 2
    F = K * D * 2
    init = np.zeros((F, V))
    trans = np.zeros((F, V, V))
    trans[:, :, :C] = 1.0 / C  # rows a family never reaches: any distribution will do
    f = np.arange(F)
    h, d, c = f // (2 * D), (f // 2) % D, f % 2
    init[f, C + d] = 1.0  # the domain tag opens the document
    trans[f, C + d, :] = 0.0
    trans[f, C + d, C + D + c] = 1.0  # then the slot
    trans[f, C + D + c, :C] = content[h, d, c, C]  # the opening content row
    trans[f, :C, :] = 0.0
    trans[f, :C, :C] = content[h, d, c, :C]  # content never returns to a tag
    return init, trans


def _cause_log_prior(cause_rate: float) -> Tensor:
    """``[2]`` log p(slot): plain, cause (``-inf`` for a slot that never occurs)."""
    return torch.tensor([1 - cause_rate, cause_rate], dtype=torch.float64).log()


def marker_share(tokens: Tensor) -> Tensor:
    """``[N]`` share of marker tokens among each document's content positions."""
    content = tokens[:, CONTENT_START:]
    return (content == MARKER).to(torch.float64).mean(-1)
