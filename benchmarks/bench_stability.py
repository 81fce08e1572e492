"""Numerical stability at full size: 10^7 evidence tokens, beta up to 100, peaked, flat and zero-probability personas.

Run by hand:  .venv/bin/python benchmarks/bench_stability.py [--tokens 10000000] [--quick]

For every case it reports the wall time of ``condition`` (counting pass included), of the
predictive on 8 contexts of 1,000 tokens and of ``to_arviz``; the largest ``|sum(w) - 1|``
over the posterior weights and every weight draw; the non-finite values found in the weights,
the log evidence, the document log-likelihoods, the predictive and every array of the
InferenceData (``-inf`` in the predictive is counted apart: it is right exactly where every
persona with posterior weight forbids the token, which is checked); and the peak resident
memory of the process that ran the case (each case runs in a fresh process).

Cases
  global       exact, known tables, evidence written by one persona (10^4 documents x 10^3 tokens)
  global-dir   exact, Dirichlet-uncertain tables (anchored, strength 50), the same evidence
  mixture      exact, 100 documents x 10^5 tokens drawn from the persona mixture
  counting     the counting pass alone (count_transitions + total_counts)
  svi / mcmc   mixture model (and global with uncertain tables) at 12 x 50 tokens (the test sizes)
Personas: 3 bigram personas over 5 tokens, Dirichlet rows of concentration 1e-3 (peaked: most
entries underflow to exactly 0), 1 and 1e3 (flat); "zeros" is concentration 1 with the
transition 0 -> 0 forbidden by every persona but the writer.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

V, K = 5, 3
PERSONAS = {"peaked": 1e-3, "moderate": 1.0, "flat": 1e3, "zeros": 1.0}


def make_personas(kind: str):
    from models.personas import make_personas, random_personas

    personas = random_personas(K, V, 1, concentration=PERSONAS[kind], seed=11)
    if kind == "zeros":
        trans = personas.trans.clone()
        trans[:, 0, 0] = 0.0
        trans[1, 0, 0] = 0.5  # only the writer (persona 1) allows 0 -> 0
        personas = make_personas(personas.prior, personas.init, trans / trans.sum(-1, keepdim=True))
    return personas


def simulate(kind: str, model: str, tokens: int, folder: Path) -> Path:
    """Evidence for a case, simulated once and saved (simulation is not timed)."""
    from models.counts import make_evidence, save_evidence
    from models.mixture import simulate_corpus

    path = folder / f"{kind}-{model}.npz"
    if path.exists():
        return path
    personas = make_personas(kind)
    if model == "small":  # the SVI / NUTS cases: 12 documents x 50 tokens from the mixture
        corpus, _ = simulate_corpus(personas, 12, 50, seed=12)
    elif model == "mixture":
        docs = 100
        corpus, _ = simulate_corpus(personas, docs, tokens // docs, seed=12)
    else:
        doc_len = 1000
        corpus, _ = simulate_corpus(personas.subset([1]), tokens // doc_len, doc_len, seed=12)
    save_evidence(path, make_evidence(corpus.numpy()))
    return path


def run_case(case: dict) -> dict:
    """One case in a fresh process: time, normalisation error, non-finite counts, peak memory."""
    import torch

    from inference.conditioning.condition import condition
    from models.counts import count_transitions, load_evidence, total_counts
    from models.personas import anchored_table_prior
    from models.predictive import mixture_predictive

    warnings.simplefilter("ignore")  # ArviZ/Pyro chatter; the rows are the output
    torch.set_num_threads(case["threads"])
    personas = make_personas(case["personas"])
    evidence = load_evidence(case["evidence"], V)
    rss_loaded = _peak_rss_mb()
    row = {**{k: case[k] for k in ("case", "personas", "beta")}, "tokens": evidence.num_tokens,
           "docs": evidence.num_docs}

    if case["case"] == "counting":
        start = time.perf_counter()
        counts = count_transitions(evidence, V, 1)
        totals = total_counts(evidence, V, 1)
        row["seconds"] = time.perf_counter() - start
        row["counts_exact"] = bool(torch.equal(counts.totals(), totals) and float(totals.sum()) == evidence.num_tokens)
        row["peak_rss_mb"], row["rss_before_mb"] = _peak_rss_mb(), rss_loaded
        return row

    model = "mixture" if case["case"] in ("mixture", "svi", "mcmc") else "global"
    method = {"svi": "svi", "mcmc": "mcmc", "svi-global": "svi", "mcmc-global": "mcmc"}.get(case["case"], "exact")
    table_prior = anchored_table_prior(personas, 50.0) if case["case"] in ("global-dir", "svi-global", "mcmc-global") else None
    options = {"svi": dict(num_steps=300, num_samples=100), "mcmc": dict(num_samples=100, warmup_steps=100, num_chains=2)}
    start = time.perf_counter()
    try:
        posterior = condition(personas, evidence, model, method, case["beta"], table_prior=table_prior, seed=0,
                              **options.get(method, {}))
    except Exception as exc:  # reported, not hidden
        row.update(seconds=time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}", peak_rss_mb=_peak_rss_mb())
        return row
    row["seconds"] = time.perf_counter() - start
    w, ws = posterior.weights, posterior.weight_samples
    row["weights"] = [round(float(x), 6) for x in w]
    row["max_sum_error"] = max(abs(float(w.sum()) - 1), float((ws.sum(-1) - 1).abs().max()))
    bad = {"weights": _nonfinite(w), "weight_samples": _nonfinite(ws)}
    if posterior.log_evidence is not None:
        bad["log_evidence"] = int(not math.isfinite(posterior.log_evidence))
    bad["doc_loglik"] = _nonfinite(posterior.doc_log_likelihood())

    contexts = evidence.tokens[:8, :1000]
    start = time.perf_counter()
    logp = posterior.predictive(contexts)
    row["predictive_seconds"] = time.perf_counter() - start
    bad["predictive_nan_or_+inf"] = int(torch.isnan(logp).sum() + (logp == math.inf).sum())
    row["predictive_-inf"] = int((logp == -math.inf).sum())
    row["predictive_rows_normalised"] = bool(torch.allclose(logp.logsumexp(-1), torch.zeros(logp.shape[:-1],
                                                                                          dtype=logp.dtype), atol=1e-9))
    if posterior.table_samples is None:  # -inf exactly where every persona with weight forbids the token
        support = (w > 0).nonzero().squeeze(-1)
        sub = posterior.personas.log_table()[support]
        zero = torch.isinf(mixture_predictive(sub, torch.zeros(len(support)), contexts, V, 1))
        row["predictive_-inf_where_exact_zero"] = bool(torch.equal(zero, torch.isinf(logp)))

    start = time.perf_counter()
    idata = posterior.to_arviz()
    row["arviz_seconds"] = time.perf_counter() - start
    bad["arviz"] = sum(_nonfinite(torch.as_tensor(np.asarray(var.values, dtype=np.float64)))
                       for group in idata.groups() for var in idata[group].data_vars.values()
                       if np.asarray(var.values).dtype.kind == "f")
    row["nonfinite"] = bad
    row["peak_rss_mb"], row["rss_before_mb"] = _peak_rss_mb(), rss_loaded
    return row


def _nonfinite(x) -> int:
    return int((~__import__("torch").isfinite(x)).sum())


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000_000)
    parser.add_argument("--betas", type=float, nargs="+", default=[1.0, 100.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10^6 tokens, beta 100 only")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one case, print its row
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case)), default=str))
        return
    if args.quick:
        args.tokens, args.betas = 1_000_000, [100.0]

    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        for kind in PERSONAS:
            for model in ("global", "mixture"):
                simulate(kind, model, args.tokens, folder)
        for kind in ("peaked", "flat"):
            simulate(kind, "small", 0, folder)
        print(f"simulated the evidence in {time.perf_counter() - start:.0f} s")

        for kind in PERSONAS:
            cases.append(dict(case="counting", personas=kind, beta=None, evidence=folder / f"{kind}-global.npz"))
            for beta in args.betas:
                for case in ("global", "global-dir", "mixture"):
                    model = "mixture" if case == "mixture" else "global"
                    cases.append(dict(case=case, personas=kind, beta=beta, evidence=folder / f"{kind}-{model}.npz"))
        for kind in ("peaked", "flat"):
            for case in ("svi", "mcmc", "svi-global") + (("mcmc-global",) if kind == "flat" else ()):
                cases.append(dict(case=case, personas=kind, beta=max(args.betas), evidence=folder / f"{kind}-small.npz"))

        rows = []
        for case in cases:  # each in a fresh process: its peak memory is this case's
            case = {**case, "threads": args.threads, "evidence": str(case["evidence"])}
            done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True)
            if done.returncode:
                row = {**case, "seconds": math.nan, "error": done.stderr.strip().splitlines()[-1], "peak_rss_mb": math.nan}
            else:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(_line(row), flush=True)

    print()
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")


def _line(row: dict) -> str:
    return json.dumps({k: v for k, v in row.items() if k != "weights"}, default=str)


def _table(rows: list[dict]) -> str:
    head = ("| case | personas | beta | tokens | condition s | predictive s | arviz s | max abs(sum(w)-1) | "
            "non-finite (w, logZ, doc ll, pred, arviz) | pred -inf (exact zeros?) | peak RSS MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["case"] == "counting":
            lines.append(f"| counting | {r['personas']} | - | {r['tokens']:,} | {r['seconds']:.2f} | - | - | - | "
                         f"counts exact: {r['counts_exact']} | - | {r['peak_rss_mb']:.0f} (before {r['rss_before_mb']:.0f}) |")
            continue
        if "error" in r:
            lines.append(f"| {r['case']} | {r['personas']} | {r['beta']:g} | {r['tokens']:,} | {r['seconds']:.2f} | "
                         f"ERROR {r['error'][:80]} | | | | | {r['peak_rss_mb']:.0f} |")
            continue
        b = r["nonfinite"]
        nonfinite = (f"{b['weights'] + b['weight_samples']}, {b.get('log_evidence', '-')}, {b['doc_loglik']}, "
                     f"{b['predictive_nan_or_+inf']}, {b['arviz']}")
        exact_zero = r.get("predictive_-inf_where_exact_zero", "n/a")
        lines.append(f"| {r['case']} | {r['personas']} | {r['beta']:g} | {r['tokens']:,} | {r['seconds']:.2f} | "
                     f"{r['predictive_seconds']:.2f} | {r['arviz_seconds']:.2f} | {r['max_sum_error']:.1e} | {nonfinite} | "
                     f"{r['predictive_-inf']} ({exact_zero}) | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
