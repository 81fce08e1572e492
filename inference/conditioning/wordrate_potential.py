"""The NUTS potential of :func:`models.wordrates.word_rate_model`, by hand from sufficient statistics.

Pyro's own potential of the word-rate model works (``NUTS(word_rate_model,
max_plate_nesting=1)`` enumerates the unknown authors) but is slow and badly scaled:
on the Federalist it needed steps of ``1e-3`` and trees of 1,024 leapfrog steps. This
potential is the same posterior, reorganised for NUTS:

* **Author summed out exactly.** Each unknown document contributes
  ``logsumexp_a [log prior_d(a) + log p(x_d | r_a)]`` over its candidates.
* **``mu`` integrated out analytically.** Given ``spread[w]``, the ``K`` log rates of word
  ``w`` are jointly normal, ``N(mu_loc 1, spread^2 I + mu_scale^2 1 1^T)``, so the funnel
  between ``mu`` and a small ``spread`` never reaches the sampler; ``mu`` is drawn afterwards
  from its normal conditional (:meth:`WordRatePotential.draw_mu`).
* **Sufficient statistics.** Known documents enter through the counts summed over each
  group of documents with the same author and length (``[G, W]``) and, for the negative
  binomial's ``lgamma(x + shape)``, the multiplicities of each (word, count) pair: the cost
  does not grow with the number of equal-length chunks.
* **Whitened scale.** NUTS moves ``u = (log_rate - m) / s`` with ``m`` and ``s`` the
  empirical log rate and its standard error (Poisson, inflated by the variance-to-mean
  ratio), and the log dispersion likewise centred and scaled by moment estimates (fixed
  affine maps: the density is unchanged up to a constant, NUTS's mass matrix starts close
  to right and short warm-ups suffice); ``spread`` on the log scale, ``share`` on the
  logit scale (Pyro's bijections: the draws are those of the model's sites).

NUTS calls :meth:`WordRatePotential.__call__`, which computes the value and its gradient in
NumPy in one pass (:meth:`WordRatePotential.value_and_grad`, closed-form derivatives) and
hands them to torch as one autograd node: about ten times faster than autograd through
the small tensor operations of :meth:`WordRatePotential.reference` (the same density
written with torch, which a test differentiates and compares with the NumPy gradient).
A test checks it against Pyro's own density (a conditioned trace, ``mu`` by Gauss-Hermite).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pyro.distributions import transforms as T
from scipy.special import expit, gammaln, psi
from torch import Tensor
from torch.nn import functional as F

from models.errors import InputError
from models.wordrates import (
    JOINT,
    KNOWN,
    LIKELIHOODS,
    MIN_DISPERSION,
    UNKNOWN,
    WordRateData,
    WordRatePrior,
    count_loglik,
)

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class WordRatePotential:
    """``-log p(latents, counts)`` of the word-rate model on NUTS's unconstrained scale (module docstring).

    Attributes
    ----------
    transforms : dict
        Constrained -> unconstrained map of every sampled site (``MCMC(transforms=...)``).
    sites : tuple of str
        The sampled sites: ``log_rate``, ``spread``, then ``dispersion`` (negbin) and ``share`` (joint documents).
    """

    def __init__(self, data: WordRateData, likelihood: str = "negbin", prior: WordRatePrior | None = None):
        if likelihood not in LIKELIHOODS:
            raise InputError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
        if data.counts is None:
            raise InputError("conditioning needs observed counts (data.counts is None)")
        self.data, self.likelihood, self.prior = data, likelihood, prior or WordRatePrior()
        K, W = data.num_authors, data.num_words
        X, n = data.counts, data.lengths  # [D, W], [D]
        known = data.group(KNOWN)
        pairs = torch.stack([data.author[known].double(), n[known]], -1)  # [Dk, 2] (author, length)
        keys, group = torch.unique(pairs, dim=0, return_inverse=True)  # [G, 2], [Dk]
        G = keys.shape[0]
        self.g_author, self.g_length = keys[:, 0].long(), keys[:, 1]  # [G]
        self.g_size = torch.zeros(G, dtype=torch.float64).index_add(0, group, torch.ones(len(known), dtype=torch.float64))
        self.g_counts = torch.zeros(G, W, dtype=torch.float64).index_add(0, group, X[known])  # [G, W]
        # (word, count) pairs of the known documents and their multiplicities, for sum_d lgamma(x_dw + shape_w)
        flat = (X[known].long() * W + torch.arange(W)).flatten()  # [Dk * W] count * W + word
        values, mult = torch.unique(flat, return_counts=True)
        self.p_word, self.p_count, self.p_mult = values % W, (values // W).double(), mult.double()
        self.log_factorial = float(torch.lgamma(X[known] + 1).sum())
        self.unknown, self.joint = data.group(UNKNOWN), data.group(JOINT)
        cand = data.candidates[self.unknown]  # [Du, K]
        self.unknown_logits = torch.where(cand, -cand.sum(-1, keepdim=True).double().log(),
                                          torch.tensor(-math.inf, dtype=torch.float64)).T  # [K, Du]
        # whitening: empirical log rates of the known documents and their standard errors, the Poisson
        # one inflated by each author's variance-to-mean ratio of the counts (over-dispersion)
        totals = torch.zeros(K, W, dtype=torch.float64).index_add(0, self.g_author, self.g_counts)  # [K, W]
        exposure = torch.zeros(K, dtype=torch.float64).index_add(0, self.g_author, self.g_size * self.g_length)
        docs = torch.zeros(K, dtype=torch.float64).index_add(0, self.g_author, self.g_size).clamp(min=1)  # [K]
        mean = totals / docs[:, None]  # [K, W] mean count per document
        square = torch.zeros(K, W, dtype=torch.float64).index_add(0, data.author[known], X[known] ** 2)
        var = (square / docs[:, None] - mean**2).clamp(min=0)  # [K, W]
        self.centre = ((totals + 0.5) / (exposure[:, None] + 1.0)).log()  # [K, W]
        self.scale = ((var / mean.clamp(min=1e-3)).clamp(1.0, 100.0) / (totals + 1.0)).sqrt()  # [K, W]
        excess = ((var - mean) / mean.clamp(min=1e-3) ** 2).clamp(min=1e-3)  # [K, W] moment estimate of dispersion
        self.dispersion_start = torch.where(totals > 0, excess, torch.nan).nanmedian(0).values.nan_to_num(0.1)  # [W]
        # log dispersion: centred on the moment estimate, scaled by its rough standard error sqrt(2 / D)
        # (1 + 1 / (dispersion * mean count)), larger for rare words
        self.disp_centre = self.dispersion_start.clamp(1e-3, 10.0).log()  # [W]
        rate_of = (self.dispersion_start * mean.mean(0)).clamp(min=1e-6)  # [W]
        self.disp_scale = (math.sqrt(2 / max(1, len(known))) * (1 + 1 / rate_of)).clamp(max=1.0)  # [W]
        self.transforms = {"log_rate": T.AffineTransform(-self.centre / self.scale, 1 / self.scale),
                           "spread": T.ExpTransform().inv}
        if likelihood == "negbin":
            self.transforms["dispersion"] = T.ComposeTransform([
                T.ExpTransform().inv, T.AffineTransform(-self.disp_centre / self.disp_scale, 1 / self.disp_scale)])
        if len(self.joint):
            self.transforms["share"] = T.SigmoidTransform().inv
        self.sites = tuple(self.transforms)

    # ------------------------------------------------------------------ pieces

    def log_prior_rates(self, log_rate: Tensor, spread: Tensor) -> Tensor:
        """``log p(log_rate | spread)`` with ``mu`` integrated out: ``[K, W]``, ``[W]`` -> scalar."""
        K = log_rate.shape[-2]
        m0, s0 = self.prior.mu_loc, self.prior.mu_scale
        mean = log_rate.mean(-2)  # [W]
        ss = ((log_rate - mean) ** 2).sum(-2)  # [W]
        total_var = spread**2 + K * s0**2  # [W]
        return (-K * _HALF_LOG_2PI - (K - 1) * spread.log() - 0.5 * total_var.log()
                - ss / (2 * spread**2) - K * (mean - m0) ** 2 / (2 * total_var)).sum()

    def known_loglik(self, log_rate: Tensor, dispersion: Tensor | None) -> Tensor:
        """``log p(counts of the known documents | rates)`` from the sufficient statistics."""
        log_mean = self.g_length.log()[:, None] + log_rate[self.g_author]  # [G, W]
        X, m = self.g_counts, self.g_size[:, None]
        if dispersion is None:
            return (X * log_mean - m * log_mean.exp()).sum() - self.log_factorial
        shape = 1 / dispersion.clamp(min=MIN_DISPERSION)  # [W]
        log_total = torch.logaddexp(shape.log(), log_mean)  # [G, W] log(shape + mean)
        grouped = (m * (shape * shape.log() - torch.lgamma(shape)) + X * log_mean - (m * shape + X) * log_total).sum()
        pairs = (self.p_mult * torch.lgamma(self.p_count + shape[self.p_word])).sum()
        return grouped + pairs - self.log_factorial

    def constrain(self, z: dict[str, Tensor]) -> dict[str, Tensor]:
        """The model's site values from the unconstrained ``z``."""
        return {name: self.transforms[name].inv(z[name]) for name in self.sites}

    def __call__(self, z: dict[str, Tensor]) -> Tensor:
        """The potential at ``z`` (a dict of unconstrained tensors), differentiable through :class:`_Potential`."""
        return _Potential.apply(self, self.sites, *(z[name] for name in self.sites))

    def reference(self, z: dict[str, Tensor]) -> Tensor:
        """The same potential written with torch operations (differentiable by autograd; slower)."""
        v = self.constrain(z)
        log_rate, spread, dispersion = v["log_rate"], v["spread"], v.get("dispersion")
        p = self.prior
        log_joint = self.log_prior_rates(log_rate, spread) + _log_normal(z["spread"], math.log(p.spread_median),
                                                                         p.spread_scale)  # lognormal, Jacobian included
        if dispersion is not None:
            log_joint = log_joint + _log_half_normal(dispersion, p.dispersion_scale) + dispersion.log().sum()
        log_joint = log_joint + self.known_loglik(log_rate, dispersion)
        rate = log_rate.exp()  # [K, W]
        data = self.data
        if len(self.unknown):
            X, n = data.counts[self.unknown], data.lengths[self.unknown]  # [Du, W], [Du]
            L = count_loglik(X, n[:, None] * rate[:, None, :], dispersion)  # [K, Du]
            log_joint = log_joint + torch.logsumexp(self.unknown_logits + L, 0).sum()
        if len(self.joint):
            share, pair = v["share"], data.pair[self.joint]  # [Dj], [Dj, 2]
            mixed = share[:, None] * rate[pair[:, 0]] + (1 - share[:, None]) * rate[pair[:, 1]]  # [Dj, W]
            X, n = data.counts[self.joint], data.lengths[self.joint]
            log_joint = log_joint + count_loglik(X, n[:, None] * mixed, dispersion).sum()
            log_joint = log_joint + (F.logsigmoid(z["share"]) + F.logsigmoid(-z["share"])).sum()
        return -log_joint

    # ------------------------------------------------------------------ starts and mu

    def initial_params(self, rng: np.random.Generator, jitter: float = 1.0) -> dict[str, Tensor]:
        """An unconstrained start near the empirical rates, jittered uniformly by ``jitter`` per coordinate."""
        W = self.data.num_words
        spread = self.centre.std(0).clamp(0.05, 1.0) if self.centre.shape[0] > 1 else torch.full((W,), 0.3)
        start = {"log_rate": torch.zeros_like(self.centre), "spread": spread.double().log()}
        if "dispersion" in self.transforms:
            start["dispersion"] = torch.zeros(W, dtype=torch.float64)
        if "share" in self.transforms:
            start["share"] = torch.zeros(len(self.joint), dtype=torch.float64)
        return {k: v + torch.as_tensor(rng.uniform(-jitter, jitter, v.shape)) for k, v in start.items()}

    def draw_mu(self, log_rate: Tensor, spread: Tensor, generator: torch.Generator) -> Tensor:
        """``mu`` from its normal conditional given draws ``log_rate [..., K, W]`` and ``spread [..., W]``."""
        K = log_rate.shape[-2]
        m0, s0 = self.prior.mu_loc, self.prior.mu_scale
        precision = K / spread**2 + 1 / s0**2  # [..., W]
        mean = (log_rate.sum(-2) / spread**2 + m0 / s0**2) / precision
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + noise / precision.sqrt()


    def value_and_grad(self, z: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        """The potential and its gradient with respect to every unconstrained site, in NumPy."""
        data = self._np
        y = data["centre"] + data["scale"] * z["log_rate"]  # [K, W] log rates
        value, grad_y, grad = self._prior_terms(y, z)
        kappa = None
        grad_kappa = None
        if "dispersion" in z:
            kappa = 1 / np.maximum(np.exp(data["disp_centre"] + data["disp_scale"] * z["dispersion"]), MIN_DISPERSION)
            grad_kappa = np.zeros_like(kappa)  # [W]
        parts = [self._known_terms(y, kappa)]
        if "u_counts" in data:
            parts.append(self._unknown_terms(y, kappa))
        if "share" in z:
            v, g_y, g_kappa, grad["share"] = self._joint_terms(y, z["share"], kappa)
            parts.append((v, g_y, g_kappa))
        for v, g_y, g_kappa in parts:
            value, grad_y = value + v, grad_y + g_y
            if kappa is not None:
                grad_kappa = grad_kappa + g_kappa
        grad["log_rate"] = grad_y * data["scale"]
        if kappa is not None:
            grad["dispersion"] = (grad["dispersion"] - kappa * grad_kappa) * data["disp_scale"]  # d kappa / d b = -kappa
        return -float(value), {k: -v for k, v in grad.items()}

    def _prior_terms(self, y: np.ndarray, z: dict[str, np.ndarray]) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
        """Log prior of the log rates (``mu`` integrated out), the log-normal spread and the half-normal
        dispersion, with Jacobians: ``(value, d/d y [K, W], {"spread": ..., "dispersion": d/d b})``."""
        p, data = self.prior, self._np
        K, a = y.shape[0], z["spread"]
        sigma = np.exp(a)  # [W]
        mean = y.mean(0)
        dev = y - mean
        ss, total_var = (dev**2).sum(0), sigma**2 + K * p.mu_scale**2
        shift = mean - p.mu_loc
        value = (-K * _HALF_LOG_2PI - (K - 1) * a - 0.5 * np.log(total_var) - ss / (2 * sigma**2)
                 - K * shift**2 / (2 * total_var)).sum()
        grad_y = -dev / sigma**2 - shift / total_var
        d_sigma = -(K - 1) / sigma - sigma / total_var + ss / sigma**3 + K * shift**2 * sigma / total_var**2
        grad_a = sigma * d_sigma
        # log-normal spread with its Jacobian: normal log spread
        log_median = math.log(p.spread_median)
        value += (-_HALF_LOG_2PI - math.log(p.spread_scale) - (a - log_median) ** 2 / (2 * p.spread_scale**2)).sum()
        grad = {"spread": grad_a - (a - log_median) / p.spread_scale**2}
        if "dispersion" in z:
            b = data["disp_centre"] + data["disp_scale"] * z["dispersion"]  # log dispersion
            delta = np.maximum(np.exp(b), MIN_DISPERSION)
            value += (math.log(2) - _HALF_LOG_2PI - math.log(p.dispersion_scale)
                      - delta**2 / (2 * p.dispersion_scale**2) + b).sum()
            grad["dispersion"] = 1 - delta**2 / p.dispersion_scale**2
        return value, grad_y, grad

    def _known_terms(self, y: np.ndarray, kappa: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Documents of known authors, from the sufficient statistics: ``(value, d/d y, d/d kappa)``."""
        data = self._np
        L = data["g_log_length"][:, None] + y[data["g_author"]]  # [G, W]
        X, m = data["g_counts"], data["g_size"][:, None]
        mu = np.exp(L)
        grad_kappa = None
        if kappa is None:
            value = (X * L - m * mu).sum() - self.log_factorial
            d_L = X - m * mu
        else:
            log_total = np.logaddexp(np.log(kappa), L)
            value = ((m * (kappa * np.log(kappa) - gammaln(kappa)) + X * L - (m * kappa + X) * log_total).sum()
                     + (data["p_mult"] * gammaln(data["p_count"] + kappa[data["p_word"]])).sum() - self.log_factorial)
            frac = np.exp(L - log_total)  # mu / (kappa + mu)
            d_L = X - (m * kappa + X) * frac
            grad_kappa = (m * (np.log(kappa) + 1 - psi(kappa) - log_total) - (m * kappa + X) / (kappa + mu)).sum(0)
            grad_kappa += np.bincount(data["p_word"], data["p_mult"] * psi(data["p_count"] + kappa[data["p_word"]]),
                                      minlength=len(kappa))
        return value, data["g_onehot"] @ d_L, grad_kappa  # [K, G] @ [G, W]: each group's author

    def _unknown_terms(self, y: np.ndarray, kappa: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Documents of unknown author, the author summed out: ``(value, d/d y, d/d kappa)``."""
        data = self._np
        X, log_n = data["u_counts"], data["u_log_length"]  # [Du, W], [Du]
        L = log_n[None, :, None] + y[:, None, :]  # [K, Du, W]
        ell, d_L, d_kappa = _count_terms(X[None], L, kappa)  # [K, Du], [K, Du, W], [K, Du, W] or None
        logits = data["u_logits"] + ell - data["u_log_factorial"]  # [K, Du]
        top = logits.max(0)  # [Du] (a candidate always has a finite logit)
        total = top + np.log(np.exp(logits - top).sum(0))  # [Du] logsumexp over authors
        post = np.exp(logits - total)  # [K, Du] author posterior given these rates
        grad_kappa = None if kappa is None else (post[..., None] * d_kappa).sum((0, 1))
        return total.sum(), (post[..., None] * d_L).sum(1), grad_kappa

    def _joint_terms(
        self, y: np.ndarray, c: np.ndarray, kappa: np.ndarray | None
    ) -> tuple[float, np.ndarray, np.ndarray | None, np.ndarray]:
        """Joint documents, rates mixed by a logit-normal share: ``(value, d/d y, d/d kappa, d/d c)``."""
        data = self._np
        s = expit(c)  # [Dj]
        r = np.exp(y)
        p0, p1 = data["j_pair"][:, 0], data["j_pair"][:, 1]
        n = data["j_length"][:, None]  # [Dj, 1]
        mixed = n * (s[:, None] * r[p0] + (1 - s[:, None]) * r[p1])  # [Dj, W]
        ell, d_L, d_kappa = _count_terms(data["j_counts"], np.log(mixed), kappa)
        value = (ell - data["j_log_factorial"]).sum() + (np.log(s) + np.log1p(-s)).sum()
        d_mean = d_L / mixed  # [Dj, W] d ell / d mean
        grad_y = np.zeros_like(y)
        np.add.at(grad_y, p0, d_mean * n * s[:, None] * r[p0])
        np.add.at(grad_y, p1, d_mean * n * (1 - s[:, None]) * r[p1])
        grad_share = (d_mean * n * (r[p0] - r[p1])).sum(-1) * s * (1 - s) + 1 - 2 * s
        return value, grad_y, None if kappa is None else d_kappa.sum(0), grad_share

    @property
    def _np(self) -> dict[str, np.ndarray]:
        """The statistics as NumPy arrays (made once)."""
        if not hasattr(self, "_np_cache"):
            d = self.data
            cache = {"centre": self.centre.numpy(), "scale": self.scale.numpy(), "g_author": self.g_author.numpy(),
                     "g_log_length": self.g_length.log().numpy(), "g_counts": self.g_counts.numpy(),
                     "g_size": self.g_size.numpy(), "p_word": self.p_word.numpy(), "p_count": self.p_count.numpy(),
                     "p_mult": self.p_mult.numpy(), "disp_centre": self.disp_centre.numpy(),
                     "disp_scale": self.disp_scale.numpy(),
                     "g_onehot": (self.g_author[None, :] == torch.arange(self.centre.shape[0])[:, None]).double().numpy()}
            if len(self.unknown):
                X = d.counts[self.unknown].numpy()
                cache.update(u_counts=X, u_log_length=d.lengths[self.unknown].log().numpy(),
                             u_logits=self.unknown_logits.numpy(), u_log_factorial=gammaln(X + 1).sum(-1))
            if len(self.joint):
                X = d.counts[self.joint].numpy()
                cache.update(j_counts=X, j_length=d.lengths[self.joint].numpy(), j_pair=d.pair[self.joint].numpy(),
                             j_log_factorial=gammaln(X + 1).sum(-1))
            self._np_cache = cache
        return self._np_cache


class _Potential(torch.autograd.Function):
    """The potential as one autograd node: value and gradient from :meth:`WordRatePotential.value_and_grad`."""

    @staticmethod
    def forward(ctx, potential: WordRatePotential, sites: tuple[str, ...], *values: Tensor) -> Tensor:
        value, grad = potential.value_and_grad({k: v.detach().numpy() for k, v in zip(sites, values, strict=True)})
        ctx.grads = [torch.as_tensor(grad[k]) for k in sites]
        return torch.tensor(value, dtype=torch.float64)

    @staticmethod
    def backward(ctx, upstream: Tensor):
        return (None, None, *(upstream * g for g in ctx.grads))


def _count_terms(X: np.ndarray, L: np.ndarray, kappa: np.ndarray | None):
    """Per-document log-likelihood (summed over words, without the constant ``-log x!``) and its
    derivatives in the log mean ``L`` and in ``kappa``."""
    mu = np.exp(L)
    if kappa is None:
        return (X * L - mu).sum(-1), X - mu, None
    log_total = np.logaddexp(np.log(kappa), L)
    ell = (gammaln(X + kappa) - gammaln(kappa) + kappa * (np.log(kappa) - log_total) + X * (L - log_total)).sum(-1)
    d_L = X - (kappa + X) * np.exp(L - log_total)
    d_kappa = psi(X + kappa) - psi(kappa) + np.log(kappa) + 1 - log_total - (kappa + X) / (kappa + mu)
    return ell, d_L, d_kappa


def _log_normal(x: Tensor, loc: float, scale: float) -> Tensor:
    return (-_HALF_LOG_2PI - math.log(scale) - (x - loc) ** 2 / (2 * scale**2)).sum()


def _log_half_normal(x: Tensor, scale: float) -> Tensor:
    return (math.log(2) - _HALF_LOG_2PI - math.log(scale) - x**2 / (2 * scale**2)).sum()
