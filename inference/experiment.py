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
import functools
import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inference import compare, diagnostics, projection
from inference.attribution import attribute
from inference.baselines import ngram_logprobs, ngram_table
from inference.condition import condition
from inference.config import ArmConfig, ExperimentConfig, WorldConfig
from inference.finetune import finetune, prequential_code_length, pretrain, train_from_scratch
from models.counts import Evidence, count_transitions, make_evidence
from models.errors import InputError
from models.lm_checkpoint import load_checkpoint
from models.mixture import simulate_corpus
from models.personas import MarkovPersonas, random_personas
from models.transformer import PersonaLM, TransformerConfig, next_token_logprobs, sample_completions

#: the base checkpoint shipped for the default world (``psm pretrain`` regenerates it)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "data" / "base_default"
#: world fields that do not change what the base was trained on
HELDOUT_FIELDS = ("heldout_contexts",)


def single_thread(fn):
    """Run ``fn`` with one intra-op torch thread (restored after).

    The models here are small: on 2 cores a second thread costs more in
    synchronisation than it gives (measured up to 20x slower fine-tuning on a busy
    machine). Set ``PSM_THREADS`` to use more.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(int(os.environ.get("PSM_THREADS", "1")))
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper


@dataclass(frozen=True)
class World:
    """A simulated persona world and its held-out contexts."""

    config: WorldConfig
    personas: MarkovPersonas
    heldout: Tensor  # [n, T] contexts drawn from the persona mixture


@dataclass
class Base:
    """The pre-trained base and what every arm compares against."""

    model: PersonaLM
    q0: Tensor  # [n, T, V] next-token log-probs on the held-out contexts
    components_true: Tensor  # [K, n, T, V] the true personas on the held-out contexts
    components_self: Tensor  # [K, n, T, V] the base prompted with each persona tag
    floor_true: projection.Projection
    floor_self: projection.Projection
    summary: dict[str, Any]


@dataclass
class ArmResult:
    """One arm's summary (``summary.json``) and the arrays behind its figures."""

    summary: dict[str, Any]
    curves: dict[str, Any] = field(default_factory=dict)
    idata: dict[str, Any] = field(default_factory=dict)


def make_world(config: WorldConfig) -> World:
    """Persona tables and held-out contexts of a world (both from ``config.seed``)."""
    personas = random_personas(config.num_personas, config.vocab_size, config.order, config.concentration, seed=config.seed)
    heldout, _ = simulate_corpus(personas, config.heldout_contexts, config.doc_len, seed=config.seed + 1)
    return World(config, personas, heldout)


def model_config(config: ExperimentConfig) -> TransformerConfig:
    """The transformer sizes of an experiment (room for BOS, a tag and a whole document)."""
    w, b = config.world, config.base
    return TransformerConfig(vocab_size=w.vocab_size, num_personas=w.num_personas, block_size=w.doc_len + 2,
                             n_layer=b.n_layer, n_head=b.n_head, n_embd=b.n_embd)


@single_thread
def pretrain_base(config: ExperimentConfig, world: World, progress: bool = False, **checkpoints: Any) -> PersonaLM:
    """Pre-train the base on a fresh corpus of the world, with persona tags (DESIGN.md §3.2).

    ``checkpoints``: ``checkpoint_dir``, ``checkpoint_every``, ``resume`` of :func:`~inference.finetune.pretrain`.
    """
    w, b = config.world, config.base
    tokens, persona = simulate_corpus(world.personas, w.corpus_docs, w.doc_len, seed=w.seed + 2)
    model, _ = pretrain(model_config(config), tokens, persona, p_tag=b.p_tag, steps=b.steps,
                        batch_size=b.batch_size, lr=b.lr, seed=config.seed, progress=progress, **checkpoints)
    return model


