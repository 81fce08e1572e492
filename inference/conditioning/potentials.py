"""The hand-marginalised NUTS potentials (``potential="marginal"``), with analytic gradients.

NUTS needs ``U = -log p(latents, D)`` and its gradient on the unconstrained
scale, with the discrete persona summed out. Every latent here is a set of
Dirichlet rows on Pyro's own stick-breaking scale, computed in log space, so the
potentials equal Pyro's enumerated ones and from one seed both draw the same
chain up to rounding (``tests/inference/conditioning/test_mcmc.py`` checks values
and gradients against Pyro's).

The gradient is written out, not traced: a potential computes its value and its
gradient in one NumPy pass (the evidence term's gradient in the log simplex
points, then back through the stick breaking, :mod:`inference.conditioning.gradients`)
and :class:`_WithGradient` hands both to autograd as one node. On the NUTS
benchmark a potential-and-gradient call fell from about 620 to 250 microseconds
(``benchmarks/bench_nuts.py``; the rest of a NUTS step is Pyro's).

* :class:`MarginalPotential`: :func:`models.mixture.persona_model` (built by
  :func:`persona_potential`); the per-document, per-persona log-likelihoods
  ``L [D, K]`` are one sparse product of the ``[D, F]`` counts with the log tables
  (computed once when the tables are known, DESIGN.md §6).
* :class:`WeightsPotential`: the attribution model (known ``[D, K]`` log-likelihoods).
"""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from scipy import sparse
from torch import Tensor

from inference.conditioning.gradients import MixtureTerm, StickBreaking, mixture_grad
from models.counts import Evidence, TransitionCounts, count_transitions
from models.errors import InputError
from models.limits import EVIDENCE_MODELS
from models.personas import MarkovPersonas, TablePrior


def _numpy(x: Tensor) -> np.ndarray:
    x = x.detach()
    return (x if x.dtype == torch.float64 else x.double()).numpy()


