"""The elicitation experiment's outputs: ``summary.json``, ``runs.csv``, ``k50.csv``, the fits'
InferenceData, ``elicitation.png`` and ``report.md`` (findings computed from the numbers), written
through :func:`inference.storage.outputs.atomic_output_dir`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from inference import diagnostics
from inference.storage.outputs import atomic_output_dir, to_jsonable, write_json_atomic

#: kind -> (colour, label)
KIND_STYLE = {"in_support": ("tab:blue", "in-support persona"), "rule": ("tab:red", "rule no persona has")}


def write_elicitation(summary: dict[str, Any], fits: dict[str, Any], out: str | Path, overwrite: bool = False) -> list[str]:
    """Write every output into ``out`` (new or empty unless ``overwrite``); returns the file names."""
    names = []
    with atomic_output_dir(out, overwrite) as tmp:
        fig = figure(summary, fits)
        fig.savefig(tmp / "elicitation.png", dpi=110)
        diagnostics.close_figure(fig)
        for kind, fitted in fits.items():
            diagnostics.save_netcdf(fitted.idata, tmp / f"logistic_{kind}.nc")
            names.append(f"logistic_{kind}.nc")
        (tmp / "runs.csv").write_text(_csv([row for k in summary["kinds"].values() for row in k["runs"]]))
        (tmp / "k50.csv").write_text(_csv(k50_table(summary)))
        write_json_atomic(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(report_markdown(to_jsonable(summary)))
    return ["elicitation.png", *names, "runs.csv", "k50.csv", "summary.json", "report.md"]


def k50_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per kind: ``k50`` with its interval, the slope, conditioning's share, description length."""
    rows = []
    for kind, result in summary["kinds"].items():
        fit = result["fit"]
        rows.append({"kind": kind, "k50": fit["k50"], "k50_low": fit["k50_interval"][0],
                     "k50_high": fit["k50_interval"][1], "level": fit["level"], "slope_per_decade": fit["slope"],
                     "slope_sd": fit["slope_sd"], "r_hat_max": fit["r_hat_max"], "ess_min": fit["ess_min"],
                     "gain_nats": result["gain"], "conditioned_share": result["conditioned_share"],
                     "description_length_nats": result["description_length_nats"]})
    return rows


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def share_stats(result: dict[str, Any]) -> dict[int, tuple[float, float, float]]:
    """``k -> (mean, min, max)`` of the share over seeds."""
    out = {}
    for k in sorted({r["k"] for r in result["runs"]}):
        values = [r["share"] for r in result["runs"] if r["k"] == k]
        out[k] = (float(np.mean(values)), min(values), max(values))
    return out


def _exhaustiveness_panel(ax: Any, summary: dict[str, Any]) -> None:
    """``E_true`` and ``E_self`` against ``k`` with their bootstrap bands, per kind of evidence."""
    for kind, result in summary["kinds"].items():
        colour, label = KIND_STYLE[kind]
        e = result["exhaustiveness"]
        for key, style in (("true", "-o"), ("self", "--s")):
            ks = [k for k, v in zip(e["k"], e[key], strict=True) if v is not None]
            vals = [v for v in e[key] if v is not None]
            lows = [ci[0] for ci, v in zip(e[f"ci_{key}"], e[key], strict=True) if v is not None]
            highs = [ci[1] for ci, v in zip(e[f"ci_{key}"], e[key], strict=True) if v is not None]
            ax.plot(ks, vals, style, color=colour, markersize=3, label=f"{label}: E_{key}")
            ax.fill_between(ks, lows, highs, color=colour, alpha=0.12, label=f"{label}: E_{key} 90% bootstrap")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set(xlabel="k trained parameters (log scale; last = all)", ylabel="E = re-weighting share",
           title="How much of the change is re-weighting (first seed)")
    ax.legend(fontsize=6)


