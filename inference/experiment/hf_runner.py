"""``psm run`` kind ``hf``: does fine-tuning a real LM re-weight the personas it already had?

For a local Hugging Face causal LM and a persona prompt file the runner

1. loads the model on the chosen device, and the evidence and held-out text, cut into token
   chunks (:mod:`models.lm_text`); who wrote each held-out context is matched to the personas;
2. measures the base (:func:`~inference.experiment.hf_measure.measure_hf_base`): ``R_self`` is the
   model prompted with each persona, its projection ``w0``, and the persona mixture conditioned on
   the evidence for a grid of ``beta``;
3. fine-tunes a copy on the evidence (full, LoRA through ``peft``, last layer or k parameters;
   checkpoints and resume), keeping snapshots, and reports time and memory per step;
4. measures every snapshot: KL to the base, ``beta*``, the projection onto ``R_self``, the
   exhaustiveness decomposition ``E_self`` with its bootstrap interval; the mechanisms of the last
   one; Bayesian attribution of its completions to the personas (NUTS, the personas' likelihoods
   from ``R_self``); held-out ELPD on fresh evidence; the description length of the evidence;
5. writes ``summary.json`` (one arm, field names as in ``psm run``), ``report.md``, figures,
   the attribution's InferenceData and the ELPD table.

Left out, because the quantity does not exist for real text: everything about ``R_true``
(``exhaustiveness_true``, ``residual_true``), the Bayes-optimal NLL, exact conditioning of the
true writers, and the n-gram and from-scratch baselines (not comparable with a pre-trained LM).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from inference.comparison.attribution import attribute, doc_loglik_from_logprobs
from inference.comparison.elpd import heldout_elpd
from inference.experiment.hf_config import HFExperimentConfig
from inference.experiment.hf_config import load as load  # the kind protocol: load(raw, folder)
from inference.experiment.hf_measure import (
    HFBase,
    compare_hf_snapshots,
    hf_mechanisms,
    measure_hf_base,
    mixture_doc_loglik,
)
from inference.experiment.world import child_seed
from inference.finetuning.lm_training import finetune_lm
from inference.finetuning.prequential import prequential_code_length
from inference.runtime import single_thread
from models.base_model import LanguageModel, Vocabulary, persona_components
from models.counts import Evidence, make_evidence
from models.errors import InputError
from models.lm_text import chunk_documents, read_documents
from models.predictive import mixture_logprobs

__all__ = ["TextData", "load", "load_text_data", "run_and_write", "run_hf"]

#: why each ``psm run`` quantity that a real LM lacks is left out (written into summary.json)
NOT_MEASURED = {
    "R_true": "real text has no known generative personas: exhaustiveness_true, residual_true and the "
              "R_true decomposition are not defined",
    "bayes_optimal_nll": "the distribution that wrote real text is unknown",
    "exact_conditioning": "the true writers cannot be conditioned on; beta* and p_D,beta condition the base "
                          "model's own persona mixture (R_self) instead",
    "baselines": "an n-gram or a model trained from scratch on the evidence is no comparison for a pre-trained LM",
}


@dataclass(frozen=True)
class TextData:
    """The run's text as token ids."""

    evidence: Evidence  # [D, T] chunks, mask: tokens from prompt_tokens on
    fresh: Evidence | None  # [F, T] further chunks of the evidence text, never trained on
    heldout: Tensor  # [n, T'] held-out contexts
    writer: Tensor  # [n] persona index of each context's writer, -1 when not a persona
    authors: tuple[str | None, ...]
    evidence_persona: int | None


