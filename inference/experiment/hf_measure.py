"""Every comparison that exists for a real LM, on its held-out contexts (``psm run`` kind ``hf``).

The reachable set is ``R_self`` only: the base model prompted with each persona's text. On real
text there is no ``R_true`` (the writers are not known as distributions), no Bayes-optimal model
and no exact conditioning of the process that wrote the text; conditioning is that of the base
model's own persona mixture (:func:`inference.comparison.self_reachable.conditioned_log_weights`).
Every next-token distribution is coarsened onto the kept vocabulary of
:func:`~inference.comparison.self_reachable.comparison_vocabulary`; the context tokens are columns
of their own, so NLLs and the in-context updates are exact.

* :func:`measure_hf_base`: the vocabulary, ``q0``, the ``R_self`` components, the base's projection
  (the floor ``r(0)`` and ``w0``), the evidence's likelihood under each persona and the conditioned
  predictives ``p_D,beta``;
* :func:`compare_hf_snapshots`: per snapshot, the KL to the base (coarsened and full-vocabulary),
  to the conditioned predictive (``beta*``), the projection, the decomposition with its interval;
* :func:`hf_mechanisms`: the last snapshot's decomposition by context and position, forgetting and
  the in-context updating strength.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inference.comparison import kl as compare
from inference.comparison import mechanisms, projection
from inference.comparison.decomposition import Decomposition, decomposition_interval, fit
from inference.comparison.self_reachable import (
    comparison_vocabulary,
    conditioned_log_weights,
    evidence_loglik,
    full_kl,
    rest_mass,
)
from inference.comparison.tilt import Tilt
from inference.experiment.world import child_seed
from models.base_model import LanguageModel, Vocabulary, persona_components
from models.counts import Evidence
from models.predictive import mixture_logprobs


@dataclass
class HFBase:
    """The base model on the held-out contexts, and what every snapshot is compared with."""

    model: LanguageModel
    vocabulary: Vocabulary
    contexts: Tensor  # [n, T] held-out token ids
    columns: Tensor  # [n, T] their columns in the coarsened distributions
    q0: Tensor  # [n, T, W]
    components: Tensor  # [K, n, T, W] R_self
    floor: projection.Projection
    evidence_loglik: Tensor  # [K] log p(D | h)
    conditioned_log_weights: dict[float, Tensor]  # beta -> [K] log pi_beta(h | D)
    conditioned: dict[float, Tensor]  # beta -> [n, T, W] p_D,beta
    summary: dict[str, Any] = field(default_factory=dict)


def measure_hf_base(model: LanguageModel, contexts: Tensor, evidence: Evidence, c) -> HFBase:
    """Everything of the base that the snapshots are compared with (module docstring)."""
    vocabulary = comparison_vocabulary(model, contexts, c.max_vocab)
    columns = vocabulary.index(contexts)  # [n, T]
    q0 = model.next_token_logprobs(contexts, vocabulary=vocabulary)  # [n, T, W]
    components = persona_components(model, contexts, vocabulary=vocabulary)  # [K, n, T, W]
    K = components.shape[0]
    floor = projection.projection_floor(q0, components, columns, init=torch.full((K,), 1.0 / K), restarts=1)
    loglik = evidence_loglik(model, evidence)  # [K]
    weights = conditioned_log_weights(floor.weights.clamp(min=1e-300).log(), loglik, c.betas)
    conditioned = {b: mixture_logprobs(components, columns, log_w) for b, log_w in weights.items()}
    summary = {
        "heldout_nll": _nll(q0, columns),
        "floor_self": floor.residual,
        "projection_weights_self": floor.weights.tolist(),
        "evidence_loglik_per_token": (loglik / max(1, int(evidence.mask.sum()))).tolist(),
        "vocabulary": {"size": model.vocab_size, "kept": int(vocabulary.keep.numel()),
                       "rest_column": not vocabulary.full, "rest_mass_base": rest_mass(q0, vocabulary)},
    }
    return HFBase(model, vocabulary, contexts, columns, q0, components, floor, loglik, weights, conditioned, summary)


@dataclass
class HFSnapshots:
    """Per-snapshot numbers (lists over the snapshots) and the fitted objects behind them."""

    steps: list[int]
    q: dict[int, Tensor] = field(default_factory=dict)
    kl_to_base: list[float] = field(default_factory=list)
    kl_to_base_full: list[float] = field(default_factory=list)
    kl_by_beta: list[list[float]] = field(default_factory=list)
    beta_star: list[float] = field(default_factory=list)
    rest: list[dict[str, float]] = field(default_factory=list)
    projections: list[projection.Projection] = field(default_factory=list)
    decompositions: list[Decomposition] = field(default_factory=list)
    intervals: list[list[float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The per-snapshot fields of the arm's entry in ``summary.json`` (names as in ``psm run``)."""
        decs = self.decompositions
        return {
            "steps": self.steps, "kl_to_base": self.kl_to_base, "kl_to_base_full_vocab": self.kl_to_base_full,
            "beta_star": self.beta_star, "rest_mass": self.rest,
            "projection_weights_self": [p.weights.tolist() for p in self.projections],
            "residual_self": [p.residual for p in self.projections],
            "exhaustiveness_self": [d.exhaustiveness for d in decs], "exhaustiveness_ci_self": self.intervals,
            "decomposition_self": {
                "total": [d.total for d in decs], "reweighting": [d.reweighting for d in decs],
                "other": [d.other for d in decs], "theta": [d.theta for d in decs],
                "weights": [d.weights.tolist() for d in decs], "reason": [d.reason for d in decs],
                "identity_gap": [d.identity_gap for d in decs],
            },
        }


