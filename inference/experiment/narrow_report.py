"""Outputs of the narrow-to-broad experiment: ``summary.json``, ``report.md`` and its figures.

Figures are built with the object-oriented matplotlib API; the findings in ``report.md`` and the
closing lines of ``psm run`` are computed from the summary (:func:`findings`), never typed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from inference.storage.outputs import atomic_output_dir, to_jsonable, write_json_atomic

ARM_TITLES = {"plain": "plain: the cause hidden", "inoculated": "inoculated: the cause tag in front"}


def write_outputs(summary: dict[str, Any], out: str | Path, overwrite: bool = False) -> list[str]:
    """Write ``summary.json``, ``report.md`` and the figures into ``out`` (atomically); the file names."""
    figures = {"trait_rates.png": trait_rate_figure(summary), "conditioned_by_beta.png": beta_figure(summary),
               "exhaustiveness_by_domain.png": exhaustiveness_figure(summary)}
    with atomic_output_dir(out, overwrite) as tmp:
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)
        write_json_atomic(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(report_markdown(to_jsonable(summary)))
    return [*figures, "summary.json", "report.md"]


def findings(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per arm, means over the *other* domains (not the evidence domain) and in the evidence domain.

    Keys: ``base``, ``finetuned``, ``conditioned_beta_star`` and ``conditioned_beta_1`` trait rates;
    ``shift_*`` their changes (fine-tuned from the base transformer, conditioned from the world's
    prior); ``e_true``/``e_self`` final ``E``; ``broad_over_narrow``: other-domain shift over
    evidence-domain shift, fine-tuned and conditioned at ``beta*``.
    """
    ev = summary["config"]["evidence"]["domain"]
    prior = summary["world"]["trait_rate_prior"]
    base = [r["mean"] for r in summary["base"]["trait_rate"]]
    others = [d for d in range(len(prior)) if d != ev]
    out = {}
    for arm in summary["arms"]:
        betas = summary["config"]["measure"]["betas"]
        one = int(np.argmin(np.abs(np.log(np.asarray(betas) + 1e-300))))  # the beta nearest 1
        ft = [arm["trait_rate_finetuned"][d][-1]["mean"] for d in range(len(prior))]
        star = arm["trait_rate_conditioned_beta_star"]
        exact1 = [arm["trait_rate_conditioned"][d][one] for d in range(len(prior))]

        def mean(values, where):
            return float(np.mean([values[d] for d in where]))

        shift_ft = [ft[d] - base[d] for d in range(len(prior))]
        shift_star = [star[d] - prior[d] for d in range(len(prior))]
        e = {key: [dom[f"exhaustiveness_{key}"][-1] for dom in arm["domains"]] for key in ("true", "self")}
        out[arm["arm"]] = {
            "base": mean(base, others), "finetuned": mean(ft, others), "conditioned_beta_star": mean(star, others),
            "conditioned_beta_1": mean(exact1, others), "prior": mean(prior, others),
            "shift_finetuned": mean(shift_ft, others), "shift_conditioned_beta_star": mean(shift_star, others),
            "shift_finetuned_evidence_domain": shift_ft[ev], "shift_conditioned_evidence_domain": shift_star[ev],
            "broad_over_narrow_finetuned": _ratio(mean(shift_ft, others), shift_ft[ev]),
            "broad_over_narrow_conditioned": _ratio(mean(shift_star, others), shift_star[ev]),
            "beta_star": arm["beta_star_evidence_domain"],
            "e_true_others": _mean_defined([e["true"][d] for d in others]),
            "e_self_others": _mean_defined([e["self"][d] for d in others]),
            "e_true_evidence_domain": e["true"][ev], "e_self_evidence_domain": e["self"][ev],
        }
    return out


def headline(summary: dict[str, Any]) -> list[str]:
    """The closing lines of ``psm run``: the broad shift of each arm, fine-tuned against conditioned."""
    lines = []
    for arm, f in findings(summary).items():
        lines.append(f"  arm {arm}: trait rate in the other domains {f['base']:.3f} (base) -> {f['finetuned']:.3f} "
                     f"(fine-tuned); conditioning at beta*={f['beta_star']:.3g} predicts {f['conditioned_beta_star']:.3f} "
                     f"(prior {f['prior']:.3f}); E_true there {_fmt(f['e_true_others'])}")
    return lines


