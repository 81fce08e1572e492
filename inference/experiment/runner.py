"""The main job: does fine-tuning act like conditioning? (``psm run``, ``psm demo``)

For one simulated persona world the runner

1. builds (or loads) the base transformer ``q0``, pre-trained with persona tags;
2. for each evidence arm, fine-tunes ``q0`` on the arm's evidence and keeps snapshots ``q_s``;
3. conditions the true persona model on the same evidence (exact, a grid of ``beta``);
4. measures everything of DESIGN.md §3 on held-out contexts: KL to the base and to the
   conditioned predictive (and ``beta*(s)``), the projection onto ``R_true`` and
   ``R_self``, exhaustiveness with a bootstrap interval, Bayesian persona attribution
   of the final snapshot (NUTS), held-out ELPD of every candidate on fresh evidence, and
   the description length of the evidence;
5. writes ``summary.json``, ``report.md`` with its figures, and the InferenceData files.

Seeds: the world (persona tables, corpus, held-out contexts) comes from
``world.seed``; evidence, training and inference from the top-level ``seed``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inference import diagnostics
from inference.comparison import kl as compare
from inference.comparison import projection
from inference.comparison.attribution import attribute
from inference.comparison.elpd import heldout_elpd
from inference.conditioning.condition import condition
from inference.experiment.config import ArmConfig, ExperimentConfig
from inference.experiment.world import (
    Base,
    World,
    arm_evidence,
    arm_persona,
    child_seed,
    load_base,
    make_world,
    measure_base,
)
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
    heldout = world.heldout

    tuned = finetune(base.model, evidence, method=f.method, steps=f.steps, lr=f.lr, batch_size=f.batch_size,
                     snapshot_steps=list(f.snapshots), rank=f.rank, k=f.k, seed=seed, progress=progress)
    steps = [s for s in f.snapshots if s > 0]
    q = {s: next_token_logprobs(tuned.snapshots[s], heldout) for s in steps}  # each [n, T, V]

    posteriors = {b: condition(world.personas, evidence, model="global", method="exact", beta=b, seed=seed)
                  for b in c.betas}
    conditioned = {b: post.predictive(heldout) for b, post in posteriors.items()}

    kl_to_base, beta_star, kl_by_beta, proj_true, proj_self = [], [], [], [], []
    init_true, init_self = base.floor_true.weights, base.floor_self.weights
    for s in tqdm(steps, desc=f"compare {arm.name}", disable=not progress):
        kl_to_base.append(compare.mean_kl(q[s], base.q0))
        kls = compare.kl_by_beta(q[s], conditioned)
        kl_by_beta.append([kls[b] for b in c.betas])
        beta_star.append(compare.beta_star(list(c.betas), kl_by_beta[-1]))
        proj_true.append(projection.project(q[s], base.components_true, heldout, init=init_true))
        proj_self.append(projection.project(q[s], base.components_self, heldout, init=init_self))
        init_true, init_self = proj_true[-1].weights, proj_self[-1].weights

    def exhaustive(projs: list[projection.Projection], floor: projection.Projection):
        values, intervals = [], []
        for i, (s, p) in enumerate(zip(steps, projs, strict=True)):
            values.append(projection.exhaustiveness(kl_to_base[i], p.residual, floor.residual))
            per_ctx = compare.kl_per_context(q[s], base.q0)
            intervals.append(list(projection.exhaustiveness_interval(
                per_ctx, p.kl_per_context, floor.kl_per_context, positions=p.positions,
                num_boot=c.bootstrap, seed=child_seed(seed, "boot", arm.name, s))))
        return values, intervals

    e_true, ci_true = exhaustive(proj_true, base.floor_true)
    e_self, ci_self = exhaustive(proj_self, base.floor_self)

    final = tuned.snapshots[steps[-1]]
    attribution = _attribute(final, world, c, child_seed(seed, "attribution", arm.name), progress)
    elpd, elpd_table = _heldout_elpd(config, world, base, final, evidence, fresh, posteriors, progress)
    code = prequential_code_length(
        base.model, evidence, method=f.method, lr=f.lr, steps=f.prequential_steps, batch_size=f.batch_size,
        block_size_docs=max(1, -(-arm.num_docs // f.prequential_blocks)), rank=f.rank, k=f.k, seed=seed)

    summary = {
        "arm": arm.name,
        "evidence_persona": persona_index,
        "evidence_tokens": evidence.num_tokens,
        "steps": steps,
        "kl_to_base": kl_to_base,
        "beta_star": beta_star,
        "projection_weights_true": [p.weights.tolist() for p in proj_true],
        "projection_weights_self": [p.weights.tolist() for p in proj_self],
        "residual_true": [p.residual for p in proj_true],
        "residual_self": [p.residual for p in proj_self],
        "exhaustiveness_true": e_true,
        "exhaustiveness_self": e_self,
        "exhaustiveness_ci_true": ci_true,
        "exhaustiveness_ci_self": ci_self,
        "posterior_weights_beta1": _posterior_at(posteriors, 1.0),
        "attribution": {"weights_mean": attribution.weights_mean.tolist(), "r_hat_max": attribution.r_hat_max,
                        "ess_min": attribution.ess_min},
        "heldout_elpd": elpd,
        "description_length_nats": code.description_length,
        "prequential_code_nats": code.code_length,
    }
    examples = heldout[:3]
    curves = {
        "kl_by_beta": kl_by_beta,
        "betas": list(c.betas),
        "kl_to_conditioned_beta1": [compare.mean_kl(q[s], conditioned[_nearest(c.betas, 1.0)]) for s in steps],
        "next_token": {
            "contexts": examples,
            "base": base.q0[:3],
            "finetuned": q[steps[-1]][:3],
            "conditioned": posteriors[_nearest(c.betas, beta_star[-1])].predictive(examples),
            "beta": _nearest(c.betas, beta_star[-1]),
        },
        "elpd_table": elpd_table,
        "finetune_losses": tuned.losses.tolist(),
    }
    idata = {f"{arm.name}_posterior_beta1.nc": posteriors[_nearest(c.betas, 1.0)].to_arviz(),
             f"{arm.name}_attribution.nc": attribution.idata}
    return ArmResult(summary, curves, idata)


@single_thread
def run_experiment(config: ExperimentConfig, progress: bool = True, base_model: PersonaLM | None = None):
    """Run every arm; returns ``(summary, arms, base)`` without writing anything (see :mod:`inference.experiment.report`)."""
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    world = make_world(config.world)
    model = base_model if base_model is not None else load_base(config, world, progress)
    base = measure_base(model, world)
    arms = [run_arm(config, world, base, arm, progress) for arm in config.arms]
    summary = {
        "world": dataclasses.asdict(config.world),
        "config": config.to_dict(),
        "base": base.summary,
        "arms": [a.summary for a in arms],
        "timing": {"seconds": time.perf_counter() - start},
    }
    return summary, arms, base


def _attribute(model: PersonaLM, world: World, c, seed: int, progress: bool):
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


def _heldout_elpd(config, world, base, final, evidence, fresh, posteriors, progress):
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


def _posterior_at(posteriors: dict, beta: float) -> list[float]:
    return posteriors[_nearest(list(posteriors), beta)].weights.tolist()


def _nearest(values, target: float) -> float:
    return min(values, key=lambda v: abs(v - target))


# ----------------------------------------------------------------------------- the kind protocol


def load(raw: dict[str, Any], folder) -> ExperimentConfig:
    """``kind = "personas"`` (:mod:`inference.experiment.kinds`): validate a parsed config."""
    from inference.experiment.config import config_from_dict, resolve_paths

    return resolve_paths(config_from_dict(raw), folder)


def run_and_write(config: ExperimentConfig, out, *, overwrite: bool = False, progress: bool = True) -> str:
    """Run every arm, write the outputs into ``out``, and return the closing lines of ``psm run``."""
    from inference.experiment.report import write_experiment

    summary, arms, _ = run_experiment(config, progress=progress)
    names = write_experiment(summary, arms, out, overwrite=overwrite)
    lines = [f"ran {len(arms)} arm(s) ({', '.join(a.summary['arm'] for a in arms)}) with seed {config.seed} "
             f"in {summary['timing']['seconds']:.1f} s; wrote {len(names)} files to {out}/:",
             f"  {out}/summary.json  (every number)", f"  {out}/report.md  (findings and figures)"]
    for arm in summary["arms"]:
        lines.append(f"  arm {arm['arm']}: E_true={_short(arm['exhaustiveness_true'][-1])}, "
                     f"E_self={_short(arm['exhaustiveness_self'][-1])}, beta*={_short(arm['beta_star'][-1])}")
    return "\n".join(lines)


def _short(x) -> str:
    return "undefined" if x is None or x != x else f"{x:.3g}"
