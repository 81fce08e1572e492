"""Outputs of the in-context experiment: ``summary.json``, ``report.md``, figures, the fits' InferenceData.

The ArviZ summary tables (``fit_<curve>.csv``) and the posterior predictive checks
(``ppc_<curve>.png``) come from :mod:`inference.diagnostics`; the other figures are built with the
object-oriented matplotlib API. Findings are computed from the summary (:func:`findings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from inference import diagnostics
from inference.conditioning.scaling_law import ScalingLawFit
from inference.storage.outputs import atomic_output_dir, to_jsonable, write_json_atomic

LABELS = {"in_context": "in context", "finetuned": "fine-tuned on the n documents",
          "exact": "exact conditioning", "in_context_posttrained": "in context, after post-training"}
COLOURS = {"in_context": "tab:blue", "finetuned": "tab:red", "exact": "tab:green", "in_context_posttrained": "tab:purple"}
#: z of a two-sided 90% normal interval
Z90 = 1.6449


def write_outputs(summary: dict[str, Any], fits: dict[str, ScalingLawFit], out: str | Path,
                  overwrite: bool = False) -> list[str]:
    """Write every output into ``out`` (atomically); the file names."""
    shots = np.asarray(summary["config"]["evidence"]["shots"], dtype=float)
    figures = {"curves.png": curves_figure(summary, fits), "fitted_prior.png": prior_figure(summary)}
    for name, fit in fits.items():
        figures[f"ppc_{name}.png"] = diagnostics.plot_curve_ppc(
            fit.idata, shots, "nll", title=f"{LABELS[name]}: measured NLL against the fitted law's replicates",
            xlabel="evidence documents n", ylabel="NLL of a fresh document (nats)")
    tables = {name: diagnostics.summary(fit.idata, var_names=[v for v in ("rho", "K", "delta", "sigma")
                                                              if v in fit.idata.posterior]) for name, fit in fits.items()}
    with atomic_output_dir(out, overwrite) as tmp:
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)
            diagnostics.close_figure(fig)
        for name, fit in fits.items():
            diagnostics.save_netcdf(fit.idata, tmp / f"fit_{name}.nc")
            (tmp / f"fit_{name}.csv").write_text(tables[name].to_csv())
        write_json_atomic(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(report_markdown(to_jsonable(summary), tables))
    return [*figures, *(f"fit_{n}.{ext}" for n in fits for ext in ("nc", "csv")), "summary.json", "report.md"]


def findings(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per curve: ``K`` and the evidence persona's ``rho`` (mean and 90% interval), the world's prior
    there, the NLL at ``n = 0`` and at the largest ``n``, and whether ``K = 1`` and the prior lie in
    the 90% intervals."""
    persona = summary["config"]["evidence"]["persona"]
    prior = summary["world"]["prior"]
    out = {}
    for name, fit in summary["fits"].items():
        k, rho = fit["K"], fit["rho"]
        out[name] = {
            "K": k["mean"], "K_lo": k["q05"], "K_hi": k["q95"], "K_covers_1": k["q05"] <= 1 <= k["q95"],
            "rho_evidence": rho["mean"][persona], "rho_evidence_lo": rho["q05"][persona],
            "rho_evidence_hi": rho["q95"][persona], "prior_evidence": prior[persona],
            "prior_covered": all(lo <= p <= hi for lo, p, hi in zip(rho["q05"], prior, rho["q95"], strict=True)),
            "nll_first": summary["curves"][name]["mean"][0], "nll_last": summary["curves"][name]["mean"][-1],
            "r_hat_max": fit["r_hat_max"], "ppc_coverage": fit["ppc_coverage"],
        }
    return out


def headline(summary: dict[str, Any]) -> list[str]:
    """The closing lines of ``psm run``: each curve's fitted ``K`` and prior on the evidence persona."""
    return [f"  {name}: NLL {f['nll_first']:.2f} -> {f['nll_last']:.2f} nats/document; K = {f['K']:.2f} "
            f"[{f['K_lo']:.2f}, {f['K_hi']:.2f}], rho(evidence persona) = {f['rho_evidence']:.2f} "
            f"[{f['rho_evidence_lo']:.2f}, {f['rho_evidence_hi']:.2f}] (world prior {f['prior_evidence']:.2f})"
            for name, f in findings(summary).items()]


