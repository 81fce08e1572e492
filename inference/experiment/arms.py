"""One evidence arm: fine-tune the base on the arm's evidence and measure every comparison.

:func:`run_arm` fine-tunes (snapshots at the configured steps), conditions the true persona
model on the same evidence (exact, a grid of ``beta``), measures every snapshot
(:mod:`inference.experiment.snapshots`), explains the last one (mechanisms), attributes its
completions to personas by NUTS, scores every candidate on fresh evidence (held-out ELPD) and
measures the description length of the evidence. It returns an :class:`ArmResult`: the arm's
entry of ``summary.json``, the arrays behind its figures, and its InferenceData.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from inference import diagnostics
from inference.comparison import kl as compare
from inference.comparison.attribution import Attribution, attribute
from inference.comparison.elpd import heldout_elpd
from inference.conditioning.condition import condition
from inference.experiment.config import ArmConfig, ExperimentConfig
from inference.experiment.snapshots import compare_snapshots, final_mechanisms
from inference.experiment.world import Base, World, arm_evidence, arm_persona, child_seed
from inference.finetuning.baselines import ngram_logprobs, ngram_table, train_from_scratch
from inference.finetuning.prequential import prequential_code_length
from inference.finetuning.training import finetune
from inference.runtime import single_thread
from models.counts import Evidence, count_transitions
from models.predictive import persona_logprobs
from models.transformer import PersonaLM, next_token_logprobs, sample_completions


@dataclass
class ArmResult:
    """One arm's summary (``summary.json``) and the arrays behind its figures."""

    summary: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    idata: dict[str, Any] = field(default_factory=dict)


