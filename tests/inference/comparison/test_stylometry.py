"""Delta, cosine Delta and logistic regression on word frequencies; their leave-one-out and bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax

from inference.comparison import stylometry
from models.errors import InputError


def two_authors(seed: int = 0, n: int = 12, w: int = 6, gap: float = 0.02):
    rng = np.random.default_rng(seed)
    authors = np.repeat([0, 1], n)
    centre = np.linspace(0.01, 0.06, w)
    rates = centre + rng.normal(0, 0.003, (2 * n, w))
    rates[authors == 1, :2] += gap  # author 1 uses the first two words more
    return np.clip(rates, 1e-4, None), authors


def test_delta_by_hand():
    train = np.array([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0], [4.0, 6.0]])
    authors = np.array([0, 0, 1, 1])
    test = np.array([[2.5, 1.0]])
    z_train = (train - train.mean(0)) / train.std(0)
    z_test = (test - train.mean(0)) / train.std(0)
    centroids = np.stack([z_train[:2].mean(0), z_train[2:].mean(0)])
    expected = np.abs(z_test - centroids).mean(-1)
    assert np.allclose(stylometry.delta_distances(train, authors, test, 2, "delta")[0], expected)
    cos = 1 - (centroids @ z_test[0]) / (np.linalg.norm(centroids, axis=-1) * np.linalg.norm(z_test[0]))
    assert np.allclose(stylometry.delta_distances(train, authors, test, 2, "cosine_delta")[0], cos)


@pytest.mark.parametrize("method", stylometry.METHODS)
def test_every_method_separates_two_authors_in_leave_one_out(method):
    rates, authors = two_authors()
    lp, temperature = stylometry.loo_log_probs(method, rates, authors, 2)
    assert lp.shape == (24, 2) and np.allclose(np.exp(lp).sum(-1), 1)
    assert (lp.argmax(-1) == authors).mean() == 1.0
    assert (temperature is None) == (method == "logistic")
    boot = stylometry.bootstrap_log_probs(method, rates, authors, rates[:3], 2, temperature=temperature,
                                          num_resamples=4, seed=1)
    assert boot.shape == (4, 3, 2)


def test_fit_temperature_recovers_the_generating_one():
    rng = np.random.default_rng(0)
    distances = rng.uniform(0, 1, (4000, 3))
    probs = np.exp(log_softmax(-distances / 0.2, axis=-1))
    authors = np.array([rng.choice(3, p=p) for p in probs])
    assert stylometry.fit_temperature(distances, authors) == pytest.approx(0.2, rel=0.1)


def test_restrict_renormalises_over_candidates():
    lp = np.log(np.array([[0.5, 0.3, 0.2]]))
    out = stylometry.restrict(lp, np.array([True, True, False]))
    assert np.allclose(np.exp(out), [[0.625, 0.375, 0.0]])


def test_a_missing_author_is_refused():
    rates, authors = two_authors()
    with pytest.raises(InputError, match="has none|have none"):
        stylometry.delta_distances(rates, authors, rates, 3)
    with pytest.raises(InputError, match="temperature"):
        stylometry.method_log_probs("delta", rates, authors, rates, 2)
