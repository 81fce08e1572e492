"""Figures of ``psm run`` kind ``hf`` (one reachable set, ``R_self``; personas named by their prompts).

Each returns a matplotlib ``Figure`` built with the object-oriented API; the caller saves it.
The training-loss figure is :func:`inference.experiment.plots.finetune_losses`, shared with ``psm run``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from inference.experiment.plots import OTHER, REWEIGHTING, decomposition_bars


def _nan(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def kl_curves(arm: dict[str, Any], curves: dict[str, Any], base: dict[str, Any]) -> Figure:
    """Distance of each snapshot to the base, to the conditioned R_self mixture and to R_self; ``beta*``."""
    steps = arm["steps"]
    fig = Figure(figsize=(11, 4.2))
    ax, bx = fig.subplots(1, 2)
    kl_b = np.asarray(curves["kl_by_beta"])  # [steps, betas]
    ax.plot(steps, arm["kl_to_base"], "o-", label=r"KL($q_s$ || $q_0$), kept vocabulary")
    ax.plot(steps, arm["kl_to_base_full_vocab"], "x:", label=r"KL($q_s$ || $q_0$), full vocabulary")
    ax.plot(steps, kl_b.min(1), "s-", label=r"KL($q_s$ || $p_{D,\beta^*}$): best conditioned $R_{self}$ mixture")
    ax.plot([0] + steps, [base["floor_self"]] + arm["residual_self"], "v-", label=r"residual onto $R_{self}$")
    ax.set(xlabel="fine-tuning step s", ylabel="nats per held-out position (log scale)", yscale="log")
    ax.set_title(f"arm {arm['arm']}: distance of each snapshot to ...", fontsize=10)
    ax.legend(fontsize=7)
    positive = [b for b in curves["betas"] if b > 0]
    bx.plot(steps, arm["beta_star"], "o-", label=r"$\beta^*(s)$")
    bx.set_yscale("symlog", linthresh=min(positive))
    bx.set(xlabel="fine-tuning step s", ylabel=r"$\beta^*(s)$ (symlog)", ylim=(0, max(positive)))
    bx.set_title(rf"evidence strength of $R_{{self}}$ conditioning ({arm['evidence_tokens']:,} tokens)", fontsize=10)
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def projection_weights(arm: dict[str, Any], base: dict[str, Any], names: list[str]) -> Figure:
    """Stacked areas of the projection weights ``w*(s)`` onto ``R_self`` over the steps."""
    steps = [0] + arm["steps"]
    w = np.asarray([base["projection_weights_self"]] + arm["projection_weights_self"])  # [steps, K]
    fig = Figure(figsize=(8.5, 4))
    ax = fig.subplots()
    labels = [name + (" (evidence)" if k == arm["evidence_persona"] else "") for k, name in enumerate(names)]
    ax.stackplot(steps, w.T, labels=labels, alpha=0.85)
    ax.set(xlabel="fine-tuning step s", ylabel=r"projection weight $w^*_h(s)$", ylim=(0, 1),
           xlim=(steps[0], steps[-1]))
    ax.set_title(f"arm {arm['arm']}: the prompted-persona mixture nearest each snapshot", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def exhaustiveness(arm: dict[str, Any]) -> Figure:
    """``E_self(s)`` with its bootstrap interval (left) and the decomposition of ``KL(q_s || q0)`` (right)."""
    steps = np.asarray(arm["steps"])
    fig = Figure(figsize=(10, 4.2))
    ax, bx = fig.subplots(1, 2)
    e = _nan(arm["exhaustiveness_self"])
    ci = np.asarray([_nan(pair) for pair in arm["exhaustiveness_ci_self"]], dtype=float).reshape(-1, 2)
    line, = ax.plot(steps, e, "s-", label=r"$E_{self}(s)$")
    ax.fill_between(steps, ci[:, 0], ci[:, 1], color=line.get_color(), alpha=0.2,
                    label=r"90% bootstrap interval of $E_{self}$")
    ax.set(xlabel="fine-tuning step s", ylabel=r"$E$ = re-weighting / KL($q_s$ || $q_0$)", ylim=(-0.02, 1.02))
    ax.set_title(f"arm {arm['arm']}: share of the change that is re-weighting", fontsize=10)
    ax.legend(fontsize=7)
    decomposition_bars(bx, steps, arm["decomposition_self"], "self")
    fig.tight_layout()
    return fig


def mechanisms(arm: dict[str, Any]) -> Figure:
    """Where the rest comes from (final snapshot): by context and position, and forgetting."""
    fig = Figure(figsize=(11, 4.2))
    ax, bx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    groups = ["evidence_persona", "other_personas", "early", "middle", "late"]
    labels = ["evidence\npersona", "other\ncontexts", "early\nt < 4", "middle", "late\nt >= 12"]
    by = arm["decomposition_by_context"]["self"]
    x = np.arange(len(groups))
    rw = _nan([by[g]["reweighting"] for g in groups])
    other = _nan([by[g]["other"] for g in groups])
    ax.bar(x, rw, 0.6, color=REWEIGHTING, label=r"re-weighting ($R_{self}$)")
    ax.bar(x, other, 0.6, bottom=rw, color=OTHER, label=r"the rest ($R_{self}$)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("nats per position (mean over the group)")
    gamma = arm["in_context_gamma"]["self"]["gamma"]
    ax.set_title(f"arm {arm['arm']}: the decomposition by held-out context (final step); "
                 f"in-context gamma {gamma:.2f}", fontsize=9)
    ax.legend(fontsize=7)
    forget = arm["forgetting"]
    values = _nan([forget["base_nll"], forget["finetuned_nll"]])
    bx.bar(["base", "fine-tuned"], values, color=["grey", "tab:red"], label="held-out NLL")
    if np.isfinite(values).any():
        bx.set_ylim(0.97 * np.nanmin(values), None)
    bx.set_ylabel("NLL per token (nats)")
    bx.set_title(f"forgetting: contexts not by the evidence persona ({forget['contexts']})", fontsize=9)
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


def next_token(curves: dict[str, Any], arm: dict[str, Any], top: int = 12) -> Figure:
    """The most probable next tokens of base, fine-tuned and nearest persona mixture, for one held-out context."""
    data = curves["next_token"]
    models = (("base", "base $q_0$"), ("finetuned", "fine-tuned $q_S$"),
              ("projection", r"nearest $R_{self}$ mixture $p_{w^*}$"))
    probs = np.stack([np.asarray(data[key], dtype=float) for key, _ in models])  # [3, W]
    order = np.argsort(-probs.max(0))[:top]
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    width = 0.27
    for j, (_, label) in enumerate(models):
        ax.bar(np.arange(len(order)) + (j - 1) * width, probs[j, order], width, label=label)
    ax.set_xticks(np.arange(len(order)), [repr(data["labels"][i])[1:-1][:12] for i in order], rotation=45,
                  fontsize=7, ha="right")
    ax.set(xlabel="next token", ylabel="probability")
    ax.set_title(f"arm {arm['arm']}: next token after ...{data['context'][-40:]!r}"[:110], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
