"""Narrow evidence, broad shift, and inoculation (``kind = "narrow_to_broad"``, issue 11).

If fine-tuning conditions on a persona, evidence of a trait in one domain should shift behaviour in
every domain where that persona acts (emergent misalignment, Betley et al. 2025); evidence that
carries an explicit cause of the trait should shift it less (inoculation prompting, Tan et al. 2025;
Wichers et al. 2025). The experiment

1. draws a :class:`~models.domains.DomainWorld` (``[world]``) and pre-trains a base transformer on its
   corpus with persona tags (``[base]``, DESIGN.md §3.2);
2. draws the narrow evidence (``[evidence]``): ``num_docs`` documents of one domain, written by
   ``writer`` *with the cause tag*, so they show the trait. Two arms see the same content:
   ``plain`` with the plain slot (the cause hidden, as in Betley et al.'s data) and ``inoculated``
   with the cause tag in front; the tags are context, not evidence (SFT mask from position 2);
3. conditions the world exactly on each arm's evidence at every ``beta``
   (:func:`inference.conditioning.tagged.condition_tagged`) and fine-tunes the base on it
   (``[finetune]``, snapshots);
4. measures in every domain (``[measure]``), with the plain slot: the **trait rate** (share of marker
   tokens in a document's content) of the exact conditioned model at every ``beta`` (exact) and of
   the base and every snapshot (``samples`` sampled documents per domain, 90% bootstrap interval),
   the shift from the base, and, on held-out contexts of each domain, every comparison of
   :func:`inference.experiment.snapshots.compare_snapshots` (``E`` against ``R_true`` and
   ``R_self`` with bootstrap intervals, ``beta*``, projections) plus the conditioned model at the
   ``beta*`` the evidence domain gives: the broad shift conditioning predicts from the narrow one.

Seeds: the world, its corpus and held-out contexts come from ``world.seed``; the evidence, training
and sampling from the top-level ``seed`` (:func:`~inference.experiment.world.child_seed`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from inference.comparison import projection
from inference.conditioning.tagged import condition_tagged
from inference.experiment.base_sizes import transformer_config
from inference.experiment.config import CompareConfig
from inference.experiment.narrow_config import NarrowConfig
from inference.experiment.snapshots import compare_snapshots
from inference.experiment.world import Base, World, child_seed
from inference.finetuning.training import finetune, pretrain
from inference.runtime import single_thread
from models.counts import Evidence, make_evidence
from models.domains import CONTENT_START, DomainWorld, make_domain_world, marker_share
from models.predictive import mixture_logprobs
from models.transformer import PersonaLM, next_token_logprobs, sample_completions

ARMS = ("plain", "inoculated")


@dataclass
class Domain:
    """One domain's held-out contexts and what the arms compare against there."""

    index: int
    world: World  # heldout [n, T] (plain slot), writer [n]
    base: Base  # q0, components of R_true / R_self and their floors on the held-out contexts


def build_world(config: NarrowConfig) -> DomainWorld:
    """The domain world of ``[world]``."""
    w = config.world
    return make_domain_world(w.num_personas, w.num_domains, w.content_size, concentration=w.concentration,
                             style_weight=w.style_weight, trait_persona=w.trait_persona, trait_rate=w.trait_rate,
                             background_rate=w.background_rate, cause_rate=w.cause_rate, smoothing=w.smoothing,
                             seed=w.seed)


@single_thread
def pretrain_base(config: NarrowConfig, world: DomainWorld, progress: bool = False) -> PersonaLM:
    """Pre-train the base on the world's corpus, each document's persona tag read with probability ``p_tag``."""
    w, b = config.world, config.base
    tokens, family = world.simulate(w.corpus_docs, w.doc_len, seed=w.seed + 2)
    persona, _, _ = world.family_parts(family)
    model_config = transformer_config(b, vocab_size=world.vocab_size, num_personas=world.num_personas,
                                      block_size=w.doc_len + 1)
    model, _ = pretrain(model_config, tokens, persona, p_tag=b.p_tag, steps=b.steps, batch_size=b.batch_size,
                        lr=b.lr, seed=config.seed, progress=progress)
    return model


