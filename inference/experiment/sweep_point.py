"""One point of a sweep: fine-tune every arm with the point's settings and measure the final snapshot.

The light cousin of :func:`inference.experiment.arms.run_arm`: the same evidence, fine-tuning and
comparisons of the final snapshot (``E`` against both reachable sets with bootstrap intervals,
``beta*``, forgetting, the in-context ``gamma``), without the attribution, ELPD and code length.
"""

from __future__ import annotations

from typing import Any

from inference.conditioning.condition import condition
from inference.experiment.config import ExperimentConfig
from inference.experiment.snapshots import compare_snapshots, final_mechanisms
from inference.experiment.world import (
    arm_evidence,
    arm_persona,
    child_seed,
    load_base,
    make_world,
    measure_base,
)
from inference.finetuning.training import finetune
from inference.runtime import single_thread
from models.transformer import next_token_logprobs


@single_thread
def point_rows(config: ExperimentConfig) -> list[dict[str, Any]]:
    """One row per arm: the settings-free measurements of the point's final snapshot."""
    world = make_world(config.world)
    base = measure_base(load_base(config, world), world)
    f, c, seed = config.finetune, config.compare, config.seed
    rows = []
    for arm in config.arms:
        writer, persona_index = arm_persona(world, arm, seed)
        evidence = arm_evidence(writer, arm, arm.num_docs, child_seed(seed, "evidence", arm.name))
        tuned = finetune(base.model, evidence, method=f.method, steps=f.steps, lr=f.lr, batch_size=f.batch_size,
                         snapshot_steps=[f.steps], rank=f.rank, k=f.k, seed=seed)
        q = {f.steps: next_token_logprobs(tuned.snapshots[f.steps], world.heldout)}  # [n, T, V]
        conditioned = {b: condition(world.personas, evidence, beta=b, seed=seed).predictive(world.heldout)
                       for b in c.betas}
        snaps = compare_snapshots(q, base, world, conditioned, c, seed, arm.name)
        mech = final_mechanisms(q[f.steps], base, world, snaps, persona_index)
        summary = snaps.summary()
        rows.append({
            "arm": arm.name,
            "evidence_persona": persona_index,
            "kl_to_base": summary["kl_to_base"][-1],
            **{f"E_{key}": summary[f"exhaustiveness_{key}"][-1] for key in ("true", "self")},
            **{f"E_{key}_low": summary[f"exhaustiveness_ci_{key}"][-1][0] for key in ("true", "self")},
            **{f"E_{key}_high": summary[f"exhaustiveness_ci_{key}"][-1][1] for key in ("true", "self")},
            "beta_star": summary["beta_star"][-1],
            "forgetting": mech["forgetting"]["increase"],
            **{f"gamma_{key}": mech["in_context_gamma"][key]["gamma"] for key in ("true", "self")},
            "final_training_loss": float(tuned.losses[-1]),
        })
    return rows
