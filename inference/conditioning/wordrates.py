"""Conditioning the word-rate authorship models: NUTS over the rates, exact enumeration over the author.

    fit = fit_word_rates(data, likelihood="negbin", num_chains=4, num_samples=500, seed=0)
    post = author_posterior(fit, data)          # unknown documents: P(author), log-odds, per-draw intervals
    L = draw_logliks(fit, counts, lengths)      # [S, N, K] log p(x_n | rates of draw s, author k)

:func:`fit_word_rates` samples ``log_rate``, ``spread``, ``dispersion`` and ``share`` with
NUTS on the hand-written potential of :mod:`inference.conditioning.wordrate_potential` (the
unknown authors summed out, ``mu`` integrated out and drawn afterwards from its
conditional). Chains run one after another, each seeded from
``numpy.random.SeedSequence(seed)`` and started near the empirical rates with a uniform
jitter; R-hat and bulk ESS come from :func:`inference.diagnostics.rhat_ess` (ArviZ).

The author of an unknown document is never sampled: given each draw of the rates its
posterior is computed exactly (enumeration over the candidates), and the reported
``P(author)`` is the average over draws (Rao-Blackwellised). The interval of a log-odds is
the 5-95% range of the per-draw conditional log-odds: how much the rates' uncertainty moves it.

New documents (held-out chunks, a text to attribute) are scored by the posterior
predictive: ``log p(x | author a) = log mean_s p(x | r_a^s)`` (:func:`predictive_loglik`), the
model fitted on the known documents only. The same model also predicts a document by a
*new* author, whose log rates are drawn from the population, ``N(mu, spread)`` per word
(:func:`new_author_loglik`, Gauss-Hermite quadrature per word): the reference of the
out-of-support score. :func:`loo_author_logprobs` gives the
leave-one-out author posterior of each known document by Pareto-smoothed importance
sampling (``inference.diagnostics.psis_log_weights``), without refitting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer.mcmc import MCMC, NUTS
from torch import Tensor

from inference import diagnostics
from inference.conditioning.latents import check_int
from inference.conditioning.wordrate_potential import WordRatePotential
from inference.runtime import single_thread
from models.errors import InputError
from models.limits import MAX_CHAINS, MAX_DRAWS, check_seed
from models.wordrates import (
    JOINT,
    KNOWN,
    UNKNOWN,
    WordRateData,
    WordRatePrior,
    count_loglik,
    count_logpmf,
)

#: draws scored at once by :func:`draw_logliks` (bounds the ``[S, N, K, W]`` block)
MAX_BLOCK = 4_000_000


@dataclass(frozen=True)
class WordRateFit:
    """NUTS draws of a word-rate model.

    Attributes
    ----------
    samples : dict of str to Tensor
        ``[chains, draws, ...]`` float64: ``log_rate`` ``[c, s, K, W]``, ``spread`` and ``mu``
        ``[c, s, W]``, ``dispersion`` ``[c, s, W]`` (negbin), ``share`` ``[c, s, Dj]`` (joint documents).
    likelihood : str
    diagnostics : dict
        ``r_hat_max``, ``ess_min`` and per site ``r_hat``/``ess`` (ArviZ), ``divergences``,
        ``acceptance_rate`` and ``step_size`` per chain, ``num_chains``, ``num_samples``, ``warmup_steps``.
    seconds : float
        Wall time of the fit.
    """

    samples: dict[str, Tensor]
    likelihood: str
    diagnostics: dict[str, Any]
    seconds: float

    def flat(self, name: str) -> Tensor:
        """``[chains * draws, ...]`` draws of site ``name``."""
        x = self.samples[name]
        return x.reshape(-1, *x.shape[2:])

    @property
    def num_draws(self) -> int:
        return self.samples["log_rate"].shape[0] * self.samples["log_rate"].shape[1]


@single_thread
def fit_word_rates(
    data: WordRateData,
    likelihood: str = "negbin",
    prior: WordRatePrior | None = None,
    *,
    num_chains: int = 4,
    num_samples: int = 500,
    warmup_steps: int = 500,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> WordRateFit:
    """NUTS draws of the word-rate model conditioned on ``data`` (module docstring).

    Parameters
    ----------
    data : WordRateData
        Documents with observed counts (known, unknown and joint).
    likelihood : {"poisson", "negbin"}
    prior : WordRatePrior, optional
    num_chains, num_samples, warmup_steps : int
        Chains (run one after another), kept draws and adaptation steps per chain.
    target_accept_prob, max_tree_depth
        NUTS settings.
    seed : int
    progress : bool
        Pyro's progress bars.

    Returns
    -------
    WordRateFit
    """
    check_seed(seed)
    num_chains = check_int("num_chains", num_chains, 1)
    num_samples = check_int("num_samples", num_samples, 1)
    warmup_steps = check_int("warmup_steps", warmup_steps, 0)
    if num_chains > MAX_CHAINS or num_chains * num_samples > MAX_DRAWS:
        raise InputError(f"{num_chains} chains x {num_samples} draws is too many (limits {MAX_CHAINS}, {MAX_DRAWS:.0e})")
    if not len(data.group(KNOWN)):
        raise InputError("the word-rate model needs at least one document of a known author")
    pyro.clear_param_store()
    start = time.perf_counter()
    potential = WordRatePotential(data, likelihood, prior)
    chains, accept, steps, diverging = [], [], [], 0
    for chain_seed in np.random.SeedSequence(seed).generate_state(num_chains):
        pyro.set_rng_seed(int(chain_seed))
        init = potential.initial_params(np.random.default_rng(int(chain_seed)))
        kernel = NUTS(potential_fn=potential, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth)
        mcmc = MCMC(kernel, num_samples, warmup_steps, initial_params=init, transforms=potential.transforms,
                    disable_progbar=not progress)
        mcmc.run()
        chains.append({k: v.detach() for k, v in mcmc.get_samples().items()})
        info = mcmc._diagnostics[0]  # the kernel's own numbers (MCMC.diagnostics() adds Pyro's R-hat)
        diverging += len(info["divergences"])
        accept.append(float(info["acceptance rate"]))
        steps.append(float(kernel.step_size))
    samples = {name: torch.stack([c[name] for c in chains]) for name in potential.sites}  # [c, s, ...]
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
    samples["mu"] = potential.draw_mu(samples["log_rate"], samples["spread"], generator)
    found = diagnostics.rhat_ess({k: v.numpy() for k, v in samples.items()})
    found.update(divergences=diverging, acceptance_rate=accept, step_size=steps, num_chains=num_chains,
                 num_samples=num_samples, warmup_steps=warmup_steps)
    return WordRateFit(samples, likelihood, found, time.perf_counter() - start)


def draw_logliks(fit: WordRateFit, counts, lengths) -> Tensor:
    """``[S, N, K]`` float64 ``log p(x_n | r_k^s)`` of documents under every draw and author.

    Parameters
    ----------
    counts : array
        ``[N, W]`` counts of the model's word list.
    lengths : array
        ``[N]`` words in each document.
    """
    X = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    n = torch.as_tensor(np.asarray(lengths), dtype=torch.float64)
    rate = fit.flat("log_rate").exp()  # [S, K, W]
    disp = fit.flat("dispersion") if fit.likelihood == "negbin" else None  # [S, W]
    S, K, W = rate.shape
    if X.dim() != 2 or X.shape[1] != W or n.shape != X.shape[:1]:
        raise InputError(f"counts must be [N, {W}] and lengths [N], got {tuple(X.shape)} and {tuple(n.shape)}")
    step = max(1, MAX_BLOCK // max(1, X.shape[0] * K * W))
    out = []
    for lo in range(0, S, step):  # memory blocks of draws
        mean = n[None, :, None, None] * rate[lo : lo + step, None]  # [s, N, K, W]
        d = None if disp is None else disp[lo : lo + step, None, None, :]  # [s, 1, 1, W]
        out.append(count_loglik(X[None, :, None, :], mean, d))  # [s, N, K]
    return torch.cat(out)


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """``log mean exp(x)`` along ``dim``."""
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def predictive_loglik(fit: WordRateFit, counts, lengths) -> Tensor:
    """``[N, K]`` posterior predictive ``log p(x_n | author k) = log mean_s p(x_n | r_k^s)``."""
    return log_mean_exp(draw_logliks(fit, counts, lengths), 0)


#: Gauss-Hermite nodes of the new author's log rate of each word
HERMITE_NODES = 20


def new_author_loglik(fit: WordRateFit, counts, lengths, nodes: int = HERMITE_NODES) -> Tensor:
    """``[N]`` ``log p(x_n | a new author)``: rates ``log r_w ~ N(mu_w, spread_w)`` of each draw, integrated
    word by word (the words are independent given the draw), then averaged over draws."""
    X = torch.as_tensor(np.asarray(counts), dtype=torch.float64)  # [N, W]
    n = torch.as_tensor(np.asarray(lengths), dtype=torch.float64)  # [N]
    t, w = np.polynomial.hermite.hermgauss(nodes)
    t, log_w = torch.as_tensor(t), torch.as_tensor(np.log(w) - 0.5 * math.log(math.pi))  # [Q]
    mu, spread = fit.flat("mu"), fit.flat("spread")  # [S, W]
    disp = fit.flat("dispersion") if fit.likelihood == "negbin" else None
    S, W = mu.shape
    step = max(1, MAX_BLOCK // max(1, X.shape[0] * nodes * W))
    out = []
    for lo in range(0, S, step):  # memory blocks of draws
        log_rate = mu[lo : lo + step, None, :] + math.sqrt(2) * spread[lo : lo + step, None, :] * t[:, None]  # [s, Q, W]
        mean = n[None, :, None, None] * log_rate.exp()[:, None]  # [s, N, Q, W]
        d = None if disp is None else disp[lo : lo + step, None, None, :]
        pmf = count_logpmf(X[None, :, None, :], mean, d)  # [s, N, Q, W]
        out.append(torch.logsumexp(pmf + log_w[:, None], -2).sum(-1))  # [s, N]
    return log_mean_exp(torch.cat(out), 0)


@dataclass(frozen=True)
class AuthorPosterior:
    """The author posterior of documents, from the word-rate draws.

    Attributes
    ----------
    log_probs : Tensor
        ``[N, K]`` ``log P(author k | data)`` (``-inf`` outside the candidates).
    draw_log_probs : Tensor
        ``[S, N, K]`` the conditional ``log P(author k | x_n, r^s)`` of every draw.
    """

    log_probs: Tensor
    draw_log_probs: Tensor

    @property
    def probs(self) -> Tensor:
        return self.log_probs.exp()

    def log_odds(self, a: int, b: int) -> Tensor:
        """``[N]`` ``log P(a) - log P(b)``."""
        return self.log_probs[:, a] - self.log_probs[:, b]

    def log_odds_interval(self, a: int, b: int, level: float = 0.9) -> Tensor:
        """``[N, 2]`` the central ``level`` range over draws of the conditional log-odds of ``a`` against ``b``."""
        per_draw = self.draw_log_probs[..., a] - self.draw_log_probs[..., b]  # [S, N]
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
        return torch.quantile(per_draw, q, dim=0).T


def author_posterior(fit: WordRateFit, data: WordRateData) -> AuthorPosterior:
    """The posterior over the authors of ``data``'s unknown documents (exact given each draw, averaged)."""
    index = data.group(UNKNOWN)
    if not len(index):
        raise InputError("the data hold no document of unknown author")
    L = draw_logliks(fit, data.counts[index], data.lengths[index])  # [S, Du, K]
    logits = torch.where(data.candidates[index], 0.0, -math.inf).double()  # [Du, K]
    draw_lp = torch.log_softmax(L + logits, -1)  # [S, Du, K]
    return AuthorPosterior(log_mean_exp(draw_lp, 0), draw_lp)