def load_text_data(config: HFExperimentConfig, model) -> TextData:
    """Read, tokenise and chunk the evidence and held-out text (:mod:`models.lm_text`).

    The evidence chunks (``evidence_docs`` for training, ``fresh_docs`` more for the held-out ELPD)
    are a seeded choice among all chunks of the evidence text; the held-out contexts are chosen
    round-robin over their writers, from the held-out documents that are not evidence files.
    """
    d, seed = config.data, config.seed
    names = model.persona_names
    if d.evidence_persona and d.evidence_persona not in names:
        raise InputError(f"data.evidence_persona {d.evidence_persona!r} is not one of the personas ({', '.join(names)})")
    wanted = d.evidence_docs + d.fresh_docs
    evidence_docs = read_documents(d.evidence)
    chunks = chunk_documents(evidence_docs, model.encode, d.chunk_tokens, max_chunks=wanted,
                             seed=child_seed(seed, "evidence"))
    if chunks.tokens.shape[0] < wanted:
        raise InputError(f"data.evidence: {chunks.tokens.shape[0]} chunks of {d.chunk_tokens} tokens, need "
                         f"data.evidence_docs + data.fresh_docs = {wanted}")
    order = torch.randperm(wanted, generator=torch.Generator().manual_seed(child_seed(seed, "split")))
    mask = (torch.arange(d.chunk_tokens) >= d.prompt_tokens).expand(wanted, -1)  # [D + F, T]
    train, held = order[: d.evidence_docs].sort().values, order[d.evidence_docs:].sort().values
    evidence = make_evidence(chunks.tokens[train].numpy(), mask[train].numpy())
    fresh = make_evidence(chunks.tokens[held].numpy(), mask[held].numpy()) if d.fresh_docs else None
    used = {os.path.realpath(doc.source) for doc in evidence_docs}
    heldout_docs = [doc for doc in read_documents(d.heldout) if os.path.realpath(doc.source) not in used]
    if not heldout_docs:
        raise InputError("data.heldout: every held-out document is also an evidence document")
    contexts = chunk_documents(heldout_docs, model.encode, d.heldout_tokens,
                               max_chunks=d.heldout_contexts, seed=child_seed(seed, "heldout"), balance=True)
    if contexts.tokens.shape[0] < d.heldout_contexts:
        raise InputError(f"data.heldout: {contexts.tokens.shape[0]} chunks of {d.heldout_tokens} tokens, need "
                         f"data.heldout_contexts = {d.heldout_contexts}")
    index = names.index(d.evidence_persona) if d.evidence_persona else None
    return TextData(evidence, fresh, contexts.tokens, contexts.writer_index(names), contexts.authors, index)


