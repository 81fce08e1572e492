"""Exact global conditioning at scale, against a plain NumPy reference of the same posterior.

Run by hand:  PYTHONPATH=. .venv/bin/python benchmarks/bench_exact.py [--personas 1000 --vocab 64 --docs 1000
              --doc-len 1000 --repeats 7 --seed 0 --threads 1]

Workload: ``K`` personas over ``V`` tokens, order 1, every row ~ Dirichlet(0.5) (seed ``--seed``);
evidence of ``D`` documents x ``T`` tokens written by persona 7 (sampled in NumPy by inverse CDF:
set-up, not timed). After one warm-up each, the median and minimum of ``--repeats`` runs of

* ``numpy reference``: features, ``np.bincount``, the log of the table columns the evidence
  reaches, ``np.einsum``, log-sum-exp: ``log P(h | D)`` and ``log p(D)``;
* ``condition(global, exact)``: the toolkit's call, input checks and its 1,000 iid persona draws
  included (summed counts only: the per-document pass is left to ``Posterior.counts``);
* ``count_transitions``: that per-document pass (``torch.unique``), which ``condition`` ran on
  this path before and which ``to_arviz``/``doc_log_likelihood``/the mixture model still need;

then the ratio ``condition / reference`` (measured in the same run) and a check that both give the
same posterior. Last, the cost of building ``MarkovPersonas`` at this size: directly (the tables are
validated in ``__post_init__``) and by ``subset``/``with_prior``/``to``, which skip the table checks.
Absolute times on the shared 2-core machines are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from inference.conditioning.condition import condition
from models.counts import count_transitions, make_evidence
from models.personas import MarkovPersonas, random_personas

#: the persona that writes the evidence
WRITER = 7


def simulate_numpy(init: np.ndarray, trans: np.ndarray, num_docs: int, doc_len: int, seed: int) -> np.ndarray:
    """``[D, T]`` documents of one order-1 persona (``init`` [V], ``trans`` [V, V]), by inverse CDF."""
    rng = np.random.default_rng(seed)
    V = len(init)
    cum_init, cum = np.cumsum(init), np.cumsum(trans, -1)  # [V], [V, V]
    x = np.empty((num_docs, doc_len), dtype=np.int64)
    x[:, 0] = np.minimum(np.searchsorted(cum_init, rng.random(num_docs) * cum_init[-1], side="right"), V - 1)
    for t in range(1, doc_len):  # set-up only; vectorised over documents
        rows = cum[x[:, t - 1]]  # [D, V]
        u = rng.random(num_docs)[:, None] * rows[:, -1:]
        x[:, t] = np.minimum((rows <= u).sum(1), V - 1)
    return x


def numpy_reference(tokens: np.ndarray, prior: np.ndarray, init: np.ndarray, trans: np.ndarray
                    ) -> tuple[np.ndarray, float]:
    """``log P(h | D)`` [K] and ``log p(D)`` of the global model, order 1, in plain NumPy."""
    K, V = init.shape
    features = np.empty(tokens.shape, dtype=np.int64)  # [D, T] flat log-table index
    features[:, 0] = tokens[:, 0]
    features[:, 1:] = V + tokens[:, :-1] * V + tokens[:, 1:]
    counts = np.bincount(features.ravel(), minlength=V * (1 + V)).astype(np.float64)  # [F]
    seen = np.flatnonzero(counts)
    table = np.concatenate([init, trans.reshape(K, -1)], axis=1)[:, seen]  # [K, S]
    log_joint = np.log(prior) + np.einsum("ks,s->k", np.log(table), counts[seen])  # [K]
    top = log_joint.max()
    log_z = top + np.log(np.exp(log_joint - top).sum())
    return log_joint - log_z, float(log_z)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """(median, min) seconds of ``repeats`` calls after one warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--personas", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--doc-len", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (NumPy's bincount/einsum use one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    personas = random_personas(args.personas, args.vocab, order=1, concentration=0.5, seed=args.seed)
    prior, init, trans = (a.numpy() for a in (personas.prior, personas.init, personas.trans))
    writer = WRITER % args.personas
    tokens = simulate_numpy(init[writer], trans[writer], args.docs, args.doc_len, seed=args.seed + 1)
    evidence = make_evidence(tokens, vocab_size=args.vocab)
    print(f"K={args.personas} V={args.vocab} order=1, {evidence.num_tokens:,} evidence tokens "
          f"({args.docs} documents x {args.doc_len}), seed {args.seed}, torch threads={torch.get_num_threads()}, "
          f"median of {args.repeats}")

    rows = [("numpy reference (bincount + einsum)", *timed(lambda: numpy_reference(tokens, prior, init, trans),
                                                           args.repeats)),
            ("condition(global, exact)", *timed(lambda: condition(personas, evidence), args.repeats)),
            ("count_transitions (per-document pass)",
             *timed(lambda: count_transitions(evidence, args.vocab, 1), args.repeats))]
    print(f"{'step':40s} {'median s':>9s} {'min s':>7s} {'x reference':>12s}")
    for name, med, low, _ in rows:
        print(f"{name:40s} {med:9.4f} {low:7.4f} {med / rows[0][1]:12.1f}")
    (ref_log_w, ref_log_z), posterior = rows[0][3], rows[1][3]
    gap = float(np.abs(np.exp(ref_log_w) - posterior.weights.numpy()).max())
    print(f"same posterior: max |P(h|D) - reference| = {gap:.2e}, log p(D) = {posterior.log_evidence:.6f} "
          f"(reference {ref_log_z:.6f}); P(h = {writer} | D) = {float(posterior.weights[writer]):.6f}")
    persona_construction(personas, args.repeats)


def persona_construction(personas: MarkovPersonas, repeats: int) -> None:
    """Median seconds to build ``MarkovPersonas`` of this size, validated or derived."""
    everyone = torch.arange(personas.num_personas)
    cases = [("MarkovPersonas(prior, init, trans)", lambda: MarkovPersonas(personas.prior, personas.init,
                                                                           personas.trans)),
             ("personas.subset(all)", lambda: personas.subset(everyone)),
             ("personas.with_prior(prior)", lambda: personas.with_prior(personas.prior)),
             ("personas.to(float64)", lambda: personas.to(torch.float64))]
    print(f"building {personas.num_personas} personas ({personas.trans.numel():,} table entries):")
    for name, fn in cases:
        med, low, _ = timed(fn, repeats)
        print(f"  {name:38s} {med * 1e3:9.3f} ms (min {low * 1e3:.3f})")


if __name__ == "__main__":
    main()