# ----------------------------------------------------------------------------- figures


def curves_figure(summary: dict[str, Any], fits: dict[str, ScalingLawFit]) -> Figure:
    """The measured curves (90% intervals) with the fitted laws (median and 90% band); left the three
    curves, right in context before and after post-training."""
    shots = np.asarray(summary["config"]["evidence"]["shots"], dtype=float)
    grid = np.linspace(0, shots[-1], 200)
    panels = [("in_context", "finetuned", "exact"), ("in_context", "in_context_posttrained")]
    panels = [[c for c in panel if c in fits] for panel in panels]
    panels = [p for p in panels if len(p) > 1 or p == panels[0]]
    fig = Figure(figsize=(6 * len(panels), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, panel in zip(axes, panels, strict=True):
        for name in panel:
            c, colour = summary["curves"][name], COLOURS[name]
            mean, se = np.asarray(c["mean"]), np.asarray(c["se"])
            ax.errorbar(shots, mean, yerr=Z90 * se, fmt="o", color=colour, capsize=3,
                        label=f"{LABELS[name]} (measured, 90%)")
            mid, lo, hi = fits[name].band(grid)
            ax.plot(grid, mid, color=colour, lw=1.2, label=f"fitted law, K = {summary['fits'][name]['K']['mean']:.2f}")
            ax.fill_between(grid, lo, hi, color=colour, alpha=0.15)
        ax.plot(grid, _law_at_prior(summary, grid), "k:", label="law at the world's prior, K = 1")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set(xlabel="evidence documents n (symlog)")
        ax.legend(fontsize=7, title="bands: 90% of the fitted law", title_fontsize=7)
    axes[0].set_ylabel("NLL of a fresh document (nats)")
    axes[0].set_title("in context, fine-tuned and exact Bayes", fontsize=10)
    if len(axes) > 1:
        axes[1].set_title("in context before and after post-training", fontsize=10)
    fig.suptitle("Bayesian scaling law fitted to each learning curve", fontsize=11)
    fig.tight_layout()
    return fig


def prior_figure(summary: dict[str, Any]) -> Figure:
    """Fitted prior ``rho`` per persona (90% intervals) against the world's prior; fitted ``K`` against 1."""
    prior = np.asarray(summary["world"]["prior"])
    fits = summary["fits"]
    K = len(prior)
    fig = Figure(figsize=(12, 4))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / (len(fits) + 1)
    x = np.arange(K)
    ax.bar(x - 0.4 + width / 2, prior, width, color="lightgrey", edgecolor="black", label="world prior")
    for i, (name, fit) in enumerate(fits.items(), start=1):
        mean, lo, hi = (np.asarray(fit["rho"][k]) for k in ("mean", "q05", "q95"))
        ax.bar(x - 0.4 + (i + 0.5) * width, mean, width, yerr=[mean - lo, hi - mean], capsize=2,
               color=COLOURS[name], label=f"fitted rho: {LABELS[name]}")
    persona = summary["config"]["evidence"]["persona"]
    ax.set_xticks(x, [f"persona {k}" + (" (evidence)" if k == persona else "") for k in range(K)])
    ax.set(ylabel="prior weight", ylim=(0, 1))
    ax.set_title("fitted prior rho (posterior mean, 90% interval) against the world's", fontsize=10)
    ax.legend(fontsize=7)
    names = list(fits)
    for i, name in enumerate(names):
        k = fits[name]["K"]
        bx.errorbar([k["mean"]], [i], xerr=[[k["mean"] - k["q05"]], [k["q95"] - k["mean"]]], fmt="o",
                    color=COLOURS[name], capsize=3)
    bx.axvline(1.0, color="black", ls=":", label="exact Bayes: K = 1")
    bx.set_yticks(range(len(names)), [LABELS[n] for n in names], fontsize=8)
    bx.set(xlabel="K (posterior mean, 90% interval)", xscale="log")
    bx.set_title("evidence efficiency K", fontsize=10)
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- report


def report_markdown(summary: dict[str, Any], tables: dict[str, Any]) -> str:
    """``report.md``: the setting, the curves, the fits with their ArviZ tables, computed findings."""
    w, e, f = summary["config"]["world"], summary["config"]["evidence"], summary["config"]["finetune"]
    shots = e["shots"]
    lines = [
        "# In context vs fine-tuning vs exact Bayes, and the Bayesian scaling law", "",
        f"World: {w['num_personas']} order-1 Markov personas over {w['vocab_size']} tokens, prior "
        f"{_vector(summary['world']['prior'])}; documents of {w['doc_len']} tokens. The base was pre-trained on "
        f"contexts of {w['docs_per_context']} documents of one persona ({summary['world']['context_len']} tokens). "
        f"Evidence: persona {e['persona']}, {e['replicates']} evidence sets x {e['fresh_docs']} fresh documents; "
        f"fine-tuning {f['epochs']} epochs at lr {f['lr']:g}. log P (expected log-probability of an evidence "
        f"document under each persona): {_vector(summary['world']['log_p'])} nats.", "",
        "## NLL of a fresh document (nats per document; ± standard error over evidence sets)", "",
        "| n | " + " | ".join(LABELS[c] for c in summary["curves"]) + " | law at the world's prior, K = 1 |",
        "|---|" + "---|" * (len(summary["curves"]) + 1),
    ]
    for i, n in enumerate(shots):
        row = [str(n)] + [f"{c['mean'][i]:.3f} ± {c['se'][i]:.3f}" for c in summary["curves"].values()]
        lines.append("| " + " | ".join(row + [f"{summary['law_at_world_prior_k1'][i]:.3f}"]) + " |")
    lines += ["", "![curves](curves.png)", "![fitted prior](fitted_prior.png)", "",
              "## Fits of the Bayesian scaling law (NUTS; ArviZ summaries)", ""]
    for name, table in tables.items():
        fit = summary["fits"][name]
        lines += [f"### {LABELS[name]}", "", f"R-hat max {fit['r_hat_max']:.3f}, ESS min {fit['ess_min']:.0f}, "
                  f"{fit['divergences']} divergences; {fit['ppc_coverage']:.0%} of the measured points inside the "
                  "90% posterior predictive interval.", "", "```", table.to_string(), "```", "",
                  f"![posterior predictive check](ppc_{name}.png)", ""]
    lines += ["## Findings (computed)", ""]
    for name, f in findings(summary).items():
        lines.append(f"- {LABELS[name]}: K = {f['K']:.2f} [{f['K_lo']:.2f}, {f['K_hi']:.2f}] "
                     f"({'covers' if f['K_covers_1'] else 'excludes'} exact Bayes' K = 1); prior on the evidence "
                     f"persona {f['rho_evidence']:.2f} [{f['rho_evidence_lo']:.2f}, {f['rho_evidence_hi']:.2f}] "
                     f"against the world's {f['prior_evidence']:.2f}; the world's whole prior is "
                     f"{'inside' if f['prior_covered'] else 'outside'} the fitted 90% intervals.")
    found = findings(summary)
    if "in_context_posttrained" in found:
        a, b = found["in_context"], found["in_context_posttrained"]
        lines.append(f"- post-training on persona {summary['config']['posttrain']['persona']} moved the fitted prior on "
                     f"the evidence persona from {a['rho_evidence']:.2f} to {b['rho_evidence']:.2f} and K from "
                     f"{a['K']:.2f} to {b['K']:.2f}.")
    t = summary["timing"]
    lines += ["", f"Wall time {t['seconds']:.0f} s (pre-training {t['pretrain_seconds']:.0f} s, curves "
              f"{t['measure_seconds']:.0f} s, fits {t['fit_seconds']:.0f} s).", ""]
    return "\n".join(lines)


def _law_at_prior(summary: dict[str, Any], n: np.ndarray) -> np.ndarray:
    """The law with the world's prior and ``K = 1`` at ``n``."""
    import torch

    from inference.conditioning.scaling_law import law_nll

    prior = torch.tensor(summary["world"]["prior"], dtype=torch.float64)
    log_p = torch.tensor(summary["world"]["log_p"], dtype=torch.float64)
    return law_nll(torch.as_tensor(n, dtype=torch.float64), prior.log(), torch.tensor(1.0, dtype=torch.float64),
                   log_p).numpy()


def _vector(values) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"
