"""The exhaustiveness decomposition on the demo's final snapshot: cost, and the two bootstraps.

    python benchmarks/bench_decomposition.py [--boot 200] [--repeats 3]

Fine-tunes the shipped base on the demo's in-support arm (60 full steps, as ``psm demo``), then
for both reachable sets: the time of one ``fit`` (median of repeats), E and its 90% interval with
``q*`` held fixed (``refit="none"``, the default) and refitted on every resample (``refit="full"``),
with the time of each bootstrap. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

from inference.comparison.decomposition import decomposition_interval, fit
from inference.comparison.projection import project
from inference.comparison.tilt import Tilt
from inference.experiment.config import demo_config
from inference.experiment.world import (
    arm_evidence,
    arm_persona,
    child_seed,
    load_base,
    make_world,
    measure_base,
)
from inference.finetuning.training import finetune
from inference.runtime import torch_threads
from models.transformer import next_token_logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boot", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = demo_config()
    world = make_world(config.world)
    base = measure_base(load_base(config, world), world)
    arm, f = config.arms[0], config.finetune
    writer, _ = arm_persona(world, arm, config.seed)
    evidence = arm_evidence(writer, arm, arm.num_docs, child_seed(config.seed, "evidence", arm.name))
    tuned = finetune(base.model, evidence, method=f.method, steps=f.steps, lr=f.lr, batch_size=f.batch_size,
                     snapshot_steps=[f.steps], seed=config.seed)
    q = next_token_logprobs(tuned.snapshots[f.steps], world.heldout)
    print("| set | fit s (median) | E | 90% interval, q* fixed (s) | 90% interval, refitted (s) |")
    print("|---|---|---|---|---|")
    for key, comps, floor in (("true", base.components_true, base.floor_true),
                              ("self", base.components_self, base.floor_self)):
        proj = project(q, comps, world.heldout, init=floor.weights)
        tilt = Tilt(q, base.q0, comps, world.heldout, floor.weights)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            dec = fit(tilt, init=proj.weights, restarts=1)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        fixed = decomposition_interval(tilt, dec, num_boot=args.boot, refit="none")
        t_fixed = time.perf_counter() - start
        start = time.perf_counter()
        full = decomposition_interval(tilt, dec, num_boot=args.boot, refit="full")
        t_full = time.perf_counter() - start
        print(f"| R_{key} | {statistics.median(times):.2f} | {dec.exhaustiveness:.3f} | [{fixed[0]:.3f}, {fixed[1]:.3f}] "
              f"({t_fixed:.3f}) | [{full[0]:.3f}, {full[1]:.3f}] ({t_full:.0f}) |", flush=True)


if __name__ == "__main__":
    with torch_threads():
        main()
