"""NUTS on persona weights: wall time, effective sample size, ESS per second.

The problem (issue 2): the mixture evidence model with known persona tables,
K = 8 personas over V = 32 tokens (order 1), 400 documents x 50 tokens = 20,000
evidence tokens, ``w ~ Dirichlet(1)``, 4 chains x 500 draws after 500 warmup
steps, chains run one after another. For each potential of
:func:`inference.mcmc.run_mcmc` (``marginal``: hand-marginalised from sufficient
statistics; ``enumerate``: Pyro's ``TraceEnum``) it reports

* NUTS seconds (sampling only) and total seconds (``condition()`` end to end,
  ``infer_discrete`` recovery of the personas included),
* bulk ESS, min over the K entries of ``w`` (ArviZ, through ``inference.diagnostics``)
  and Pyro's ESS (the estimator the NumPyro comparison also uses),
* ESS per NUTS second, R-hat max, divergences.

Run by hand (numbers go in the README, never in tests)::

    .venv/bin/python benchmarks/bench_nuts.py                     # full size
    .venv/bin/python benchmarks/bench_nuts.py --smoke             # seconds
    .venv/bin/python benchmarks/bench_nuts.py --potentials marginal --repeats 3 --json out.json

``--save-problem P.npz`` also writes the problem (log-likelihood matrix, sparse
counts, tables) for ``benchmarks/numpyro_nuts.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch

from inference.conditioning.condition import condition
from inference.diagnostics import convergence
from models.counts import count_transitions, make_evidence
from models.mixture import simulate_corpus
from models.personas import random_personas

FULL = dict(num_personas=8, vocab_size=32, order=1, num_docs=400, doc_len=50, num_chains=4, num_samples=500,
            warmup_steps=500)
SMOKE = dict(num_personas=3, vocab_size=4, order=1, num_docs=20, doc_len=10, num_chains=2, num_samples=30,
             warmup_steps=30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for checking the script")
    for name, value in FULL.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    parser.add_argument("--potentials", default="marginal,enumerate", help="comma-separated: marginal, enumerate")
    parser.add_argument("--repeats", type=int, default=1, help="runs per potential (the table shows medians)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)")
    parser.add_argument("--json", default=None, help="write every run's numbers here")
    parser.add_argument("--save-problem", default=None, help="write the problem for numpyro_nuts.py (.npz)")
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else FULL
    for name, value in base.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def make_problem(args: argparse.Namespace):
    """Persona tables, true weights (a Dirichlet(1) draw) and a corpus drawn from them."""
    personas = random_personas(args.num_personas, args.vocab_size, args.order, concentration=0.5, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    truth = torch.as_tensor(rng.dirichlet(np.ones(args.num_personas)))
    tokens, _ = simulate_corpus(personas.with_prior(truth), args.num_docs, args.doc_len, seed=args.seed)
    return personas, truth, make_evidence(tokens)


def save_problem(path: str, personas, evidence, truth: torch.Tensor) -> None:
    """The same problem for NumPyro: ``loglik`` [D, K], sparse counts, flat log tables, truth."""
    counts = count_transitions(evidence, personas.vocab_size, personas.order)
    log_table = personas.log_table()  # [K, F]
    np.savez(path, loglik=counts.loglik(log_table[:, None, :]).T.numpy(), log_table=log_table.numpy(),
             doc=counts.doc.numpy(), feature=counts.feature.numpy(), count=counts.count.numpy(),
             truth=truth.numpy(), alpha=np.ones(personas.num_personas))


def run_once(personas, evidence, args: argparse.Namespace, potential: str, seed: int) -> dict:
    from pyro.ops.stats import effective_sample_size

    start = time.perf_counter()
    post = condition(personas, evidence, model="mixture", method="mcmc", seed=seed, num_chains=args.num_chains,
                     num_samples=args.num_samples, warmup_steps=args.warmup_steps, potential=potential)
    total = time.perf_counter() - start
    numbers = convergence(post.to_arviz())  # ArviZ: rank-normalised R-hat, bulk ESS
    diag = post.diagnostics
    ess_pyro = float(effective_sample_size(post.weight_samples, chain_dim=0, sample_dim=1).min())
    return {
        "potential": potential, "seed": seed, "nuts_seconds": diag["sampling_seconds"],
        "discrete_seconds": diag["discrete_seconds"], "total_seconds": total,
        "ess_bulk_min": numbers["ess_min"], "ess_pyro_min": ess_pyro,
        "ess_per_second": numbers["ess_min"] / diag["sampling_seconds"],
        "r_hat_max": numbers["r_hat_max"], "divergences": numbers["divergences"],
        "step_size": diag["step_size"], "weights": [float(x) for x in post.weights],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    personas, truth, evidence = make_problem(args)
    if args.save_problem:
        save_problem(args.save_problem, personas, evidence, truth)
    print(f"NUTS on persona weights: K={args.num_personas} V={args.vocab_size} order={args.order} "
          f"D={args.num_docs} x T={args.doc_len} ({evidence.num_tokens} evidence tokens), "
          f"{args.num_chains} chains x {args.num_samples} draws after {args.warmup_steps} warmup, "
          f"torch threads={args.threads}", flush=True)
    runs = []
    for potential in args.potentials.split(","):
        for r in range(args.repeats):
            runs.append(run_once(personas, evidence, args, potential.strip(), args.seed + r))
            print(f"  {potential} run {r}: {runs[-1]['nuts_seconds']:.1f} s NUTS, "
                  f"bulk ESS {runs[-1]['ess_bulk_min']:.0f}", flush=True)
    header = f"{'potential':<10} {'NUTS s':>8} {'total s':>8} {'ESS bulk':>9} {'ESS pyro':>9} {'ESS/s':>8} " \
             f"{'R-hat':>7} {'div':>4}"
    print("\n" + header + "\n" + "-" * len(header))
    for potential in dict.fromkeys(run["potential"] for run in runs):
        mine = [run for run in runs if run["potential"] == potential]
        med = {key: statistics.median(run[key] for run in mine)
               for key in ("nuts_seconds", "total_seconds", "ess_bulk_min", "ess_pyro_min", "ess_per_second",
                           "r_hat_max", "divergences")}
        print(f"{potential:<10} {med['nuts_seconds']:>8.1f} {med['total_seconds']:>8.1f} {med['ess_bulk_min']:>9.0f} "
              f"{med['ess_pyro_min']:>9.0f} {med['ess_per_second']:>8.1f} {med['r_hat_max']:>7.4f} "
              f"{med['divergences']:>4.0f}")
    print(f"\ntrue w:            {np.round(truth.numpy(), 3).tolist()}")
    for run in runs[:: args.repeats]:
        print(f"E[w | D] {run['potential']:<9} {np.round(run['weights'], 3).tolist()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "runs": runs}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
