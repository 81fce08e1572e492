"""Figures of the authorship experiments (matplotlib OO API: each function returns a ``Figure``).

ArviZ figures (rank plots of the NUTS chains) come from :mod:`inference.diagnostics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

#: method -> label in legends
LABELS = {
    "negbin": "word rates, negative binomial (NUTS)",
    "poisson": "word rates, Poisson (NUTS)",
    "logistic": "logistic regression (L2)",
    "delta": "Burrows' Delta",
    "cosine_delta": "cosine Delta",
    "ngram": "character 3-gram (Dirichlet)",
    "combined": "word rates and 3-grams combined (psm attribute)",
    "mw1964_negbin_quoted": "Mosteller & Wallace 1964, neg. binomial (as quoted)",
}


def label(method: str) -> str:
    return LABELS.get(method, method)


def log_odds_figure(rows: Sequence[dict[str, Any]], papers: Sequence[int], methods: Sequence[str],
                    title: str) -> Figure:
    """Log-odds for Madison of each disputed paper by each method, with its interval (published: crosses)."""
    fig = Figure(figsize=(10.5, 4.6))
    ax = fig.subplots()
    x = np.arange(len(papers))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        found = {r["paper"]: r for r in rows if r["method"] == method and r["paper"] in papers
                 and r["interval_of"] == "log_odds"}
        at = [j for j, p in enumerate(papers) if p in found]
        y = np.array([found[papers[j]]["log_odds"] for j in at], dtype=float)
        lo = np.array([found[papers[j]]["interval_low"] for j in at], dtype=float)
        hi = np.array([found[papers[j]]["interval_high"] for j in at], dtype=float)
        offset = x[at] - 0.4 + width * (i + 0.5)
        if method.startswith("mw1964"):
            ax.plot(offset, y, "kx", ms=8, mew=2, label=label(method))
            continue
        err = None if np.isnan(lo).all() else [np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)]
        ax.errorbar(offset, y, yerr=err, fmt="o", ms=4, capsize=2, label=f"{label(method)} (90% interval)")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, [str(p) for p in papers])
    ax.set(xlabel="Federalist paper", ylabel="log-odds for Madison (natural log)", title=title)
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    return fig


def calibration_figure(curves: dict[str, dict[str, np.ndarray]], title: str, xlabel: str) -> Figure:
    """Reliability diagram: observed frequency against mean predicted probability, per method."""
    fig = Figure(figsize=(5.6, 5.0))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    for method, c in curves.items():
        err = [np.clip(c["observed"] - c["low"], 0, None), np.clip(c["high"] - c["observed"], 0, None)]
        ax.errorbar(c["predicted"], c["observed"], yerr=err, fmt="o-", ms=4, capsize=2,
                    label=f"{label(method)} (90% Wilson interval)")
    ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel=xlabel, ylabel="observed frequency", title=title)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def shares_figure(rows: Sequence[dict[str, Any]], methods: Sequence[str], title: str) -> Figure:
    """Posterior mean and interval of Madison's share of each joint paper, per word-rate model."""
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.subplots()
    papers = sorted({r["paper"] for r in rows if r["interval_of"] == "madison_share"})
    for i, method in enumerate(methods):
        found = {r["paper"]: r for r in rows if r["method"] == method and r["interval_of"] == "madison_share"}
        at = [j for j, p in enumerate(papers) if p in found]
        y = np.array([found[papers[j]]["madison_share"] for j in at])
        lo = np.array([found[papers[j]]["interval_low"] for j in at])
        hi = np.array([found[papers[j]]["interval_high"] for j in at])
        ax.errorbar(np.array(at) + 0.15 * (i - 0.5), y, yerr=[y - lo, hi - y], fmt="o", capsize=3,
                    label=f"{label(method)}: mean, 90% interval")
    ax.set_xticks(range(len(papers)), [str(p) for p in papers])
    ax.set(ylim=(0, 1), xlabel="joint Federalist paper", ylabel="Madison's share of the words", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, authors: Sequence[str], title: str) -> Figure:
    """A confusion matrix (rows: true author, columns: attributed), counts written in the cells."""
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(5.8, 5.0))
    ax = fig.subplots()
    shown = ax.imshow(matrix / np.maximum(matrix.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8)
    short = [a.split()[-1] for a in authors]
    ax.set_xticks(range(len(authors)), short, rotation=30)
    ax.set_yticks(range(len(authors)), short)
    ax.set(xlabel="attributed author", ylabel="true author", title=title)
    fig.colorbar(shown, ax=ax, label="fraction of the true author's chunks")
    fig.tight_layout()
    return fig


def p_value_figure(groups: dict[str, np.ndarray], level: float, title: str) -> Figure:
    """Histograms (as step lines) of out-of-support p-values per group, with the flagging level."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    bins = np.linspace(0, 1, 21)
    for name, p in groups.items():
        p = np.asarray(p)
        flagged = float((p <= level).mean()) if len(p) else float("nan")
        ax.hist(p, bins=bins, histtype="step", lw=1.6, density=True,
                label=f"{name}: {len(p)} chunks, {100 * flagged:.0f}% flagged")
    ax.axvline(level, color="k", ls="--", label=f"flagging level {level:g}")
    ax.set(xlabel="out-of-support p-value", ylabel="density", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
