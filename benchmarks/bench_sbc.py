"""Simulation-based calibration of every (model, method) pair the toolkit offers, at N >= 200.

Run by hand:  .venv/bin/python benchmarks/bench_sbc.py --out runs/bench_sbc [--num-sims 200 --mcmc-sims 100]

For each pair (and each SVI guide: the Dirichlet guide and mean-field ``AutoNormal``)
it runs :func:`inference.sbc.simulation_based_calibration`, writes
``OUT/<name>/sbc.json`` and ``OUT/<name>/sbc_ranks.png``, and prints a table:
model, method, N, L, min p-value (over parameters), number of parameters, seconds.
Two negative controls condition with ``beta = 3`` while simulating with ``beta = 1``
(an over-confident posterior); their p-values show that the test can fail.

MCMC keeps every 4th of 196 draws (``num_draws=49``, ``thin=4``: one chain of 200
warm-up steps). The global-tables chain (45 table entries) takes about 10 s per
simulation on 2 shared cores, so its N is ``--mcmc-sims`` (100 by default).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from inference.conditioning.sbc import simulation_based_calibration
from inference.conditioning.sbc_ranks import plot_ranks
from inference.storage.outputs import write_json_atomic

#: (name, model, method, options); the N of runs marked "slow" is --mcmc-sims
RUNS = [
    ("mixture_exact", "mixture", "exact", {}),
    ("mixture_svi_dirichlet", "mixture", "svi", {"guide": "dirichlet"}),
    ("mixture_svi_normal", "mixture", "svi", {"guide": "normal"}),
    ("mixture_mcmc", "mixture", "mcmc", {"num_draws": 49, "thin": 4}),
    ("global_exact", "global", "exact", {}),
    ("global-tables_exact", "global-tables", "exact", {}),
    ("global-tables_svi_dirichlet", "global-tables", "svi", {"guide": "dirichlet"}),
    ("global-tables_svi_normal", "global-tables", "svi", {"guide": "normal"}),
    ("global-tables_mcmc", "global-tables", "mcmc", {"num_draws": 49, "thin": 4, "slow": True}),
    ("control_mixture_exact_beta3", "mixture", "exact", {"beta": 3.0}),
    ("control_global_exact_beta3", "global", "exact", {"beta": 3.0}),
    ("control_global-tables_exact_beta3", "global-tables", "exact", {"beta": 3.0}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the rank histograms and sbc.json files")
    parser.add_argument("--num-sims", type=int, default=200)
    parser.add_argument("--mcmc-sims", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, help="run only these names (see RUNS)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    header = f"{'run':36s} {'model':14s} {'method':6s} {'options':18s} {'N':>4s} {'L':>3s} {'params':>6s} " \
             f"{'min p':>9s} {'seconds':>8s}  engine"
    print(header, flush=True)
    for name, model, method, options in RUNS:
        if args.only is not None and name not in args.only:
            continue
        options = dict(options)
        num_draws = options.pop("num_draws", 99)
        num_sims = args.mcmc_sims if options.pop("slow", False) else args.num_sims
        start = time.perf_counter()
        result = simulation_based_calibration(model, method, num_sims, args.seed, num_draws,
                                              progress=args.progress, **options)
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "sbc.json", result.to_json())
        plot_ranks(result).savefig(folder / "sbc_ranks.png", dpi=100)  # an OO Figure: nothing to close
        shown = ",".join(f"{k}={v}" for k, v in options.items() if k != "thin") or "-"
        engine = ", ".join(f"{k}={v:.3g}" for k, v in result.diagnostics.items())
        row = (f"{name:36s} {model:14s} {method:6s} {shown:18s} {num_sims:4d} {num_draws:3d} "
               f"{len(result.ranks):6d} {result.min_p_value:9.2g} {time.perf_counter() - start:8.1f}  {engine}")
        rows.append(row)
        print(row, flush=True)
        per_param = ", ".join(f"{k}: {v:.2g}" for k, v in result.p_values.items())
        print(f"    p-values: {per_param}", flush=True)
    print("\n" + header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