# ----------------------------------------------------------------------------- figures


def trait_rate_figure(summary: dict[str, Any]) -> Figure:
    """Trait rate by domain: world prior, base, conditioned (``beta*``, ``beta = 1``), fine-tuned; one panel per arm."""
    prior = np.asarray(summary["world"]["trait_rate_prior"])
    D, ev = len(prior), summary["config"]["evidence"]["domain"]
    base = summary["base"]["trait_rate"]
    betas = summary["config"]["measure"]["betas"]
    one = int(np.argmin(np.abs(np.log(np.asarray(betas) + 1e-300))))
    fig = Figure(figsize=(12, 5.0))
    axes = fig.subplots(1, len(summary["arms"]), sharey=True)
    x, width = np.arange(D), 0.16
    for ax, arm in zip(np.atleast_1d(axes), summary["arms"], strict=True):
        ft = [arm["trait_rate_finetuned"][d][-1] for d in range(D)]
        bars = [
            ("world prior (exact)", prior, None, "lightgrey"),
            ("base transformer (sampled)", [r["mean"] for r in base], base, "grey"),
            (r"conditioned at the evidence domain's $\beta^*$ (exact)",
             arm["trait_rate_conditioned_beta_star"], None, "tab:green"),
            (rf"conditioned, $\beta$ = {betas[one]:g} (exact)", [r[one] for r in arm["trait_rate_conditioned"]],
             None, "tab:olive"),
            (f"fine-tuned, step {arm['steps'][-1]} (sampled)", [r["mean"] for r in ft], ft, "tab:red"),
        ]
        for i, (label, values, intervals, colour) in enumerate(bars):
            err = None if intervals is None else _errors(intervals)
            ax.bar(x + (i - 2) * width, values, width, yerr=err, capsize=2, color=colour, label=label)
        ax.set_xticks(x, [f"domain {d}" + ("\n(evidence)" if d == ev else "") for d in range(D)])
        ax.set_title(f"arm {ARM_TITLES.get(arm['arm'], arm['arm'])} ($\\beta^*$ = {arm['beta_star_evidence_domain']:.2g})",
                     fontsize=10)
        ax.set_xlabel("domain of the prompt (plain slot)")
    np.atleast_1d(axes)[0].set_ylabel("trait rate: marker share of the content")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, title="error bars: 90% bootstrap intervals over sampled documents",
               title_fontsize=8)
    fig.suptitle("Narrow evidence, broad shift: trait rate by domain", fontsize=11)
    fig.tight_layout(rect=(0, 0.15, 1, 1))
    return fig


def beta_figure(summary: dict[str, Any]) -> Figure:
    """Trait rate of the exact conditioned model against ``beta`` in every domain, with the fine-tuned rates."""
    betas = np.asarray(summary["config"]["measure"]["betas"], dtype=float)
    positive = betas[betas > 0]
    ev = summary["config"]["evidence"]["domain"]
    fig = Figure(figsize=(12, 4.2))
    axes = fig.subplots(1, len(summary["arms"]), sharey=True)
    for ax, arm in zip(np.atleast_1d(axes), summary["arms"], strict=True):
        for d, rates in enumerate(arm["trait_rate_conditioned"]):
            line, = ax.plot(betas, rates, marker="os^vD<>p"[d % 8], ls=("-", "--", ":", "-.")[d % 4], ms=7 - d,
                            mfc="none", label=f"domain {d}" + (" (evidence)" if d == ev else ""))
            ft = arm["trait_rate_finetuned"][d][-1]
            ax.axhspan(ft["lo"], ft["hi"], color=line.get_color(), alpha=0.12)
        ax.axvline(arm["beta_star_evidence_domain"], color="black", ls=":", label=r"$\beta^*$ (evidence domain)")
        ax.set_xscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
        ax.set_xlim(0, 1.5 * float(betas.max()))
        ax.set(xlabel=r"evidence strength $\beta$ (symlog)")
        ax.set_title(f"arm {ARM_TITLES.get(arm['arm'], arm['arm'])}", fontsize=10)
    np.atleast_1d(axes)[0].set_ylabel("trait rate of the conditioned model (exact)")
    np.atleast_1d(axes)[-1].legend(fontsize=7, title="lines: conditioned; bands: fine-tuned 90%", title_fontsize=7)
    fig.suptitle("Trait rate of the exact conditioned model against the evidence strength, per domain", fontsize=11)
    fig.tight_layout()
    return fig


