"""One arm of one cell ``(f, seed)`` of the cipher experiment: the evidence persona's text in the
evidence cipher (arm ``cipher``) or in plain text (arm ``plain``, the control).

Both arms read the *same* underlying documents (evidence, validation, test), enciphered or not,
so their numbers are paired. For an arm, :func:`run_cipher_arm` measures

* **data efficiency**: fine-tuning on nested evidence sets (``[evidence] sizes`` documents; the
  snapshot with the best validation NLL is kept) and exact conditioning (``beta = 1``, the
  supported joint personas) on nested prefixes of the same evidence (1, 2, 4, ... tokens); the
  held-out NLL on the test documents of each (both curves start at 0 tokens: the base, and the
  prior with in-context updating), and the evidence tokens each needs to reach the target
  ``writer's own NLL + [evidence] target_gap`` (:func:`tokens_to_target`; 0 when no evidence is
  needed, None when the largest set does not reach it);
* on the model fine-tuned on the largest set (its last snapshot, as ``psm run``): ``E_true``,
  ``E_self`` with bootstrap intervals and ``beta*`` (:func:`~inference.experiment.snapshots.compare_snapshots`
  on the world's held-out contexts), and the description length (prequential, same method);
* the **rule probe** (:mod:`inference.comparison.rule_probe`) on the test documents in the evidence
  cipher and in plain text, for the base, the fine-tuned model (every evidence size's chosen
  snapshot; the largest is the headline) and the exactly conditioned model (largest set).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from inference.comparison.rule_probe import rule_skill
from inference.conditioning.condition import condition
from inference.experiment.cipher_world import CipherWorld
from inference.experiment.config import CompareConfig
from inference.experiment.snapshots import compare_snapshots
from inference.experiment.world import Base, World, child_seed
from inference.finetuning.prequential import prequential_code_length
from inference.finetuning.training import finetune
from inference.runtime import single_thread
from models.ciphers import encipher
from models.counts import Evidence, make_evidence
from models.mixture import simulate_corpus
from models.predictive import persona_logprobs
from models.rules import bigram_probs, rule_targets
from models.transformer import PersonaLM, next_token_logprobs

ARMS = ("cipher", "plain")


def nll(logp: Tensor, tokens: Tensor) -> float:
    """Mean NLL per token (nats) of ``tokens`` ``[n, T]`` under log-probabilities ``[n, T, V]``."""
    return float(-logp.gather(-1, tokens.unsqueeze(-1)).mean())


def tokens_to_target(tokens: list[float], nlls: list[float], target: float) -> float | None:
    """Evidence tokens at which a decreasing NLL curve first reaches ``target``.

    ``tokens[0]`` when the first point already reaches it (0 for a curve that starts without
    evidence); between two positive sizes the crossing is interpolated in log tokens; right after
    a first point of 0 tokens the size that reaches it is returned (an upper bound); None when no
    point reaches it.
    """
    for i, value in enumerate(nlls):
        if value <= target:
            if i == 0 or tokens[i - 1] <= 0:
                return float(tokens[i])
            x0, x1, y0, y1 = math.log(tokens[i - 1]), math.log(tokens[i]), nlls[i - 1], value
            return float(math.exp(x0 + (x1 - x0) * (y0 - target) / (y0 - y1)))
    return None


def evidence_documents(world: CipherWorld, seed: int) -> dict[str, Tensor]:
    """The plain documents behind both arms: ``evidence`` (largest set), ``validation`` and ``test``."""
    c = world.config
    writer = world.personas.subset([c.evidence.persona])
    sizes = {"evidence": c.evidence.sizes[-1], "validation": c.evidence.test_docs, "test": c.evidence.test_docs}
    return {name: simulate_corpus(writer, n, c.world.doc_len, seed=child_seed(seed, "documents", name))[0]
            for name, n in sizes.items()}


@single_thread
def run_cipher_arm(world: CipherWorld, base: Base, reachable: World, arm: str, documents: dict[str, Tensor],
                   seed: int, progress: bool = False) -> dict[str, Any]:
    """Every measure of one arm (module docstring), as a JSON-ready dict."""
    cipher = world.evidence_cipher if arm == "cipher" else 0
    sigma = world.sigmas[cipher]
    docs = {name: encipher(x, sigma) for name, x in documents.items()}
    writer_nll = nll(persona_logprobs(world.writer(cipher), docs["test"])[0], docs["test"])
    target = writer_nll + world.config.evidence.target_gap
    base_nll = nll(next_token_logprobs(base.model, docs["test"]), docs["test"])
    base_probe = _probe(world, documents["test"], {"base": lambda x: next_token_logprobs(base.model, x)})["base"]
    tuned, curve = _finetune_curve(world, base.model, docs, documents["test"], seed, progress)
    ft_curve = {"tokens": [0, *curve["tokens"]], "nll": [base_nll, *curve["nll"]], "step": [0, *curve["step"]],
                "skill_cipher": [base_probe["cipher"], *curve["skill_cipher"]],
                "skill_plain": [base_probe["plain"], *curve["skill_plain"]]}  # 0 tokens: the base
    exact_curve, conditioned_test = _exact_curve(reachable, docs, world.writer_index(cipher))
    out: dict[str, Any] = {
        "arm": arm, "writer_joint_index": world.writer_index(cipher),
        "in_support": bool(world.writer_index(cipher) < reachable.personas.num_personas),
        "base_test_nll": base_nll,
        "writer_nll": writer_nll, "target_nll": target,
        "finetune_curve": ft_curve, "exact_curve": exact_curve,
        "tokens_to_target_finetune": tokens_to_target(ft_curve["tokens"], ft_curve["nll"], target),
        "tokens_to_target_exact": tokens_to_target(exact_curve["tokens"], exact_curve["nll"], target),
    }
    out |= _measure_largest(world, base, reachable, tuned, make_evidence(docs["evidence"].numpy()), seed, arm,
                            progress)
    best = tuned.snapshots[curve["step"][-1]]
    out["probe"] = {"base": base_probe, **_probe(world, documents["test"], {
        "finetuned": lambda x: next_token_logprobs(best, x),
        "conditioned": conditioned_test,
    })}
    return out


def _finetune_curve(world: CipherWorld, model: PersonaLM, docs: dict[str, Tensor], plain_test: Tensor, seed: int,
                    progress: bool):
    """Fine-tune on every nested evidence set: ``(largest run, {"tokens", "nll", "step", "skill_cipher",
    "skill_plain"})``, the rule probe of each size's chosen snapshot included."""
    c, T = world.config, world.config.world.doc_len
    f = c.finetune
    curve: dict[str, list] = {"tokens": [], "nll": [], "step": [], "skill_cipher": [], "skill_plain": []}
    tuned = None
    for n in c.evidence.sizes:
        evidence = make_evidence(docs["evidence"][:n].numpy())
        tuned = finetune(model, evidence, method=f.method, steps=f.steps, lr=f.lr, batch_size=min(f.batch_size, n),
                         snapshot_steps=list(f.snapshots), rank=f.rank, k=f.k, seed=child_seed(seed, "finetune", n),
                         progress=progress)
        valid = {s: nll(next_token_logprobs(m, docs["validation"]), docs["validation"])
                 for s, m in tuned.snapshots.items()}
        step = min(valid, key=valid.get)
        curve["tokens"].append(n * T)
        curve["nll"].append(nll(next_token_logprobs(tuned.snapshots[step], docs["test"]), docs["test"]))
        curve["step"].append(step)
        chosen = tuned.snapshots[step]
        probe = _probe(world, plain_test, {"model": lambda x, m=chosen: next_token_logprobs(m, x)})["model"]
        curve["skill_cipher"].append(probe["cipher"])
        curve["skill_plain"].append(probe["plain"])
    return tuned, curve


