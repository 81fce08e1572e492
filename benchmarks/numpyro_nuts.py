"""The NUTS benchmark of ``bench_nuts.py`` in NumPyro, for the ESS-per-second ratio.

The toolkit does not depend on NumPyro: this script makes a throwaway virtual
environment (default ``/tmp/npvenv``; never the project's ``.venv``), installs
``numpyro jax funsor`` there, and runs itself inside it as a worker that reads
the problem from an ``.npz`` and imports only NumPy, JAX and NumPyro.

Two NumPyro models, mirroring the two Pyro potentials (float64, one CPU thread,
4 chains one after another):

``marginal``   ``w ~ Dirichlet(alpha)``; ``factor(sum_d logsumexp_k(log w_k + L[d, k]))``
               with ``L`` the precomputed ``[D, K]`` log-likelihoods.
``enumerate``  the persona ``z_d`` sampled in a ``documents`` plate and enumerated
               by NumPyro (funsor); ``L`` recomputed from the sparse counts and log
               tables at every gradient, as Pyro's enumerated model does.

Usage (after ``bench_nuts.py --save-problem P.npz --json pyro.json``)::

    .venv/bin/python benchmarks/numpyro_nuts.py --problem P.npz --pyro-json pyro.json

ESS uses the same (non-rank-normalised) estimator on both sides:
``pyro.ops.stats.effective_sample_size`` (NumPyro's is the same formula).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["numpyro", "jax", "funsor"]


def ensure_venv(venv: Path) -> Path:
    """The throwaway environment's python, created and filled on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import numpyro, jax, funsor"], capture_output=True)
    if probe.returncode:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


# ------------------------------------------------------------------ worker (runs inside the venv)


def worker(problem: str, out: str, potential: str, chains: int, samples: int, warmup: int, seed: int) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    from jax.scipy.special import logsumexp
    from numpyro.infer import MCMC, NUTS

    data = np.load(problem)
    loglik = jnp.asarray(data["loglik"])  # [D, K]
    alpha = jnp.asarray(data["alpha"])  # [K]
    log_table = jnp.asarray(data["log_table"])  # [K, F]
    doc, feature, count = (jnp.asarray(data[k]) for k in ("doc", "feature", "count"))  # [nnz]
    num_docs = loglik.shape[0]

    def marginal():
        w = numpyro.sample("w", dist.Dirichlet(alpha))
        numpyro.factor("evidence", logsumexp(jnp.log(w) + loglik, -1).sum())

    def enumerated():
        w = numpyro.sample("w", dist.Dirichlet(alpha))
        picked = log_table[:, feature] * count  # [K, nnz]
        L = jax.ops.segment_sum(picked.T, doc, num_segments=num_docs).T  # [K, D]
        with numpyro.plate("documents", num_docs):
            z = numpyro.sample("persona", dist.Categorical(w), infer={"enumerate": "parallel"})  # [D] or [K, 1]
            numpyro.factor("tokens", L[z, jnp.arange(num_docs)])

    model = marginal if potential == "marginal" else enumerated
    kernel = NUTS(model, target_accept_prob=0.8)  # enumerated sites are found and summed out by NumPyro
    timings, draws = [], None
    for attempt in range(2):  # the first run includes JIT compilation
        mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains,
                    chain_method="sequential", progress_bar=False)
        start = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(seed + attempt))
        w = mcmc.get_samples(group_by_chain=True)["w"]
        w.block_until_ready()
        timings.append(time.perf_counter() - start)
        draws = np.asarray(w)
        divergences = int(np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"]).sum())
    np.savez(out, w=draws, seconds_first=timings[0], seconds=timings[1], divergences=divergences,
             versions=json.dumps({"numpyro": numpyro.__version__, "jax": jax.__version__}))


# ------------------------------------------------------------------ driver (runs in the project's venv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", required=True, help="the .npz written by bench_nuts.py --save-problem")
    parser.add_argument("--pyro-json", default=None, help="bench_nuts.py --json output, for the ratio")
    parser.add_argument("--venv", default="/tmp/npvenv")
    parser.add_argument("--potentials", default="marginal,enumerate")
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--warmup-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.problem, args.out, args.worker, args.num_chains, args.num_samples, args.warmup_steps, args.seed)
        return 0

    import numpy as np
    import torch
    from pyro.ops.stats import effective_sample_size

    python = ensure_venv(Path(args.venv))
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
               JAX_PLATFORMS="cpu")
    pyro_runs = json.load(open(args.pyro_json))["runs"] if args.pyro_json else []
    print(f"NumPyro NUTS, {args.num_chains} chains x {args.num_samples} draws after {args.warmup_steps} warmup, "
          f"1 CPU thread, float64")
    header = f"{'potential':<10} {'first s':>8} {'NUTS s':>8} {'ESS':>7} {'ESS/s':>8} {'div':>4}  pyro ESS/s  ratio"
    print(header + "\n" + "-" * len(header))
    for potential in args.potentials.split(","):
        out = Path(args.problem).with_suffix(f".numpyro-{potential}.npz")
        subprocess.run([str(python), __file__, "--worker", potential, "--problem", args.problem, "--out", str(out),
                        "--num-chains", str(args.num_chains), "--num-samples", str(args.num_samples),
                        "--warmup-steps", str(args.warmup_steps), "--seed", str(args.seed)], check=True, env=env)
        result = np.load(out)
        ess = float(effective_sample_size(torch.as_tensor(result["w"]), chain_dim=0, sample_dim=1).min())
        rate = ess / float(result["seconds"])
        mine = [r["ess_pyro_min"] / r["nuts_seconds"] for r in pyro_runs if r["potential"] == potential]
        pyro_rate = float(np.median(mine)) if mine else float("nan")
        print(f"{potential:<10} {float(result['seconds_first']):>8.1f} {float(result['seconds']):>8.1f} {ess:>7.0f} "
              f"{rate:>8.1f} {int(result['divergences']):>4}  {pyro_rate:>10.1f}  {rate / pyro_rate:>5.2f}x")
        print(f"  E[w | D] {np.round(result['w'].mean((0, 1)), 3).tolist()}  ({result['versions']})")
    print("ratio = NumPyro ESS/s over Pyro ESS/s (NUTS seconds of the second NumPyro run, after compilation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