def load_base(config: ExperimentConfig, world: World, progress: bool = False) -> PersonaLM:
    """The base model: the configured checkpoint, or pre-trained now when none is set."""
    if not config.base.checkpoint:
        return pretrain_base(config, world, progress)
    path = DEFAULT_CHECKPOINT if config.base.checkpoint == "default" else Path(config.base.checkpoint)
    model = load_checkpoint(path)
    world_file = path / "world.json"
    if world_file.is_file():
        trained_on = {k: v for k, v in json.loads(world_file.read_text()).items() if k not in HELDOUT_FIELDS}
        if trained_on != {k: v for k, v in dataclasses.asdict(config.world).items() if k not in HELDOUT_FIELDS}:
            raise InputError(f"{path}: the base checkpoint was trained on another world ({world_file}); "
                             "set base.checkpoint = \"\" to pre-train one for this world")
    if model.config != model_config(config):
        raise InputError(f"{path}: checkpoint sizes {model.config} do not match [base]/[world] of the config")
    return model


@single_thread
def measure_base(model: PersonaLM, world: World) -> Base:
    """Held-out NLL against Bayes, the components of both reachable sets, and the floors."""
    personas, heldout = world.personas, world.heldout
    q0 = next_token_logprobs(model, heldout)  # [n, T, V]
    components_true = compare.persona_logprobs(personas, heldout)  # [K, n, T, V]
    components_self = torch.stack([next_token_logprobs(model, heldout, tag=h) for h in range(personas.num_personas)])
    bayes = compare.mixture_logprobs(components_true, heldout, personas.prior.log())  # [n, T, V]
    floor_true = projection.projection_floor(q0, components_true, heldout, init=personas.prior)
    floor_self = projection.projection_floor(q0, components_self, heldout, init=personas.prior)
    summary = {
        "heldout_nll": _nll(q0, heldout),
        "bayes_optimal_nll": _nll(bayes, heldout),
        "floor_true": floor_true.residual,
        "floor_self": floor_self.residual,
        "projection_weights_true": floor_true.weights.tolist(),
        "projection_weights_self": floor_self.weights.tolist(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return Base(model, q0, components_true, components_self, floor_true, floor_self, summary)


def arm_persona(world: World, arm: ArmConfig, seed: int) -> tuple[MarkovPersonas, int | None]:
    """The persona that writes an arm's evidence: a known one, or a fresh one outside the support."""
    if arm.persona == "novel":
        w = world.config
        novel = random_personas(1, w.vocab_size, w.order, arm.concentration, seed=child_seed(seed, "novel", arm.name))
        return novel, None
    return world.personas.subset([arm.persona]), int(arm.persona)


def arm_evidence(writer: MarkovPersonas, arm: ArmConfig, num_docs: int, seed: int) -> Evidence:
    """Documents of the arm's persona; tokens before ``prompt_len`` are context, not evidence."""
    tokens, _ = simulate_corpus(writer, num_docs, arm.doc_len, seed=seed)
    mask = torch.arange(arm.doc_len).expand(num_docs, -1) >= arm.prompt_len
    return make_evidence(tokens.numpy(), mask.numpy())


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
    """Run every arm; returns ``(summary, arms, base)`` without writing anything (see :mod:`inference.report`)."""
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

    components = compare.persona_logprobs(world.personas, tokens)
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
    pointwise = {name: _doc_logpdf(logp, fresh)[None] for name, logp in candidates.items()}  # [1, N] each
    elpd = {name: compare.heldout_elpd(draws)[0] for name, draws in pointwise.items()}
    return elpd, diagnostics.elpd_table(pointwise)


def _doc_logpdf(logp: Tensor, evidence: Evidence) -> Tensor:
    """``[N]`` summed log-probability of each document's evidence tokens."""
    picked = logp.gather(-1, evidence.tokens.unsqueeze(-1)).squeeze(-1)  # [N, T]
    return (picked * evidence.mask).sum(-1)


def _nll(logp: Tensor, tokens: Tensor) -> float:
    return float(-logp.gather(-1, tokens.unsqueeze(-1)).mean())


def _posterior_at(posteriors: dict, beta: float) -> list[float]:
    return posteriors[_nearest(list(posteriors), beta)].weights.tolist()


def _nearest(values, target: float) -> float:
    return min(values, key=lambda v: abs(v - target))


def child_seed(seed: int, *names: Any) -> int:
    """The seed of one named random choice of the runner, e.g. ``child_seed(seed, "evidence", arm.name)``.

    Stable across processes (a CRC of the names, not Python's salted ``hash``), so a
    notebook can rebuild exactly the evidence an arm used.
    """
    return (seed * 1_000_003 + zlib.crc32(repr(names).encode())) % 2**31
