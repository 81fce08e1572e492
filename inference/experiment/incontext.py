"""In-context learning against fine-tuning against exact Bayes, with the Bayesian scaling law
(``kind = "incontext"``, issue 11).

Showing evidence in the context and training on it are both conditioning on the persona-selection
view. Arora et al. 2024 fit a Bayesian scaling law to in-context learning curves and found that
post-training moves the fitted prior. The experiment

1. draws order-1 Markov personas with a non-uniform prior (``[world]``) and pre-trains a base
   transformer on contexts that each hold ``docs_per_context`` documents of one persona, separated by
   a separator token (:mod:`models.contexts`), so that evidence can be shown in context;
2. draws ``replicates`` evidence sets of the evidence persona (``[evidence]``; the first ``n``
   documents of each set are the ``n`` shots) and ``fresh_docs`` fresh documents per set;
3. measures, for every ``n`` of ``shots``, the NLL of a fresh document (nats per document):

   * ``in_context``: the base reading the ``n`` documents and then the fresh one in one context;
   * ``finetuned``: the base fine-tuned on the ``n`` documents (``[finetune]``), reading the fresh one;
   * ``exact``: the persona model conditioned exactly on the ``n`` documents
     (:func:`~inference.conditioning.condition.condition`, global model, ``beta = 1``), its posterior
     predictive on the fresh one;
   * ``in_context_posttrained``: as ``in_context``, after the base was fine-tuned on ``num_docs``
     documents of another persona (``[posttrain]``; skipped with ``num_docs = 0``);

   each curve's mean uses the fresh documents' NLL under their true writer as a control variate
   (:func:`curve_stats`) and its standard errors come from the spread of the replicates' means;
4. fits the Bayesian scaling law to each curve with NUTS (``[fit]``;
   :func:`~inference.conditioning.scaling_law.fit_scaling_law`), with ``log P_m`` the exact
   expected log-probability of an evidence-persona document under true persona ``m``
   (:func:`~models.contexts.expected_doc_loglik`): a posterior over the prior ``rho`` and the
   efficiency ``K``, to compare with the world's prior and with exact Bayes' ``K = 1``.

Seeds: the world, its corpus come from ``world.seed``; evidence, training and NUTS from the
top-level ``seed`` (:func:`~inference.experiment.world.child_seed`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inference.conditioning.condition import condition
from inference.conditioning.scaling_law import ScalingLawFit, fit_scaling_law
from inference.experiment.base_sizes import transformer_config
from inference.experiment.incontext_config import InContextConfig
from inference.experiment.world import child_seed
from inference.finetuning.training import finetune, pretrain
from inference.runtime import single_thread
from models.contexts import (
    document_positions,
    expected_doc_loglik,
    pack,
    simulate_contexts,
    simulate_documents,
)
from models.counts import count_transitions, make_evidence
from models.personas import MarkovPersonas, random_personas
from models.predictive import mixture_predictive
from models.transformer import PersonaLM, next_token_logprobs

#: the curves, in the order of the figures
CURVES = ("in_context", "finetuned", "exact", "in_context_posttrained")


def build_personas(config: InContextConfig) -> MarkovPersonas:
    """The world's personas (order 1) with the configured prior (uniform when empty)."""
    w = config.world
    prior = None if not w.prior else torch.tensor(w.prior, dtype=torch.float64) / sum(w.prior)
    return random_personas(w.num_personas, w.vocab_size, 1, w.concentration, seed=w.seed, prior=prior)


@single_thread
def pretrain_base(config: InContextConfig, personas: MarkovPersonas, progress: bool = False) -> PersonaLM:
    """Pre-train the base on packed contexts of ``docs_per_context`` documents of one persona each."""
    w, b = config.world, config.base
    contexts, persona = simulate_contexts(personas, w.corpus_contexts, w.docs_per_context, w.doc_len, seed=w.seed + 2)
    model_config = transformer_config(b, vocab_size=w.vocab_size + 1, num_personas=w.num_personas,
                                      block_size=config.context_len + 1)
    model, _ = pretrain(model_config, contexts, persona, p_tag=b.p_tag, steps=b.steps, batch_size=b.batch_size,
                        lr=b.lr, seed=config.seed, progress=progress)
    return model


def draw_documents(config: InContextConfig, personas: MarkovPersonas) -> tuple[Tensor, Tensor]:
    """``evidence [R, n_max, L]`` and ``fresh [R, F, L]`` documents of the evidence persona."""
    e, L = config.evidence, config.world.doc_len
    n_max = e.shots[-1]
    evidence, fresh = [], []
    for r in range(e.replicates):
        evidence.append(simulate_documents(personas, e.persona, max(n_max, 1), L,
                                           seed=child_seed(config.seed, "evidence", r)))
        fresh.append(simulate_documents(personas, e.persona, e.fresh_docs, L, seed=child_seed(config.seed, "fresh", r)))
    return torch.stack(evidence), torch.stack(fresh)


