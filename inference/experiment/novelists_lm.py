"""The persona-selection test on real text: an author-tagged transformer, fine-tuned on one author.

1. A byte-level BPE tokenizer (:mod:`models.corpora.bpe`) is learned from the training
   chunks of every author but ``heldout_author``; LM documents are non-overlapping windows
   of ``lm.doc_tokens`` tokens of a chunk's words.
2. The base :class:`models.transformer.PersonaLM` is pre-trained on the training windows of
   those ``K - 1`` authors, each window read with its author's tag with probability
   ``lm.p_tag`` (:func:`inference.finetuning.training.pretrain`; DESIGN.md §3.2). The
   left-out author is entirely outside pre-training.
3. Two arms fine-tune the *untagged* base (:func:`inference.finetuning.training.finetune`,
   full fine-tuning) on windows of held-out chapters (the calibration half): **in_support**
   on ``lm.finetune_author``, **novel** on the left-out author, the same number of windows.
4. On ``lm.contexts`` windows of the test half (every author, the left-out one included)
   each snapshot ``q_s`` is compared with the base ``q0`` and with ``R_self``, the base
   prompted with each author tag: ``KL(q_s || q0)``, the projection ``w*(s)`` and residual
   ``r(s)`` (:func:`inference.comparison.projection.project`; floor ``r(0)``), the held-out
   NLL on the evidence author's contexts and on the others' (forgetting), and the
   decomposition of ``KL(q_s || q0)`` into re-weighting and the rest against ``R_self``
   (DESIGN.md §3.3): ``E_self(s)`` with a bootstrap interval over the contexts
   (``lm.bootstrap`` replicates, ``q*`` held at the full-data fit).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from inference.comparison.decomposition import decomposition_interval, fit
from inference.comparison.kl import kl_per_context, mean_kl
from inference.comparison.projection import project
from inference.comparison.tilt import Tilt
from inference.experiment.world import child_seed
from inference.finetuning.training import finetune, pretrain
from models.corpora.bpe import encode, train_bpe, windows
from models.counts import make_evidence
from models.errors import InputError
from models.transformer import PersonaLM, TransformerConfig, next_token_logprobs


def lm_documents(config, data) -> dict[str, Any]:
    """Tokenizer, pre-training windows (with authors), arm evidence and held-out contexts (module docstring)."""
    m, h = config.lm, data.heldout_author
    authors = [a for i, a in enumerate(data.authors) if i != h]
    name = m.finetune_author or authors[0]
    if name not in authors:
        raise InputError(f"lm.finetune_author {name!r} must be a known author other than the left-out "
                         f"{data.authors[h]!r}: one of {', '.join(authors)}")
    remap = np.array([i - (i > h) if i != h else -1 for i in range(len(data.authors))])
    texts = [" ".join(w) for w in data.chunks.words]
    pre = np.flatnonzero(data.train & (data.author != h))
    tokenizer = train_bpe([texts[i] for i in pre], m.vocab_size)
    rng = np.random.default_rng(config.seed)

    def docs(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens, source = windows(encode(tokenizer, [texts[i] for i in index]), m.doc_tokens)
        return tokens, data.author[index][source]

    tokens, who = docs(pre)
    arm_author = {"in_support": data.authors.index(name), "novel": h}
    evidence = {arm: docs(np.flatnonzero(data.calibration & (data.author == a)))[0] for arm, a in arm_author.items()}
    size = min(len(e) for e in evidence.values())
    evidence = {arm: e[rng.permutation(len(e))[:size]] for arm, e in evidence.items()}
    held, held_who = docs(np.flatnonzero(data.test))
    per_author = max(1, m.contexts // len(data.authors))
    pick = np.concatenate([rng.permutation(np.flatnonzero(held_who == a))[:per_author]
                           for a in range(len(data.authors))])
    return {"tokenizer": tokenizer, "authors": authors, "tokens": tokens, "persona": remap[who],
            "evidence": evidence, "arm_author": arm_author, "contexts": held[pick], "context_author": held_who[pick]}


def run_lm(config, data, progress: bool = False) -> dict[str, Any]:
    """Pre-train, fine-tune both arms and measure (module docstring); a JSON-ready dict (+ ``curves``)."""
    start = time.perf_counter()
    m = config.lm
    docs = lm_documents(config, data)
    K = len(docs["authors"])
    model_config = TransformerConfig(vocab_size=m.vocab_size, num_personas=K, block_size=m.doc_tokens + 1,
                                     n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd)
    base, history = pretrain(model_config, torch.as_tensor(docs["tokens"]), torch.as_tensor(docs["persona"]),
                             p_tag=m.p_tag, steps=m.steps, batch_size=m.batch_size, lr=m.lr, seed=config.seed,
                             progress=progress)
    pretrain_seconds = history.seconds
    contexts = torch.as_tensor(docs["contexts"])  # [n, T]
    q0 = next_token_logprobs(base, contexts)  # [n, T, V]
    components = torch.stack([next_token_logprobs(base, contexts, tag=k) for k in range(K)])  # [K, n, T, V]
    floor = project(q0, components, contexts, restarts=K)
    out: dict[str, Any] = {
        "authors_in_pretraining": docs["authors"], "left_out_author": data.authors[data.heldout_author],
        "num_parameters": sum(p.numel() for p in base.parameters()), "pretrain_documents": int(len(docs["tokens"])),
        "pretrain_final_loss": float(history.losses[-20:].mean()), "contexts": int(len(contexts)),
        "floor_self": floor.residual, "floor_weights": floor.weights.tolist(),
        "heldout_nll_base": _nll(q0, contexts), "arms": {},
        "decomposition": {"reachable_set": "R_self: the base prompted with each author tag",
                          "bootstrap": m.bootstrap, "level": 0.9},
    }
    for arm, evidence in docs["evidence"].items():
        out["arms"][arm] = _arm(base, evidence, arm, docs, q0, components, contexts, floor, config, progress)
    out["pretrain_seconds"] = pretrain_seconds
    out["seconds"] = time.perf_counter() - start
    return out


#: the decomposition fields of the step-0 snapshot, the base itself (``E`` is 0 / 0 there)
UNMOVED = {"exhaustiveness_self": None, "exhaustiveness_ci_self": None, "reweighting_self": None, "other_self": None}


def _arm(base: PersonaLM, evidence: np.ndarray, arm: str, docs: dict, q0, components, contexts, floor, config,
         progress: bool) -> dict[str, Any]:
    m = config.lm
    tuned = finetune(base, make_evidence(evidence), method="full", steps=m.finetune_steps, lr=m.finetune_lr,
                     batch_size=m.finetune_batch, snapshot_steps=list(m.snapshots), seed=config.seed,
                     progress=progress)
    writer = docs["arm_author"][arm]
    own = torch.as_tensor(docs["context_author"] == writer)  # [n] contexts by the evidence author
    rows, init = [], floor.weights
    for step in m.snapshots:
        q = next_token_logprobs(tuned.snapshots[step], contexts)  # [n, T, V]
        proj = project(q, components, contexts, init=init, restarts=1)
        init = proj.weights
        per_context = kl_per_context(q, q0)  # [n]
        split = UNMOVED if step == 0 else _decomposition(q, q0, components, contexts, floor, proj, num_boot=m.bootstrap,
                                                         seed=child_seed(config.seed, "boot", arm, step))
        rows.append(split | {
            "step": step, "kl_to_base": mean_kl(q, q0), "projection_weights": proj.weights.tolist(),
            "residual_self": proj.residual, "kl_to_base_own_contexts": float(per_context[own].mean()),
            "kl_to_base_other_contexts": float(per_context[~own].mean()),
            "nll_own_contexts": _nll(q[own], contexts[own]), "nll_other_contexts": _nll(q[~own], contexts[~own]),
        })
    return {"evidence_author": docs["authors"][writer] if arm == "in_support" else "left out of pre-training",
            "evidence_windows": int(len(evidence)), "finetune_seconds": tuned.seconds,
            "final_loss": float(tuned.losses[-5:].mean()), "snapshots": rows}


def _nll(q: torch.Tensor, contexts: torch.Tensor) -> float:
    """Mean negative log-likelihood per token of ``contexts`` under ``q`` ``[n, T, V]`` (nats)."""
    if not len(contexts):
        return float("nan")
    return float(-q.gather(-1, contexts[..., None]).mean())


def _decomposition(q, q0, components, contexts, floor, proj, *, seed: int, num_boot: int) -> dict[str, Any]:
    """``E_self`` of one snapshot (re-weighting share of ``KL(q_s || q0)``) and its bootstrap interval."""
    tilt = Tilt(q, q0, components, contexts, floor.weights)  # q*: the base tilted towards a persona mixture
    dec = fit(tilt, init=proj.weights, restarts=1)
    low, high = decomposition_interval(tilt, dec, num_boot=num_boot, seed=seed)
    return {"exhaustiveness_self": dec.exhaustiveness, "exhaustiveness_ci_self": [low, high],
            "reweighting_self": dec.reweighting, "other_self": dec.other}
