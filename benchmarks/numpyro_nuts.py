"""NumPyro's NUTS on the problem of ``bench_nuts.py``, for the ESS-per-second comparison.

The toolkit does not depend on NumPyro: :func:`ensure_venv` makes a throwaway
virtual environment (default ``/tmp/npvenv``; never the project's ``.venv``),
installs ``numpyro jax funsor`` there from the package registry, and
:func:`run_numpyro` runs this file inside it as a worker that reads the problem
from an ``.npz`` and imports only NumPy, JAX and NumPyro. ``bench_nuts.py
--numpyro`` calls it between its own runs, so both are measured under the same load.

Two NumPyro models, mirroring the two Pyro potentials (float64, one CPU thread):

``marginal``   ``w ~ Dirichlet(alpha)``; ``factor(sum_d logsumexp_k(log w_k + L[d, k]))``
               with ``L`` the precomputed ``[D, K]`` log-likelihoods.
``enumerate``  the persona ``z_d`` sampled in a ``documents`` plate and enumerated
               by NumPyro (funsor); ``L`` recomputed from the sparse counts and log
               tables at every gradient, as Pyro's enumerated model does.

Chains run one after another (``chain_method="sequential"``). The worker times
a second run of the same ``MCMC`` object, after JIT compilation, in wall and CPU
seconds, and writes the draws; the caller computes the ESS (ArviZ bulk ESS, the
toolkit's convention).

Standalone (after ``bench_nuts.py --save-problem P.npz``)::

    .venv/bin/python benchmarks/numpyro_nuts.py --problem P.npz
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ["numpyro", "jax", "funsor"]
#: one CPU thread for XLA, as the toolkit samples with one torch thread
ENV = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1", "JAX_PLATFORMS": "cpu"}


def ensure_venv(venv: Path) -> Path:
    """The throwaway environment's python, created and filled on first use."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = subprocess.run([str(python), "-c", "import numpyro, jax, funsor"], capture_output=True)
    if probe.returncode:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def run_numpyro(python: Path, problem: str, potential: str, chains: int, samples: int, warmup: int,
                seed: int) -> dict:
    """One NumPyro run in the throwaway venv: ``w`` ``[chains, draws, K]`` and its timings."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "draws.npz"
        subprocess.run([str(python), __file__, "--worker", potential, "--problem", problem,
                        "--out", str(out), "--num-chains", str(chains), "--num-samples", str(samples),
                        "--warmup-steps", str(warmup), "--seed", str(seed)],
                       check=True, env=dict(os.environ, **ENV))
        result = dict(np.load(out))
    return {"w": result["w"], "seconds_first": float(result["seconds_first"]), "seconds": float(result["seconds"]),
            "cpu_seconds": float(result["cpu_seconds"]), "divergences": int(result["divergences"]),
            "versions": json.loads(str(result["versions"]))}


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

    kernel = NUTS(marginal if potential == "marginal" else enumerated, target_accept_prob=0.8)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains, chain_method="sequential",
                progress_bar=False)
    timings = []
    for attempt in range(2):  # the first run includes JIT compilation; the second reuses it
        start, cpu = time.perf_counter(), time.process_time()
        mcmc.run(jax.random.PRNGKey(seed + attempt))
        w = mcmc.get_samples(group_by_chain=True)["w"]
        w.block_until_ready()
        timings.append((time.perf_counter() - start, time.process_time() - cpu))
    divergences = int(np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"]).sum())
    np.savez(out, w=np.asarray(w), seconds_first=timings[0][0], seconds=timings[1][0], cpu_seconds=timings[1][1],
             divergences=divergences, versions=json.dumps({"numpyro": numpyro.__version__, "jax": jax.__version__}))


# ------------------------------------------------------------------ standalone driver (project venv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", required=True, help="the .npz written by bench_nuts.py --save-problem")
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

    from inference.diagnostics import rhat_ess

    python = ensure_venv(Path(args.venv))
    print(f"NumPyro NUTS (chains in turn), {args.num_chains} chains x {args.num_samples} draws after "
          f"{args.warmup_steps} warmup, 1 CPU thread, float64")
    for potential in args.potentials.split(","):
        run = run_numpyro(python, args.problem, potential, args.num_chains, args.num_samples,
                          args.warmup_steps, args.seed)
        ess = rhat_ess({"w": run["w"]})["ess_min"]
        print(f"{potential:<10} compile+run {run['seconds_first']:.1f} s, run {run['seconds']:.1f} s "
              f"({run['cpu_seconds']:.1f} CPU s), bulk ESS {ess:.0f}, {ess / run['seconds']:.1f} ESS/s, "
              f"{run['divergences']} divergences ({run['versions']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