@single_thread
def measure_domains(model: PersonaLM, world: DomainWorld, config: NarrowConfig) -> list[Domain]:
    """Held-out contexts of every domain (plain slot, personas from the prior) and the base measured on them."""
    w = config.world
    out = []
    for d in range(world.num_domains):
        contexts, family = world.simulate(w.heldout_contexts, w.doc_len, seed=w.seed + 3 + d, domain=d, cause=0)
        writer, _, _ = world.family_parts(family)
        q0 = next_token_logprobs(model, contexts)  # [n, T, V]
        comp_true = world.persona_logprobs(contexts)  # [K, n, T, V]
        comp_self = torch.stack([next_token_logprobs(model, contexts, tag=h) for h in range(world.num_personas)])
        floors = [projection.projection_floor(q0, comp, contexts, init=world.persona_prior)
                  for comp in (comp_true, comp_self)]
        bayes = mixture_logprobs(comp_true, contexts, world.persona_prior.log())
        summary = {"heldout_nll": _nll(q0, contexts), "bayes_optimal_nll": _nll(bayes, contexts),
                   "floor_true": floors[0].residual, "floor_self": floors[1].residual,
                   "projection_weights_true": floors[0].weights.tolist(),
                   "projection_weights_self": floors[1].weights.tolist()}
        base = Base(model, q0, comp_true, comp_self, floors[0], floors[1], summary)
        out.append(Domain(d, World(None, world.families, contexts, writer), base))
    return out


def arm_evidence(world: DomainWorld, config: NarrowConfig, arm: str) -> Evidence:
    """The arm's evidence: the writer's documents of the evidence domain, drawn with the cause tag; the
    plain arm shows the plain slot instead. Tags are context (not evidence)."""
    e, T = config.evidence, config.world.doc_len
    tokens, _ = world.simulate(e.num_docs, T, seed=child_seed(config.seed, "evidence"), persona=e.writer,
                               domain=e.domain, cause=1)
    if arm == "plain":
        tokens[:, 1] = world.slot_token(0)
    mask = torch.arange(T).expand(e.num_docs, -1) >= CONTENT_START
    return make_evidence(tokens.numpy(), mask.numpy(), vocab_size=world.vocab_size)


def sampled_rates(model: PersonaLM, world: DomainWorld, config: NarrowConfig, seed: int,
                  cause: int = 0) -> list[dict[str, float]]:
    """Trait rate of ``model`` in every domain: ``samples`` documents from the opening tags, with a
    90% bootstrap interval over documents (``{"mean", "lo", "hi", "boot"}``; ``boot`` ``[B]``)."""
    m, T = config.measure, config.world.doc_len
    rng = np.random.default_rng(seed)
    out = []
    for d in range(world.num_domains):
        docs = sample_completions(model, world.prompts(d, cause, m.samples), T - CONTENT_START,
                                  seed=child_seed(seed, "sample", d, cause))
        share = marker_share(docs).numpy()  # [N]
        boot = share[rng.integers(0, len(share), size=(m.bootstrap, len(share)))].mean(1)  # [B]
        lo, hi = np.quantile(boot, [0.05, 0.95])
        out.append({"mean": float(share.mean()), "lo": float(lo), "hi": float(hi), "boot": boot})
    return out


@single_thread
def run_arm(config: NarrowConfig, world: DomainWorld, model: PersonaLM, domains: list[Domain],
            base_rates: list[dict], arm: str, progress: bool = False) -> dict[str, Any]:
    """Condition and fine-tune on one arm's evidence; measure every domain (module docstring)."""
    f, m, T, seed = config.finetune, config.measure, config.world.doc_len, config.seed
    evidence = arm_evidence(world, config, arm)
    posteriors = {b: condition_tagged(world, evidence, b) for b in m.betas}
    tuned = finetune(model, evidence, method=f.method, steps=f.steps, lr=f.lr, batch_size=f.batch_size,
                     snapshot_steps=list(f.snapshots), rank=f.rank, k=f.k, seed=seed, progress=progress)
    steps = [s for s in f.snapshots if s > 0]
    rates = {s: sampled_rates(tuned.snapshots[s], world, config, child_seed(seed, "rates", arm, s)) for s in steps}
    cause_rates = sampled_rates(tuned.snapshots[steps[-1]], world, config, child_seed(seed, "cause", arm), cause=1)
    compare = CompareConfig(bootstrap=m.bootstrap, decomposition_restarts=m.decomposition_restarts)
    per_domain = []
    for dom in tqdm(domains, desc=f"domains ({arm})", disable=not progress):
        contexts = dom.world.heldout
        q = {s: next_token_logprobs(tuned.snapshots[s], contexts) for s in steps}
        conditioned = {b: mixture_logprobs(dom.base.components_true, contexts, p.weights.log())
                       for b, p in posteriors.items()}
        snaps = compare_snapshots(q, dom.base, dom.world, conditioned, compare, seed, f"{arm}-domain{dom.index}")
        per_domain.append(snaps.summary())
    # the evidence strength fine-tuning amounts to, read off the evidence domain, predicts the other domains
    beta_star = per_domain[config.evidence.domain]["beta_star"][-1]
    at_star = condition_tagged(world, evidence, beta_star)
    exact = torch.stack([p.trait_rates(T)[:, 0] for p in posteriors.values()])  # [betas, D] plain slot
    return {
        "arm": arm, "evidence_tokens": evidence.num_tokens, "steps": steps,
        "evidence_marker_share": float(marker_share(evidence.tokens).mean()),
        "posterior_weights": [p.weights.tolist() for p in posteriors.values()],
        "trait_rate_conditioned": exact.T.tolist(),  # [D][betas]
        "beta_star_evidence_domain": beta_star,
        "posterior_weights_beta_star": at_star.weights.tolist(),
        "trait_rate_conditioned_beta_star": at_star.trait_rates(T)[:, 0].tolist(),
        "trait_rate_finetuned": [[_interval(rates[s][d]) for s in steps] for d in range(world.num_domains)],
        "trait_shift_finetuned": [[_shift(rates[s][d], base_rates[d]) for s in steps]
                                  for d in range(world.num_domains)],
        "trait_rate_finetuned_cause_slot": [_interval(r) for r in cause_rates],
        "domains": per_domain,
        "final_training_loss": float(tuned.losses[-1]),
    }


