"""NUTS on persona weights, the toolkit against NumPyro: wall and CPU time, bulk ESS, ESS per second.

The problem (issue 2): the mixture evidence model with known persona tables,
K = 8 personas over V = 32 tokens (order 1), 400 documents x 50 tokens = 20,000
evidence tokens, ``w ~ Dirichlet(1)``, 4 chains x 500 draws after 500 warmup
steps. Every toolkit variant (a potential of :func:`inference.conditioning.mcmc.run_mcmc`,
``marginal`` or ``enumerate``, with chains one after another, ``chain_workers=1``,
or in parallel processes) and, with ``--numpyro``, NumPyro's NUTS on the same
problem (``numpyro_nuts.py``, in a throwaway venv) run in turn, ``--repeats``
rounds, so that all of them see the same load. Reported per variant (medians):

* NUTS seconds (sampling only, wall) and CPU seconds (all processes),
* bulk ESS, min over the K entries of ``w`` (ArviZ, the toolkit's one convention,
  computed the same way for NumPyro's draws), ESS per wall second and per CPU second,
* the ratio of ESS per second to NumPyro's (same potential; its chains one after another),
* R-hat max, divergences, and (toolkit) seconds of ``infer_discrete``.

Run by hand (numbers go in the README, never in tests)::

    .venv/bin/python benchmarks/bench_nuts.py --numpyro                # full size, ~10 min
    .venv/bin/python benchmarks/bench_nuts.py --smoke                  # seconds
    .venv/bin/python benchmarks/bench_nuts.py --potentials marginal --chain-workers 1,2 --repeats 3 --json out.json

``--save-problem P.npz`` writes the problem for ``numpyro_nuts.py`` run on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from numpyro_nuts import ensure_venv, run_numpyro  # noqa: E402

from inference.conditioning.mcmc import run_mcmc  # noqa: E402
from inference.diagnostics import rhat_ess  # noqa: E402
from models.counts import count_transitions, make_evidence  # noqa: E402
from models.mixture import persona_model, simulate_corpus  # noqa: E402
from models.personas import random_personas  # noqa: E402

FULL = dict(num_personas=8, vocab_size=32, order=1, num_docs=400, doc_len=50, num_chains=4, num_samples=500,
            warmup_steps=500)
SMOKE = dict(num_personas=3, vocab_size=4, order=1, num_docs=20, doc_len=10, num_chains=2, num_samples=30,
             warmup_steps=30)
COLUMNS = ("nuts_seconds", "cpu_seconds", "ess_bulk_min", "ess_per_second", "ess_per_cpu_second", "r_hat_max",
           "divergences", "discrete_seconds")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for checking the script")
    for name, value in FULL.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    parser.add_argument("--potentials", default="marginal,enumerate", help="comma-separated: marginal, enumerate")
    parser.add_argument("--chain-workers", default="1,2", help="comma-separated chain_workers of the toolkit runs")
    parser.add_argument("--numpyro", action="store_true", help="also run NumPyro (throwaway venv, see numpyro_nuts.py)")
    parser.add_argument("--venv", default="/tmp/npvenv", help="NumPyro's throwaway venv")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over all variants (the table shows medians)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write every run's numbers here")
    parser.add_argument("--save-problem", default=None, help="write the problem for numpyro_nuts.py (.npz)")
    args = parser.parse_args(argv)
    for name, value in (SMOKE if args.smoke else FULL).items():
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


def run_toolkit(personas, evidence, args: argparse.Namespace, potential: str, workers: int, seed: int) -> dict:
    """One ``run_mcmc`` call on the problem (as ``condition(model="mixture", method="mcmc")`` makes it)."""
    counts = count_transitions(evidence, personas.vocab_size, personas.order)
    kwargs = dict(tokens=evidence.tokens, mask=evidence.mask, counts=counts, evidence="mixture", beta=1.0,
                  alpha=torch.ones(personas.num_personas, dtype=torch.float64))
    result = run_mcmc(persona_model, (personas, evidence.num_docs, evidence.tokens.shape[1]), kwargs, seed=seed,
                      num_chains=args.num_chains, num_samples=args.num_samples, warmup_steps=args.warmup_steps,
                      potential=potential, chain_workers=workers)
    diag = result.diagnostics
    return numbers(result.samples["w"].numpy(), diag["sampling_seconds"], diag["sampling_cpu_seconds"],
                   diag["divergences"], discrete_seconds=diag["discrete_seconds"])


def numbers(w: np.ndarray, seconds: float, cpu: float, divergences: int, **extra) -> dict:
    """The reported numbers of one run from its ``[chains, draws, K]`` draws and timings."""
    found = rhat_ess({"w": w})
    return {"nuts_seconds": seconds, "cpu_seconds": cpu, "ess_bulk_min": found["ess_min"],
            "ess_per_second": found["ess_min"] / seconds, "ess_per_cpu_second": found["ess_min"] / cpu,
            "r_hat_max": found["r_hat_max"], "divergences": divergences, "weights": w.mean((0, 1)).tolist(), **extra}


def variants(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """``(name, engine, setting)`` of every run in a round: toolkit potentials x workers, then NumPyro's."""
    out = [(f"toolkit {p} workers={w}", p, w) for p in args.potentials.split(",")
           for w in args.chain_workers.split(",")]
    if args.numpyro:
        out += [(f"numpyro {p}", p, "sequential") for p in args.potentials.split(",")]
    return out


