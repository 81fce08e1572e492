"""The hand-marginalised NUTS potential of :func:`models.mixture.persona_model` (``potential="marginal"``).

NUTS needs ``-log p(latents, D)`` on the unconstrained scale with the discrete
persona summed out. :func:`persona_potential` builds it from sufficient
statistics (DESIGN.md §6): the per-document, per-persona log-likelihoods
``L [K, D]`` come from one sparse count pass (precomputed once when the tables
are known), and the persona is summed out with one ``logsumexp``. The latents
(``w``; ``init``/``trans`` rows when the tables are uncertain) live on Pyro's
own stick-breaking scale, computed in log space by :func:`log_stick_breaking`,
so from one seed this potential and Pyro's enumerated one draw the same chain
up to rounding (``tests/inference/test_mcmc.py`` checks they agree).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from torch import Tensor
from torch.nn import functional as F

from models.counts import Evidence, TransitionCounts, count_transitions
from models.errors import InputError
from models.limits import EVIDENCE_MODELS
from models.personas import MarkovPersonas, TablePrior


def log_stick_breaking(x: Tensor) -> tuple[Tensor, Tensor]:
    """Pyro's default simplex bijection (``StickBreakingTransform``), computed in log space.

    Parameters
    ----------
    x : Tensor
        ``[..., n - 1]`` unconstrained values.

    Returns
    -------
    log_y : Tensor
        ``[..., n]`` log of the simplex point (never ``-inf``, unlike ``log(transform(x))``).
    log_det : Tensor
        ``[...]`` ``log |det dy/dx|``, as ``StickBreakingTransform.log_abs_det_jacobian``.
    """
    n = x.shape[-1] + 1
    offset = n - torch.arange(1, n, dtype=x.dtype)  # [n - 1]: n - 1, ..., 1
    t = x - offset.log()
    log_z, log_rest = F.logsigmoid(t), F.logsigmoid(-t)  # log z_k, log(1 - z_k)
    log_y = F.pad(log_z, (0, 1)) + F.pad(log_rest.cumsum(-1), (1, 0))  # [..., n]
    log_det = (-t + log_z + log_y[..., :-1]).sum(-1)
    return log_y, log_det


class DirichletPotential:
    """Shared part of the hand-written potentials: Dirichlet latents on Pyro's stick-breaking scale.

    Attributes
    ----------
    concentrations : dict of str to Tensor
        Dirichlet concentration of every latent, in model order (rows along the last axis).
    transforms : dict of str to Transform
        Constrained -> unconstrained map of every latent (``MCMC(transforms=...)``).
    """

    def __init__(self, concentrations: dict[str, Tensor]):
        if not concentrations:
            raise InputError("the model has no continuous latent site to infer (make the weights or tables uncertain)")
        self.concentrations = concentrations
        self.transforms = {  # what Pyro would choose: stick breaking, row by row
            name: biject_to(constraints.independent(constraints.simplex, conc.dim() - 1)).inv
            for name, conc in concentrations.items()
        }
        self.log_norm = sum(
            float((torch.lgamma(a).sum(-1) - torch.lgamma(a.sum(-1))).sum()) for a in concentrations.values()
        )  # sum of log B(a) over every Dirichlet row

    def log_prior(self, z: dict[str, Tensor]) -> tuple[Tensor | float, dict[str, Tensor]]:
        """Log Dirichlet density plus log Jacobian of ``z``, and the log simplex points of every latent."""
        log_joint, logs = -self.log_norm, {}
        for name, conc in self.concentrations.items():
            logs[name], log_det = log_stick_breaking(z[name])  # [..., n] log of the simplex points
            log_joint = log_joint + ((conc - 1) * logs[name]).sum() + log_det.sum()
        return log_joint, logs

    def initial_params(self, init: str, value: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Unconstrained start: a prior draw, uniform in ``(-2, 2)``, or ``value`` (constrained)."""
        out = {}
        for name, conc in self.concentrations.items():
            if init == "svi":
                out[name] = self.transforms[name](value[name])
            elif init == "prior":
                out[name] = self.transforms[name](dist.Dirichlet(conc).sample())
            else:
                out[name] = torch.empty(conc.shape[:-1] + (conc.shape[-1] - 1,), dtype=conc.dtype).uniform_(-2, 2)
        return out


