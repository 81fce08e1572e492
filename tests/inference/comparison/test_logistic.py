"""The logistic curve in log10 k (NUTS on a hand-written potential): it recovers a known midpoint,
its potential is Pyro's, and bad input is refused in one line."""

import math

import numpy as np
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

from inference.comparison.logistic import LogisticPotential, fit_logistic, logistic_model
from models.errors import InputError

K = np.repeat([10, 30, 100, 300, 1000, 3000, 10000, 30000], 3)


def synthetic(m: float, slope: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-slope * (np.log10(K) - m))) + rng.normal(0, noise, K.size)


@pytest.fixture(scope="module")
def fit():
    return fit_logistic(K, synthetic(2.6, 1.5, 0.05, seed=0), num_samples=200, warmup_steps=200, num_chains=2, seed=0)


def test_the_fit_recovers_a_known_midpoint_and_slope(fit):
    """The posterior mean lies within 4 posterior sds (plus 4 MCSE) of the truth; the interval covers it."""
    for name, truth in (("log10_k50", 2.6), ("slope", 1.5), ("sigma", 0.05)):
        draws = fit.samples[name]
        sd = draws.std()
        mcse = sd / math.sqrt(fit.diagnostics["ess_min"])
        assert abs(draws.mean() - truth) <= 4 * sd + 4 * mcse, (name, draws.mean(), sd)
    k50, lo, hi = fit.k50(level=0.99)
    assert lo < 10**2.6 < hi and lo < k50 < hi
    assert fit.diagnostics["r_hat_max"] < 1.05 and fit.diagnostics["divergences"] == 0


def test_the_fit_carries_an_arviz_summary_and_bands(fit):
    assert list(fit.summary.index) == ["log10_k50", "slope", "sigma"]
    assert {"mean", "sd", "r_hat", "ess_bulk"} <= set(fit.summary.columns)
    assert fit.idata.log_likelihood["share"].shape == (2, 200, K.size)
    band = fit.curve(np.linspace(0, 6, 7))
    assert np.all(band["low"] <= band["median"]) and np.all(band["median"] <= band["high"])
    assert np.all(np.diff(band["median"]) > 0)  # a rising curve
    summary = fit.to_dict()
    assert summary["k50_interval"][0] < summary["k50"] < summary["k50_interval"][1]


def test_the_hand_written_potential_is_pyros():
    x = torch.tensor([1.0, 2.0, 3.5, 4.0], dtype=torch.float64)
    y = torch.tensor([0.1, 0.3, 0.8, 1.1], dtype=torch.float64)
    _, pyro_potential, _, _ = initialize_model(logistic_model, (x, y), {"prior_center": 2.5, "prior_scale": 2.0})
    hand = LogisticPotential(x, y, 2.5, 2.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        point = {name: torch.randn((), generator=gen, dtype=torch.float64) for name in ("log10_k50", "slope", "sigma")}
        assert float(hand(point)) == pytest.approx(float(pyro_potential(point)), rel=1e-12)


def test_same_seed_same_draws():
    y = synthetic(3.0, 2.0, 0.1, seed=1)
    a, b = (fit_logistic(K, y, num_samples=20, warmup_steps=20, num_chains=2, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a.samples["log10_k50"], b.samples["log10_k50"])


@pytest.mark.parametrize("k, share, options, words", [
    ([10, 100], [0.1, 0.9], {}, "length >= 3"),
    ([10, 100, 0], [0.1, 0.5, 0.9], {}, ">= 1"),
    ([10, 10, 10], [0.1, 0.5, 0.9], {}, "two distinct"),
    ([10, 100, 1000], [0.1, float("nan"), 0.9], {}, "finite"),
    ([10, 100, 1000], [0.1, 0.5, 0.9], {"num_chains": 0}, "num_chains"),
    ([10, 100, 1000], [0.1, 0.5, 0.9], {"prior_scale": -1.0}, "prior_scale"),
])
def test_bad_input_is_refused_in_one_line(k, share, options, words):
    with pytest.raises(InputError, match=words) as err:
        fit_logistic(k, share, **options)
    assert "\n" not in str(err.value)