@torch.no_grad()
def in_context_nll(model: PersonaLM, evidence: Tensor, fresh: Tensor, shots: tuple[int, ...], sep: int) -> Tensor:
    """``[S, R, F]`` NLL of each fresh document read after ``n`` evidence documents in one context."""
    R, F, L = fresh.shape
    out = []
    for n in shots:
        docs = torch.cat([evidence[:, None, :n].expand(R, F, n, L), fresh[:, :, None]], 2)  # [R, F, n + 1, L]
        seqs = pack(docs.reshape(R * F, n + 1, L), sep)  # [R * F, (n + 1)(L + 1) - 1]
        logp = next_token_logprobs(model, seqs)  # [R * F, len, V + 1]
        where = document_positions(n + 1, L)[-1]  # [L] the fresh document's positions
        picked = logp[:, where].gather(-1, fresh.reshape(R * F, L, 1)).squeeze(-1)  # [R * F, L]
        out.append(-picked.sum(-1).reshape(R, F))
    return torch.stack(out)


def finetuned_nll(model: PersonaLM, evidence: Tensor, fresh: Tensor, config: InContextConfig,
                  progress: bool = False) -> Tensor:
    """``[S, R, F]`` NLL of each fresh document after fine-tuning the base on the first ``n`` documents."""
    f, shots = config.finetune, config.evidence.shots
    R, F, L = fresh.shape
    out = torch.empty(len(shots), R, F, dtype=torch.float64)
    for i, n in enumerate(tqdm(shots, desc="fine-tuning on n documents", disable=not progress)):
        for r in range(R):
            tuned = model if n == 0 else _tune(model, evidence[r, :n], f.epochs, config, child_seed(config.seed, n, r))
            out[i, r] = _doc_nll(tuned, fresh[r])
    return out


def exact_nll(personas: MarkovPersonas, evidence: Tensor, fresh: Tensor, shots: tuple[int, ...],
              seed: int) -> Tensor:
    """``[S, R, F]`` NLL of each fresh document under the persona model conditioned exactly on the ``n`` documents."""
    R, F, L = fresh.shape
    log_table, V = personas.log_table(), personas.vocab_size
    out = torch.empty(len(shots), R, F, dtype=torch.float64)
    for i, n in enumerate(shots):
        for r in range(R):
            log_w = personas.prior.log() if n == 0 else condition(
                personas, make_evidence(evidence[r, :n].numpy(), vocab_size=V), model="global", method="exact",
                seed=seed).weights.log()
            logp = mixture_predictive(log_table, log_w, fresh[r], V, personas.order)  # [F, L, V]
            out[i, r] = -logp.gather(-1, fresh[r, :, :, None]).squeeze(-1).sum(-1)
    return out


def curve_stats(nll: Tensor, oracle: Tensor, oracle_mean: float) -> dict[str, list[float]]:
    """Mean NLL per document at each ``n`` and its standard error, with a control variate.

    ``oracle [R, F]`` is each fresh document's NLL under the persona that wrote it, whose expectation
    ``oracle_mean = -E[log p_writer(x)]`` is known exactly; the estimate ``mean(nll - oracle) +
    oracle_mean`` is unbiased and leaves out the documents' own variability (most of the variance: a
    fresh document is hard or easy for every learner alike). Standard errors come from the spread of
    the replicates' means of ``nll - oracle`` (``[S, R, F]`` in, lists over ``S`` out).
    """
    excess = nll - oracle  # [S, R, F]
    per_replicate = excess.mean(-1)  # [S, R]
    R = per_replicate.shape[1]
    return {"mean": (excess.mean((1, 2)) + oracle_mean).tolist(), "se": (per_replicate.std(1) / math.sqrt(R)).tolist(),
            "raw_mean": nll.mean((1, 2)).tolist()}