class MarginalPotential(DirichletPotential):
    """``-log p(latents, evidence)`` of :func:`~models.mixture.persona_model` with the persona summed
    out by hand, as a function of the unconstrained latents.

    Every latent is a set of Dirichlet rows on Pyro's own unconstrained scale (stick
    breaking), computed in log space (:func:`log_stick_breaking`), so the persona
    tables come out as log tables directly. Equal to Pyro's enumerated potential
    (a test checks it), so both potentials draw the same chain from the same seed.
    """

    def __init__(self, personas: MarkovPersonas, counts: TransitionCounts, evidence: str, beta: float,
                 alpha: Tensor | None, table_prior: TablePrior | None):
        self.personas, self.counts, self.evidence, self.beta = personas, counts, evidence, float(beta)
        concentrations: dict[str, Tensor] = {}
        if evidence == "mixture" and alpha is not None:
            concentrations["w"] = alpha  # [K]
        if table_prior is not None:
            concentrations["init"] = table_prior.init  # [K, V]
            concentrations["trans"] = table_prior.trans  # [K, C, V]
        super().__init__(concentrations)
        totals = counts.totals()  # [F]
        self.seen = totals.nonzero().squeeze(-1)  # [F'] features with evidence
        self.totals = totals[self.seen]  # [F']
        self.log_prior_h = personas.prior.log()  # [K]
        # known tables: the per-document log-likelihoods never change
        self.fixed = None if table_prior is not None else self._doc_loglik(personas.log_table())  # [K, D]

    def _doc_loglik(self, log_table: Tensor) -> Tensor:
        """``[K, D]`` tempered log-likelihood of every document under every persona.

        The same sum as ``counts.loglik(log_table[:, None, :])`` without its
        broadcasting, which costs more than the sum on small problems.
        """
        picked = log_table[:, self.counts.feature] * self.counts.count  # [K, nnz]
        L = log_table.new_zeros(log_table.shape[0], self.counts.num_docs).index_add(-1, self.counts.doc, picked)
        return torch.zeros_like(L) if self.beta == 0 else self.beta * L

    def _total_loglik(self, log_table: Tensor) -> Tensor:
        """``[K]`` tempered log-likelihood of all the evidence under every persona (global model)."""
        L = (log_table[:, self.seen] * self.totals).sum(-1)  # [K]
        return torch.zeros_like(L) if self.beta == 0 else self.beta * L

    def __call__(self, z: dict[str, Tensor]) -> Tensor:
        log_joint, logs = self.log_prior(z)
        if self.fixed is None:
            log_table = torch.cat([logs["init"], logs["trans"].flatten(-2)], -1)  # [K, F]
        if self.evidence == "global":  # one persona for all documents: only the totals matter
            L = self.fixed.sum(-1) if self.fixed is not None else self._total_loglik(log_table)  # [K]
            return -(log_joint + torch.logsumexp(self.log_prior_h + L, 0))
        L = self.fixed if self.fixed is not None else self._doc_loglik(log_table)  # [K, D]
        log_w = logs["w"] if "w" in logs else self.log_prior_h  # [K]
        return -(log_joint + torch.logsumexp(log_w[:, None] + L, 0).sum())


class WeightsPotential(DirichletPotential):
    """``-log p(w, documents)`` for ``w ~ Dirichlet(alpha)`` and documents whose per-persona
    log-likelihoods are known, each written by one persona ``z_d ~ w`` (summed out).

    With ``prompt_loglik`` (``log p(c_d | h)``) each document's persona weights are first
    updated by its prompt in context: ``log p(y_d | c_d, w) = logsumexp(log w + P_d + L_d)
    - logsumexp(log w + P_d)``. The potential of :func:`inference.attribution.attribution_model`.
    """

    def __init__(self, doc_loglik: Tensor, alpha: Tensor, prompt_loglik: Tensor | None = None):
        super().__init__({"w": alpha})  # [K]
        self.doc_loglik, self.prompt_loglik = doc_loglik, prompt_loglik  # [D, K], [D, K] or None

    def __call__(self, z: dict[str, Tensor]) -> Tensor:
        log_joint, logs = self.log_prior(z)
        log_w = logs["w"]  # [K]
        if self.prompt_loglik is None:
            return -(log_joint + torch.logsumexp(log_w + self.doc_loglik, -1).sum())
        logits = log_w + self.prompt_loglik  # [D, K]
        return -(log_joint + (torch.logsumexp(logits + self.doc_loglik, -1) - torch.logsumexp(logits, -1)).sum())


def persona_potential(
    personas: MarkovPersonas,
    num_docs: int,
    doc_len: int,
    *,
    tokens: Tensor | None = None,
    mask: Tensor | None = None,
    counts: TransitionCounts | None = None,
    evidence: str = "mixture",
    beta: float = 1.0,
    alpha: Tensor | None = None,
    table_prior: TablePrior | None = None,
    subsample_size: int | None = None,
) -> MarginalPotential:
    """The hand-marginalised potential of ``persona_model(personas, num_docs, doc_len, **same kwargs)``."""
    if evidence not in EVIDENCE_MODELS:
        raise InputError(f"unknown evidence model {evidence!r}; choose one of {', '.join(EVIDENCE_MODELS)}")
    if subsample_size:
        raise InputError("NUTS needs every document: subsample_size is an SVI option")
    if counts is None:
        if tokens is None:
            raise InputError("MCMC needs evidence: pass tokens (and optionally mask) or counts")
        mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
        counts = count_transitions(Evidence(tokens, mask), personas.vocab_size, personas.order)
    if evidence == "global" and alpha is not None:
        raise InputError("alpha (uncertain persona weights) belongs to the mixture model; the global model uses the prior pi")
    return MarginalPotential(personas, counts, evidence, beta, alpha, table_prior)
