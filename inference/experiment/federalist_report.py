"""Writing the Federalist results: ``table.csv``, ``summary.json``, figures and InferenceData.

Files (all written through :func:`inference.storage.outputs.atomic_output_dir`):

==========================  ==================================================================
``table.csv``               one row per (paper, method): ``paper, label, method, p_madison,
                            log_odds, interval_low, interval_high, interval_of, madison_share``
``summary.json``            settings, word list, R-hat/ESS/divergences, leave-one-out accuracy,
                            the disputed verdicts, the quoted published values, timings
``log_odds.png``            log-odds for Madison of the disputed papers, every method
``calibration.png``         leave-one-out calibration of ``P(Madison)`` on the known papers
``joint_shares.png``        Madison's share of the joint papers 18–20
``rank_<likelihood>.png``   rank plot of the NUTS chains (the joint shares)
``idata_<likelihood>.nc``   InferenceData: posterior draws, per-paper log-likelihood, the counts
==========================  ==================================================================
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from inference import diagnostics
from inference.comparison import stylometry
from inference.comparison.authorship_scores import calibration_bins
from inference.conditioning.wordrates import author_posterior, pointwise_loglik
from inference.experiment import authorship_plots as plots
from inference.experiment.federalist import (
    _HM,
    AUTHORS,
    DISPUTED,
    PUBLISHED,
    FederalistData,
    FederalistResult,
    H,
    M,
)
from inference.storage.outputs import atomic_output_dir, write_json_atomic

COLUMNS = ("paper", "label", "method", "p_madison", "log_odds", "interval_low", "interval_high", "interval_of",
           "madison_share")


def table_csv(rows: list[dict]) -> str:
    """``table.csv`` as text (empty cells for missing values)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None or (isinstance(row[k], float) and np.isnan(row[k])) else row[k]
                         for k in COLUMNS})
    return buffer.getvalue()


def calibration_curves(result: FederalistResult) -> dict[str, dict[str, np.ndarray]]:
    """Leave-one-out ``P(Madison | Hamilton or Madison)`` against the truth on the known H and M papers."""
    authors = result.data.data.author[result.data.data.group(0)].numpy()
    hm = np.isin(authors, [H, M])
    return {method: calibration_bins(np.exp(stylometry.restrict(lp[hm], _HM)[:, M]), authors[hm] == M, num_bins=5)
            for method, lp in result.loo.items()}


def federalist_idata(result: FederalistResult, likelihood: str):
    """InferenceData of one word-rate fit (posterior, per-paper log-likelihood, observed counts)."""
    fed: FederalistData = result.data
    fit = result.fits[likelihood]
    data = fed.data
    c, s = fit.samples["log_rate"].shape[:2]
    post = author_posterior(fit, data)
    posterior = {k: v.numpy() for k, v in fit.samples.items()}
    posterior["p_madison"] = post.draw_log_probs[..., M].exp().reshape(c, s, -1).numpy()
    coords = {"author": list(AUTHORS), "word": list(fed.counts.vocabulary), "paper": [p.number for p in fed.papers],
              "disputed_paper": fed.numbers(data.group(-1)), "joint_paper": fed.numbers(data.group(-2))}
    dims = {"log_rate": ["author", "word"], "spread": ["word"], "mu": ["word"], "dispersion": ["word"],
            "share": ["joint_paper"], "p_madison": ["disputed_paper"], "counts": ["paper", "word"],
            "lengths": ["paper"]}
    return diagnostics.inference_data(
        posterior=posterior,
        log_likelihood={"counts": pointwise_loglik(fit, data).reshape(c, s, -1).numpy()},
        observed_data={"counts": fed.counts.counts, "lengths": fed.counts.lengths},
        dims=dims, coords=coords, attrs={"likelihood": likelihood, "model": "models.wordrates.word_rate_model"},
    )


def write_federalist(result: FederalistResult, out: str | Path, overwrite: bool = False) -> list[str]:
    """Write every output (module docstring) into ``out``; returns the file names."""
    fed = result.data
    disputed = fed.numbers(fed.data.group(-1))
    methods = [*result.fits, *stylometry.METHODS, PUBLISHED]
    figures = {
        "log_odds.png": plots.log_odds_figure(result.rows, disputed, methods,
                                              "Disputed Federalist papers: log-odds for Madison"),
        "calibration.png": plots.calibration_figure(
            calibration_curves(result), "Leave-one-out calibration on the known papers",
            "predicted P(Madison | Hamilton or Madison)"),
        "joint_shares.png": plots.shares_figure(result.rows, list(result.fits), "Joint papers: Madison's share"),
    }
    names = ["table.csv", "summary.json"]
    with atomic_output_dir(out, overwrite) as tmp:
        (tmp / "table.csv").write_text(table_csv(result.rows))
        write_json_atomic(tmp / "summary.json", result.summary)
        for likelihood in result.fits:
            idata = federalist_idata(result, likelihood)
            diagnostics.save_netcdf(idata, tmp / f"idata_{likelihood}.nc")
            figures[f"rank_{likelihood}.png"] = diagnostics.plot_rank(
                idata, ["share"], title=f"{likelihood}: NUTS chains of the joint papers' Madison shares")
            names.append(f"idata_{likelihood}.nc")
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)
            names.append(name)
    return names


def headline(result: FederalistResult) -> str:
    """One line: each method's count of disputed papers given to Madison, and its LOO accuracy."""
    s = result.summary
    parts = [f"{m}: {v['madison']}/{v['papers']} to Madison (LOO accuracy {s['loo'][m]['accuracy_3_authors']:.3f})"
             for m, v in s["disputed_for_madison"].items()]
    return "; ".join(parts) + f" [{DISPUTED.lower()} papers]"
