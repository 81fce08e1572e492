"""Figures of the comparison (matplotlib). Each returns a Figure; the caller saves it.

ArviZ figures (trace, rank, posterior predictive checks) live in
:mod:`inference.diagnostics`, the one module that calls ArviZ.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def kl_curves(arm: dict[str, Any], curves: dict[str, Any], base: dict[str, Any]) -> Figure:
    """KL of each snapshot to the base and to the conditioned predictive; residuals; ``beta*``."""
    steps = arm["steps"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 3.9))
    kl_b = np.asarray(curves["kl_by_beta"])  # [steps, betas]
    ax.plot(steps, arm["kl_to_base"], "o-", label=r"KL($q_s$ || $q_0$): change from the base")
    ax.plot(steps, kl_b.min(1), "s-", label=r"KL($q_s$ || $p_{D,\beta^*}$): best conditioned model")
    ax.plot(steps, curves["kl_to_conditioned_beta1"], "^--", label=r"KL($q_s$ || $p_{D,\beta=1}$): exact Bayes")
    ax.plot([0] + steps, [base["floor_true"]] + arm["residual_true"], "d-", label=r"residual $r_{true}(s)$")
    ax.plot([0] + steps, [base["floor_self"]] + arm["residual_self"], "v-", label=r"residual $r_{self}(s)$")
    ax.set(xlabel="fine-tuning step s", ylabel="nats per held-out position (log scale)", yscale="log",
           title=f"arm {arm['arm']}: how far each snapshot is from ...")
    ax.legend(fontsize=7)
    positive = [b for b in curves["betas"] if b > 0]
    bx.plot(steps, arm["beta_star"], "o-")
    bx.set_yscale("symlog", linthresh=min(positive))
    bx.set(xlabel="fine-tuning step s", ylabel=r"$\beta^*(s)$ (symlog)", ylim=(0, max(positive)),
           title=rf"fitted evidence strength ($n$ = {arm['evidence_tokens']:,} tokens)")
    fig.tight_layout()
    return fig


def projection_weights(arm: dict[str, Any], base: dict[str, Any]) -> Figure:
    """Stacked areas of the projection weights ``w*(s)`` over steps, for ``R_true`` and ``R_self``."""
    steps = [0] + arm["steps"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, key, title in ((axes[0], "true", r"$R_{true}$ (true personas)"), (axes[1], "self", r"$R_{self}$ (base prompted with tags)")):
        w = np.asarray([base[f"projection_weights_{key}"]] + arm[f"projection_weights_{key}"])  # [steps, K]
        labels = [f"persona {k}" + (" (evidence)" if k == arm["evidence_persona"] else "") for k in range(w.shape[1])]
        ax.stackplot(steps, w.T, labels=labels, alpha=0.85)
        ax.set(xlabel="fine-tuning step s", title=title, ylim=(0, 1), xlim=(steps[0], steps[-1]))
    axes[0].set_ylabel(r"projection weight $w^*_h(s)$")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"arm {arm['arm']}: which persona mixture is the fine-tuned model closest to?")
    fig.tight_layout()
    return fig


def exhaustiveness(arm: dict[str, Any]) -> Figure:
    """``E(s)`` with its bootstrap interval for both reachable sets."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, marker in (("true", "o"), ("self", "s")):
        e = np.asarray(arm[f"exhaustiveness_{key}"], dtype=float)
        ci = np.asarray(arm[f"exhaustiveness_ci_{key}"], dtype=float)
        ax.plot(arm["steps"], e, marker + "-", label=rf"$E_{{{key}}}(s)$")
        ax.fill_between(arm["steps"], ci[:, 0], ci[:, 1], alpha=0.25)
    ax.set(xlabel="fine-tuning step s", ylabel="exhaustiveness E", ylim=(-0.02, 1.02),
           title=f"arm {arm['arm']}: share of the change persona re-weighting explains")
    ax.axhline(1, color="grey", lw=0.5)
    ax.legend()
    fig.tight_layout()
    return fig


def next_token(curves: dict[str, Any], arm: dict[str, Any], position: int = 10) -> Figure:
    """Next-token distributions of base, fine-tuned and conditioned models for a few held-out contexts."""
    data = curves["next_token"]
    contexts = np.asarray(data["contexts"])
    n, T = contexts.shape
    t = min(position, T - 1)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), sharey=True)
    axes = np.atleast_1d(axes)
    V = np.asarray(data["base"]).shape[-1]
    width = 0.28
    for i, ax in enumerate(axes):
        for j, (key, label) in enumerate((("base", "base $q_0$"), ("finetuned", "fine-tuned $q_S$"),
                                          ("conditioned", rf"conditioned $\beta$={data['beta']:g}"))):
            ax.bar(np.arange(V) + (j - 1) * width, np.exp(np.asarray(data[key])[i, t]), width, label=label)
        ax.set(xlabel="next token", title=f"context {i}, after '{' '.join(map(str, contexts[i, max(0, t - 4):t]))}'")
    axes[0].set_ylabel("probability")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"arm {arm['arm']}: next-token distributions at position {t}")
    fig.tight_layout()
    return fig


def finetune_losses(curves: dict[str, Any], arm: dict[str, Any]) -> Figure:
    """Training loss of the fine-tuning run."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(curves["finetune_losses"]) + 1), curves["finetune_losses"])
    ax.set(xlabel="step", ylabel="masked NLL per token", title=f"arm {arm['arm']}: fine-tuning loss")
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