@single_thread
def run_experiment(config: InContextConfig, progress: bool = True,
                   base_model: PersonaLM | None = None) -> tuple[dict[str, Any], dict[str, ScalingLawFit]]:
    """The whole experiment: ``(summary, fits)`` (nothing written)."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    w, e, p = config.world, config.evidence, config.posttrain
    personas = build_personas(config)
    model = base_model if base_model is not None else pretrain_base(config, personas, progress)
    pretrained = time.perf_counter()
    evidence, fresh = draw_documents(config, personas)
    nll = {"in_context": in_context_nll(model, evidence, fresh, e.shots, w.vocab_size),
           "finetuned": finetuned_nll(model, evidence, fresh, config, progress),
           "exact": exact_nll(personas, evidence, fresh, e.shots, config.seed)}
    if p.num_docs > 0:
        post_docs = simulate_documents(personas, p.persona, p.num_docs, w.doc_len, seed=child_seed(config.seed, "post"))
        posttrained = _tune(model, post_docs, p.epochs, config, child_seed(config.seed, "posttrain"))
        nll["in_context_posttrained"] = in_context_nll(posttrained, evidence, fresh, e.shots, w.vocab_size)
    measured = time.perf_counter()
    log_p = expected_doc_loglik(personas, e.persona, w.doc_len)  # [K] log P_m of an evidence document
    oracle = -count_transitions(make_evidence(fresh.reshape(-1, w.doc_len).numpy()), w.vocab_size, 1).loglik(
        personas.log_table()[e.persona]).reshape(fresh.shape[:2])  # [R, F] NLL under the true writer
    curves = {name: curve_stats(values, oracle, -float(log_p[e.persona])) for name, values in nll.items()}
    fits = {}
    for name in tqdm(list(curves), desc="scaling-law fits (NUTS)", disable=not progress):
        c = curves[name]
        fits[name] = fit_scaling_law(list(e.shots), c["mean"], c["se"], log_p, offset=config.fit.offset,
                                     num_chains=config.fit.num_chains, num_samples=config.fit.num_samples,
                                     warmup=config.fit.warmup, max_tree_depth=config.fit.max_tree_depth,
                                     seed=child_seed(config.seed, "fit", name))
    law_at_prior = _law_at_prior(personas, log_p, e.shots)
    summary = {
        "config": config.to_dict(),
        "world": {"prior": personas.prior.tolist(), "log_p": log_p.tolist(), "context_len": config.context_len},
        "curves": curves,
        "law_at_world_prior_k1": law_at_prior,
        "fits": {name: fit.summary() for name, fit in fits.items()},
        "num_parameters": sum(q.numel() for q in model.parameters()),
        "timing": {"seconds": time.perf_counter() - start, "pretrain_seconds": pretrained - start,
                   "measure_seconds": measured - pretrained, "fit_seconds": time.perf_counter() - measured},
    }
    return summary, fits


# ----------------------------------------------------------------------------- the kind protocol


def load(raw: dict[str, Any], folder) -> InContextConfig:
    """``kind = "incontext"`` (:mod:`inference.experiment.kinds`): validate a parsed config."""
    from inference.experiment import incontext_config

    return incontext_config.load(raw, folder)


def run_and_write(config: InContextConfig, out, *, overwrite: bool = False, progress: bool = True) -> str:
    """Run the experiment, write ``summary.json``, ``report.md``, the figures and the fits; the closing lines."""
    from inference.experiment.incontext_report import headline, write_outputs
    from inference.storage.outputs import check_output_dir

    check_output_dir(out, overwrite)
    summary, fits = run_experiment(config, progress=progress)
    names = write_outputs(summary, fits, out, overwrite=overwrite)
    lines = [f"ran the in-context vs fine-tuning experiment (seed {config.seed}) in {summary['timing']['seconds']:.1f} s; "
             f"wrote {len(names)} files to {out}/ (summary.json, report.md, figures, fits)"]
    return "\n".join(lines + headline(summary))


def _tune(model: PersonaLM, docs: Tensor, epochs: int, config: InContextConfig, seed: int) -> PersonaLM:
    """The base fine-tuned on ``docs [n, L]`` (each its own sequence) for ``epochs`` passes."""
    f = config.finetune
    n = docs.shape[0]
    batch = min(f.batch_size, n)
    steps = max(1, math.ceil(epochs * n / batch))
    evidence = make_evidence(docs.numpy(), vocab_size=config.world.vocab_size + 1)
    tuned = finetune(model, evidence, method=f.method, steps=steps, lr=f.lr, batch_size=batch, rank=f.rank,
                     k=f.k, seed=seed)
    return tuned.snapshots[steps]


def _doc_nll(model: PersonaLM, docs: Tensor) -> Tensor:
    """``[F]`` NLL of each document read on its own."""
    logp = next_token_logprobs(model, docs)  # [F, L, V + 1]
    return -logp.gather(-1, docs[..., None]).squeeze(-1).sum(-1)


def _law_at_prior(personas: MarkovPersonas, log_p: Tensor, shots) -> list[float]:
    """The law with the world's prior and ``K = 1``: what the law itself says exact Bayes does."""
    from inference.conditioning.scaling_law import law_nll

    n = torch.tensor(list(shots), dtype=torch.float64)
    return law_nll(n, personas.prior.log(), torch.tensor(1.0, dtype=torch.float64), log_p).tolist()
