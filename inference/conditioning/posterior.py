"""The :class:`Posterior` that :func:`~inference.conditioning.condition.condition` returns.

    posterior.weights              # [K] P(h = k | D) (global) or E[w_k | D] (mixture)
    posterior.predictive(contexts) # [n, T, V] next-token log-probabilities, in-context updating
    posterior.to_arviz(seed=0)     # InferenceData (groups below)

``to_arviz`` computes the arrays and hands them to :mod:`inference.diagnostics`:

==================== =========================== ====================================
group                variable                     meaning
==================== =========================== ====================================
posterior            ``w`` [persona]              mixture weights (mixture model)
posterior            ``persona_probs`` [persona]  ``P(h | D, tables)`` (global, uncertain tables)
posterior            ``persona``                  drawn persona: scalar (global) or [document]
log_likelihood       ``documents`` [document]     pointwise log-likelihood, beta = 1, marginal
                                                  over each document's persona (mixture)
posterior_predictive ``tokens`` [evidence_token]  replicated evidence tokens, each drawn given its
                                                  observed context (first 2,000 evidence tokens)
observed_data        ``tokens`` [evidence_token]  the evidence tokens themselves
sample_stats         ``lp`` (and ``diverging``)   log-likelihood of each draw; NUTS divergences
==================== =========================== ====================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.counts import Evidence, TransitionCounts, count_transitions, feature_index
from models.limits import check_seed
from models.personas import MarkovPersonas, TablePrior
from models.predictive import mixture_predictive

#: at most this many posterior draws enter a Monte Carlo predictive
PREDICTIVE_DRAWS = 200
#: evidence tokens replicated in the posterior predictive check
PPC_TOKENS = 2000
#: draws (over all chains) replicated in the posterior predictive check
PPC_DRAWS = 100


@dataclass
class Posterior:
    """The result of conditioning a persona model on evidence.

    Attributes
    ----------
    model, method : str
        Evidence model (``global``/``mixture``) and method (``exact``/``svi``/``mcmc``).
    beta : float
        Tempering exponent.
    personas : MarkovPersonas
        The personas conditioned (tables are the prior mean when uncertain).
    evidence : Evidence
        The evidence conditioned on.
    counts : TransitionCounts
        Its per-document sufficient statistics: counted on first use and cached
        (the exact global posterior needs only their sum over documents).
    weights : Tensor
        ``[K]`` posterior persona probabilities: ``P(h = k | D)`` (global) or ``E[w_k | D]`` (mixture).
    weight_samples : Tensor
        ``[chains, draws, K]`` draws of the persona probabilities (global: ``P(h | D, tables)``
        per draw of the tables; exact global with known tables: the exact vector repeated).
    persona_samples : Tensor
        ``[chains, draws]`` (global) or ``[chains, draws, D]`` (mixture) draws of the
        discrete persona sites.
    table_samples : Tensor or None
        ``[chains, draws, K, F]`` draws of the flat log tables when they are uncertain.
    log_evidence : float or None
        ``log p_beta(D)`` (exact only).
    diagnostics : dict
        Method-specific numbers (R-hat, ESS, divergences; final ELBO, steps).
    alpha : Tensor or None
        ``[K]`` Dirichlet concentration of the mixture weights.
    table_prior : TablePrior or None
        Priors of uncertain tables.
    seconds : float
        Wall time of conditioning.
    engine : SVIResult or MCMCResult or None
        The engine's own result (:class:`~inference.conditioning.svi.SVIResult`: losses,
        guide parameters; :class:`~inference.conditioning.mcmc.MCMCResult`: sample stats);
        None for the exact methods.
    diverging : Tensor or None
        ``[chains, draws]`` bool NUTS divergences (MCMC only).
    """

    model: str
    method: str
    beta: float
    personas: MarkovPersonas
    evidence: Evidence
    weights: Tensor
    weight_samples: Tensor
    persona_samples: Tensor
    table_samples: Tensor | None = None
    log_evidence: float | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    alpha: Tensor | None = None
    table_prior: TablePrior | None = None
    seconds: float = 0.0
    engine: Any = None
    diverging: Tensor | None = None
    #: the per-document statistics when the conditioning already counted them
    _counts: TransitionCounts | None = field(default=None, repr=False, compare=False)

    @property
    def counts(self) -> TransitionCounts:
        """Per-document sufficient statistics of the evidence (counted on first use, then cached)."""
        if self._counts is None:
            self._counts = count_transitions(self.evidence, self.personas.vocab_size, self.personas.order)
        return self._counts

    def predictive(self, contexts: Tensor) -> Tensor:
        """Posterior predictive next-token log-probabilities with in-context updating.

        Parameters
        ----------
        contexts : Tensor
            ``[n, T]`` token sequences.

        Returns
        -------
        Tensor
            ``[n, T, V]``; row ``t`` is ``log p_D(x_t = v | x_<t)``.
        """
        V, n = self.personas.vocab_size, self.personas.order
        if self.table_samples is None:
            return mixture_predictive(self.personas.log_table(), self.weights.log(), contexts, V, n)
        tables, weights = _thin(self.table_samples), _thin(self.weight_samples)  # [S, K, F], [S, K]
        return mixture_predictive(tables.flatten(0, 1), weights.log().flatten(), contexts, V, n)

    def doc_log_likelihood(self) -> Tensor:
        """Pointwise log-likelihood ``[chains, draws, D]`` of every evidence document (beta = 1).

        Marginal over each document's own persona in the mixture model; given the drawn
        persona ``h`` in the global model (``h`` is a global latent there).
        """
        L = self._draw_doc_loglik()  # [chains, draws, K, D]
        if self.model == "mixture":
            return torch.logsumexp(self.weight_samples.log()[..., None] + L, -2)
        h = self.persona_samples[..., None, None].expand(*L.shape[:2], 1, L.shape[-1])
        return L.gather(-2, h).squeeze(-2)

    def _draw_doc_loglik(self) -> Tensor:
        """``[chains, draws, K, D]`` log-likelihood of every document under every persona."""
        if self.table_samples is None:
            L = self.counts.loglik(self.personas.log_table()[:, None, :])  # [K, D]
            return L.expand(*self.weight_samples.shape[:2], *L.shape)
        tables = self.table_samples.flatten(0, 1)  # [S, K, F]
        step = max(1, 20_000_000 // max(1, tables.shape[1] * len(self.counts.count)))
        L = torch.cat([self.counts.loglik(tables[i : i + step, :, None, :]) for i in range(0, len(tables), step)])
        return L.reshape(*self.table_samples.shape[:2], *L.shape[1:])

    def to_arviz(self, seed: int = 0):
        """ArviZ ``InferenceData``: posterior, posterior_predictive, log_likelihood,
        observed_data and sample_stats (module docstring).

        Parameters
        ----------
        seed : int
            Seed of the posterior predictive replicates (the rest is deterministic).
        """
        from inference import diagnostics

        seed = check_seed(seed)
        post: dict[str, np.ndarray] = {"persona": self.persona_samples.numpy()}
        if self.model == "mixture":
            post["w"] = self.weight_samples.numpy()
        elif self.table_samples is not None:
            post["persona_probs"] = self.weight_samples.numpy()
        doc_ll = self.doc_log_likelihood()  # [chains, draws, D]
        stats = {"lp": doc_ll.sum(-1).numpy()}
        if self.diverging is not None:
            stats["diverging"] = np.asarray(self.diverging, dtype=bool)
        observed, replicated, thin = ppc_tokens(self, seed)
        return diagnostics.inference_data(
            posterior=post, log_likelihood={"documents": doc_ll.numpy()}, sample_stats=stats,
            observed_data={"tokens": observed}, posterior_predictive={"tokens": replicated}, predictive_draws=thin,
            dims={"w": ["persona_index"], "persona_probs": ["persona_index"],
                  "persona": ["document"] if self.persona_samples.dim() == 3 else [],
                  "documents": ["document"], "tokens": ["evidence_token"]},
            attrs={"model": self.model, "method": self.method, "beta": self.beta},
        )

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary ``psm condition`` writes to ``posterior.json``."""
        return {
            "method": self.method,
            "model": self.model,
            "beta": self.beta,
            "weights": [float(w) for w in self.weights],
            "log_evidence": None if self.log_evidence is None else float(self.log_evidence),
            "diagnostics": self.diagnostics,
            "seconds": self.seconds,
        }