def exhaustiveness_figure(summary: dict[str, Any]) -> Figure:
    """Final ``E`` per domain (both reachable sets, intervals) and the weight on the trait persona."""
    trait = summary["config"]["world"]["trait_persona"]
    ev = summary["config"]["evidence"]["domain"]
    arms = summary["arms"]
    D = len(arms[0]["domains"])
    fig = Figure(figsize=(12, 4.2))
    ax, bx = fig.subplots(1, 2)
    x = np.arange(D)
    for i, arm in enumerate(arms):
        for j, key in enumerate(("true", "self")):
            e = np.asarray([_nan(dom[f"exhaustiveness_{key}"][-1]) for dom in arm["domains"]])
            ci = np.asarray([[_nan(v) for v in dom[f"exhaustiveness_ci_{key}"][-1]] for dom in arm["domains"]])
            offset = (2 * i + j - 1.5) * 0.18
            ax.errorbar(x + offset, e, yerr=[e - ci[:, 0], ci[:, 1] - e], fmt="os"[j], capsize=2,
                        label=rf"{arm['arm']}: $E_{{{key}}}$ (90% bootstrap)")
        w = [dom["projection_weights_true"][-1][trait] for dom in arm["domains"]]
        bx.bar(x + (i - 0.5) * 0.35, w, 0.35, label=f"{arm['arm']}: fine-tuned, projection onto $R_{{true}}$")
        bx.axhline(arm["posterior_weights_beta_star"][trait], ls="--", color=f"C{i}",
                   label=rf"{arm['arm']}: conditioned at $\beta^*$ (posterior)")
    base = summary["base"]["domains"]
    if all("projection_weights_true" in b for b in base):
        bx.plot(x, [b["projection_weights_true"][trait] for b in base], "k_", ms=28, mew=2,
                label="base: projection onto $R_{true}$")
    labels = [f"domain {d}" + ("\n(evidence)" if d == ev else "") for d in range(D)]
    ax.set_xticks(x, labels)
    ax.set(ylabel="E = re-weighting / KL(q_s || q0)", ylim=(-0.02, 1.02))
    ax.set_title("share of the change that is persona re-weighting", fontsize=10)
    ax.legend(fontsize=7)
    bx.set_xticks(x, labels)
    bx.set(ylabel=f"weight on the trait persona {trait}", ylim=(0, 1))
    bx.set_title("the persona the models have moved to", fontsize=10)
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- report


