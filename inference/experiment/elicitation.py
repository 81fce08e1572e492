"""``kind = "elicitation"``: how many parameters does fine-tuning need to change? (Donoway et al. 2025)

Donoway et al. train only ``k`` randomly chosen parameters of a model: 10-100 of them recover up to
half of the gap between the base and the fully fine-tuned model, thousands to tens of thousands
recover 95%, the share grows like a logistic curve in ``log k``, and description length tells
eliciting (a capability the base had) from teaching. Here, on the same base, two kinds of evidence:

* ``in_support``: documents of a persona the base knows (conditioning can reach them);
* ``rule``: documents whose first ``period`` tokens come from that persona and then repeat
  (:func:`models.rules.periodic_documents`), a deterministic rule inside the sequence that no
  persona has.

For every ``k`` in ``[finetune] ks`` and seed (:func:`~inference.finetuning.adapters.k_param_positions`
draws the ``k`` scalars from the seed) the base is fine-tuned with ``method="k_params"``; full
fine-tuning is the reference. The learning rate and the snapshot of every run are chosen on
validation documents: the first seed tries every rate of a grid centred on ``lr_all * (N / k) ** lr_exponent``
(:func:`~inference.experiment.elicitation_config.learning_rates`; ``N`` the parameter count) and the other
seeds reuse the one it chose for that ``k``. On test documents of the evidence's kind the run's
**share of the full gain** is ``(NLL_base - NLL_k) / (NLL_base - NLL_full)``, with ``NLL_full`` the
mean over the seeds' full runs. A logistic curve in ``log10 k`` is fitted to each kind's shares by
NUTS (:mod:`inference.comparison.logistic`; the full runs enter at ``k`` = the parameter count),
giving the posterior of the midpoint ``k50`` and the slope. Next to it: the share that exact
conditioning on the same evidence recovers (``beta = 1``, the true personas), the description
length of each kind (prequential, full fine-tuning), and, with ``[compare] exhaustiveness``, ``E_true``
and ``E_self`` (DESIGN.md §3.3) of the first seed's model at every ``k`` on the world's held-out contexts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from inference.comparison.decomposition import decomposition_interval, fit
from inference.comparison.logistic import fit_logistic
from inference.comparison.tilt import Tilt
from inference.conditioning.condition import condition
from inference.experiment.elicitation_config import (
    EVIDENCE_KINDS,
    ElicitationExperiment,
    elicitation_from_dict,
    learning_rates,
)
from inference.experiment.snapshots import REACHABLE
from inference.experiment.world import Base, World, child_seed, load_base, make_world, measure_base
from inference.finetuning.prequential import prequential_code_length
from inference.finetuning.training import finetune
from inference.runtime import single_thread
from models.counts import make_evidence
from models.mixture import simulate_corpus
from models.rules import periodic_documents
from models.transformer import PersonaLM, next_token_logprobs

__all__ = ["evidence_sets", "load", "run_and_write", "run_elicitation"]


def nll(model: PersonaLM, tokens: Tensor) -> float:
    """Mean NLL per token (nats) of ``tokens`` ``[n, T]`` under the untagged model."""
    return float(-next_token_logprobs(model, tokens).gather(-1, tokens.unsqueeze(-1)).mean())


def evidence_sets(config: ElicitationExperiment, world: World) -> dict[str, dict[str, Tensor]]:
    """Per kind: ``evidence``, ``validation`` and ``test`` documents ``[n, T]`` (from the experiment's seed)."""
    e = config.evidence
    writer = world.personas.subset([e.persona])
    sizes = {"evidence": e.num_docs, "validation": e.validation_docs, "test": e.test_docs}
    out: dict[str, dict[str, Tensor]] = {}
    for kind in EVIDENCE_KINDS:
        out[kind] = {}
        for name, n in sizes.items():
            seed = child_seed(config.seed, kind, name)
            out[kind][name] = (simulate_corpus(writer, n, e.doc_len, seed=seed)[0] if kind == "in_support"
                               else periodic_documents(writer, n, e.doc_len, e.period, seed=seed))
    return out


def train_and_score(config: ElicitationExperiment, model: PersonaLM, docs: dict[str, Tensor], *, k: int | None,
                    lr: float, seed: int) -> dict[str, Any]:
    """One run (``k=None``: full fine-tuning); the snapshot with the best validation NLL is scored on the test set."""
    f = config.finetune
    tuned = finetune(model, make_evidence(docs["evidence"].numpy()), method="full" if k is None else "k_params",
                     k=k or 1, steps=f.steps, lr=lr, batch_size=f.batch_size, snapshot_steps=list(f.snapshots),
                     seed=seed)
    valid = {s: nll(tuned.snapshots[s], docs["validation"]) for s in f.snapshots}
    step = min(valid, key=valid.get)
    return {"lr": lr, "step": step, "validation_nll": valid[step],
            "test_nll": nll(tuned.snapshots[step], docs["test"]), "model": tuned.snapshots[step]}


def runs_for(config: ElicitationExperiment, model: PersonaLM, docs: dict[str, Tensor], k: int | None,
             kind: str, total: int) -> list[dict[str, Any]]:
    """Every seed's run at one ``k`` (None: all ``total`` parameters): the first seed tries every learning rate
    of the grid, the others reuse its choice."""
    lrs = learning_rates(config, total if k is None else k, total)
    seeds = config.seeds
    tries = [train_and_score(config, model, docs, k=k, lr=lr, seed=child_seed(seeds[0], kind, k)) for lr in lrs]
    first = min(tries, key=lambda r: r["validation_nll"])
    rest = [train_and_score(config, model, docs, k=k, lr=first["lr"], seed=child_seed(s, kind, k)) for s in seeds[1:]]
    return [first, *rest]


@single_thread
def run_kind(config: ElicitationExperiment, world: World, base: Base, kind: str, docs: dict[str, Tensor],
             total: int, progress: bool = False) -> dict[str, Any]:
    """Every ``k``, the reference, the logistic fit, conditioning and description length for one kind."""
    f, fit_cfg = config.finetune, config.fit
    base_nll = nll(base.model, docs["test"])
    full = runs_for(config, base.model, docs, None, kind, total)
    full_nll = float(torch.tensor([r["test_nll"] for r in full]).mean())
    gain = base_nll - full_nll
    if not gain > 0:
        raise RuntimeError(f"full fine-tuning on the {kind} evidence did not lower the test NLL ({base_nll:.4f} -> "
                           f"{full_nll:.4f}): the share of its gain is undefined; raise finetune.steps or the learning rates")
    rows = [_row(kind, total, s, r, base_nll, gain) for s, r in zip(config.seeds, full, strict=True)]
    models = {total: full[0]["model"]}
    for k in tqdm(f.ks, desc=f"k parameters ({kind})", disable=not progress):
        runs = runs_for(config, base.model, docs, k, kind, total)
        rows += [_row(kind, k, s, r, base_nll, gain) for s, r in zip(config.seeds, runs, strict=True)]
        models[k] = runs[0]["model"]
    evidence = make_evidence(docs["evidence"].numpy())
    posterior = condition(world.personas, evidence, model="global", method="exact", beta=1.0)
    conditioned_nll = float(-posterior.predictive(docs["test"]).gather(-1, docs["test"].unsqueeze(-1)).mean())
    curve = fit_logistic([r["k"] for r in rows], [r["share"] for r in rows], num_samples=fit_cfg.num_samples,
                         warmup_steps=fit_cfg.warmup_steps, num_chains=fit_cfg.num_chains,
                         seed=child_seed(config.seed, "fit", kind), progress=progress)
    code = prequential_code_length(base.model, evidence, method="full", lr=f.prequential_lr, steps=f.prequential_steps,
                                   batch_size=f.batch_size, block_size_docs=-(-evidence.num_docs // f.prequential_blocks),
                                   seed=child_seed(config.seed, "prequential", kind), progress=progress)
    out = {
        "kind": kind, "base_test_nll": base_nll, "full_test_nll": full_nll, "gain": gain,
        "conditioned_test_nll": conditioned_nll, "conditioned_share": (base_nll - conditioned_nll) / gain,
        "runs": rows, "fit": curve.to_dict(fit_cfg.level),
        "fit_summary": curve.summary.reset_index().rename(columns={"index": "site"}).to_dict("records"),
        "description_length_nats": code.description_length, "prequential_code_nats": code.code_length,
        "evidence_tokens": evidence.num_tokens,
    }
    if config.compare.exhaustiveness:
        out["exhaustiveness"] = _exhaustiveness(config, world, base, models, kind)
    return out | {"_fit": curve}


def _row(kind: str, k: int, seed: int, run: dict[str, Any], base_nll: float, gain: float) -> dict[str, Any]:
    share = (base_nll - run["test_nll"]) / gain
    return {"kind": kind, "k": k, "seed": seed, "lr": run["lr"], "step": run["step"],
            "validation_nll": run["validation_nll"], "test_nll": run["test_nll"], "share": share}


def _exhaustiveness(config: ElicitationExperiment, world: World, base: Base, models: dict[int, PersonaLM],
                    kind: str) -> dict[str, Any]:
    """``E`` against ``R_true`` and ``R_self`` with bootstrap intervals, per ``k`` (first seed; the largest is full)."""
    out: dict[str, Any] = {"k": sorted(models)}
    for key, (components, floor) in REACHABLE.items():
        values, intervals = [], []
        for k in out["k"]:
            q = next_token_logprobs(models[k], world.heldout)  # [n, T, V]
            tilt = Tilt(q, base.q0, getattr(base, components), world.heldout, getattr(base, floor).weights)
            dec = fit(tilt, restarts=config.compare.decomposition_restarts)
            values.append(dec.exhaustiveness)
            intervals.append(list(decomposition_interval(tilt, dec, num_boot=config.compare.bootstrap,
                                                         seed=child_seed(config.seed, "boot", kind, key, k))))
        out[key], out[f"ci_{key}"] = values, intervals
    return out


@single_thread
def run_elicitation(config: ElicitationExperiment, progress: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run both kinds; returns ``(summary, fits)`` (the fits carry the InferenceData written next to it)."""
    start, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(config.seed)
    world = make_world(config.world)
    base = measure_base(load_base(config.experiment(), world, progress), world)
    total = base.summary["num_parameters"]
    data = evidence_sets(config, world)
    kinds, fits, seconds = {}, {}, {}
    for kind in EVIDENCE_KINDS:
        begun = time.perf_counter()
        result = run_kind(config, world, base, kind, data[kind], total, progress)
        fits[kind] = result.pop("_fit")
        kinds[kind] = result
        seconds[kind] = time.perf_counter() - begun
    summary = {"kind": "elicitation", "config": config.to_dict(), "num_parameters": total, "base": base.summary,
               "kinds": kinds, "timing": {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                          "seconds_per_kind": seconds}}
    return summary, fits


# ----------------------------------------------------------------------------- the kind protocol


def load(raw: dict[str, Any], folder: Path) -> ElicitationExperiment:
    """``kind = "elicitation"`` (:mod:`inference.experiment.kinds`): validate a parsed config."""
    return elicitation_from_dict(raw, folder)


def run_and_write(config: ElicitationExperiment, out, *, overwrite: bool = False, progress: bool = True) -> str:
    """Run the experiment, write its outputs into ``out`` and return the closing lines of ``psm run``."""
    from inference.experiment.elicitation_report import closing_lines, write_elicitation

    summary, fits = run_elicitation(config, progress=progress)
    names = write_elicitation(summary, fits, out, overwrite=overwrite)
    return closing_lines(summary, out, names)

