"""The ``novelists`` experiment kind of ``psm run`` (``load`` and ``run_and_write``) and its outputs.

The experiment itself is :func:`inference.experiment.novelists_run.run_novelists`; its config
:mod:`inference.experiment.novelists_config`. Files written:

=========================  ======================================================================
``summary.json``           settings, chunk counts, accuracy of every method, false-flag and
                           detection rates, unknown books, convergence, the LM test, timings
``accuracy.csv``           ``method, accuracy, chunks`` on the held-out chunks
``confusion_<m>.csv``      confusion matrix of method ``m`` (rows: true author)
``confusion.png``          the confusion matrices of the word-rate, n-gram and Delta methods
``calibration.png``        reliability of each method's top-label probability (test half)
``support.png``            out-of-support p-values: known authors' test chunks, the left-out author
``lm.png``                 the persona-selection test: KL to the base, projection weights, residual
``idata_wordrates.nc``     InferenceData of the negative-binomial word-rate fit
=========================  ======================================================================
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from inference import diagnostics
from inference.experiment import authorship_plots as plots
from inference.experiment.novelists_config import NovelistsConfig
from inference.experiment.novelists_config import load as load  # noqa: PLC0414 (the kind's loader)
from inference.experiment.novelists_run import NovelistsResult, run_novelists
from inference.storage.outputs import atomic_output_dir, write_json_atomic

__all__ = ["load", "run_and_write", "write_novelists"]


def wordrate_idata(result: NovelistsResult, likelihood: str = "negbin"):
    """InferenceData of one word-rate fit of the author models."""
    models = result.models
    fit = models.fits[likelihood]
    return diagnostics.inference_data(
        posterior={k: v.numpy() for k, v in fit.samples.items()},
        dims={"log_rate": ["author", "word"], "spread": ["word"], "mu": ["word"], "dispersion": ["word"]},
        coords={"author": models.authors, "word": list(models.vocabulary)},
        attrs={"likelihood": likelihood, "model": "models.wordrates.word_rate_model"},
    )


def accuracy_csv(result: NovelistsResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "accuracy", "chunks"])
    n = int(result.data.chunks.heldout.sum())
    for method, value in result.summary["accuracy"].items():
        writer.writerow([method, f"{value:.4f}", n])
    return buffer.getvalue()


def matrix_csv(matrix: np.ndarray, authors: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true \\ attributed", *authors])
    for name, row in zip(authors, matrix.tolist(), strict=True):
        writer.writerow([name, *row])
    return buffer.getvalue()


def lm_figure(lm: dict):
    """Per fine-tuning step: KL to the base, the projection weights, the residual, and ``E_self`` with its interval."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14.0, 3.8))
    axes = fig.subplots(1, 4)
    authors = lm["authors_in_pretraining"]
    for arm, found in lm["arms"].items():
        rows = found["snapshots"]
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [max(r["kl_to_base"], 1e-6) for r in rows], "o-", label=arm)
        weights = np.array([r["projection_weights"] for r in rows])  # [s, K]
        for k in range(weights.shape[1]):
            axes[1].plot(steps, weights[:, k], "o-" if arm == "in_support" else "s--", ms=3,
                         label=f"{arm}: {authors[k].split()[-1]}")
        axes[2].plot(steps, [r["residual_self"] for r in rows], "o-", label=arm)
        moved = [r for r in rows if r.get("exhaustiveness_self") is not None]
        if moved:
            line, = axes[3].plot([r["step"] for r in moved], [r["exhaustiveness_self"] for r in moved], "o-", label=arm)
            axes[3].fill_between([r["step"] for r in moved], [r["exhaustiveness_ci_self"][0] for r in moved],
                                 [r["exhaustiveness_ci_self"][1] for r in moved], color=line.get_color(), alpha=0.2,
                                 label=f"{arm}: 90% bootstrap")
    axes[2].axhline(lm["floor_self"], color="grey", ls=":", label="floor r(0) of the base")
    axes[0].set(yscale="log", xlabel="fine-tuning step", ylabel="nats per position",
                title="KL(q_s || q0): change from the base")
    axes[1].set(xlabel="fine-tuning step", ylabel="weight", ylim=(0, 1), title="projection onto R_self: w*(s)")
    axes[2].set(xlabel="fine-tuning step", ylabel="nats per position", title="residual r(s) off the persona mixtures")
    shares = [r["exhaustiveness_ci_self"][1] for f in lm["arms"].values() for r in f["snapshots"]
              if r.get("exhaustiveness_ci_self")]
    axes[3].set(xlabel="fine-tuning step", ylabel="share of KL(q_s || q0)", ylim=(0, min(1.0, max([0.1, *shares]) * 1.2)),
                title="E_self: re-weighting share")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def write_novelists(result: NovelistsResult, out: str | Path, overwrite: bool = False) -> list[str]:
    """Write every output (module docstring) into ``out``; returns the file names."""
    authors = result.data.authors
    level = result.config.support.level
    figures = {
        "confusion.png": _confusions(result),
        "calibration.png": plots.calibration_figure(result.calibration, "Top-label calibration, held-out test chunks",
                                                    "probability of the attributed author"),
        "support.png": plots.p_value_figure(result.p_values, level, "Out-of-support p-values"),
    }
    if result.lm:
        figures["lm.png"] = lm_figure(result.lm)
    names = ["summary.json", "accuracy.csv"]
    with atomic_output_dir(out, overwrite) as tmp:
        write_json_atomic(tmp / "summary.json", {**result.summary, "lm": result.lm})
        (tmp / "accuracy.csv").write_text(accuracy_csv(result))
        for method, matrix in result.confusion.items():
            (tmp / f"confusion_{method}.csv").write_text(matrix_csv(matrix, authors))
            names.append(f"confusion_{method}.csv")
        diagnostics.save_netcdf(wordrate_idata(result), tmp / "idata_wordrates.nc")
        names.append("idata_wordrates.nc")
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)
            names.append(name)
    return names