def loo_author_logprobs(fit: WordRateFit, data: WordRateData, candidates=None) -> tuple[Tensor, Tensor]:
    """Leave-one-out author posterior of every known document, by PSIS (no refit).

    Leaving document ``d`` out re-weights the draws by ``1 / p(x_d | r_{a_d})`` (Pareto
    smoothed); then ``log p_{-d}(x_d | a) = log sum_s w_s p(x_d | r_a^s)``, and the author
    posterior is uniform over ``candidates`` times that.

    Parameters
    ----------
    candidates : array, optional
        ``[K]`` bool, the authors to choose among (all when omitted).

    Returns
    -------
    log_probs : Tensor
        ``[Dk, K]`` leave-one-out ``log P(author | x_d)`` of the known documents, in their order.
    pareto_k : Tensor
        ``[Dk]`` Pareto k of each document's importance weights (above 0.7: unreliable).
    """
    index = data.group(KNOWN)
    L = draw_logliks(fit, data.counts[index], data.lengths[index])  # [S, Dk, K]
    own = L.gather(-1, data.author[index].expand(L.shape[0], -1)[..., None]).squeeze(-1)  # [S, Dk]
    log_w, pareto_k = diagnostics.psis_log_weights((-own).numpy())  # [S, Dk] normalised over S
    loo = torch.logsumexp(torch.as_tensor(log_w)[..., None] + L, 0)  # [Dk, K]
    mask = torch.ones(L.shape[-1], dtype=torch.bool) if candidates is None else torch.as_tensor(candidates)
    loo = torch.where(mask, loo, torch.tensor(-math.inf, dtype=torch.float64))
    return torch.log_softmax(loo, -1), torch.as_tensor(pareto_k)


