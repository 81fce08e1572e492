"""The Bayesian scaling law of in-context learning (Arora et al. 2024), fitted with Pyro NUTS.

A learner whose prior over ``M`` tasks (personas) is ``rho`` and whose examples have probability
``P_m`` under task ``m`` predicts the ``(n + 1)``-th example, after ``n`` examples each worth ``K``
examples of evidence, with the negative log-likelihood

    NLL(n) = -log[ sum_m rho_m P_m^(K n + 1) / sum_m rho_m P_m^(K n) ]           (:func:`law_nll`)

For a finite persona mixture whose examples all have probability ``P_m`` under persona ``m`` this is
exact Bayes when ``K = 1`` and ``rho`` is the prior (a test checks it). Here an *example* is a whole
document, so ``log P_m`` is a log-probability per document (nats, negative).

:func:`fit_scaling_law` puts a posterior on ``rho`` and ``K`` given a measured curve ``NLL(n)`` with
standard errors ``se(n)``, with ``log P`` held at known values (e.g. the expected log-probability of
a document of the evidence persona under each true persona)::

    rho   ~ Dirichlet(1, ..., 1)                 the prior over the M personas
    K     ~ LogNormal(0, k_scale)                evidence efficiency (1: exact Bayes)
    delta ~ HalfNormal(offset_scale)             (offset=True) nats per document the learner loses
                                                 on every persona: log P_m - delta for all m,
                                                 which adds exactly delta to the law
    sigma ~ HalfNormal(noise_scale)              misfit beyond the measurement error
    NLL(n) ~ Normal(law(n) [+ delta], sqrt(se(n)^2 + sigma^2))

NUTS runs through :func:`inference.conditioning.mcmc.run_mcmc` (chains one after another) on a
hand-written potential, :class:`LawPotential`: the same density as Pyro's trace of
:func:`scaling_law_model` on Pyro's own unconstrained scale (stick breaking for ``rho``, ``log`` for
the positive parameters; a test checks they agree), without Pyro's per-gradient tracing, which on
2 shared cores made one fit take minutes. The result carries the draws, the law's predicted curve with its band, and an
ArviZ ``InferenceData`` (posterior, posterior predictive of the curve, observed data, log-likelihood)
built by :mod:`inference.diagnostics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from torch import Tensor
from torch.nn import functional as F

from models.errors import InputError

#: the law's parameters NUTS samples, in the order of the summary
SITES = ("rho", "K", "delta", "sigma")

def log_stick_breaking(x: Tensor) -> tuple[Tensor, Tensor]:
    """Pyro's default simplex bijection (``StickBreakingTransform``) in log space: ``x [..., n - 1]`` ->
    ``(log_y [..., n], log |det dy/dx| [...])``; ``log_y`` is never ``-inf``, unlike ``log(transform(x))``."""
    n = x.shape[-1] + 1
    offset = n - torch.arange(1, n, dtype=x.dtype)  # [n - 1]: n - 1, ..., 1
    t = x - offset.log()
    log_z, log_rest = F.logsigmoid(t), F.logsigmoid(-t)  # log z_k, log(1 - z_k)
    log_y = F.pad(log_z, (0, 1)) + F.pad(log_rest.cumsum(-1), (1, 0))  # [..., n]
    log_det = (-t + log_z + log_y[..., :-1]).sum(-1)
    return log_y, log_det



def law_nll(n: Tensor, log_rho: Tensor, K: Tensor, log_p: Tensor) -> Tensor:
    """The Bayesian scaling law ``NLL(n)`` (module docstring), vectorised over draws.

    Parameters
    ----------
    n : Tensor
        ``[N]`` numbers of in-context examples (``>= 0``, need not be integers).
    log_rho : Tensor
        ``[..., M]`` log prior over the tasks (normalised).
    K : Tensor
        ``[...]`` evidence efficiency.
    log_p : Tensor
        ``[M]`` or ``[..., M]`` log-probability of one example under each task.

    Returns
    -------
    Tensor
        ``[..., N]`` negative log-likelihood of the next example, nats.
    """
    n = torch.as_tensor(n, dtype=log_rho.dtype)
    K = torch.as_tensor(K, dtype=log_rho.dtype)
    log_p = log_p.unsqueeze(-2)  # [..., 1, M]
    power = K[..., None, None] * n[:, None]  # [..., N, 1]
    prior = log_rho.unsqueeze(-2)  # [..., 1, M]
    after = torch.logsumexp(prior + (power + 1) * log_p, -1)  # [..., N]
    before = torch.logsumexp(prior + power * log_p, -1)  # [..., N]
    return before - after


def scaling_law_model(n: Tensor, log_p: Tensor, se: Tensor, nll: Tensor | None = None, *, offset: bool = True,
                      k_scale: float = 1.0, offset_scale: float = 1.0, noise_scale: float = 1.0) -> Tensor:
    """The Pyro model of a measured curve (module docstring); ``nll=None`` simulates a curve.

    Parameters
    ----------
    n, se : Tensor
        ``[N]`` shot counts and the standard errors of the measured points.
    log_p : Tensor
        ``[M]`` known log-probability of one example under each task.
    nll : Tensor, optional
        ``[N]`` the measured curve (observed).
    offset : bool
        Fit ``delta``, the nats per example the learner loses whatever the task.
    k_scale, offset_scale, noise_scale : float
        Prior scales of ``K`` (log scale), ``delta`` and ``sigma``.
    """
    M, dtype = log_p.shape[-1], log_p.dtype
    one = torch.ones((), dtype=dtype)
    rho = pyro.sample("rho", dist.Dirichlet(torch.ones(M, dtype=dtype)))  # [M]
    K = pyro.sample("K", dist.LogNormal(0.0 * one, k_scale * one))
    delta = pyro.sample("delta", dist.HalfNormal(offset_scale * one)) if offset else 0.0 * one
    sigma = pyro.sample("sigma", dist.HalfNormal(noise_scale * one))
    mean = law_nll(n, rho.clamp(min=torch.finfo(dtype).tiny).log(), K, log_p) + delta  # [N]
    with pyro.plate("points", n.shape[0]):
        return pyro.sample("nll", dist.Normal(mean, (se**2 + sigma**2).sqrt()), obs=nll)


class LawPotential:
    """``-log p(rho, K, delta, sigma, curve)`` of :func:`scaling_law_model` on the unconstrained scale.

    Attributes
    ----------
    transforms : dict of str to Transform
        Constrained -> unconstrained map of every parameter (what Pyro would choose).
    """

    def __init__(self, n: Tensor, log_p: Tensor, se: Tensor, nll: Tensor | None = None, *, offset: bool = True,
                 k_scale: float = 1.0, offset_scale: float = 1.0, noise_scale: float = 1.0):
        if nll is None:
            raise InputError("the potential needs the measured curve (nll)")
        self.n, self.log_p, self.se2, self.nll = n, log_p, se**2, nll
        self.offset, self.k_scale, self.offset_scale, self.noise_scale = offset, k_scale, offset_scale, noise_scale
        self.M = log_p.shape[-1]
        names = ["rho", "K", *(["delta"] if offset else []), "sigma"]
        self.transforms = {name: biject_to(dist.Dirichlet(torch.ones(self.M)).support if name == "rho"
                                           else constraints.positive).inv for name in names}
        self.log_norm_rho = math.lgamma(self.M)  # log Dirichlet(1, ..., 1) density: log Gamma(M)

    def __call__(self, z: dict[str, Tensor]) -> Tensor:
        log_rho, log_det = log_stick_breaking(z["rho"])  # [M]
        log_joint = self.log_norm_rho + log_det
        K = z["K"].exp()
        log_joint = log_joint + _log_normal(z["K"], self.k_scale)  # LogNormal(K) times the Jacobian K: Normal(log K)
        sigma = z["sigma"].exp()
        log_joint = log_joint + _log_half_normal(sigma, self.noise_scale) + z["sigma"]
        mean = law_nll(self.n, log_rho, K, self.log_p)  # [N]
        if self.offset:
            delta = z["delta"].exp()
            log_joint = log_joint + _log_half_normal(delta, self.offset_scale) + z["delta"]
            mean = mean + delta
        var = self.se2 + sigma**2  # [N]
        loglik = -0.5 * ((self.nll - mean) ** 2 / var + var.log() + math.log(2 * math.pi))
        return -(log_joint + loglik.sum())

    def initial_params(self, init: str, value: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Unconstrained start: uniform in ``(-2, 2)`` (``init="uniform"``) or a prior draw (``"prior"``)."""
        if init not in ("uniform", "prior"):
            raise InputError(f"the scaling-law fit starts from 'uniform' or 'prior', got {init!r}")
        dtype = self.log_p.dtype
        out = {}
        for name, transform in self.transforms.items():
            shape = (self.M - 1,) if name == "rho" else ()
            if init == "uniform":
                out[name] = torch.empty(shape, dtype=dtype).uniform_(-2, 2)
            elif name == "rho":
                out[name] = transform(dist.Dirichlet(torch.ones(self.M, dtype=dtype)).sample())
            else:
                scale = {"K": self.k_scale, "delta": self.offset_scale, "sigma": self.noise_scale}[name]
                draw = torch.randn((), dtype=dtype) * scale
                out[name] = draw if name == "K" else transform(draw.abs().clamp(min=1e-6))
        return out