def _tensor(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    t = torch.from_numpy(np.asarray(a))  # shares memory: cheaper than torch.tensor
    return t if t.dtype == dtype else t.to(dtype)


class _WithGradient(torch.autograd.Function):
    """A potential whose value and gradient were computed together (NumPy): one autograd node."""

    @staticmethod
    def forward(ctx, potential: DirichletPotential, *values: Tensor) -> Tensor:
        value, grads = potential.value_and_grad({name: _numpy(v) for name, v in zip(potential.sticks, values, strict=True)})
        ctx.save_for_backward(*(_tensor(g, v.dtype) for g, v in zip(grads, values, strict=True)))
        return _tensor(value, values[0].dtype)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        return (None, *(grad_output * g for g in ctx.saved_tensors))


class DirichletPotential:
    """Shared part of the hand-written potentials: Dirichlet latents on Pyro's stick-breaking scale.

    Calling the potential on a dict of unconstrained tensors returns ``U`` (0-dim) whose
    gradient autograd takes from :meth:`value_and_grad`. Subclasses define :meth:`evidence`.

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
        self.sticks = {name: StickBreaking(conc.shape[-1]) for name, conc in concentrations.items()}
        self.exponents = {name: _numpy(conc) - 1 for name, conc in concentrations.items()}  # Dirichlet a - 1
        self.log_norm = sum(
            float((torch.lgamma(a).sum(-1) - torch.lgamma(a.sum(-1))).sum()) for a in concentrations.values()
        )  # sum of log B(a) over every Dirichlet row

    def __call__(self, z: dict[str, Tensor]) -> Tensor:
        return _WithGradient.apply(self, *(z[name] for name in self.sticks))

    def evidence(self, logs: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        """Log marginal likelihood given the log simplex points, and its gradient in each of them."""
        raise NotImplementedError

    def persona_logits(self, samples: dict[str, np.ndarray]) -> np.ndarray:
        """Unnormalised log posterior of the summed-out persona given each of ``N`` draws of the
        latents (constrained): ``[N, D, K]`` (one persona per document) or ``[N, K]``."""
        raise NotImplementedError

    def sample_personas(self, samples: dict[str, Tensor], chunk: int = 256) -> Tensor:
        """A draw of the summed-out persona for each draw of the latents (``[N, ...]`` each), from
        torch's global RNG: what ``infer_discrete`` (temperature 1) draws, without tracing the model."""
        flat = {name: _numpy(v) for name, v in samples.items()}
        num = len(next(iter(flat.values())))
        with np.errstate(divide="ignore"):  # a weight or table entry of exactly 0: log 0 = -inf
            draws = [torch.distributions.Categorical(logits=torch.from_numpy(
                self.persona_logits({k: v[lo : lo + chunk] for k, v in flat.items()}))).sample()
                for lo in range(0, num, chunk)]
        return torch.cat(draws)

    def value_and_grad(self, z: dict[str, np.ndarray]) -> tuple[float, list[np.ndarray]]:
        """``U(z)`` and its gradient in every latent (in ``concentrations`` order)."""
        log_joint, logs, saved = -self.log_norm, {}, {}
        for name, stick in self.sticks.items():
            logs[name], log_det, saved[name] = stick.forward(z[name])  # [..., n] log simplex points
            log_joint += float(np.vdot(self.exponents[name], logs[name])) + log_det
        value, d_logs = self.evidence(logs)
        grads = [-stick.grad(saved[name], self.exponents[name] + d_logs[name] if name in d_logs
                             else self.exponents[name]) for name, stick in self.sticks.items()]
        return -(log_joint + value), grads

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
    out by hand, as a function of the unconstrained latents (``w``; ``init``/``trans`` when the
    tables are uncertain).
    """

    def __init__(self, personas: MarkovPersonas, counts: TransitionCounts, evidence: str, beta: float,
                 alpha: Tensor | None, table_prior: TablePrior | None):
        self.personas, self.counts, self.evidence_model, self.beta = personas, counts, evidence, float(beta)
        concentrations: dict[str, Tensor] = {}
        if evidence == "mixture" and alpha is not None:
            concentrations["w"] = alpha  # [K]
        if table_prior is not None:
            concentrations["init"] = table_prior.init  # [K, V]
            concentrations["trans"] = table_prior.trans  # [K, C, V]
        super().__init__(concentrations)
        self.dense_counts = sparse.csr_matrix(  # [D, F]
            (_numpy(counts.count), (counts.doc.numpy(), counts.feature.numpy())),
            shape=(counts.num_docs, counts.num_features))
        self.dense_counts_t = self.dense_counts.T.tocsr()  # [F, D]
        totals = _numpy(counts.totals())  # [F]
        self.seen = np.flatnonzero(totals)  # [F'] features with evidence
        self.totals = totals[self.seen]  # [F']
        self.log_prior_h = _numpy(personas.prior.log())  # [K]
        # known tables: the per-document log-likelihoods never change
        self.fixed = None if table_prior is not None else MixtureTerm(self._doc_loglik(_numpy(personas.log_table())))

    def _doc_loglik(self, log_table: np.ndarray) -> np.ndarray:
        """``[D, K]`` tempered log-likelihood of every document under every persona."""
        if self.beta == 0:
            return np.zeros((self.counts.num_docs, log_table.shape[0]))
        return self.beta * (self.dense_counts @ log_table.T)  # [D, K]

    def _table_grad(self, d_table: np.ndarray) -> dict[str, np.ndarray]:
        """Split a ``[K, F]`` gradient in the flat log tables into ``init`` ``[K, V]`` and ``trans`` ``[K, C, V]``."""
        V = self.exponents["init"].shape[-1]
        return {"init": d_table[:, :V], "trans": d_table[:, V:].reshape(self.exponents["trans"].shape)}

    def persona_logits(self, samples: dict[str, np.ndarray]) -> np.ndarray:
        log_w = np.log(samples["w"])[:, None, :] if "w" in samples else self.log_prior_h  # [N, 1, K] or [K]
        if self.fixed is not None:
            return log_w + self.fixed.loglik  # [N, D, K]
        N, K = len(samples["init"]), self.log_prior_h.shape[0]
        log_table = np.log(np.concatenate([samples["init"], samples["trans"].reshape(N, K, -1)], -1))  # [N, K, F]
        if self.evidence_model == "global":
            return self.log_prior_h + self.beta * (log_table[..., self.seen] @ self.totals)  # [N, K]
        L = self._doc_loglik(log_table.reshape(N * K, -1)).reshape(-1, N, K).transpose(1, 0, 2)  # [N, D, K]
        return log_w + L

    def evidence(self, logs: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        if self.fixed is not None:  # known tables: a mixture over the precomputed [D, K] log-likelihoods
            value, d_log_w = self.fixed(logs["w"])
            return value, {"w": d_log_w}
        K = self.log_prior_h.shape[0]
        log_table = np.concatenate([logs["init"], logs["trans"].reshape(K, -1)], -1)  # [K, F]
        d_table = np.zeros_like(log_table)  # [K, F]
        if self.evidence_model == "global":  # one persona for all documents: only the totals matter
            value, post = mixture_grad(self.log_prior_h + self.beta * (log_table[:, self.seen] @ self.totals), 0)
            d_table[:, self.seen] = self.beta * post[:, None] * self.totals  # [K, F']
            return value, self._table_grad(d_table)
        log_w = logs["w"] if "w" in logs else self.log_prior_h  # [K]
        value, resp = mixture_grad(log_w + self._doc_loglik(log_table), -1)  # [D, K] responsibilities
        if self.beta != 0:
            d_table = self.beta * (self.dense_counts_t @ resp).T  # [K, F]
        grads = self._table_grad(d_table)
        if "w" in logs:
            grads["w"] = resp.sum(0)
        return value, grads


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
        joint = doc_loglik if prompt_loglik is None else prompt_loglik + doc_loglik  # [D, K]
        self.joint = MixtureTerm(_numpy(joint))
        self.prompt = None if prompt_loglik is None else MixtureTerm(_numpy(prompt_loglik))

    def persona_logits(self, samples: dict[str, np.ndarray]) -> np.ndarray:
        return np.log(samples["w"])[:, None, :] + self.joint.loglik  # [N, D, K]: log w + P_d + L_d

    def evidence(self, logs: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        value, d_log_w = self.joint(logs["w"])
        if self.prompt is not None:
            prompt, d_prompt = self.prompt(logs["w"])
            value, d_log_w = value - prompt, d_log_w - d_prompt
        return value, {"w": d_log_w}


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
