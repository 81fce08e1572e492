"""The ranks of simulation-based calibration: the rank statistic, its uniformity test, the
:class:`SBCResult` holding them, and the rank histograms (:func:`plot_ranks`).

    rank = rank_statistic(truth, draws, gen)           # 0..L, uniform when the posterior is right
    p = uniformity_p_value(ranks, num_draws, num_bins)  # Pearson chi-square over near-equal bins
    fig = plot_ranks(result)                            # matplotlib Figure (OO API, no pyplot)

Uniformity: ranks are put into ``B`` bins of (nearly) equal probability
(``B = min(20, L + 1, N // 5)``, at least 2; expected counts from the exact
bin widths) and compared with a chi-square test; ``min_p_value`` is the
smallest over parameters (compare it with ``level / num_parameters``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_BINS = 20
#: the band drawn around a uniform histogram
BAND = 0.99


@dataclass(frozen=True)
class SBCResult:
    """The result of :func:`~inference.conditioning.sbc.simulation_based_calibration`.

    Attributes
    ----------
    model, method : str
        SBC model (``MODELS``) and inference method.
    num_sims, num_draws : int
        ``N`` simulations and ``L`` posterior draws per simulation.
    ranks : dict of str to numpy.ndarray
        ``[N]`` int64 rank in ``0..L`` of the true value of each parameter.
    p_values : dict of str to float
        Chi-square p-value of uniform ranks, per parameter.
    min_p_value : float
        The smallest of ``p_values``.
    num_bins : int
        Bins of the chi-square test and of the histograms.
    seconds : float
        Wall time of the whole run.
    options : dict
        The world and engine settings used (JSON-ready).
    diagnostics : dict
        Engine summaries over simulations (SVI convergence, MCMC divergences and ESS).
    """

    model: str
    method: str
    num_sims: int
    num_draws: int
    ranks: dict[str, np.ndarray]
    p_values: dict[str, float]
    min_p_value: float
    num_bins: int
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What ``psm sbc`` writes to ``sbc.json``."""
        return {
            "model": self.model, "method": self.method, "num_sims": self.num_sims, "num_draws": self.num_draws,
            "ranks": {k: v.tolist() for k, v in self.ranks.items()}, "p_value": dict(self.p_values),
            "min_p_value": self.min_p_value, "num_bins": self.num_bins, "seconds": self.seconds,
            "options": self.options, "diagnostics": self.diagnostics,
        }


def rank_statistic(truth: Tensor | float, draws: Tensor | np.ndarray, gen: np.random.Generator) -> int:
    """Rank of ``truth`` among ``draws`` ``[L]``: draws below it, plus a uniform share of the ties.

    Returns an integer in ``0..L``, uniform there when ``truth`` and the draws are exchangeable.
    """
    draws = torch.as_tensor(draws)
    truth = torch.as_tensor(truth, dtype=draws.dtype)
    below, ties = int((draws < truth).sum()), int((draws == truth).sum())
    return below + int(gen.integers(0, ties + 1))


def default_bins(num_sims: int, num_draws: int) -> int:
    """``B = min(20, L + 1, N // 5)``, at least 2."""
    return max(2, min(MAX_BINS, num_draws + 1, num_sims // 5))


def bin_edges(num_draws: int, num_bins: int) -> np.ndarray:
    """``[B + 1]`` integer edges splitting the ranks ``0..L`` into ``B`` bins of near-equal size."""
    return np.floor(np.arange(num_bins + 1) * (num_draws + 1) / num_bins).astype(np.int64)


def rank_histogram(ranks: np.ndarray, num_draws: int, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts ``[B]`` of ``ranks`` per bin, and the probability ``[B]`` of each bin under uniform ranks."""
    edges = bin_edges(num_draws, num_bins)
    counts = np.bincount(np.searchsorted(edges, ranks, side="right") - 1, minlength=num_bins)
    return counts, np.diff(edges) / (num_draws + 1)


def uniformity_p_value(ranks: np.ndarray, num_draws: int, num_bins: int) -> float:
    """p-value of Pearson's chi-square test that ``ranks`` are uniform on ``0..num_draws``."""
    from scipy.stats import chisquare

    counts, probs = rank_histogram(np.asarray(ranks), num_draws, num_bins)
    return float(chisquare(counts, len(ranks) * probs).pvalue)


def plot_ranks(result: SBCResult) -> Figure:
    """Rank histograms, one panel per parameter, with the 99% band of a uniform histogram.

    Each panel shows the rank counts, the expected count of uniform ranks and the
    central ``BAND`` interval of each bin's count under uniform ranks (binomial);
    the two-line title names the model, method, ``N``, ``L`` and the smallest p-value.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from scipy.stats import binom

    names = list(result.ranks)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(max(5.0, 3.2 * cols), 1.2 + 2.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    edges = bin_edges(result.num_draws, result.num_bins)
    for ax, name in zip(axes.flat, names, strict=False):
        counts, probs = rank_histogram(result.ranks[name], result.num_draws, result.num_bins)
        low = binom.ppf((1 - BAND) / 2, result.num_sims, probs)  # [B]
        high = binom.ppf(1 - (1 - BAND) / 2, result.num_sims, probs)
        ax.stairs(high, edges, baseline=low, fill=True, color="0.85", label=f"{BAND:.0%} band of uniform ranks")
        ax.stairs(result.num_sims * probs, edges, color="0.5", linestyle="--", label="expected (uniform)")
        ax.stairs(counts, edges, color="C0", linewidth=1.5, label="observed ranks")
        ax.set_title(f"{name}  (p = {result.p_values[name]:.3g})", fontsize=9)
        ax.set_xlabel(f"rank among {result.num_draws} draws", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("simulations", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    fig.suptitle(f"SBC of {result.model} by {result.method}: N = {result.num_sims} simulations\n"
                 f"ranks among L = {result.num_draws} draws, min p = {result.min_p_value:.3g}", fontsize=10)
    return fig
