"""The main job: does fine-tuning act like conditioning? (``psm run``, ``psm demo``)

For one simulated persona world the runner

1. builds (or loads) the base transformer ``q0``, pre-trained with persona tags;
2. for each evidence arm, fine-tunes ``q0`` on the arm's evidence and keeps snapshots ``q_s``;
3. conditions the true persona model on the same evidence (exact, a grid of ``beta``);
4. measures everything of DESIGN.md §3 on held-out contexts
   (:mod:`inference.experiment.arms`): KL to the base and to the conditioned predictive (and
   ``beta*(s)``), the projection onto ``R_true`` and ``R_self``, the exhaustiveness
   decomposition ``KL(q_s || q0) = re-weighting + other`` with ``E`` and a bootstrap interval,
   the mechanisms of the last snapshot (by context and position, forgetting, in-context
   updating strength), Bayesian persona attribution of the final snapshot (NUTS), held-out
   ELPD of every candidate on fresh evidence, and the description length of the evidence;
5. writes ``summary.json``, ``report.md`` with its figures, and the InferenceData files.

Seeds: the world (persona tables, corpus, held-out contexts) comes from
``world.seed``; evidence, training and inference from the top-level ``seed``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from inference.experiment.arms import ArmResult, run_arm
from inference.experiment.config import ExperimentConfig
from inference.experiment.world import load_base, make_world, measure_base
from inference.runtime import single_thread
from models.transformer import PersonaLM

__all__ = ["ArmResult", "load", "run_and_write", "run_arm", "run_experiment"]


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
        e = ", ".join(f"E_{key}={_short(arm[f'exhaustiveness_{key}'][-1])} "
                      f"[{_short(arm[f'exhaustiveness_ci_{key}'][-1][0])}, {_short(arm[f'exhaustiveness_ci_{key}'][-1][1])}]"
                      for key in ("true", "self"))
        lines.append(f"  arm {arm['arm']}: {e}, beta*={_short(arm['beta_star'][-1])} (last step; 90% intervals)")
    return "\n".join(lines)


def _short(x) -> str:
    return "undefined" if x is None or x != x else f"{x:.3g}"