def compare_hf_snapshots(snapshots: dict[int, LanguageModel], base: HFBase, c, seed: int,
                         progress: bool = False) -> HFSnapshots:
    """Measure every snapshot (step > 0) against the base (module docstring)."""
    out = HFSnapshots(steps=sorted(snapshots))
    betas = sorted(base.conditioned)
    for s in tqdm(out.steps, desc="comparisons (hf)", disable=not progress):
        q = snapshots[s].next_token_logprobs(base.contexts, vocabulary=base.vocabulary)  # [n, T, W]
        out.q[s] = q
        out.kl_to_base.append(compare.mean_kl(q, base.q0))
        out.kl_to_base_full.append(full_kl(snapshots[s], base.model, base.contexts))
        kls = compare.kl_by_beta(q, base.conditioned)
        out.kl_by_beta.append([kls[b] for b in betas])
        out.beta_star.append(compare.beta_star(betas, out.kl_by_beta[-1]))
        out.rest.append(rest_mass(q, base.vocabulary))
        previous = out.projections[-1].weights if out.projections else base.floor.weights
        proj = projection.project(q, base.components, base.columns, init=previous)
        tilt = Tilt(q, base.q0, base.components, base.columns, base.floor.weights)
        dec = fit(tilt, init=proj.weights, restarts=c.decomposition_restarts)
        interval = decomposition_interval(tilt, dec, num_boot=c.bootstrap, refit=c.bootstrap_refit,
                                          seed=child_seed(seed, "boot", "hf", s))
        out.projections.append(proj)
        out.decompositions.append(dec)
        out.intervals.append(list(interval))
    return out


def hf_mechanisms(base: HFBase, snaps: HFSnapshots, writer: Tensor, evidence_persona: int | None) -> dict[str, Any]:
    """The last snapshot's decomposition by context and position, forgetting, in-context ``gamma``.

    ``writer`` is ``[n]`` the persona index of each context's writer, ``-1`` when not a persona:
    such a context counts among the "other" contexts (never as the evidence persona's).
    """
    final = snaps.q[snaps.steps[-1]]
    writer = torch.where(writer < 0, torch.full_like(writer, -2), writer)  # -1 means "no evidence persona" below
    strength = mechanisms.in_context_strength(final, base.components, base.columns,
                                              init=snaps.projections[-1].weights)
    return {
        "decomposition_by_context": {"self": mechanisms.split_by_context(snaps.decompositions[-1], writer,
                                                                         evidence_persona)},
        "forgetting": mechanisms.forgetting(base.q0, final, base.columns, writer, evidence_persona),
        "in_context_gamma": {"self": {"gamma": strength.gamma, "kl": strength.kl, "kl_at_gamma_1": strength.kl_at_one,
                                      "weights": strength.weights.tolist()}},
    }


def mixture_doc_loglik(model: LanguageModel, evidence: Evidence, log_w: Tensor) -> Tensor:
    """``[D]`` log-likelihood of each document's masked-in tokens under the in-context persona mixture
    with prior ``log_w``: ``log sum_h w_h p(c, y | h) - log sum_h w_h p(c | h)`` (``c`` the masked-out tokens)."""
    K = len(model.persona_names)
    every = torch.ones_like(evidence.mask)
    whole = torch.stack([model.context_loglik(evidence.tokens, h, every) for h in range(K)])  # [K, D]
    context = torch.stack([model.context_loglik(evidence.tokens, h, ~evidence.mask) for h in range(K)])  # [K, D]
    log_w = log_w[:, None]
    return torch.logsumexp(log_w + whole, 0) - torch.logsumexp(log_w + context, 0)


def _nll(logp: Tensor, columns: Tensor) -> float:
    return float(-logp.gather(-1, columns.unsqueeze(-1)).mean())
