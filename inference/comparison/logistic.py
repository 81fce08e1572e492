"""A logistic curve in ``log10 k``, fitted with Pyro's NUTS: how the recovered share grows with ``k``.

Donoway et al. (2025) fit the share of the full fine-tuning gain that training only ``k``
parameters recovers with a logistic curve in ``log k``. The model here, in ``x = log10 k``::

    m     ~ Normal(prior_center, prior_scale)          midpoint: k50 = 10**m recovers half
    s     ~ LogNormal(log 2, 1)                         slope, per decade of k
    sigma ~ HalfNormal(0.25)                            scatter of one run around the curve
    y_i   ~ Normal(sigmoid(s * (x_i - m)), sigma)       the share of run i

The curve runs from 0 (no gain) to 1 (the full gain); shares below 0 or above 1 (a run that got
worse, or beat the full fine-tuning reference) are data like any other. :func:`fit_logistic`
runs ``num_chains`` NUTS chains one after another (each its own seeded ``MCMC`` run, as
:mod:`inference.conditioning.mcmc` does on 2 cores) and returns the draws, the ArviZ
``InferenceData`` and summary (through :mod:`inference.diagnostics`), and posterior bands of
the curve.

NUTS runs on a hand-written potential (:class:`LogisticPotential`): ``-log p`` on Pyro's own
unconstrained scale (``slope`` and ``sigma`` through ``exp``, with their log-Jacobians), equal to
the potential Pyro derives from :func:`logistic_model` (a test checks it) but without tracing
the model at every leapfrog step, which made Pyro's own potential about 10x slower here.
Chains start from the prior medians jittered uniformly by up to 1 on the unconstrained scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS
from torch import Tensor

from inference import diagnostics
from inference.runtime import single_thread
from models.errors import InputError
from models.limits import MAX_CHAINS, MAX_DRAWS, MAX_STEPS, check_seed

#: the latent sites, in the order of the summary table
SITES = ("log10_k50", "slope", "sigma")
#: scale of the HalfNormal prior of sigma
SIGMA_SCALE = 0.25
LOG_2PI = math.log(2 * math.pi)


def logistic_model(x: Tensor, y: Tensor | None = None, *, prior_center: float = 3.0, prior_scale: float = 3.0) -> Tensor:
    """The Pyro model of the module docstring; ``x = log10 k`` ``[N]``, ``y`` the shares ``[N]`` or None (simulate)."""
    m = pyro.sample("log10_k50", dist.Normal(torch.tensor(prior_center, dtype=x.dtype), prior_scale))
    s = pyro.sample("slope", dist.LogNormal(torch.tensor(math.log(2.0), dtype=x.dtype), 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(SIGMA_SCALE, dtype=x.dtype)))
    with pyro.plate("runs", x.shape[0]):
        return pyro.sample("share", dist.Normal(torch.sigmoid(s * (x - m)), sigma), obs=y)


class LogisticPotential:
    """``-log p(m, log s, log sigma, y)`` of :func:`logistic_model` on the unconstrained scale.

    Parameters
    ----------
    x, y : Tensor
        ``[N]`` float64 ``log10 k`` and shares.
    prior_center, prior_scale : float
        The Normal prior of ``m = log10 k50``.
    """

    def __init__(self, x: Tensor, y: Tensor, prior_center: float, prior_scale: float):
        self.x, self.y = x, y
        self.center, self.scale = float(prior_center), float(prior_scale)

    def __call__(self, params: dict[str, Tensor]) -> Tensor:
        m, log_s, log_sigma = params["log10_k50"], params["slope"], params["sigma"]
        # the densities written out (building distribution objects at every leapfrog step cost 3x)
        log_prior = (
            -0.5 * ((m - self.center) / self.scale) ** 2 - math.log(self.scale)  # Normal(center, scale)
            - 0.5 * (log_s - math.log(2.0)) ** 2  # LogNormal(log 2, 1) of s = exp(log_s), with its Jacobian
            - 0.5 * (log_sigma.exp() / SIGMA_SCALE) ** 2 + log_sigma  # HalfNormal(0.25), with its Jacobian
        ) - 1.5 * LOG_2PI + math.log(2.0 / SIGMA_SCALE)
        mu = torch.sigmoid(log_s.exp() * (self.x - m))  # [N]
        resid = (self.y - mu) * torch.exp(-log_sigma)
        log_lik = -0.5 * (resid**2).sum() - self.x.shape[0] * (log_sigma + 0.5 * LOG_2PI)
        return -(log_prior + log_lik)

    def initial_params(self, generator: torch.Generator) -> dict[str, Tensor]:
        """Prior medians on the unconstrained scale, each moved by ``U(-1, 1)``."""
        jitter = 2 * torch.rand(3, generator=generator, dtype=torch.float64) - 1
        start = torch.tensor([self.center, math.log(2.0), math.log(SIGMA_SCALE)], dtype=torch.float64) + jitter
        return dict(zip(SITES, start.unbind(), strict=True))


@dataclass(frozen=True)
class LogisticFit:
    """A fitted logistic curve.

    Attributes
    ----------
    samples : dict of str to ndarray
        ``[chains, draws]`` draws of ``log10_k50``, ``slope`` and ``sigma``.
    idata : arviz.InferenceData
        Posterior, pointwise log-likelihood, observed shares and sample stats.
    summary : pandas.DataFrame
        ArviZ summary (mean, sd, HDI, MCSE, ESS, R-hat) of the three sites.
    diagnostics : dict
        ``r_hat_max``, ``ess_min``, ``divergences``.
    """

    samples: dict[str, np.ndarray]
    idata: Any
    summary: Any
    diagnostics: dict[str, float]

    def k50(self, level: float = 0.9) -> tuple[float, float, float]:
        """Posterior median of ``k50 = 10**m`` and its central ``level`` interval: ``(median, low, high)``."""
        m = self.samples["log10_k50"].reshape(-1)
        lo, mid, hi = np.quantile(m, [(1 - level) / 2, 0.5, (1 + level) / 2])
        return float(10**mid), float(10**lo), float(10**hi)

    def curve(self, log10_k: np.ndarray, level: float = 0.9) -> dict[str, np.ndarray]:
        """Posterior median and ``level`` band of the curve ``sigmoid(s (x - m))`` at ``x = log10_k``."""
        x = np.asarray(log10_k, dtype=np.float64)
        m = self.samples["log10_k50"].reshape(-1, 1)
        s = self.samples["slope"].reshape(-1, 1)
        mu = 1.0 / (1.0 + np.exp(-s * (x[None, :] - m)))  # [S, G]
        lo, mid, hi = np.quantile(mu, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
        return {"x": x, "median": mid, "low": lo, "high": hi}

    def to_dict(self, level: float = 0.9) -> dict[str, Any]:
        """JSON-ready: ``k50`` with its interval, posterior means of every site, convergence."""
        k50, lo, hi = self.k50(level)
        means = {name: float(self.samples[name].mean()) for name in SITES}
        sds = {f"{name}_sd": float(self.samples[name].std()) for name in SITES}
        return {"k50": k50, "k50_interval": [lo, hi], "level": level, **means, **sds, **self.diagnostics}


@single_thread
def fit_logistic(
    k,
    share,
    *,
    num_samples: int = 500,
    warmup_steps: int = 500,
    num_chains: int = 4,
    prior_center: float | None = None,
    prior_scale: float = 3.0,
    seed: int = 0,
    progress: bool = False,
) -> LogisticFit:
    """Fit ``share ~ sigmoid(slope * (log10 k - log10 k50))`` by NUTS (module docstring).

    Parameters
    ----------
    k : array
        ``[N]`` numbers of trained parameters (``>= 1``).
    share : array
        ``[N]`` the share of the full gain each run recovered (finite).
    num_samples, warmup_steps, num_chains : int
        NUTS draws and warm-up per chain; chains (run one after another, seeded apart).
    prior_center, prior_scale : float
        Normal prior of ``log10 k50``; the center defaults to the middle of ``log10 k``'s range.
    seed : int
        Seed of every chain.
    progress : bool
        Show NUTS progress bars.
    """
    x, y = _check_data(k, share)
    _check_counts(num_samples=num_samples, warmup_steps=warmup_steps, num_chains=num_chains)
    seed = check_seed(seed)
    if not (math.isfinite(prior_scale) and prior_scale > 0):
        raise InputError(f"prior_scale must be a finite number > 0, got {prior_scale!r}")
    center = float((x.min() + x.max()) / 2) if prior_center is None else float(prior_center)
    pyro.clear_param_store()
    potential = LogisticPotential(x, y, center, prior_scale)
    words = np.random.SeedSequence(seed).generate_state(num_chains)
    chains: dict[str, list[np.ndarray]] = {name: [] for name in SITES}
    diverging = []
    for chain in range(num_chains):
        pyro.set_rng_seed(int(words[chain]))
        start = potential.initial_params(torch.Generator().manual_seed(int(words[chain])))
        mcmc = MCMC(NUTS(potential_fn=potential), num_samples=num_samples, warmup_steps=warmup_steps,
                    initial_params=start, disable_progbar=not progress)
        mcmc.run()
        draws = mcmc.get_samples()
        for name in SITES:  # back to the constrained scale
            value = draws[name] if name == "log10_k50" else draws[name].exp()
            chains[name].append(value.detach().numpy())
        diverging.append(mcmc.diagnostics()["divergences"]["chain 0"])
    samples = {name: np.stack(v) for name, v in chains.items()}  # [c, s]
    div = np.zeros((num_chains, num_samples), dtype=bool)
    for c, steps in enumerate(diverging):
        div[c, steps] = True
    idata = diagnostics.inference_data(
        posterior=samples,
        log_likelihood={"share": _pointwise_loglik(samples, x.numpy(), y.numpy())},
        observed_data={"share": y.numpy(), "log10_k": x.numpy()},
        sample_stats={"diverging": div},
        dims={"share": ["run"], "log10_k": ["run"]},
    )
    table = diagnostics.summary(idata, var_names=list(SITES))
    conv = diagnostics.convergence(idata, var_names=list(SITES))
    return LogisticFit(samples, idata, table, conv)


def _pointwise_loglik(samples: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[c, s, N]`` log-likelihood of every run under every draw."""
    m, s, sigma = (samples[name][..., None] for name in SITES)
    mu = 1.0 / (1.0 + np.exp(-s * (x - m)))
    return -0.5 * ((y - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)


def _check_data(k, share) -> tuple[Tensor, Tensor]:
    try:
        k = np.asarray(k, dtype=np.float64)
        share = np.asarray(share, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("k and share must be arrays of numbers") from None
    if k.ndim != 1 or share.shape != k.shape or k.size < 3:
        raise InputError(f"k and share must be two 1-d arrays of the same length >= 3, got {k.shape} and {share.shape}")
    if not (np.isfinite(k).all() and (k >= 1).all()):
        raise InputError("every k must be a finite number >= 1")
    if not np.isfinite(share).all():
        raise InputError("every share must be finite")
    if np.unique(k).size < 2:
        raise InputError("k must take at least two distinct values to fit a curve")
    return torch.as_tensor(np.log10(k)), torch.as_tensor(share)


def _check_counts(**counts: int) -> None:
    limits = {"num_samples": MAX_DRAWS, "warmup_steps": MAX_STEPS, "num_chains": MAX_CHAINS}
    for name, value in counts.items():
        low = 0 if name == "warmup_steps" else 1
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= limits[name]:
            raise InputError(f"{name} must be an integer in [{low}, {limits[name]}], got {value!r}")
