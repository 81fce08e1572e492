"""Writing the outputs of ``psm run`` kind ``hf``: ``summary.json``, ``report.md``, figures,
the attribution's InferenceData and the held-out ELPD table.

Everything is written into a temporary folder and moved into place only when the whole run
succeeded (:func:`inference.storage.outputs.atomic_output_dir`). The findings in ``report.md``
are computed from the summary, never typed in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from inference import diagnostics
from inference.experiment import hf_plots, plots
from inference.storage.outputs import atomic_output_dir, to_jsonable, write_json_atomic


def write_hf_experiment(summary: dict[str, Any], curves: dict[str, Any], out: str | Path,
                        overwrite: bool = False) -> list[str]:
    """Write every output of a kind-``hf`` run into ``out``; returns the file names."""
    arm, base, names = summary["arms"][0], summary["base"], summary["personas"]
    a = arm["arm"]
    with atomic_output_dir(out, overwrite) as tmp:
        figures = {
            f"{a}_kl.png": hf_plots.kl_curves(arm, curves, base),
            f"{a}_projection.png": hf_plots.projection_weights(arm, base, names),
            f"{a}_exhaustiveness.png": hf_plots.exhaustiveness(arm),
            f"{a}_mechanisms.png": hf_plots.mechanisms(arm),
            f"{a}_next_token.png": hf_plots.next_token(curves, arm),
            f"{a}_finetune_loss.png": plots.finetune_losses(curves, arm),
        }
        attribution = curves.get("attribution")
        if attribution is not None:
            figures[f"{a}_attribution_rank.png"] = diagnostics.plot_rank(
                attribution, ["w"], title=f"arm {a}: attribution NUTS chains (rank plot of w)")
            figures[f"{a}_attribution_ppc.png"] = diagnostics.plot_attribution_ppc(
                attribution, title=f"arm {a}: completion tokens against the attributed persona mixture")
        written = []
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)
            diagnostics.close_figure(fig)
            written.append(name)
        if attribution is not None:
            diagnostics.save_netcdf(attribution, tmp / f"{a}_attribution.nc")
            written.append(f"{a}_attribution.nc")
        if curves.get("elpd_table") is not None:
            (tmp / f"{a}_elpd.csv").write_text(curves["elpd_table"].to_csv())
            written.append(f"{a}_elpd.csv")
        write_json_atomic(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(report_markdown(to_jsonable(summary), curves, sorted(figures)))
        written += ["summary.json", "report.md"]
    return written


def report_markdown(summary: dict[str, Any], curves: dict[str, Any], figures: list[str]) -> str:
    """The report: model and data, the base, the fine-tuning cost, the comparisons, what is left out."""
    m, d, b, t = summary["model"], summary["data"], summary["base"], summary["training"]
    arm, names = summary["arms"][0], summary["personas"]
    voc = b["vocabulary"]
    who = d["evidence_persona"] or "a writer not named among the personas (data.evidence_persona is unset)"
    lines = [
        "# Does fine-tuning a real LM re-weight the personas it already had?",
        "",
        f"Model: `{m['class']}`, {m['num_parameters']:,} parameters, vocabulary {m['vocab_size']:,}, on "
        f"`{m['device']}`. Personas (prompts): {', '.join(f'`{n}`' for n in names)}.",
        "",
        f"Evidence: {d['evidence_docs']} chunks, {d['evidence_tokens']:,} evidence tokens, written by {who}. "
        f"Held-out: {d['heldout_contexts']} contexts of {d['heldout_tokens']} tokens by "
        + ", ".join(f"{k or 'unknown'} ({v})" for k, v in d["heldout_writers"].items()) + ".",
        "",
        "## Base model",
        "",
        f"- held-out NLL {b['heldout_nll']:.4f} nats/token; distance to the nearest mixture of its own "
        f"prompted personas (floor r(0) onto R_self) {b['floor_self']:.4f} nats, with weights "
        f"{_weights(b['projection_weights_self'], names)}.",
        f"- comparisons read next-token distributions over {voc['kept']:,} kept tokens"
        + (f" plus one rest column (the base puts {voc['rest_mass_base']['mean']:.3f} of its mass there on "
           f"average, at most {voc['rest_mass_base']['max']:.3f})" if voc["rest_column"] else " (the full vocabulary)")
        + "; a KL on kept tokens is a lower bound on the full one.",
        "",
        "## Fine-tuning",
        "",
        f"- {t['method']} ({t['trainable_parameters']:,} trainable parameters), {t['steps']} steps on `{t['device']}` "
        f"(autocast {t['autocast'] or 'off'}): {_fmt(t['seconds_per_step'], '.3g')} s per step, peak memory "
        f"{_megabytes(t['peak_memory_bytes'])} ({t['memory_kind']}); final training loss "
        f"{arm['final_training_loss']:.4f}.",
        "",
        *_comparison_lines(arm, names, curves),
        "",
        *[f"![{name[:-4]}]({name})" for name in figures],
        "",
        "## Not measured for a real LM",
        "",
        *[f"- {key}: {why}." for key, why in summary["not_measured"].items()],
        "",
    ]
    return "\n".join(lines) + "\n"


def _comparison_lines(arm: dict[str, Any], names: list[str], curves: dict[str, Any]) -> list[str]:
    s = arm["steps"][-1]
    d, e = arm["decomposition_self"], arm["exhaustiveness_self"][-1]
    w = arm["projection_weights_self"][-1]
    lines = [
        "## Comparisons",
        "",
        f"After {s} steps:",
        "",
        f"- the fine-tuned model moved {arm['kl_to_base'][-1]:.4f} nats/position from the base on kept tokens "
        f"({arm['kl_to_base_full_vocab'][-1]:.4f} over the full vocabulary); conditioning the base's persona "
        f"mixture on the evidence comes nearest at beta* = {_fmt(arm['beta_star'][-1], '.3g')} (KL "
        f"{min(curves['kl_by_beta'][-1]):.4f}).",
        f"- projection onto R_self: {_weights(w, names)}; residual {arm['residual_self'][-1]:.4f}.",
    ]
    if e is None:
        lines.append(f"- E_self is undefined: {d['reason'][-1]}.")
    else:
        lines.append(f"- of KL(q_s || q0) = {d['total'][-1]:.4f}, re-weighting the prompted personas explains "
                     f"{d['reweighting'][-1]:.4f} and leaves {d['other'][-1]:.4f}: E_self = {e:.3f} (90% bootstrap "
                     f"[{_fmt(arm['exhaustiveness_ci_self'][-1][0])}, {_fmt(arm['exhaustiveness_ci_self'][-1][1])}]; "
                     f"tilt theta* = {d['theta'][-1]:.3g}).")
    by, f = arm["decomposition_by_context"]["self"], arm["forgetting"]
    lines.append(f"- where the rest is (nats/position): evidence persona's contexts "
                 f"{_fmt(by['evidence_persona']['other'], '.4f')}, other contexts {_fmt(by['other_personas']['other'], '.4f')}; "
                 f"early / middle / late {_fmt(by['early']['other'], '.4f')} / {_fmt(by['middle']['other'], '.4f')} / "
                 f"{_fmt(by['late']['other'], '.4f')}; in-context gamma "
                 f"{arm['in_context_gamma']['self']['gamma']:.3g} (1 is Bayesian updating).")
    if f["base_nll"] is not None:
        lines.append(f"- forgetting: NLL on the contexts not by the evidence persona {f['base_nll']:.4f} (base) -> "
                     f"{f['finetuned_nll']:.4f} (fine-tuned).")
    att = arm["attribution"]
    if att is not None:
        lines.append(f"- Bayesian attribution of the fine-tuned model's completions (NUTS, R-hat {att['r_hat_max']:.3f}, "
                     f"ESS {att['ess_min']:.0f}): E[w] = {_weights(att['weights_mean'], names)}.")
    elpd = arm["heldout_elpd"]
    if elpd:
        best = max(elpd, key=lambda k: elpd[k] if elpd[k] is not None else -math.inf)
        lines.append(f"- held-out ELPD on fresh evidence: best `{best}` ({elpd[best]:.1f}); fine-tuned "
                     f"{elpd['finetuned']:.1f}, base {elpd['base']:.1f}, nearest persona mixture "
                     f"{elpd['self_projection']:.1f}.")
    if arm["description_length_nats"] is not None:
        lines.append(f"- description length (prequential code minus n x final loss): "
                     f"{arm['description_length_nats']:.1f} nats.")
    return lines


def _weights(values: list[float], names: list[str]) -> str:
    return ", ".join(f"{n} {v:.2f}" for n, v in zip(names, values, strict=True))


def _fmt(x, spec: str = ".3f") -> str:
    return "undefined" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _megabytes(n) -> str:
    return "unknown" if n is None else f"{n / 2**20:,.0f} MiB"