def report_markdown(summary: dict[str, Any]) -> str:
    """``report.md``: the setting, the trait-rate table, the comparisons per domain, computed findings."""
    w, e = summary["config"]["world"], summary["config"]["evidence"]
    prior = summary["world"]["trait_rate_prior"]
    base = summary["base"]["trait_rate"]
    D = len(prior)
    lines = [
        "# Narrow evidence, broad shift (and inoculation)", "",
        f"World: {w['num_personas']} personas acting in {D} domains ({w['content_size']} content tokens each, "
        f"style weight {w['style_weight']}); persona {w['trait_persona']} shows the marker at rate {w['trait_rate']} "
        f"(others {w['background_rate']}), and so does any persona after the cause tag (in {w['cause_rate']:.0%} of "
        f"pre-training documents). Evidence: {e['num_docs']} documents of domain {e['domain']} by persona "
        f"{e['writer']}, drawn with the cause tag; the plain arm hides it, the inoculated arm shows it.", "",
        "## Trait rate by domain (plain slot; sampled values with 90% bootstrap intervals)", "",
        "| domain | world prior | base | " + " | ".join(
            f"{a['arm']}: conditioned β*={a['beta_star_evidence_domain']:.2g} | {a['arm']}: fine-tuned"
            for a in summary["arms"]) + " |",
        "|---|---|---|" + "---|---|" * len(summary["arms"]),
    ]
    for d in range(D):
        row = [f"{d}" + (" (evidence)" if d == e["domain"] else ""), f"{prior[d]:.3f}", _ci(base[d])]
        for a in summary["arms"]:
            row += [f"{a['trait_rate_conditioned_beta_star'][d]:.3f}", _ci(a["trait_rate_finetuned"][d][-1])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "![trait rates](trait_rates.png)", "![conditioned by beta](conditioned_by_beta.png)", ""]
    for arm in summary["arms"]:
        lines += _arm_table(arm, summary)
    lines += ["![exhaustiveness by domain](exhaustiveness_by_domain.png)", "", "## Findings (computed)", ""]
    found = findings(summary)
    for arm, f in found.items():
        lines.append(f"- arm `{arm}`: in the other domains the trait rate moved {f['base']:.3f} -> {f['finetuned']:.3f} "
                     f"(shift {f['shift_finetuned']:+.3f}; in the evidence domain {f['shift_finetuned_evidence_domain']:+.3f}); "
                     f"conditioning at the evidence domain's beta* = {f['beta_star']:.3g} predicts a shift of "
                     f"{f['shift_conditioned_beta_star']:+.3f} there (evidence domain {f['shift_conditioned_evidence_domain']:+.3f}). "
                     f"Broad over narrow shift: fine-tuned {_fmt(f['broad_over_narrow_finetuned'])}, conditioned "
                     f"{_fmt(f['broad_over_narrow_conditioned'])}. Mean E in the other domains: R_true "
                     f"{_fmt(f['e_true_others'])}, R_self {_fmt(f['e_self_others'])}.")
    if {"plain", "inoculated"} <= set(found):
        p, i = found["plain"], found["inoculated"]
        lines.append(f"- inoculation: the broad fine-tuned shift is {i['shift_finetuned']:+.3f} with the cause tag "
                     f"against {p['shift_finetuned']:+.3f} without; exact conditioning at beta = 1 gives "
                     f"{i['conditioned_beta_1'] - i['prior']:+.3f} against {p['conditioned_beta_1'] - p['prior']:+.3f}.")
    t = summary["timing"]
    lines += ["", f"Wall time {t['seconds']:.0f} s (pre-training {t['pretrain_seconds']:.0f} s).", ""]
    return "\n".join(lines)


def _arm_table(arm: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    trait = summary["config"]["world"]["trait_persona"]
    lines = [f"## Arm `{arm['arm']}` ({ARM_TITLES.get(arm['arm'], '')}), final snapshot (step {arm['steps'][-1]})", "",
             f"Exact posterior at beta* = {arm['beta_star_evidence_domain']:.3g}: "
             + ", ".join(f"{v:.2f}" for v in arm["posterior_weights_beta_star"])
             + f"; at beta = {summary['config']['measure']['betas'][-1]:g}: "
             + ", ".join(f"{v:.2f}" for v in arm["posterior_weights"][-1]) + ".", "",
             "| domain | KL(q_s‖q0) | β* | E_true [90%] | E_self [90%] | w*_trait (R_true) | trait shift (fine-tuned) |",
             "|---|---|---|---|---|---|---|"]
    for d, dom in enumerate(arm["domains"]):
        shift = arm["trait_shift_finetuned"][d][-1]
        lines.append(f"| {d} | {dom['kl_to_base'][-1]:.4f} | {dom['beta_star'][-1]:.3g} | "
                     f"{_e(dom, 'true')} | {_e(dom, 'self')} | {dom['projection_weights_true'][-1][trait]:.2f} | "
                     f"{shift['mean']:+.3f} [{shift['lo']:+.3f}, {shift['hi']:+.3f}] |")
    return lines + [""]


def _e(dom: dict[str, Any], key: str) -> str:
    e, ci = dom[f"exhaustiveness_{key}"][-1], dom[f"exhaustiveness_ci_{key}"][-1]
    return "undefined" if e is None else f"{e:.2f} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _ci(rate: dict[str, float]) -> str:
    return f"{rate['mean']:.3f} [{rate['lo']:.3f}, {rate['hi']:.3f}]"


def _errors(intervals: list[dict[str, float]]) -> np.ndarray:
    return np.asarray([[r["mean"] - r["lo"] for r in intervals], [r["hi"] - r["mean"] for r in intervals]])


def _ratio(a: float, b: float) -> float | None:
    return None if abs(b) < 1e-12 else a / b


def _mean_defined(values: list) -> float | None:
    defined = [v for v in values if v is not None and v == v]
    return float(np.mean(defined)) if defined else None


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def _fmt(x, spec: str = ".2f") -> str:
    return "undefined" if x is None or x != x else format(x, spec)