def pointwise_loglik(fit: WordRateFit, data: WordRateData) -> Tensor:
    """``[S, D]`` ``log p(x_d | draw s)`` of every document: known ones given their author, unknown ones
    summed over their candidates (uniform prior), joint ones at the draw's share (for ArviZ's LOO)."""
    L = draw_logliks(fit, data.counts, data.lengths)  # [S, D, K]
    out = torch.empty(L.shape[:2], dtype=torch.float64)
    known, unknown, joint = data.group(KNOWN), data.group(UNKNOWN), data.group(JOINT)
    out[:, known] = L[:, known].gather(-1, data.author[known].expand(L.shape[0], -1)[..., None]).squeeze(-1)
    if len(unknown):
        cand = data.candidates[unknown]  # [Du, K]
        prior = torch.where(cand, -cand.sum(-1, keepdim=True).double().log(), torch.tensor(-math.inf).double())
        out[:, unknown] = torch.logsumexp(L[:, unknown] + prior, -1)
    if len(joint):
        share = fit.flat("share")  # [S, Dj]
        rate = fit.flat("log_rate").exp()  # [S, K, W]
        pair = data.pair[joint]
        mixed = share[..., None] * rate[:, pair[:, 0]] + (1 - share[..., None]) * rate[:, pair[:, 1]]  # [S, Dj, W]
        disp = fit.flat("dispersion")[:, None] if fit.likelihood == "negbin" else None
        out[:, joint] = count_loglik(data.counts[joint], data.lengths[joint, None] * mixed, disp)
    return out
