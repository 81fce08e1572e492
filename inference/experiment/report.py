"""Writing an experiment's outputs: ``summary.json``, ``report.md``, figures, InferenceData.

Everything is written into a temporary folder and moved into place only when
the whole experiment succeeded (:func:`inference.storage.outputs.atomic_output_dir`).
The findings in ``report.md`` are computed from the summary, never typed in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from inference import diagnostics
from inference.experiment import plots
from inference.storage.outputs import atomic_output_dir, to_jsonable, write_json_atomic

#: summary fields that record wall time (excluded when checking reproducibility)
TIMING_FIELDS = ("timing",)


def write_experiment(summary: dict[str, Any], arms: list, out: str | Path, overwrite: bool = False) -> list[str]:
    """Write every output of an experiment into ``out``; returns the file names.

    ``out`` must be new or empty unless ``overwrite`` (then it is replaced whole).
    """
    with atomic_output_dir(out, overwrite) as tmp:
        names = []
        for result in arms:
            arm = result.summary
            figures = {
                f"{arm['arm']}_kl.png": plots.kl_curves(arm, result.curves, summary["base"]),
                f"{arm['arm']}_projection.png": plots.projection_weights(arm, summary["base"]),
                f"{arm['arm']}_exhaustiveness.png": plots.exhaustiveness(arm),
                f"{arm['arm']}_mechanisms.png": plots.mechanisms(arm),
                f"{arm['arm']}_next_token.png": plots.next_token(result.curves, arm),
                f"{arm['arm']}_finetune_loss.png": plots.finetune_losses(result.curves, arm),
            }
            attribution = result.idata[f"{arm['arm']}_attribution.nc"]
            figures[f"{arm['arm']}_attribution_rank.png"] = diagnostics.plot_rank(
                attribution, ["w"], title=f"arm {arm['arm']}: attribution NUTS chains (rank plot of w)")
            figures[f"{arm['arm']}_attribution_ppc.png"] = diagnostics.plot_attribution_ppc(
                attribution, title=f"arm {arm['arm']}: completion tokens against the attributed persona mixture")
            for name, fig in figures.items():
                fig.savefig(tmp / name, dpi=110)
                diagnostics.close_figure(fig)
                names.append(name)
            for name, idata in result.idata.items():
                diagnostics.save_netcdf(idata, tmp / name)
                names.append(name)
            table = result.curves["elpd_table"]
            (tmp / f"{arm['arm']}_elpd.csv").write_text(table.to_csv())
            names.append(f"{arm['arm']}_elpd.csv")
        write_json_atomic(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(report_markdown(to_jsonable(summary), arms))
        names += ["summary.json", "report.md"]
    return names


def report_markdown(summary: dict[str, Any], arms: list) -> str:
    """The report: setting, base model, one section per arm with figures and computed findings."""
    w, b = summary["world"], summary["base"]
    lines = [
        "# Does fine-tuning act like conditioning?",
        "",
        f"World: {w['num_personas']} Markov personas of order {w['order']} over {w['vocab_size']} tokens "
        f"(Dirichlet concentration {w['concentration']}, world seed {w['seed']}); "
        f"{w['heldout_contexts']} held-out contexts of {w['doc_len']} tokens.",
        "",
        "## Base model",
        "",
        f"- held-out NLL {b['heldout_nll']:.4f} nats/token against the Bayes-optimal {b['bayes_optimal_nll']:.4f} "
        f"(gap {b['heldout_nll'] - b['bayes_optimal_nll']:.4f}); {b['num_parameters']:,} parameters.",
        f"- distance to the nearest persona mixture (floor r(0)): {b['floor_true']:.4f} nats against the true "
        f"personas (R_true), {b['floor_self']:.4f} against its own tag-prompted personas (R_self).",
        "",
    ]
    for result, arm in zip(arms, summary["arms"], strict=True):
        lines += _arm_section(arm, result, summary)
    lines += _comparison(summary["arms"])
    return "\n".join(lines) + "\n"


def _arm_section(arm: dict[str, Any], result, summary: dict[str, Any]) -> list[str]:
    name, s = arm["arm"], arm["steps"][-1]
    who = "a persona outside the support" if arm["evidence_persona"] is None else f"persona {arm['evidence_persona']}"
    w_true, w_self = arm["projection_weights_true"][-1], arm["projection_weights_self"][-1]
    top_true, top_self = _argmax(w_true), _argmax(w_self)
    att = arm["attribution"]
    elpd = arm["heldout_elpd"]
    best = max(elpd, key=lambda k: elpd[k] if elpd[k] is not None else -math.inf)
    lines = [
        f"## Arm `{name}`: evidence from {who}",
        "",
        f"{arm['evidence_tokens']} evidence tokens; after {s} fine-tuning steps:",
        "",
        f"- the fine-tuned model moved {arm['kl_to_base'][-1]:.4f} nats/position from the base; the best-fitting "
        f"evidence strength is beta* = {_fmt(arm['beta_star'][-1], '.3g')} (KL to the conditioned model there "
        f"{min(result.curves['kl_by_beta'][-1]):.4f}).",
        f"- projection onto R_true puts {w_true[top_true]:.2f} on persona {top_true}"
        + _match(top_true, arm["evidence_persona"])
        + f"; residual {arm['residual_true'][-1]:.4f} (floor {summary['base']['floor_true']:.4f}).",
        f"- projection onto R_self puts {w_self[top_self]:.2f} on persona {top_self}"
        + _match(top_self, arm["evidence_persona"])
        + f"; residual {arm['residual_self'][-1]:.4f} (floor {summary['base']['floor_self']:.4f}).",
        *_decomposition_lines(arm),
        f"- Bayesian attribution of the fine-tuned model's completions (NUTS, R-hat {att['r_hat_max']:.3f}, "
        f"ESS {att['ess_min']:.0f}): E[w] = {_vector(att['weights_mean'])}"
        + (" (R-hat above 1.01: the chains disagree; read these weights with care)." if att["r_hat_max"] > 1.01 else "."),
        f"- held-out ELPD on fresh evidence: best candidate `{best}` ({elpd[best]:.1f}); fine-tuned "
        f"{elpd['finetuned']:.1f}, conditioned at beta=1 {elpd.get('conditioned_beta_1', float('nan')):.1f}, base "
        f"{elpd['base']:.1f}, n-gram {elpd['ngram']:.1f}, from scratch {elpd['scratch']:.1f}.",
        f"- description length (prequential code minus n x final loss): {arm['description_length_nats']:.1f} nats.",
        "",
        f"![KL curves]({name}_kl.png)",
        f"![projection weights]({name}_projection.png)",
        f"![exhaustiveness]({name}_exhaustiveness.png)",
        f"![mechanisms]({name}_mechanisms.png)",
        f"![next-token distributions]({name}_next_token.png)",
        f"![attribution rank plot]({name}_attribution_rank.png)",
        f"![attribution posterior predictive check]({name}_attribution_ppc.png)",
        "",
        "Held-out ELPD table (ArviZ `compare`; `elpd_loo` holds the held-out ELPD, `p_loo` = 0):",
        "",
        "```",
        result.curves["elpd_table"][["rank", "elpd_loo", "se", "elpd_diff", "dse"]].to_string(),
        "```",
        "",
    ]
    return lines


def _decomposition_lines(arm: dict[str, Any]) -> list[str]:
    """The exhaustiveness decomposition and its mechanisms, in words (final snapshot)."""
    lines = []
    for key in ("true", "self"):
        d = arm[f"decomposition_{key}"]
        e = arm[f"exhaustiveness_{key}"][-1]
        if e is None:
            lines.append(f"- E_{key} is undefined: {d['reason'][-1]}.")
            continue
        lines.append(f"- of KL(q_s || q0) = {d['total'][-1]:.4f}, re-weighting the personas of R_{key} explains "
                     f"{d['reweighting'][-1]:.4f} and leaves {d['other'][-1]:.4f}: E_{key} = {_fmt(e)} "
                     f"(90% bootstrap {_interval(arm[f'exhaustiveness_ci_{key}'][-1])}; tilt theta* = "
                     f"{d['theta'][-1]:.3g} towards {_vector(d['weights'][-1])}).")
    by = arm["decomposition_by_context"]["true"]
    lines.append(f"- where the rest is (R_true, nats/position): on the evidence persona's contexts "
                 f"{_fmt(by['evidence_persona']['other'], '.4f')}, on the others' {_fmt(by['other_personas']['other'], '.4f')}; "
                 f"early / middle / late positions {_fmt(by['early']['other'], '.4f')} / {_fmt(by['middle']['other'], '.4f')} / "
                 f"{_fmt(by['late']['other'], '.4f')}.")
    f, g = arm["forgetting"], arm["in_context_gamma"]
    if f["base_nll"] is not None:
        lines.append(f"- forgetting: NLL on the other personas' contexts {f['base_nll']:.4f} (base) -> "
                     f"{f['finetuned_nll']:.4f} (fine-tuned), Bayes mixture {f['bayes_nll']:.4f}.")
    lines.append(f"- in-context updating strength: gamma = {g['true']['gamma']:.3g} (R_true), "
                 f"{g['self']['gamma']:.3g} (R_self); 1 is Bayesian updating.")
    return lines


def _comparison(arms: list[dict[str, Any]]) -> list[str]:
    if len(arms) < 2:
        return []
    lines = ["## Across arms", ""]
    for key in ("true", "self"):
        ranked = sorted(arms, key=lambda a: -(a[f"exhaustiveness_{key}"][-1] or 0.0))
        order = " > ".join(f"`{a['arm']}` ({_fmt(a[f'exhaustiveness_{key}'][-1])})" for a in ranked)
        lines.append(f"- final exhaustiveness against R_{key}: {order}.")
    ranked = sorted(arms, key=lambda a: a["description_length_nats"])
    lines.append("- description length, smallest (most like elicitation) first: "
                 + ", ".join(f"`{a['arm']}` {a['description_length_nats']:.1f}" for a in ranked) + ".")
    return lines + [""]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _match(index: int, evidence: int | None) -> str:
    if evidence is None:
        return ""
    return " (the evidence persona)" if index == evidence else f" (not the evidence persona {evidence})"


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _interval(ci) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _vector(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"