def _confusions(result: NovelistsResult):
    from matplotlib.figure import Figure

    methods = [m for m in ("negbin", "ngram", "delta") if m in result.confusion]
    fig = Figure(figsize=(5.2 * len(methods), 4.6))
    axes = np.atleast_1d(fig.subplots(1, len(methods)))
    short = [a.split()[-1] for a in result.data.authors]
    for ax, method in zip(axes, methods, strict=True):
        matrix = result.confusion[method]
        ax.imshow(matrix / np.maximum(matrix.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(short)), short, rotation=30)
        ax.set_yticks(range(len(short)), short)
        acc = result.summary["accuracy"][method]
        ax.set(xlabel="attributed author", ylabel="true author", title=f"{plots.label(method)}\naccuracy {acc:.3f}")
    fig.tight_layout()
    return fig


def run_and_write(config: NovelistsConfig, out: Path, *, overwrite: bool, progress: bool) -> str:
    """Run the experiment and write its files; the closing lines ``psm run`` prints."""
    result = run_novelists(config, progress=progress)
    names = write_novelists(result, out, overwrite)
    s = result.summary
    left = s["support_left_out"]
    lm = ""
    if result.lm:
        last = {arm: found["snapshots"][-1] for arm, found in result.lm["arms"].items()}
        lm = "; LM E_self " + ", ".join(f"{arm} {row['exhaustiveness_self']:.2f}" for arm, row in last.items()
                                        if row["exhaustiveness_self"] is not None)
    return ("novelists: held-out accuracy " + ", ".join(f"{m} {a:.3f}" for m, a in s["accuracy"].items())
            + f"; false flags {s['support']['negbin']['false_flag_rate']:.3f} at level {config.support.level:g}, "
            f"left-out {left['author']} detected in {left['negbin']['detection_rate']:.3f} of chunks{lm} "
            f"(seed {config.seed}, {s['timing_seconds']['total']:.0f} s); wrote {len(names)} files to {out}")