def _log_normal(x: Tensor, scale: float) -> Tensor:
    """``log Normal(x | 0, scale)``."""
    return -0.5 * (x / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)


def _log_half_normal(x: Tensor, scale: float) -> Tensor:
    """``log HalfNormal(x | scale)`` for ``x >= 0``."""
    return _log_normal(x, scale) + math.log(2.0)


#: NUTS (inference.conditioning.mcmc) uses this potential for the scaling-law model, not Pyro's trace of it
scaling_law_model.marginal_potential = LawPotential


@dataclass(frozen=True)
class ScalingLawFit:
    """A posterior over the scaling law's parameters.

    Attributes
    ----------
    samples : dict of str to Tensor
        ``[chains, draws, ...]``: ``rho`` ``[c, s, M]``, ``K``, ``sigma`` (and ``delta``) ``[c, s]``.
    n, nll, se, log_p : Tensor
        The data fitted: ``[N]`` shots, curve and standard errors; ``[M]`` log P.
    diagnostics : dict
        ``r_hat_max``, ``ess_min``, ``divergences`` (ArviZ conventions) and the engine's numbers.
    idata : Any
        ArviZ ``InferenceData`` (module docstring).
    """

    samples: dict[str, Tensor]
    n: Tensor
    nll: Tensor
    se: Tensor
    log_p: Tensor
    diagnostics: dict[str, Any]
    idata: Any

    def predict(self, n: Tensor) -> Tensor:
        """``[chains * draws, len(n)]`` the law's curve (with ``delta``) at every draw."""
        rho = self.samples["rho"].flatten(0, 1)  # [S, M]
        K = self.samples["K"].flatten()
        curve = law_nll(torch.as_tensor(n, dtype=rho.dtype), rho.clamp(min=1e-300).log(), K, self.log_p)
        if "delta" in self.samples:
            curve = curve + self.samples["delta"].flatten()[:, None]
        return curve

    def band(self, n: Tensor, level: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Median and ``level`` interval of the fitted law at ``n``: three ``[len(n)]`` arrays."""
        curve = self.predict(n).numpy()
        tail = (1 - level) / 2
        lo, mid, hi = np.quantile(curve, [tail, 0.5, 1 - tail], axis=0)
        return mid, lo, hi

    def summary(self) -> dict[str, Any]:
        """JSON-ready posterior means, sds and 90% intervals of every parameter, and the diagnostics."""
        out: dict[str, Any] = {}
        for name, x in self.samples.items():
            flat = x.flatten(0, 1).numpy()  # [S, ...]
            out[name] = {"mean": flat.mean(0).tolist(), "sd": flat.std(0).tolist(),
                         "q05": np.quantile(flat, 0.05, axis=0).tolist(),
                         "q95": np.quantile(flat, 0.95, axis=0).tolist()}
        return {**out, **{k: self.diagnostics[k] for k in ("r_hat_max", "ess_min", "divergences", "ppc_coverage")}}


def fit_scaling_law(n, nll, se, log_p, *, offset: bool = True, num_chains: int = 4, num_samples: int = 300,
                    warmup: int = 300, max_tree_depth: int = 8, seed: int = 0, progress: bool = False,
                    k_scale: float = 1.0, offset_scale: float = 1.0, noise_scale: float = 1.0) -> ScalingLawFit:
    """Posterior over ``rho``, ``K`` (and ``delta``, ``sigma``) given a measured curve, by NUTS.

    Parameters
    ----------
    n, nll, se : array
        ``[N]`` shot counts (``>= 0``), the measured NLL per example and its standard errors (``>= 0``).
    log_p : array
        ``[M]`` log-probability of one example under each task (finite, ``<= 0``).
    offset : bool
        Fit the per-example loss ``delta`` common to every task (module docstring).
    num_chains, num_samples, warmup : int
        NUTS chains (one after another), kept draws and warm-up steps per chain.
    max_tree_depth : int
        Largest NUTS tree depth (each step costs at most ``2**max_tree_depth`` gradients).
    seed : int
        Seed of the chains and of the posterior predictive replicates.
    progress : bool
        Show Pyro's progress bars.
    k_scale, offset_scale, noise_scale : float
        Prior scales (module docstring).

    Returns
    -------
    ScalingLawFit
    """
    from inference import diagnostics
    from inference.conditioning.mcmc import run_mcmc

    n, nll, se, log_p = _check_curve(n, nll, se, log_p)
    for name, value in (("k_scale", k_scale), ("offset_scale", offset_scale), ("noise_scale", noise_scale)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")):
            raise InputError(f"{name} must be a positive number, got {value!r}")
    pyro.clear_param_store()
    kwargs = dict(nll=nll, offset=offset, k_scale=k_scale, offset_scale=offset_scale, noise_scale=noise_scale)
    result = run_mcmc(scaling_law_model, (n, log_p, se), kwargs, seed=seed, progress=progress,
                      num_chains=num_chains, num_samples=num_samples, warmup_steps=warmup, init="uniform",
                      max_tree_depth=max_tree_depth)
    samples = {name: result.samples[name].to(torch.float64) for name in SITES if name in result.samples}
    idata, coverage = _to_arviz(samples, n, nll, se, log_p, result.diverging, seed)
    found = diagnostics.convergence(idata, var_names=[s for s in SITES if s in samples])
    diag = {**found, "ppc_coverage": coverage, "engine": result.diagnostics}
    return ScalingLawFit(samples, n, nll, se, log_p, diag, idata)


def _to_arviz(samples: dict[str, Tensor], n: Tensor, nll: Tensor, se: Tensor, log_p: Tensor, diverging: Tensor,
              seed: int) -> tuple[Any, float]:
    """InferenceData of a fit, and the share of measured points inside the 90% posterior predictive interval."""
    from inference import diagnostics

    chains, draws = samples["K"].shape
    rho = samples["rho"].clamp(min=1e-300)
    mean = law_nll(n, rho.log(), samples["K"], log_p)  # [c, s, N]
    if "delta" in samples:
        mean = mean + samples["delta"][..., None]
    scale = (se**2 + samples["sigma"][..., None] ** 2).sqrt()  # [c, s, N]
    gen = torch.Generator().manual_seed(seed)
    replicated = mean + scale * torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
    loglik = torch.distributions.Normal(mean, scale).log_prob(nll)  # [c, s, N]
    lo, hi = np.quantile(replicated.flatten(0, 1).numpy(), [0.05, 0.95], axis=0)
    coverage = float(((nll.numpy() >= lo) & (nll.numpy() <= hi)).mean())
    idata = diagnostics.inference_data(
        posterior={k: v.numpy() for k, v in samples.items()}, log_likelihood={"nll": loglik.numpy()},
        sample_stats={"diverging": np.asarray(diverging, dtype=bool)}, observed_data={"nll": nll.numpy()},
        posterior_predictive={"nll": replicated.numpy()}, predictive_draws=np.arange(draws),
        dims={"rho": ["persona"], "nll": ["shots"]}, coords={"shots": n.numpy(), "persona": np.arange(len(log_p))},
        attrs={"model": "bayesian_scaling_law", "log_p": log_p.tolist()},
    )
    return idata, coverage


def _check_curve(n, nll, se, log_p) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """float64 tensors; one-line errors for shapes and values the law cannot take."""
    try:
        n, nll, se, log_p = (torch.as_tensor(np.asarray(x, dtype=np.float64)) for x in (n, nll, se, log_p))
    except (TypeError, ValueError):
        raise InputError("n, nll, se and log_p must be arrays of numbers") from None
    if n.dim() != 1 or n.shape[0] < 2 or nll.shape != n.shape or se.shape != n.shape:
        raise InputError(f"n, nll and se must be 1-d arrays of one length >= 2, got {tuple(n.shape)}, "
                         f"{tuple(nll.shape)}, {tuple(se.shape)}")
    if log_p.dim() != 1 or log_p.shape[0] < 1:
        raise InputError(f"log_p must be a 1-d array of at least one task, got shape {tuple(log_p.shape)}")
    for name, x in (("n", n), ("nll", nll), ("se", se), ("log_p", log_p)):
        if not torch.isfinite(x).all():
            raise InputError(f"{name} has NaN or infinite values")
    if (n < 0).any() or (se < 0).any() or (log_p > 0).any():
        raise InputError("n and se must be >= 0 and log_p <= 0")
    return n, nll, se, log_p
