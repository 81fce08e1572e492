"""Exact conditioning at scale: K personas, V tokens, order 1, N evidence tokens, counting included.

Run by hand:  .venv/bin/python benchmarks/bench_exact.py [--personas 1000 --vocab 64 --tokens 1000000]
Prints the median of several repeats of
  * the counting pass plus the exact global posterior (the issue's target: <= 2 s on 2 cores), and
  * the whole ``condition(..., method="exact")`` call (which also builds per-document statistics and draws).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from inference.conditioning.condition import condition
from inference.conditioning.exact import global_posterior
from models.counts import make_evidence, total_counts
from models.mixture import simulate_corpus
from models.personas import random_personas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--doc-len", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    personas = random_personas(args.personas, args.vocab, order=1, concentration=0.5, seed=args.seed)
    one = personas.subset([7 % args.personas])
    tokens, _ = simulate_corpus(one, args.tokens // args.doc_len, args.doc_len, seed=args.seed)
    evidence = make_evidence(tokens.numpy())
    print(f"K={args.personas} V={args.vocab} order=1, {evidence.num_tokens:,} evidence tokens "
          f"({evidence.num_docs} documents), torch threads={torch.get_num_threads()}")

    def counting_and_posterior():
        totals = total_counts(evidence, args.vocab, 1)
        return global_posterior(personas.prior.log(), personas.log_table(), totals, 1.0)

    rows = []
    for name, fn in (("counting + exact global posterior", counting_and_posterior),
                     ("condition(model='global', method='exact')", lambda: condition(personas, evidence))):
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        rows.append((name, statistics.median(times), min(times)))
    log_w = out.weights.log()
    print(f"{'step':45s} {'median s':>9s} {'min s':>7s}")
    for name, med, low in rows:
        print(f"{name:45s} {med:9.3f} {low:7.3f}")
    print(f"posterior mass on the true persona (7): {float(log_w.exp()[7 % args.personas]):.6f}")


if __name__ == "__main__":
    main()
