"""NUTS for the word-rate models: the hand-written potential against Pyro's density, its NumPy gradient,
the fit, author posteriors, the new-author predictive, and a small simulation-based calibration."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch

from inference.conditioning.wordrate_potential import WordRatePotential
from inference.conditioning.wordrates import (
    author_posterior,
    draw_logliks,
    fit_word_rates,
    loo_author_logprobs,
    new_author_loglik,
    pointwise_loglik,
    predictive_loglik,
)
from models.errors import InputError
from models.wordrates import WordRatePrior, count_loglik, make_data, word_rate_model

COUNTS = [[4.0, 9.0], [6.0, 4.0], [5.0, 8.0], [7.0, 3.0], [2.0, 5.0], [5.0, 3.0], [3.0, 6.0]]


def tiny_data():
    """Two authors, two words: four known documents, two unknown, one joint."""
    return make_data([100.0, 80.0, 90.0, 85.0, 60.0, 90.0, 70.0], [0, 1, 0, 1, -1, -1, -2], COUNTS,
                     num_authors=2, pair=[[-1, -1]] * 6 + [[1, 0]])


@pytest.mark.parametrize("likelihood", ["poisson", "negbin"])
def test_numpy_gradient_matches_autograd(likelihood):
    potential = WordRatePotential(tiny_data(), likelihood)
    z = {k: v.requires_grad_() for k, v in potential.initial_params(np.random.default_rng(3)).items()}
    ref = potential.reference(z)
    fast = potential(z)
    assert float(fast.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    for g_ref, g_fast in zip(torch.autograd.grad(ref, list(z.values())), torch.autograd.grad(fast, list(z.values())),
                             strict=True):
        assert torch.allclose(g_ref, g_fast, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def fit():
    return fit_word_rates(tiny_data(), "negbin", num_chains=2, num_samples=60, warmup_steps=60, seed=4)


def test_fit_returns_draws_and_arviz_diagnostics(fit):
    assert fit.samples["log_rate"].shape == (2, 60, 2, 2)
    assert fit.samples["share"].shape == (2, 60, 1)
    assert fit.samples["mu"].shape == (2, 60, 2)
    assert math.isfinite(fit.diagnostics["r_hat_max"]) and fit.diagnostics["ess_min"] > 0
    again = fit_word_rates(tiny_data(), "negbin", num_chains=2, num_samples=60, warmup_steps=60, seed=4)
    assert torch.equal(again.samples["log_rate"], fit.samples["log_rate"])


def test_author_posterior_is_the_average_of_exact_conditionals(fit):
    data = tiny_data()
    post = author_posterior(fit, data)
    L = draw_logliks(fit, data.counts[4:6], data.lengths[4:6])  # [S, 2, K]
    direct = torch.softmax(L, -1).mean(0)
    assert torch.allclose(post.probs, direct, rtol=1e-10)
    assert torch.allclose(post.log_odds(1, 0), post.log_probs[:, 1] - post.log_probs[:, 0])
    assert post.log_odds_interval(1, 0).shape == (2, 2)


def test_predictive_and_pointwise_likelihoods(fit):
    data = tiny_data()
    rate = fit.flat("log_rate").exp()  # [S, K, W]
    x, n = data.counts[:1], data.lengths[:1]
    direct = torch.stack([count_loglik(x[0], n[0] * rate[:, k], fit.flat("dispersion")) for k in range(2)], -1)
    expected = torch.logsumexp(direct, 0) - math.log(direct.shape[0])
    assert torch.allclose(predictive_loglik(fit, x, n)[0], expected, rtol=1e-12)
    assert pointwise_loglik(fit, data).shape == (120, 7)
    lp, k = loo_author_logprobs(fit, data)
    assert lp.shape == (4, 2) and torch.allclose(lp.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    assert k.shape == (4,)


def test_new_author_quadrature_matches_monte_carlo(fit):
    data = tiny_data()
    x, n = data.counts[:2], data.lengths[:2]
    got = new_author_loglik(fit, x, n)
    generator = torch.Generator().manual_seed(0)
    mu, spread, disp = fit.flat("mu"), fit.flat("spread"), fit.flat("dispersion")  # [S, W]
    M = 4000
    log_rate = mu[:, None] + spread[:, None] * torch.randn(mu.shape[0], M, 2, generator=generator, dtype=torch.float64)
    lik = count_loglik(x[:, None, None, :], n[:, None, None, None] * log_rate.exp()[None], disp[None, :, None])  # [2, S, M]
    per_draw = lik.exp().mean(-1)  # [2, S]
    mc = per_draw.mean(-1).log()
    se = per_draw.std(-1) / math.sqrt(per_draw.shape[-1]) / per_draw.mean(-1)  # relative standard error
    assert torch.all((got - mc).abs() < 4 * se + 1e-3)


def test_fit_refuses_data_without_known_documents():
    data = make_data([10.0], [-1], [[2.0]], num_authors=2)
    with pytest.raises(InputError, match="known author"):
        fit_word_rates(data, num_chains=1, num_samples=5, warmup_steps=5)


def test_simulation_based_calibration_of_a_log_rate():
    """Ranks of the true log rate among the posterior draws are uniform (mean 0.5 within 4 standard errors)."""
    prior = WordRatePrior(mu_loc=-3.0, mu_scale=0.5)
    base = make_data([200.0] * 4, [0, 0, 1, 1], None, num_authors=2, num_words=1)
    ranks = []
    for sim in range(16):
        pyro.set_rng_seed(100 + sim)
        trace = pyro.poutine.trace(word_rate_model).get_trace(base, "poisson", prior)
        truth = float(trace.nodes["log_rate"]["value"][0, 0])
        data = make_data(base.lengths, base.author, trace.nodes["_RETURN"]["value"], num_authors=2)
        found = fit_word_rates(data, "poisson", prior, num_chains=1, num_samples=40, warmup_steps=40, seed=sim)
        ranks.append(float((found.flat("log_rate")[:, 0, 0] < truth).double().mean()))
    mean = float(np.mean(ranks))
    assert abs(mean - 0.5) < 4 * math.sqrt(1 / 12 / len(ranks))


def _pyro_log_joint(data, likelihood: str, values: dict, nodes: int = 12) -> torch.Tensor:
    """``log p(counts, log_rate, spread, dispersion, share)`` from Pyro's own densities (a trace of
    :func:`word_rate_model` with every site conditioned): ``mu`` integrated by a tensor-product
    Gauss-Hermite rule centred on a rough guess (not the exact conditional), the unknown documents'
    authors summed over every assignment."""
    import itertools

    from pyro import poutine

    K, W = data.num_authors, data.num_words
    x, weights = np.polynomial.hermite.hermgauss(nodes)
    centre, width = values["log_rate"].mean(0), 1.3 * values["spread"] / math.sqrt(K)  # [W], [W]
    guess = torch.distributions.Normal(centre, width)
    totals = []
    for authors in itertools.product(range(K), repeat=int((data.author == -1).sum())):
        terms = []
        for idx in itertools.product(range(nodes), repeat=W):
            mu = centre + math.sqrt(2) * width * torch.as_tensor(x[list(idx)])  # [W]
            conditioned = poutine.condition(word_rate_model, data=dict(values, mu=mu, author=torch.tensor(authors)))
            log_p = poutine.trace(conditioned).get_trace(data, likelihood, WordRatePrior()).log_prob_sum()
            terms.append(log_p - guess.log_prob(mu).sum() + float(np.log(weights[list(idx)] / math.sqrt(math.pi)).sum()))
        totals.append(torch.logsumexp(torch.stack(terms), 0))
    return torch.logsumexp(torch.stack(totals), 0)


@pytest.mark.parametrize("likelihood", ["poisson", "negbin"])
def test_potential_is_pyros_density_with_mu_integrated_and_authors_summed(likelihood):
    """Between two points the potential changes exactly as minus Pyro's log density of the model (with the
    Jacobian of the unconstraining maps) does; the whitening only adds a constant."""
    data = tiny_data()
    potential = WordRatePotential(data, likelihood)
    rng = np.random.default_rng(0)
    ours, pyros = [], []
    for _ in range(2):
        z = potential.initial_params(rng)
        v = potential.constrain(z)
        jacobian = sum(potential.transforms[k].inv.log_abs_det_jacobian(z[k], v[k]).sum() for k in potential.sites)
        pyros.append(-(_pyro_log_joint(data, likelihood, v) + jacobian))
        ours.append(potential(z))
    assert float(ours[0] - ours[1]) == pytest.approx(float(pyros[0] - pyros[1]), abs=1e-5)
    assert abs(float(ours[0] - ours[1])) > 0.5  # the two points differ: the check is not vacuous
