"""Figures of the comparison. Each returns a matplotlib ``Figure``; the caller saves it.

Built with the object-oriented API (``matplotlib.figure.Figure``): nothing global is touched,
no backend is chosen, no pyplot state is left behind. ArviZ figures (rank plots, posterior
predictive checks) live in :mod:`inference.diagnostics`, the one module that calls ArviZ.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

#: colours of the two terms of the decomposition
REWEIGHTING, OTHER = "tab:blue", "tab:orange"


def kl_curves(arm: dict[str, Any], curves: dict[str, Any], base: dict[str, Any]) -> Figure:
    """KL of each snapshot to the base and to the conditioned predictive; residuals; ``beta*``."""
    steps = arm["steps"]
    fig = Figure(figsize=(11, 4.2))
    ax, bx = fig.subplots(1, 2)
    kl_b = np.asarray(curves["kl_by_beta"])  # [steps, betas]
    ax.plot(steps, arm["kl_to_base"], "o-", label=r"KL($q_s$ || $q_0$): change from the base")
    ax.plot(steps, kl_b.min(1), "s-", label=r"KL($q_s$ || $p_{D,\beta^*}$): best conditioned model")
    ax.plot(steps, curves["kl_to_conditioned_beta1"], "^--", label=r"KL($q_s$ || $p_{D,\beta=1}$): exact Bayes")
    ax.plot([0] + steps, [base["floor_true"]] + arm["residual_true"], "d-", label=r"residual onto $R_{true}$")
    ax.plot([0] + steps, [base["floor_self"]] + arm["residual_self"], "v-", label=r"residual onto $R_{self}$")
    ax.set(xlabel="fine-tuning step s", ylabel="nats per held-out position (log scale)", yscale="log")
    ax.set_title(f"arm {arm['arm']}: distance of each snapshot to ...", fontsize=10)
    ax.legend(fontsize=7)
    positive = [b for b in curves["betas"] if b > 0]
    bx.plot(steps, arm["beta_star"], "o-")
    bx.set_yscale("symlog", linthresh=min(positive))
    bx.set(xlabel="fine-tuning step s", ylabel=r"$\beta^*(s)$ (symlog)", ylim=(0, max(positive)))
    bx.set_title(rf"fitted evidence strength ($n$ = {arm['evidence_tokens']:,} tokens)", fontsize=10)
    fig.tight_layout()
    return fig


def projection_weights(arm: dict[str, Any], base: dict[str, Any]) -> Figure:
    """Stacked areas of the projection weights ``w*(s)`` over steps, for ``R_true`` and ``R_self``."""
    steps = [0] + arm["steps"]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, title in ((axes[0], "true", r"$R_{true}$ (true personas)"),
                           (axes[1], "self", r"$R_{self}$ (base prompted with tags)")):
        w = np.asarray([base[f"projection_weights_{key}"]] + arm[f"projection_weights_{key}"])  # [steps, K]
        labels = [f"persona {k}" + (" (evidence)" if k == arm["evidence_persona"] else "") for k in range(w.shape[1])]
        ax.stackplot(steps, w.T, labels=labels, alpha=0.85)
        ax.set(xlabel="fine-tuning step s", ylim=(0, 1), xlim=(steps[0], steps[-1]))
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel(r"projection weight $w^*_h(s)$")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"arm {arm['arm']}: the persona mixture nearest each snapshot", fontsize=11)
    fig.tight_layout()
    return fig


def exhaustiveness(arm: dict[str, Any]) -> Figure:
    """``E(s)`` with its bootstrap interval (left) and the decomposition of ``KL(q_s || q0)`` (right)."""
    steps = np.asarray(arm["steps"])
    fig = Figure(figsize=(12, 4.2))
    ax, bx, cx = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.2, 1, 1]})
    for key, marker in (("true", "o"), ("self", "s")):
        e = np.asarray([np.nan if v is None else v for v in arm[f"exhaustiveness_{key}"]], dtype=float)
        ci = np.asarray([[np.nan if v is None else v for v in pair] for pair in arm[f"exhaustiveness_ci_{key}"]],
                        dtype=float)
        line, = ax.plot(steps, e, marker + "-", label=rf"$E_{{{key}}}(s)$")
        ax.fill_between(steps, ci[:, 0], ci[:, 1], color=line.get_color(), alpha=0.2,
                        label=rf"90% bootstrap interval of $E_{{{key}}}$")
    ax.set(xlabel="fine-tuning step s", ylabel=r"$E$ = re-weighting / KL($q_s$ || $q_0$)", ylim=(-0.02, 1.02))
    ax.set_title(f"arm {arm['arm']}: share of the change that is re-weighting", fontsize=10)
    ax.legend(fontsize=7)
    for axis, key in ((bx, "true"), (cx, "self")):
        decomposition_bars(axis, steps, arm[f"decomposition_{key}"], key)
    fig.tight_layout()
    return fig


def decomposition_bars(axis, steps: list[int], decomposition: dict[str, list], key: str) -> None:
    """Stacked bars per snapshot: re-weighting ``KL(q* || q0)`` under the rest ``KL(q_s || q*)`` (against ``R_key``)."""
    width = 0.8 * (np.min(np.diff(steps)) if len(steps) > 1 else 1.0)
    axis.bar(steps, decomposition["reweighting"], width, color=REWEIGHTING, label=r"re-weighting KL($q^*$ || $q_0$)")
    axis.bar(steps, decomposition["other"], width, bottom=decomposition["reweighting"], color=OTHER,
             label=r"the rest KL($q_s$ || $q^*$)")
    axis.set(xlabel="fine-tuning step s", ylabel=r"KL($q_s$ || $q_0$), nats per position")
    axis.set_title(rf"decomposition against $R_{{{key}}}$", fontsize=10)
    axis.legend(fontsize=7)


def mechanisms(arm: dict[str, Any]) -> Figure:
    """Where the rest comes from (final snapshot): by context and position, forgetting, ``gamma``."""
    fig = Figure(figsize=(12, 4.2))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    groups = ["evidence_persona", "other_personas", "early", "middle", "late"]
    labels = ["evidence\npersona", "other\npersonas", "early\nt < 4", "middle", "late\nt >= 12"]
    x = np.arange(len(groups))
    for offset, key, hatch in ((-0.2, "true", ""), (0.2, "self", "//")):
        by = arm["decomposition_by_context"][key]
        rw = np.asarray([by[g]["reweighting"] for g in groups], dtype=float)
        other = np.asarray([by[g]["other"] for g in groups], dtype=float)
        ax.bar(x + offset, rw, 0.38, color=REWEIGHTING, hatch=hatch, edgecolor="white",
               label=rf"re-weighting ($R_{{{key}}}$)")
        ax.bar(x + offset, other, 0.38, bottom=rw, color=OTHER, hatch=hatch, edgecolor="white",
               label=rf"the rest ($R_{{{key}}}$)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("nats per position (mean over the group)")
    gamma = arm["in_context_gamma"]
    ax.set_title(f"arm {arm['arm']}: the decomposition by held-out context (final step); in-context "
                 f"gamma {gamma['true']['gamma']:.2f} (true), {gamma['self']['gamma']:.2f} (self)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    forget = arm["forgetting"]
    names = ["base", "fine-tuned", "Bayes mixture"]
    values = [forget["base_nll"], forget["finetuned_nll"], forget["bayes_nll"]]
    bx.bar(names, [np.nan if v is None else v for v in values], color=["grey", "tab:red", "tab:green"])
    low = min(v for v in values if v is not None) if any(v is not None for v in values) else 0.0
    bx.set_ylim(0.97 * low, None)
    bx.set_ylabel("NLL per token (nats)")
    bx.set_title(f"forgetting: the other personas' contexts ({forget['contexts']} contexts)", fontsize=9)
    fig.tight_layout()
    return fig


def next_token(curves: dict[str, Any], arm: dict[str, Any], position: int = 10) -> Figure:
    """Next-token distributions of base, fine-tuned and conditioned models for a few held-out contexts."""
    data = curves["next_token"]
    contexts = np.asarray(data["contexts"])
    n, T = contexts.shape
    t = min(position, T - 1)
    fig = Figure(figsize=(4.2 * n, 3.6))
    axes = np.atleast_1d(fig.subplots(1, n, sharey=True))
    V = np.asarray(data["base"]).shape[-1]
    width = 0.28
    for i, ax in enumerate(axes):
        for j, (key, label) in enumerate((("base", "base $q_0$"), ("finetuned", "fine-tuned $q_S$"),
                                          ("conditioned", rf"conditioned $\beta$={data['beta']:g}"))):
            ax.bar(np.arange(V) + (j - 1) * width, np.exp(np.asarray(data[key])[i, t]), width, label=label)
        ax.set(xlabel="next token")
        ax.set_title(f"context {i}, after '{' '.join(map(str, contexts[i, max(0, t - 4):t]))}'", fontsize=9)
    axes[0].set_ylabel("probability")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"arm {arm['arm']}: next-token distributions at position {t}", fontsize=11)
    fig.tight_layout()
    return fig


def finetune_losses(curves: dict[str, Any], arm: dict[str, Any]) -> Figure:
    """Training loss of the fine-tuning run."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.plot(np.arange(1, len(curves["finetune_losses"]) + 1), curves["finetune_losses"])
    ax.set(xlabel="step", ylabel="masked NLL per evidence token")
    ax.set_title(f"arm {arm['arm']}: fine-tuning loss", fontsize=10)
    fig.tight_layout()
    return fig
