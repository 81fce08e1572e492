"""Exact conditioning by enumeration, and the posterior predictive.

Everything here is closed form over sufficient statistics:

* ``global`` with known tables: ``log pi_beta(h | D) = log pi(h) + beta * L_h - log Z``
  with ``L_h = sum_f n_f log table[h, f]`` (one dot product per persona).
* ``global`` with Dirichlet rows: each row integrates out (Dirichlet-multinomial),
  ``p_beta(D | h) = prod_rows B(a_r + beta n_r) / B(a_r)``.
* ``mixture``: ``w ~ Dirichlet(alpha)``, ``z_d ~ w``. The prior of an assignment
  depends only on its count vector ``m`` (``B(alpha + m) / B(alpha)``), so a
  forward pass over documents whose state is ``m`` sums every one of the ``K^D``
  assignments in ``O(D * C(D + K - 1, K - 1) * K)``; then
  ``E[w | D] = sum_m P(m | D) (alpha + m) / (sum(alpha) + D)``.

The predictive with in-context updating is :func:`models.predictive.mixture_predictive`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from models.errors import InputError
from models.personas import MarkovPersonas, TablePrior

#: the mixture forward pass refuses problems with more count states than this
MAX_COUNT_STATES = 2_000_000


def global_posterior(log_prior: Tensor, log_table: Tensor, totals: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Exact ``pi_beta(h | D)`` with known persona tables.

    Parameters
    ----------
    log_prior : Tensor
        ``[K]`` log persona prior.
    log_table : Tensor
        ``[K, F]`` flat log tables.
    totals : Tensor
        ``[F]`` evidence feature counts summed over documents.
    beta : float
        Tempering exponent.

    Returns
    -------
    log_weights : Tensor
        ``[K]`` log posterior persona probabilities.
    log_evidence : Tensor
        Scalar ``log sum_h pi(h) p(D | h)^beta``.
    """
    seen = totals.nonzero().squeeze(-1)  # only observed features: 0 * log 0 never happens
    loglik = (log_table[:, seen] * totals[seen]).sum(-1)  # [K]
    return _normalise(log_prior + _temper(loglik, beta))