@single_thread
def run_hf(config: HFExperimentConfig, progress: bool = True, model: LanguageModel | None = None
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the whole experiment; returns ``(summary, curves)`` without writing anything.

    ``model``: a base model of the interface to use instead of loading ``config.model``
    (its personas are its own; ``config.model`` is then not read).
    """
    start, stages = time.perf_counter(), {}
    torch.manual_seed(config.seed)
    model = _load_model(config) if model is None else model
    data = load_text_data(config, model)
    stages["load"] = time.perf_counter() - start
    base = measure_hf_base(model, data.heldout, data.evidence, config.compare)
    stages["base"] = time.perf_counter() - start - sum(stages.values())
    f = config.finetune
    tuned = finetune_lm(model, data.evidence, method=f.method, steps=f.steps, lr=f.lr, batch_size=f.batch_size,
                        snapshot_steps=[s for s in f.snapshots if s > 0], rank=f.rank, k=f.k,
                        weight_decay=f.weight_decay, seed=config.seed, progress=progress,
                        checkpoint_dir=f.checkpoint_dir or None,
                        checkpoint_every=f.checkpoint_every if f.checkpoint_dir else None,
                        resume=bool(f.checkpoint_dir))
    stages["finetune"] = time.perf_counter() - start - sum(stages.values())
    snaps = compare_hf_snapshots(tuned.snapshots, base, config.compare, config.seed, progress)
    final = tuned.snapshots[snaps.steps[-1]]
    arm = {"arm": "evidence", "evidence_persona": data.evidence_persona, "evidence_tokens": data.evidence.num_tokens,
           **snaps.summary(), **hf_mechanisms(base, snaps, data.writer, data.evidence_persona)}
    stages["comparisons"] = time.perf_counter() - start - sum(stages.values())
    attribution = _attribute(final, base, data, config, progress)
    arm["attribution"] = None if attribution is None else {
        "weights_mean": attribution.weights_mean.tolist(), "r_hat_max": attribution.r_hat_max,
        "ess_min": attribution.ess_min}
    elpd, elpd_table = _heldout_elpd(model, final, base, data, snaps)
    arm["heldout_elpd"] = elpd
    nearest = min(base.conditioned_log_weights, key=lambda b: abs(b - 1.0))
    arm["posterior_weights_beta1"] = base.conditioned_log_weights[nearest].exp().tolist()
    stages["attribution_elpd"] = time.perf_counter() - start - sum(stages.values())
    code = None
    if f.prequential_blocks:
        code = prequential_code_length(
            model, data.evidence, method=f.method, lr=f.lr, steps=f.prequential_steps, batch_size=f.batch_size,
            block_size_docs=max(1, -(-data.evidence.num_docs // f.prequential_blocks)), rank=f.rank, k=f.k,
            weight_decay=f.weight_decay, seed=config.seed, progress=progress)
    arm["description_length_nats"] = None if code is None else code.description_length
    arm["prequential_code_nats"] = None if code is None else code.code_length
    arm["final_training_loss"] = float(tuned.losses[-1])
    stages["description_length"] = time.perf_counter() - start - sum(stages.values())
    summary = {
        "kind": "hf", "config": config.to_dict(), "model": _model_summary(model),
        "personas": list(model.persona_names), "data": _data_summary(data, model),
        "base": base.summary, "arms": [arm],
        "training": {**tuned.cost, "steps": f.steps, "method": f.method, "trainable_parameters": tuned.trainable_params,
                     "seconds": tuned.seconds, "resumed_from": tuned.resumed_from},
        "not_measured": NOT_MEASURED,
        "timing": {"seconds": time.perf_counter() - start, "stages": stages},
    }
    curves = {"kl_by_beta": snaps.kl_by_beta, "betas": sorted(base.conditioned), "finetune_losses": tuned.losses.tolist(),
              "elpd_table": elpd_table, "attribution": None if attribution is None else attribution.idata,
              "next_token": _next_token(base, snaps, model)}
    return summary, curves


def _load_model(config: HFExperimentConfig) -> LanguageModel:
    from models.hf_lm import load_hf_model
    from models.persona_prompts import load_persona_prompts

    prompts = load_persona_prompts(config.model.personas)
    return load_hf_model(config.model.path, prompts, device=config.device)


def _attribute(final: LanguageModel, base: HFBase, data: TextData, config: HFExperimentConfig, progress: bool):
    """NUTS attribution of the fine-tuned model's completions of held-out prompts to the ``R_self`` personas."""
    c = config.compare
    if not c.attribution_completions:
        return None
    seed = child_seed(config.seed, "attribution", "hf")
    prompts = data.heldout[: c.attribution_completions, : c.attribution_prompt_tokens]  # [m, P]
    tokens = final.sample(prompts, c.attribution_tokens, seed=seed)  # [m, P + A]
    completion = torch.arange(tokens.shape[1]).expand_as(tokens) >= c.attribution_prompt_tokens  # [m, P + A]
    vocabulary = Vocabulary(torch.cat([base.vocabulary.keep, tokens.reshape(-1)]), base.model.vocab_size)
    components = persona_components(base.model, tokens, vocabulary=vocabulary)  # [K, m, P + A, W']
    columns = vocabulary.index(tokens)
    return attribute(doc_loglik_from_logprobs(components, columns, completion), 1.0,
                     num_chains=c.attribution_chains, num_samples=c.attribution_samples, warmup=c.attribution_warmup,
                     seed=seed, progress=progress, components=components, tokens=columns, mask=completion,
                     prompt_loglik=doc_loglik_from_logprobs(components, columns, ~completion))


def _heldout_elpd(model: LanguageModel, final: LanguageModel, base: HFBase, data: TextData, snaps):
    """Log predictive density of fresh evidence documents under every candidate (one value per document)."""
    from inference import diagnostics

    if data.fresh is None:
        return None, None
    fresh = data.fresh
    candidates = {
        "base": model.context_loglik(fresh.tokens, None, fresh.mask),
        "finetuned": final.context_loglik(fresh.tokens, None, fresh.mask),
        "self_projection": mixture_doc_loglik(model, fresh, snaps.projections[-1].weights.clamp(min=1e-300).log()),
    }
    for beta, log_w in base.conditioned_log_weights.items():
        candidates[f"conditioned_beta_{beta:g}"] = mixture_doc_loglik(model, fresh, log_w)
    scored = {name: heldout_elpd(ll[None]) for name, ll in candidates.items()}  # one draw each
    return ({name: value[0] for name, value in scored.items()},
            diagnostics.elpd_table({name: value[2] for name, value in scored.items()}))


def _next_token(base: HFBase, snaps, model: LanguageModel) -> dict[str, Any]:
    """The first held-out context's next-token distributions at a middle position (for the figure):
    base, fine-tuned, and the persona mixture ``p_{w*}`` of ``R_self`` nearest the fine-tuned model."""
    t = base.contexts.shape[1] // 2
    decode = getattr(model, "decode", lambda i: f"<{i}>")
    log_w = snaps.projections[-1].weights.clamp(min=1e-300).log()
    nearest = mixture_logprobs(base.components[:, :1], base.columns[:1], log_w)  # [1, T, W]
    return {"context": "".join(decode(int(i)) for i in base.contexts[0, max(0, t - 12): t]), "position": t,
            "labels": base.vocabulary.names(decode), "base": base.q0[0, t].exp(),
            "finetuned": snaps.q[snaps.steps[-1]][0, t].exp(), "projection": nearest[0, t].exp()}


def _model_summary(model: LanguageModel) -> dict[str, Any]:
    network = getattr(model, "network", getattr(model, "model", None))
    return {"class": type(network).__name__, "num_parameters": sum(p.numel() for p in network.parameters()),
            "vocab_size": model.vocab_size, "max_positions": model.max_positions, "device": str(model.device)}


def _data_summary(data: TextData, model: LanguageModel) -> dict[str, Any]:
    writers = [model.persona_names[int(w)] if w >= 0 else None for w in data.writer]
    return {"evidence_docs": data.evidence.num_docs, "evidence_tokens": data.evidence.num_tokens,
            "fresh_docs": 0 if data.fresh is None else data.fresh.num_docs,
            "heldout_contexts": int(data.heldout.shape[0]), "heldout_tokens": int(data.heldout.shape[1]),
            "heldout_writers": {str(name): writers.count(name) for name in dict.fromkeys(writers)},
            "evidence_persona": None if data.evidence_persona is None else model.persona_names[data.evidence_persona]}


def run_and_write(config: HFExperimentConfig, out, *, overwrite: bool = False, progress: bool = True) -> str:
    """Run the experiment, write its outputs into ``out``, and return the closing lines of ``psm run``."""
    from inference.experiment.hf_report import write_hf_experiment

    summary, curves = run_hf(config, progress=progress)
    names = write_hf_experiment(summary, curves, out, overwrite=overwrite)
    arm, training = summary["arms"][0], summary["training"]
    e = arm["exhaustiveness_self"][-1]
    return "\n".join([
        f"ran kind hf ({summary['model']['class']}, {summary['model']['num_parameters']:,} parameters, "
        f"{len(summary['personas'])} personas, {training['method']} fine-tuning on {training['device']}) with seed "
        f"{config.seed} in {summary['timing']['seconds']:.1f} s; wrote {len(names)} files to {out}/:",
        f"  {out}/summary.json  (every number)", f"  {out}/report.md  (findings and figures)",
        f"  E_self={'undefined' if e is None else f'{e:.3g}'}, KL(q_s||q0)={arm['kl_to_base'][-1]:.3g}, "
        f"beta*={arm['beta_star'][-1]:.3g}, "
        + ("resumed after the last step" if training["seconds_per_step"] is None
           else f"{training['seconds_per_step']:.3g} s/step"),
    ])

