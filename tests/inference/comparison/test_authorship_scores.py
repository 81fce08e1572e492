"""Accuracy, confusion, calibration bins and the conformal out-of-support p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.comparison.authorship_scores import (
    accuracy,
    calibration_bins,
    cauchy_combination,
    conformal_p_values,
    confusion_matrix,
    support_p_values,
)
from models.errors import InputError


def test_accuracy_and_confusion():
    lp = np.log(np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]]))
    truth = np.array([0, 0, 1])
    assert accuracy(lp, truth) == pytest.approx(1 / 3)
    assert confusion_matrix(lp, truth, 2).tolist() == [[1, 1], [1, 0]]


def test_calibration_bins_of_calibrated_forecasts():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20_000)
    outcome = rng.uniform(size=p.size) < p
    bins = calibration_bins(p, outcome, num_bins=5)
    assert bins["count"].sum() == p.size
    assert np.all((bins["low"] <= bins["predicted"] + 0.02) & (bins["predicted"] - 0.02 <= bins["high"]))


def test_conformal_p_values_are_uniform_for_exchangeable_scores():
    """Flagged at level 0.05 about 5% of the time (tolerance from the binomial standard error)."""
    rng = np.random.default_rng(1)
    hits = []
    for _ in range(400):
        calibration = rng.normal(size=99)
        hits.append(conformal_p_values(rng.normal(size=1), calibration)[0] <= 0.05)
    rate = float(np.mean(hits))
    assert abs(rate - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 400)
    assert conformal_p_values(np.array([-100.0]), np.zeros(9))[0] == pytest.approx(0.1)
    with pytest.raises(InputError, match="calibration"):
        conformal_p_values(np.zeros(1), np.zeros(0))


def test_cauchy_combination():
    assert cauchy_combination(np.array([0.3, 0.3, 0.3])) == pytest.approx(0.3)
    assert cauchy_combination(np.array([1e-6, 0.9])) < 1e-5
    assert cauchy_combination(np.array([0.5])) == pytest.approx(0.5)


def test_support_p_values_use_the_best_authors_own_calibration_chunks():
    scores = np.array([[5.0, -100.0], [-100.0, 0.5]])
    calibration = np.array([[1.0, 9.0], [2.0, 9.0], [9.0, 0.0], [9.0, 1.0]])
    p = support_p_values(scores, np.array([0, 1]), calibration, np.array([0, 0, 1, 1]))
    assert p.tolist() == pytest.approx([1.0, 2 / 3])


def test_cauchy_combination_along_an_axis_combines_each_row():
    p = np.array([[0.3, 0.3], [1e-6, 0.9], [0.5, 0.5]])
    rows = cauchy_combination(p, axis=1)
    assert rows.shape == (3,)
    np.testing.assert_allclose(rows, [cauchy_combination(r) for r in p])


def test_text_p_value_is_calibrated_for_exchangeable_text_and_grows_in_power_with_length():
    """Chunks drawn like the calibration's: flagged at about the level (tolerance 4 binomial standard errors over
    400 texts); chunks shifted down: the p-value falls as the text gets longer (a chunk combination could not)."""
    from inference.comparison.authorship_scores import text_p_value

    rng = np.random.default_rng(0)
    K, m, level, reps = 2, 60, 0.05, 400
    calibration = {"a": rng.normal(size=(m, K)), "b": rng.normal(size=(m, K))}
    authors = np.arange(m) % K
    flags = [text_p_value({k: rng.normal(size=(8, K)) for k in "ab"}, 0, calibration, authors) <= level
             for _ in range(reps)]
    se = np.sqrt(level * (1 - level) / reps)
    assert abs(np.mean(flags) - level) < 4 * se
    shifted = [text_p_value({k: rng.normal(size=(n, K)) - 1.0 for k in "ab"}, 1, calibration, authors)
               for n in (2, 256)]
    floor = 0.5 / (1 + m / K)  # the smallest mid-rank conformal p-value of one chunk: no chunk combination goes below
    assert shifted[0] > 1e-3 and shifted[1] < 1e-6 < floor
    with pytest.raises(InputError, match="no calibration chunk"):
        text_p_value({"a": np.zeros((2, 3))}, 2, {"a": np.zeros((4, 3))}, np.zeros(4, dtype=int))


def test_text_p_value_allows_for_chunks_that_vary_together_within_a_chapter():
    """Calibration chunks in chapters with a shared offset (intra-chapter correlation 0.8): a long text from one
    more such chapter is flagged at about the level (4 binomial SE over 400 texts), as it would not be if the
    chunks were treated as independent."""
    from inference.comparison.authorship_scores import intra_group_correlation, text_p_value

    rng = np.random.default_rng(1)
    chapters, per, rho, reps, level = 40, 5, 0.8, 400, 0.05
    groups = np.repeat(np.arange(chapters), per)

    def chapter_values(n_groups, n_each):  # [n_groups * n_each]
        return np.repeat(rng.normal(size=n_groups) * np.sqrt(rho), n_each) + rng.normal(size=n_groups * n_each) * np.sqrt(1 - rho)

    calibration = {"a": chapter_values(chapters, per)[:, None]}  # [m, 1]
    authors = np.zeros(chapters * per, dtype=int)
    assert abs(intra_group_correlation(calibration["a"][:, 0], groups) - rho) < 0.15
    texts = [{"a": chapter_values(1, 30)[:, None]} for _ in range(reps)]
    flags = np.mean([text_p_value(t, 0, calibration, authors, groups) <= level for t in texts])
    naive = np.mean([text_p_value(t, 0, calibration, authors) <= level for t in texts])
    se = np.sqrt(level * (1 - level) / reps)
    assert abs(flags - level) < 4 * se and naive > level + 4 * se