@single_thread
def run_arm(config: ExperimentConfig, world: World, base: Base, arm: ArmConfig, progress: bool = False) -> ArmResult:
    """Fine-tune on one arm's evidence and measure every comparison of DESIGN.md §3."""
    f, c, seed = config.finetune, config.compare, config.seed
    writer, persona_index = arm_persona(world, arm, seed)
    evidence = arm_evidence(writer, arm, arm.num_docs, child_seed(seed, "evidence", arm.name))
    fresh = arm_evidence(writer, arm, c.elpd_docs, child_seed(seed, "fresh", arm.name))
    tuned = finetune(base.model, evidence, method=f.method, steps=f.steps, lr=f.lr, batch_size=f.batch_size,
                     snapshot_steps=list(f.snapshots), rank=f.rank, k=f.k, seed=seed, progress=progress)
    steps = [s for s in f.snapshots if s > 0]
    q = {s: next_token_logprobs(tuned.snapshots[s], world.heldout) for s in steps}  # each [n, T, V]
    posteriors = {b: condition(world.personas, evidence, model="global", method="exact", beta=b, seed=seed)
                  for b in c.betas}
    conditioned = {b: post.predictive(world.heldout) for b, post in posteriors.items()}
    snaps = compare_snapshots(q, base, world, conditioned, c, seed, arm.name, progress)
    final = tuned.snapshots[steps[-1]]
    attribution = _attribute(final, world, c, child_seed(seed, "attribution", arm.name), progress)
    elpd, elpd_table = _heldout_elpd(config, world, base, final, evidence, fresh, posteriors, progress)
    code = prequential_code_length(
        base.model, evidence, method=f.method, lr=f.lr, steps=f.prequential_steps, batch_size=f.batch_size,
        block_size_docs=max(1, -(-arm.num_docs // f.prequential_blocks)), rank=f.rank, k=f.k, seed=seed,
        progress=progress)
    summary = {
        "arm": arm.name, "evidence_persona": persona_index, "evidence_tokens": evidence.num_tokens, "steps": steps,
        **snaps.summary(),
        **final_mechanisms(q[steps[-1]], base, world, snaps, persona_index),
        "posterior_weights_beta1": posteriors[_nearest(c.betas, 1.0)].weights.tolist(),
        "attribution": _attribution_summary(attribution),
        "heldout_elpd": elpd,
        "description_length_nats": code.description_length,
        "prequential_code_nats": code.code_length,
        "final_training_loss": float(tuned.losses[-1]),
    }
    near = _nearest(c.betas, snaps.beta_star[-1])
    curves = {
        "kl_by_beta": snaps.kl_by_beta, "betas": list(c.betas),
        "kl_to_conditioned_beta1": [compare.mean_kl(q[s], conditioned[_nearest(c.betas, 1.0)]) for s in steps],
        "next_token": {"contexts": world.heldout[:3], "base": base.q0[:3], "finetuned": q[steps[-1]][:3],
                       "conditioned": conditioned[near][:3], "beta": near},
        "elpd_table": elpd_table, "finetune_losses": tuned.losses.tolist(),
    }
    idata = {f"{arm.name}_posterior_beta1.nc": posteriors[_nearest(c.betas, 1.0)].to_arviz(seed=seed),
             f"{arm.name}_attribution.nc": attribution.idata}
    return ArmResult(summary, curves, idata)


def _attribution_summary(attribution: Attribution) -> dict[str, Any]:
    return {"weights_mean": attribution.weights_mean.tolist(), "r_hat_max": attribution.r_hat_max,
            "ess_min": attribution.ess_min}


def _attribute(model: PersonaLM, world: World, c, seed: int, progress: bool) -> Attribution:
    """NUTS attribution of a model's completions on held-out prompts to the true personas.

    Each prompt updates the persona weights in context (``w_h(c) ∝ w_h p(c | h)``), so the
    inferred ``w`` is comparable with the projection weights ``w*``.
    """
    prompts = world.heldout[: c.attribution_completions, : c.attribution_prompt_len]
    T, V, order = world.config.doc_len, world.config.vocab_size, world.config.order
    tokens = sample_completions(model, prompts, T - c.attribution_prompt_len, seed=seed)  # [m, T]
    completion = torch.arange(T).expand_as(tokens) >= c.attribution_prompt_len  # [m, T]
    log_table = world.personas.log_table()[:, None, :]  # [K, 1, F]

    def loglik(mask: Tensor) -> Tensor:  # [m, K]
        return count_transitions(Evidence(tokens, mask), V, order).loglik(log_table).T

    components = persona_logprobs(world.personas, tokens)
    return attribute(loglik(completion), 1.0, num_chains=c.attribution_chains, num_samples=c.attribution_samples,
                     warmup=c.attribution_warmup, seed=seed, progress=progress, components=components,
                     tokens=tokens, mask=completion, prompt_loglik=loglik(~completion))


def _heldout_elpd(config, world: World, base: Base, final: PersonaLM, evidence: Evidence, fresh: Evidence,
                  posteriors: dict, progress: bool):
    """Log predictive density of fresh evidence under every candidate (one value per document)."""
    f, V, order = config.finetune, world.config.vocab_size, world.config.order
    scratch = train_from_scratch(base.model.config, evidence, steps=f.scratch_steps, lr=3e-3,
                                 batch_size=f.batch_size, seed=config.seed, progress=progress)
    candidates = {f"conditioned_beta_{b:g}": post.predictive(fresh.tokens) for b, post in posteriors.items()}
    candidates |= {
        "base": next_token_logprobs(base.model, fresh.tokens),
        "finetuned": next_token_logprobs(final, fresh.tokens),
        "scratch": next_token_logprobs(scratch, fresh.tokens),
        "ngram": ngram_logprobs(ngram_table(evidence, V, order), fresh.tokens, V, order),
    }
    scored = {name: heldout_elpd(_doc_logpdf(logp, fresh)[None]) for name, logp in candidates.items()}  # one draw each
    elpd = {name: value[0] for name, value in scored.items()}
    return elpd, diagnostics.elpd_table({name: value[2] for name, value in scored.items()})


def _doc_logpdf(logp: Tensor, evidence: Evidence) -> Tensor:
    """``[N]`` summed log-probability of each document's evidence tokens."""
    picked = logp.gather(-1, evidence.tokens.unsqueeze(-1)).squeeze(-1)  # [N, T]
    return (picked * evidence.mask).sum(-1)


def _nearest(values, target: float) -> float:
    return min(values, key=lambda v: abs(v - target))