def global_posterior_of(personas: MarkovPersonas, totals: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """:func:`global_posterior` of ``personas`` (same result, bit for bit), building only the
    log-table columns the evidence reaches, in place: one ``[K, S]`` buffer for ``S`` seen features."""
    seen = totals.nonzero().squeeze(-1)  # [S]
    terms = personas.log_table(seen).mul_(totals[seen])  # [K, S] n_f log table[h, f]
    return _normalise(personas.prior.log() + _temper(terms.sum(-1), beta))


def global_posterior_dirichlet(
    log_prior: Tensor, table_prior: TablePrior, totals: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """Exact ``pi_beta(h | D)`` when each persona's rows are Dirichlet-uncertain.

    Returns the same pair as :func:`global_posterior`.
    """
    a = table_prior.flat()  # [K, R, V], R = C + 1 rows
    n = beta * totals.reshape(a.shape[1:])  # [R, V]
    log_ml = (
        torch.lgamma(a.sum(-1)) - torch.lgamma(a.sum(-1) + n.sum(-1)) + (torch.lgamma(a + n) - torch.lgamma(a)).sum(-1)
    ).sum(-1)  # [K]
    if not torch.isfinite(log_ml).all():  # Dirichlet integrals are finite: only beta * counts can overflow
        raise InputError(f"beta = {beta:g} times the evidence counts overflows float64; use a smaller beta")
    return _normalise(log_prior + log_ml)


def dirichlet_row_posterior(table_prior: TablePrior, totals: Tensor, beta: float) -> Tensor:
    """``[K, R, V]`` concentrations of every row after seeing the evidence, given its persona."""
    a = table_prior.flat()
    return a + beta * totals.reshape(a.shape[1:])


@dataclass(frozen=True)
class MixtureExact:
    """Exact posterior of the mixture evidence model.

    Attributes
    ----------
    mean_weights : Tensor
        ``[K]`` ``E[w | D]``.
    log_evidence : Tensor
        Scalar ``log p_beta(D)``.
    count_states : Tensor
        ``[S, K]`` every persona count vector ``m`` with ``sum(m) = D``.
    count_log_probs : Tensor
        ``[S]`` ``log P(m | D)``.
    alpha : Tensor
        ``[K]`` the Dirichlet concentration.
    """

    mean_weights: Tensor
    log_evidence: Tensor
    count_states: Tensor
    count_log_probs: Tensor
    alpha: Tensor

    def sample_weights(self, num_samples: int, seed: int = 0) -> Tensor:
        """Exact draws of ``w | D`` (a mixture of Dirichlets): ``[num_samples, K]``."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            pick = torch.multinomial(self.count_log_probs.exp(), num_samples, replacement=True)  # [S]
            return torch.distributions.Dirichlet(self.alpha + self.count_states[pick]).sample()  # [S, K]


def mixture_posterior(doc_loglik: Tensor, alpha: Tensor, beta: float) -> MixtureExact:
    """Exact posterior over persona weights ``w`` of the mixture model.

    Parameters
    ----------
    doc_loglik : Tensor
        ``[D, K]`` log-likelihood of each document under each persona.
    alpha : Tensor
        ``[K]`` Dirichlet concentration.
    beta : float
        Tempering exponent.
    """
    D, K = doc_loglik.shape
    states = _num_compositions(D, K)
    if states > MAX_COUNT_STATES:
        raise InputError(
            f"exact mixture conditioning would track {states:.3g} count states for {D} documents and "
            f"{K} personas (limit {MAX_COUNT_STATES:.0e}); use method 'svi' or 'mcmc'"
        )
    lik = _temper(doc_loglik, beta)  # [D, K]
    impossible = ~torch.isfinite(lik).any(-1)  # [D] documents no persona can write
    if impossible.any():
        raise InputError(f"evidence document {int(impossible.nonzero()[0])} has zero probability under every "
                         "persona (a transition no persona allows)")
    shift = lik.max(-1, keepdim=True).values  # per-document constant, added back below
    lik = lik - shift
    base = D + 1
    step = base ** torch.arange(K)  # [K] code of e_k
    codes = torch.zeros(1, dtype=torch.long)  # [S]: state m encoded as sum_k m_k base^k
    log_w = torch.zeros(1, dtype=lik.dtype)  # [S]
    for d in range(D):  # dynamic programme over documents; vectorised over states
        new_codes = (codes[:, None] + step).reshape(-1)  # [S * K]
        new_log_w = (log_w[:, None] + lik[d]).reshape(-1)  # [S * K]
        codes, inverse = torch.unique(new_codes, return_inverse=True)
        log_w = _scatter_logsumexp(new_log_w, inverse, len(codes))
    counts = (codes[:, None] // step) % base  # [S, K]
    counts = counts.to(lik.dtype)
    log_prior_m = _log_beta(alpha + counts) - _log_beta(alpha)  # [S]
    log_joint = log_w + log_prior_m
    log_evidence = torch.logsumexp(log_joint, 0) + shift.sum()
    log_p = torch.log_softmax(log_joint, 0)
    mean = (log_p.exp()[:, None] * (alpha + counts)).sum(0) / (alpha.sum() + D)
    return MixtureExact(mean, log_evidence, counts, log_p, alpha)


def _temper(loglik: Tensor, beta: float) -> Tensor:
    if beta == 0:
        return torch.zeros_like(loglik)
    tempered = beta * loglik
    if (torch.isfinite(loglik) & ~torch.isfinite(tempered)).any():
        raise InputError(f"beta = {beta:g} times the evidence log-likelihood overflows float64; use a smaller beta")
    return tempered


def _normalise(log_joint: Tensor) -> tuple[Tensor, Tensor]:
    log_evidence = torch.logsumexp(log_joint, -1)
    if not torch.isfinite(log_evidence):
        raise InputError("the evidence has zero probability under every persona (a transition no persona allows)")
    # log_softmax subtracts the maximum first: "log_joint - log_evidence" loses every digit of the
    # weights once |log_joint| ~ 1e16 (beta * tokens), e.g. equal personas no longer get 1/K each.
    return torch.log_softmax(log_joint, -1), log_evidence


def _log_beta(conc: Tensor) -> Tensor:
    return torch.lgamma(conc).sum(-1) - torch.lgamma(conc.sum(-1))


def _scatter_logsumexp(values: Tensor, index: Tensor, size: int) -> Tensor:
    peak = torch.full((size,), -torch.inf, dtype=values.dtype).scatter_reduce(0, index, values, "amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.zeros(size, dtype=values.dtype).index_add_(0, index, (values - peak[index]).exp())
    return total.log() + peak


def _num_compositions(D: int, K: int) -> int:
    return math.comb(D + K - 1, K - 1)