def _k50_panel(ax: Any, summary: dict[str, Any]) -> None:
    """The ``k50`` table: posterior median and interval, slope per decade, description length."""
    ax.axis("off")
    rows = k50_table(summary)
    cells = [[r["kind"].replace("_", "-"), f"{r['k50']:,.0f}", f"{r['k50_low']:,.0f}-{r['k50_high']:,.0f}",
              f"{r['slope_per_decade']:.2f}", f"{r['description_length_nats']:.0f}"] for r in rows]
    table = ax.table(cellText=cells, colLabels=["evidence", "k50", f"{int(100 * rows[0]['level'])}% interval",
                                                "slope", "DL (nats)"], loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7.5)
    table.auto_set_column_width(list(range(5)))
    table.scale(1, 1.6)
    ax.set_title("k50 (posterior), slope per decade,\ndescription length")


def figure(summary: dict[str, Any], fits: dict[str, Any]) -> Figure:
    """Both curves with their fitted logistic and posterior bands, ``E`` per ``k``, the ``k50`` table."""
    total = summary["num_parameters"]
    has_e = all("exhaustiveness" in r for r in summary["kinds"].values())
    fig = Figure(figsize=(15 if has_e else 10, 4.8))
    axes = fig.subplots(1, 3 if has_e else 2, gridspec_kw={"width_ratios": [2, 1.3, 1.3] if has_e else [2, 1.3]})
    ax = axes[0]
    grid = np.linspace(0.5, np.log10(total) + 0.2, 200)
    for kind, result in summary["kinds"].items():
        colour, label = KIND_STYLE[kind]
        runs = result["runs"]
        ax.plot([r["k"] for r in runs], [r["share"] for r in runs], "o", color=colour, alpha=0.45, markersize=3.5,
                label=f"{label}: one run (seed)")
        band = fits[kind].curve(grid, level=result["fit"]["level"])
        level = int(round(100 * result["fit"]["level"]))
        ax.plot(10**grid, band["median"], color=colour, label=f"{label}: logistic fit (posterior median)")
        ax.fill_between(10**grid, band["low"], band["high"], color=colour, alpha=0.18,
                        label=f"{label}: {level}% posterior band")
    shares = [r["share"] for result in summary["kinds"].values() for r in result["runs"]]
    low, high = min(-0.1, min(shares) - 0.05), max(1.2, max(shares) + 0.05)
    for kind, result in summary["kinds"].items():
        colour, label = KIND_STYLE[kind]
        value = result["conditioned_share"]
        inside = low <= value <= high
        ax.axhline(value if inside else np.nan, color=colour, linestyle=":", linewidth=1,
                   label=f"{label}: exact conditioning's share ({value:.2f}{'' if inside else ', off the axis'})")
    ax.axvline(total, color="0.5", linewidth=0.8, linestyle="--", label=f"all {total:,} parameters")
    ax.axhline(0.5, color="0.7", linewidth=0.6)
    ax.set_ylim(low, high)
    ax.set_xscale("log")
    ax.set(xlabel="k trained parameters (random, log scale)", ylabel="share of the full fine-tuning gain",
           title="Share of the gain recovered by k parameters")
    ax.legend(fontsize=6.5, loc="upper left")
    if has_e:
        _exhaustiveness_panel(axes[1], summary)
    _k50_panel(axes[-1], summary)
    fig.suptitle(f"Elicitation by k random parameters ({summary['config']['num_seeds']} seed(s) per k; "
                 f"base of {total:,} parameters)")
    fig.tight_layout()
    return fig