def _exact_curve(reachable: World, docs: dict[str, Tensor], writer: int):
    """Exact conditioning (global, beta 1) on prefixes of 1, 2, 4, ... evidence tokens, read document by
    document: ``({"tokens", "nll", "posterior_on_writer"}, predictive of the largest)``."""
    evidence = docs["evidence"]
    total = evidence.numel()
    grid = sorted({0} | {2**i for i in range(int(math.log2(total)) + 1)} | {total})
    order = torch.arange(total).reshape(evidence.shape)  # [D, T] reading order
    curve: dict[str, list] = {"tokens": [], "nll": [], "posterior_on_writer": []}
    for m in grid:
        used = (order < max(m, 1)).any(-1)  # documents the prefix touches (0 tokens: beta = 0, the prior)
        post = condition(reachable.personas, Evidence(evidence[used], (order < max(m, 1))[used]), model="global",
                         method="exact", beta=1.0 if m else 0.0)
        curve["tokens"].append(m)
        curve["nll"].append(nll(post.predictive(docs["test"]), docs["test"]))
        inside = writer < reachable.personas.num_personas
        curve["posterior_on_writer"].append(float(post.weights[writer]) if inside else 0.0)
    return curve, post.predictive


def _measure_largest(world: CipherWorld, base: Base, reachable: World, tuned, evidence: Evidence, seed: int,
                     arm: str, progress: bool) -> dict[str, Any]:
    """E with intervals, beta* and the description length of the model fine-tuned on the largest set."""
    c = world.config
    f, cmp = c.finetune, c.compare
    q = {s: next_token_logprobs(m, world.heldout) for s, m in tuned.snapshots.items() if s > 0}
    posteriors = {b: condition(reachable.personas, evidence, model="global", method="exact", beta=b)
                  for b in cmp.betas}
    conditioned = {b: post.predictive(world.heldout) for b, post in posteriors.items()}
    options = CompareConfig(betas=tuple(cmp.betas), bootstrap=cmp.bootstrap, bootstrap_refit=cmp.bootstrap_refit,
                            decomposition_restarts=cmp.decomposition_restarts)
    snaps = compare_snapshots(q, base, reachable, conditioned, options, seed, arm, progress).summary()
    code = prequential_code_length(
        base.model, evidence, method=f.method, lr=f.lr, steps=f.prequential_steps,
        batch_size=min(f.batch_size, evidence.num_docs), block_size_docs=-(-evidence.num_docs // f.prequential_blocks),
        rank=f.rank, k=f.k, seed=child_seed(seed, "prequential"), progress=progress)
    weights = posteriors[max(cmp.betas)].weights
    final = {key: snaps[key][-1] for key in ("kl_to_base", "beta_star", "exhaustiveness_true", "exhaustiveness_self",
                                             "exhaustiveness_ci_true", "exhaustiveness_ci_self")}
    final |= {f"decomposition_{key}": {name: values[-1] for name, values in snaps[f"decomposition_{key}"].items()}
              for key in ("true", "self")}
    return final | {
        "posterior_top_persona": int(weights.argmax()), "posterior_top_weight": float(weights.max()),
        "description_length_nats": code.description_length, "prequential_code_nats": code.code_length,
        "evidence_tokens": evidence.num_tokens,
    }


def _probe(world: CipherWorld, plain_test: Tensor, models: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Rule skill of every model on the test documents in the evidence cipher and in plain text."""
    rho, lag = world.config.world.rule_prob, world.config.world.lag
    out: dict[str, dict[str, float]] = {name: {} for name in models}
    for text, cipher in (("cipher", world.evidence_cipher), ("plain", 0)):
        tokens = encipher(plain_test, world.sigmas[cipher])
        rule, bigram = world.rule_in(cipher)
        targets = rule_targets(tokens, lag, rule)
        b = bigram_probs(bigram, tokens, targets)
        for name, predict in models.items():
            out[name][text] = rule_skill(predict(tokens), targets, b, rho) if rho > 0 else float("nan")
    return out