def ppc_tokens(posterior: Posterior, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed evidence tokens ``[N]``, replicates ``[chains, draws', N]`` drawn given their
    observed contexts, and the draw indices ``[draws']`` (at most ``PPC_DRAWS`` over all chains)."""
    ev, V = posterior.evidence, posterior.personas.vocab_size
    doc, pos = ev.mask.nonzero(as_tuple=True)
    doc, pos = doc[:PPC_TOKENS], pos[:PPC_TOKENS]  # [N]
    observed = ev.tokens[doc, pos]
    feats = feature_index(ev.tokens, V, posterior.personas.order)[doc, pos]
    row = torch.where(pos == 0, torch.zeros_like(feats), feats - observed)  # [N] start of each row
    chains, draws = posterior.weight_samples.shape[:2]
    thin = np.arange(0, draws, max(1, draws * chains // PPC_DRAWS))
    gen = torch.Generator().manual_seed(seed)
    weights = posterior.weight_samples[:, thin]  # [c, s', K]
    if posterior.model == "global":
        persona = posterior.persona_samples[:, thin][..., None].expand(-1, -1, len(doc))  # [c, s', N]
    else:  # a fresh persona per replicated document: the predictive of new documents
        doc_persona = torch.multinomial(weights.reshape(-1, weights.shape[-1]), ev.num_docs, True, generator=gen)
        persona = doc_persona.reshape(chains, len(thin), ev.num_docs)[..., doc]  # [c, s', N]
    entry = row[:, None] + torch.arange(V)  # [N, V] flat-table entries of each token's row
    if posterior.table_samples is None:
        logits = posterior.personas.log_table()[persona[..., None], entry]  # [c, s', N, V]
    else:
        c_idx = torch.arange(chains)[:, None, None, None]
        s_idx = torch.as_tensor(thin)[None, :, None, None]
        logits = posterior.table_samples[c_idx, s_idx, persona[..., None], entry]  # [c, s', N, V]
    probs = torch.softmax(logits, -1).reshape(-1, V)
    replicated = torch.multinomial(probs, 1, generator=gen).reshape(chains, len(thin), len(doc))
    return observed.numpy(), replicated.numpy(), thin


def _thin(samples: Tensor) -> Tensor:
    flat = samples.flatten(0, 1)
    step = max(1, len(flat) // PREDICTIVE_DRAWS)
    return flat[::step][:PREDICTIVE_DRAWS]