def table(runs: list[dict]) -> str:
    """Medians per variant, with the ESS/s ratio to NumPyro's sequential run of the same potential."""
    names = list(dict.fromkeys(run["variant"] for run in runs))
    med = {n: {k: statistics.median(r[k] for r in runs if r["variant"] == n) for k in COLUMNS
               if all(k in r for r in runs if r["variant"] == n)} for n in names}
    header = f"{'variant':<32} {'NUTS s':>7} {'CPU s':>7} {'ESS':>6} {'ESS/s':>7} {'ESS/CPU-s':>9} " \
             f"{'vs NumPyro':>10} {'R-hat':>6} {'div':>4} {'discrete s':>10}"
    lines = [header, "-" * len(header)]
    for n in names:
        m = med[n]
        ref = med.get(f"numpyro {n.split()[1]}")
        ratio = f"{m['ess_per_second'] / ref['ess_per_second']:.2f}x" if ref else "-"
        discrete = f"{m['discrete_seconds']:.1f}" if "discrete_seconds" in m else "-"
        lines.append(f"{n:<32} {m['nuts_seconds']:>7.1f} {m['cpu_seconds']:>7.1f} {m['ess_bulk_min']:>6.0f} "
                     f"{m['ess_per_second']:>7.1f} {m['ess_per_cpu_second']:>9.1f} {ratio:>10} "
                     f"{m['r_hat_max']:>6.3f} {m['divergences']:>4.0f} {discrete:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    personas, truth, evidence = make_problem(args)
    if args.save_problem:
        save_problem(args.save_problem, personas, evidence, truth)
    print(f"NUTS on persona weights: K={args.num_personas} V={args.vocab_size} order={args.order} "
          f"D={args.num_docs} x T={args.doc_len} ({evidence.num_tokens} evidence tokens), {args.num_chains} chains "
          f"x {args.num_samples} draws after {args.warmup_steps} warmup; load {os.getloadavg()[0]:.1f}", flush=True)
    python = ensure_venv(Path(args.venv)) if args.numpyro else None
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        problem = str(Path(tmp) / "problem.npz")
        save_problem(problem, personas, evidence, truth)
        for r in range(args.repeats):
            for name, potential, setting in variants(args):
                start = time.perf_counter()
                if name.startswith("toolkit"):
                    run = run_toolkit(personas, evidence, args, potential, int(setting), args.seed + r)
                else:
                    got = run_numpyro(python, problem, potential, args.num_chains, args.num_samples,
                                      args.warmup_steps, args.seed + r)
                    run = numbers(got["w"], got["seconds"], got["cpu_seconds"], got["divergences"],
                                  versions=got["versions"])
                runs.append({"variant": name, "round": r, "load": os.getloadavg()[0], **run})
                print(f"  round {r} {name}: {run['nuts_seconds']:.1f} s NUTS, bulk ESS {run['ess_bulk_min']:.0f} "
                      f"({time.perf_counter() - start:.0f} s in all, load {runs[-1]['load']:.1f})", flush=True)
    print("\n" + table(runs))
    print(f"\ntrue w: {np.round(truth.numpy(), 3).tolist()}")
    for run in runs[: len(variants(args))]:
        print(f"E[w | D] {run['variant']:<32} {np.round(run['weights'], 3).tolist()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "runs": runs}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