def report_markdown(summary: dict[str, Any]) -> str:
    """The report: setting, the ``k50`` table, shares per ``k``, the computed findings."""
    c, total = summary["config"], summary["num_parameters"]
    e = c["evidence"]
    lines = [
        "# Elicitation: how many parameters does fine-tuning need?",
        "",
        f"Base: {total:,} parameters (world of {c['world']['num_personas']} personas over "
        f"{c['world']['vocab_size']} tokens). Evidence: {e['num_docs']} documents of {e['doc_len']} tokens; "
        f"`in_support` written by persona {e['persona']}, `rule` by the same persona for {e['period']} tokens, "
        f"then repeating them (no persona does). {c['num_seeds']} seed(s) per k; learning rate and snapshot "
        "chosen on validation documents; shares measured on test documents.",
        "",
        "| evidence | full gain (nats/token) | k50 | interval | slope per decade | conditioning's share | "
        "description length (nats) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in k50_table(summary):
        lines.append(f"| {r['kind']} | {r['gain_nats']:.4f} | {r['k50']:.3g} | [{r['k50_low']:.3g}, {r['k50_high']:.3g}] "
                     f"({int(100 * r['level'])}%) | {r['slope_per_decade']:.2f} | {r['conditioned_share']:.2f} | "
                     f"{r['description_length_nats']:.0f} |")
    lines += ["", "Share of the full gain per k (mean, min..max over seeds):", "",
              "| k | " + " | ".join(summary["kinds"]) + " |", "|---|" + "---|" * len(summary["kinds"])]
    stats = {kind: share_stats(result) for kind, result in summary["kinds"].items()}
    for k in sorted(next(iter(stats.values()))):
        label = f"all ({k:,})" if k == total else f"{k:,}"
        lines.append(f"| {label} | " + " | ".join(f"{s[k][0]:.2f} ({s[k][1]:.2f}..{s[k][2]:.2f})"
                                                  for s in stats.values()) + " |")
    lines += ["", "## What came out", "", *findings(summary), "", "![curves and fits](elicitation.png)", "",
              f"Wall time {summary['timing']['seconds']:.0f} s (CPU time {summary['timing']['cpu_seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def findings(summary: dict[str, Any]) -> list[str]:
    """Sentences computed from the numbers."""
    out = []
    for kind, result in summary["kinds"].items():
        stats = share_stats(result)
        ks = sorted(stats)
        small = [k for k in ks if k <= 100]
        best_small = max((stats[k][0] for k in small), default=None)
        k95 = next((k for k in ks if stats[k][0] >= 0.95), None)
        fit = result["fit"]
        out.append(
            f"- `{kind}`: k50 = {fit['k50']:.3g} [{fit['k50_interval'][0]:.3g}, {fit['k50_interval'][1]:.3g}]; "
            + (f"up to 100 parameters recover at most {best_small:.2f} of the gain; " if best_small is not None else "")
            + (f"the first k whose mean share reaches 0.95 is {k95:,}; " if k95 and k95 < summary["num_parameters"]
               else "no k below all parameters reaches 0.95 on average; ")
            + f"exact conditioning recovers {result['conditioned_share']:.2f}; description length "
            f"{result['description_length_nats']:.0f} nats.")
    kinds = summary["kinds"]
    if {"in_support", "rule"} <= set(kinds):
        a, b = kinds["in_support"], kinds["rule"]
        ratio = b["fit"]["k50"] / a["fit"]["k50"]
        separated = a["fit"]["k50_interval"][1] < b["fit"]["k50_interval"][0]
        out.append(f"- The rule needs {ratio:.3g}x the parameters of the in-support persona to recover half its gain "
                   f"({'intervals apart' if separated else 'intervals overlap'}); its description length is "
                   f"{b['description_length_nats'] / max(a['description_length_nats'], 1e-12):.3g}x.")
    return out


def closing_lines(summary: dict[str, Any], out, names: list[str]) -> str:
    """What ``psm run`` prints."""
    lines = [f"ran the elicitation experiment in {summary['timing']['seconds']:.1f} s; wrote {len(names)} files to "
             f"{out}/:", f"  {out}/summary.json  (every number)", f"  {out}/report.md  (table, findings and figure)"]
    for kind, result in summary["kinds"].items():
        fit = result["fit"]
        lines.append(f"  {kind}: k50={fit['k50']:.3g} [{fit['k50_interval'][0]:.3g}, {fit['k50_interval'][1]:.3g}], "
                     f"description length {result['description_length_nats']:.0f} nats")
    return "\n".join(lines)
