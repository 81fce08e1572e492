"""Scores of an attribution method: accuracy, confusion matrix, calibration, and the out-of-support p-value.

Every method hands over ``[N, K]`` log-probabilities over the ``K`` candidate authors.

* :func:`accuracy` and :func:`confusion_matrix` of the most probable author;
* :func:`calibration_bins`: a reliability diagram's points, the mean predicted
  probability against the observed frequency in equal-width bins, with a Wilson 90%
  interval for the frequency;
* :func:`conformal_p_values`: the out-of-support score of ``psm attribute``. A document's
  statistic (the log Bayes factor of the best author against a new author,
  :func:`inference.comparison.author_models.support_scores`) is ranked among the same
  statistic of that author's own held-out (calibration) chunks:
  ``p = (1 + #{calibration <= statistic}) / (1 + n)``. For a document exchangeable with
  those chunks ``P(p <= alpha) <= alpha`` (a conformal p-value), so known authors'
  held-out text is flagged at about the nominal rate, while text unlike every known
  author's gets small ``p``. :func:`cauchy_combination` joins several p-values into one
  (Liu & Xie 2020; valid under dependence), e.g. the word-rate and n-gram p-values of one
  chunk. It is fed *mid-rank* p-values, ``(0.5 + #{calibration <= statistic}) / (1 + n)`` (``mid=True``):
  a conformal p-value can be exactly 1, whose Cauchy term is minus infinity, so one very
  typical value would dominate the combination; the mid-rank values are symmetric about
  0.5 and never reach 0 or 1.
* :func:`text_p_value`: one p-value for a whole text of several chunks. A combination of
  the chunks' conformal p-values cannot fall below ``1 / (1 + n)`` however long the text,
  so a whole novel by an outsider could not be flagged; instead the mean of the text's chunk
  statistics is compared with the author's held-out chunks: ``t = (mean - mu) / sqrt(s^2
  (rho + (1 - rho) / n))``, one-sided, Student t with (held-out chapters - 1) degrees of
  freedom, where ``mu``, ``s^2`` are the held-out chunks' mean and variance and ``rho`` their
  intra-chapter correlation (one-way ANOVA): chunks of one text are not independent, so a
  long text's mean varies at least as much as a chapter's does. Per statistic, joined by
  the Cauchy combination. README "Findings" measures its false-flag rate on whole held-out
  chapters of known authors.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from models.errors import InputError


def accuracy(log_probs: np.ndarray, authors: np.ndarray) -> float:
    """Fraction of documents whose most probable author is ``authors`` (``[N, K]``, ``[N]``)."""
    log_probs, authors = np.asarray(log_probs), np.asarray(authors)
    if log_probs.ndim != 2 or authors.shape != log_probs.shape[:1] or not len(authors):
        raise InputError(f"log_probs must be [N >= 1, K] and authors [N], got {log_probs.shape}, {authors.shape}")
    return float((log_probs.argmax(-1) == authors).mean())


def confusion_matrix(log_probs: np.ndarray, authors: np.ndarray, num_authors: int) -> np.ndarray:
    """``[K, K]`` int64 counts: row = true author, column = most probable author."""
    predicted = np.asarray(log_probs).argmax(-1)
    out = np.zeros((num_authors, num_authors), dtype=np.int64)
    np.add.at(out, (np.asarray(authors), predicted), 1)
    return out


def calibration_bins(probs: np.ndarray, outcomes: np.ndarray, num_bins: int = 10, level: float = 0.9
                     ) -> dict[str, np.ndarray]:
    """Reliability-diagram points of predicted probabilities against binary outcomes.

    Returns
    -------
    dict
        ``predicted`` (mean probability in each non-empty bin), ``observed`` (frequency of the
        outcome), ``low``/``high`` (Wilson interval of the frequency at ``level``), ``count``.
    """
    probs, outcomes = np.asarray(probs, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
    edges = np.linspace(0, 1, num_bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, num_bins - 1)  # [N] bin of each probability
    z = norm.ppf(0.5 + level / 2)
    rows = {"predicted": [], "observed": [], "low": [], "high": [], "count": []}
    for b in range(num_bins):
        inside = which == b
        n = int(inside.sum())
        if not n:
            continue
        f = outcomes[inside].mean()
        centre = (f + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * math.sqrt(f * (1 - f) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
        for key, value in zip(rows, (probs[inside].mean(), f, centre - half, centre + half, n), strict=True):
            rows[key].append(value)
    return {k: np.asarray(v) for k, v in rows.items()}


def conformal_p_values(statistic: np.ndarray, calibration: np.ndarray, mid: bool = False) -> np.ndarray:
    """``[N]`` conformal p-values of ``statistic`` ``[N]`` against ``calibration`` ``[n]`` (low = implausible);
    ``mid``: the mid-rank values for :func:`cauchy_combination` (module docstring)."""
    calibration = np.sort(np.asarray(calibration, dtype=np.float64))
    if not len(calibration):
        raise InputError("no calibration chunk to compare with (the author has no held-out chunk)")
    below = np.searchsorted(calibration, np.asarray(statistic, dtype=np.float64), side="right")
    return ((0.5 if mid else 1.0) + below) / (1 + len(calibration))


def cauchy_combination(p_values: np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """One p-value from several (equal weights): ``0.5 - arctan(mean tan((0.5 - p) pi)) / pi``.

    Valid under any dependence between the p-values (about the level when they are small).
    With ``axis`` the p-values along that axis are combined (an array); without, all of them (a float).
    """
    p = np.clip(np.asarray(p_values, dtype=np.float64), 1e-15, 1 - 1e-15)
    if not p.size:
        raise InputError("no p-value to combine")
    t = np.tan((0.5 - p) * np.pi).mean(axis=axis)
    combined = 0.5 - np.arctan(t) / np.pi
    return float(combined) if axis is None else combined


def support_p_values(scores: np.ndarray, best: np.ndarray, calibration: np.ndarray,
                     calibration_authors: np.ndarray, mid: bool = False) -> np.ndarray:
    """``[N]`` out-of-support p-value of each chunk: its score under its best author ranked among that
    author's calibration chunks scored under that same author (module docstring).

    Parameters
    ----------
    scores : array
        ``[N, K]`` the statistic of the chunks under every author (higher: more typical).
    best : array
        ``[N]`` the best author of each chunk (e.g. the posterior's most probable).
    calibration : array
        ``[n, K]`` the same scores of calibration chunks of known authors.
    calibration_authors : array
        ``[n]`` their authors.
    mid : bool
        Mid-rank p-values, to be combined (:func:`conformal_p_values`).
    """
    scores, best = np.asarray(scores), np.asarray(best)
    calibration, calibration_authors = np.asarray(calibration), np.asarray(calibration_authors)
    out = np.empty(len(best))
    for a in np.unique(best):  # one reference set per author (K of them)
        own = calibration[calibration_authors == a, a]
        rows = best == a
        out[rows] = conformal_p_values(scores[rows, a], own, mid)
    return out


def intra_group_correlation(values: np.ndarray, groups: np.ndarray) -> float:
    """One-way ANOVA estimate of the intra-group correlation of ``values`` ``[n]`` in ``groups`` ``[n]``, in [0, 1]."""
    labels, index, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    G, n = len(labels), len(values)
    if G < 2 or G == n:
        return 0.0
    means = np.bincount(index, weights=values) / sizes  # [G]
    msb = (sizes * (means - values.mean()) ** 2).sum() / (G - 1)
    msw = ((values - means[index]) ** 2).sum() / (n - G)
    n0 = (n - (sizes**2).sum() / n) / (G - 1)  # the effective group size of unbalanced groups
    return float(np.clip((msb - msw) / (msb + (n0 - 1) * msw), 0.0, 1.0)) if msb + (n0 - 1) * msw > 0 else 0.0


def text_p_value(statistics: dict[str, np.ndarray], best: int, calibration: dict[str, np.ndarray],
                 calibration_authors: np.ndarray, calibration_groups: np.ndarray | None = None) -> float:
    """Out-of-support p-value of a whole text (module docstring).

    Parameters
    ----------
    statistics : dict of str to array
        ``statistic -> [n, K]`` the text's chunks under every author.
    best : int
        The author the text is compared with (its most probable).
    calibration : dict of str to array
        ``statistic -> [m, K]`` the same of the calibration chunks.
    calibration_authors : array
        ``[m]`` their authors.
    calibration_groups : array, optional
        ``[m]`` their chapters (any labels); default: every chunk its own (independent chunks).
    """
    own = np.asarray(calibration_authors) == best
    if own.sum() < 2:
        raise InputError("no calibration chunk to compare with (the author needs two held-out chunks)")
    groups = np.arange(len(own)) if calibration_groups is None else np.asarray(calibration_groups)
    p = []
    for k, values in statistics.items():
        ref = calibration[k][own, best]  # [m_b]
        rho = intra_group_correlation(ref, groups[own])
        n = len(values)
        scale = np.sqrt(ref.var(ddof=1) * (rho + (1 - rho) / n))
        df = max(len(np.unique(groups[own])) - 1, 1)
        p.append(student_t.cdf((values[:, best].mean() - ref.mean()) / scale, df) if scale > 0 else 0.5)
    return cauchy_combination(np.array(p))