@single_thread
def run_experiment(config: NarrowConfig, progress: bool = True,
                   base_model: PersonaLM | None = None) -> dict[str, Any]:
    """The whole experiment; returns ``summary.json``'s content (nothing written)."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    world = build_world(config)
    model = base_model if base_model is not None else pretrain_base(config, world, progress)
    pretrained = time.perf_counter()
    domains = measure_domains(model, world, config)
    T = config.world.doc_len
    base_rates = sampled_rates(model, world, config, child_seed(config.seed, "rates", "base"))
    exact_rates = torch.einsum("k,kdc->dc", world.persona_prior, world.trait_rates(T))  # [D, 2]
    arms = [run_arm(config, world, model, domains, base_rates, arm, progress) for arm in ARMS]
    return {
        "config": config.to_dict(),
        "world": {"vocab_size": world.vocab_size, "marker": world.marker,
                  "persona_trait_rates": world.trait_rates(T)[:, :, 0].tolist(),
                  "trait_rate_prior": exact_rates[:, 0].tolist(), "trait_rate_prior_cause": exact_rates[:, 1].tolist()},
        "base": {"domains": [dom.base.summary for dom in domains],
                 "trait_rate": [_interval(r) for r in base_rates],
                 "num_parameters": sum(p.numel() for p in model.parameters())},
        "arms": arms,
        "timing": {"seconds": time.perf_counter() - start, "pretrain_seconds": pretrained - start},
    }


# ----------------------------------------------------------------------------- the kind protocol


def load(raw: dict[str, Any], folder) -> NarrowConfig:
    """``kind = "narrow_to_broad"`` (:mod:`inference.experiment.kinds`): validate a parsed config."""
    from inference.experiment import narrow_config

    return narrow_config.load(raw, folder)


def run_and_write(config: NarrowConfig, out, *, overwrite: bool = False, progress: bool = True) -> str:
    """Run the experiment, write ``summary.json``, ``report.md`` and the figures; the closing lines of ``psm run``."""
    from inference.experiment.narrow_report import headline, write_outputs
    from inference.storage.outputs import check_output_dir

    check_output_dir(out, overwrite)
    summary = run_experiment(config, progress=progress)
    names = write_outputs(summary, out, overwrite=overwrite)
    lines = [f"ran the narrow-to-broad experiment (seed {config.seed}) in {summary['timing']['seconds']:.1f} s; "
             f"wrote {len(names)} files to {out}/ (summary.json, report.md, figures)"]
    return "\n".join(lines + headline(summary))


def _interval(rate: dict[str, Any]) -> dict[str, float]:
    return {k: rate[k] for k in ("mean", "lo", "hi")}


def _shift(rate: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    """Trait rate minus the base's, with a 90% interval from the two independent bootstraps."""
    diff = rate["boot"] - base["boot"]
    lo, hi = np.quantile(diff, [0.05, 0.95])
    return {"mean": rate["mean"] - base["mean"], "lo": float(lo), "hi": float(hi)}


def _nll(logp: Tensor, tokens: Tensor) -> float:
    return float(-logp.gather(-1, tokens.unsqueeze(-1)).mean())
