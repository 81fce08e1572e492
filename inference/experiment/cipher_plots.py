"""Figures of the cipher experiment (matplotlib OO API, no pyplot state).

:func:`against_share`: every measured quantity against the share ``f`` of enciphered pre-training
documents, on a log axis with ``f = 0`` set apart at its left end; one dot per seed, the mean as a
line and the range over seeds as a band. :func:`nll_curves`: held-out NLL against evidence tokens
for every ``f``, fine-tuning and exact conditioning, with the target.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

#: arm -> (colour, label)
ARM_STYLE = {"cipher": ("tab:red", "evidence in cipher"), "plain": ("tab:blue", "plain control")}


def share_label(f: float) -> str:
    """``0``, ``0.1%``, ``1%``, ``10%``."""
    return "0" if f == 0 else f"{100 * f:g}%"


def share_positions(shares: list[float]) -> dict[float, float]:
    """x position of each share: ``log10 f``, and ``f = 0`` one decade left of the smallest positive share."""
    positive = [f for f in shares if f > 0]
    low = math.log10(min(positive)) if positive else 0.0
    return {f: (math.log10(f) if f > 0 else low - 1.0) for f in shares}


def _series(summary: dict[str, Any], arm: str, key: str) -> tuple[list[float], list[list[float | None]]]:
    rows = sorted((r for r in summary["table"] if r["arm"] == arm), key=lambda r: r["share"])
    return [r["share"] for r in rows], [r[key]["values"] for r in rows]


def _plot_quantity(ax, summary: dict[str, Any], pos: dict[float, float], key: str, arm: str, colour: str,
                   label: str, linestyle: str = "-") -> None:
    """Dots per seed, the mean line and the min..max band of one quantity of one arm."""
    shares, values = _series(summary, arm, key)
    xs, means, lows, highs = [], [], [], []
    for f, vals in zip(shares, values, strict=True):
        finite = [v for v in vals if v is not None]
        if not finite:
            continue
        xs.append(pos[f])
        means.append(np.mean(finite))
        lows.append(min(finite))
        highs.append(max(finite))
        ax.plot([pos[f]] * len(finite), finite, "o", color=colour, alpha=0.45, markersize=3.5)
    if xs:
        ax.plot(xs, means, linestyle, color=colour, label=f"{label} (mean)")
        ax.fill_between(xs, lows, highs, color=colour, alpha=0.15, label=f"{label} (range over seeds)")


def _share_axis(ax, pos: dict[float, float], ylabel: str, title: str) -> None:
    ax.set_xticks(list(pos.values()), [share_label(f) for f in pos])
    ax.set(xlabel="share f of enciphered pre-training documents (log; 0 apart)", ylabel=ylabel, title=title)
    ax.legend(fontsize=6.5, loc="best")


def against_share(summary: dict[str, Any]) -> Figure:
    """Each quantity of the table against ``f`` (module docstring)."""
    pos = share_positions(sorted({r["share"] for r in summary["table"]}))
    fig = Figure(figsize=(15, 8.5))
    axes = fig.subplots(2, 3).flatten()
    ax = axes[0]
    _plot_quantity(ax, summary, pos, "tokens_to_target_finetune", "cipher", "tab:red", "fine-tuning, cipher")
    _plot_quantity(ax, summary, pos, "tokens_to_target_exact", "cipher", "black", "exact conditioning, cipher", "--")
    _plot_quantity(ax, summary, pos, "tokens_to_target_finetune", "plain", "tab:blue", "fine-tuning, plain")
    ax.set_yscale("symlog", linthresh=10)  # 0: no evidence needed
    _not_reached(ax, summary, pos)
    _share_axis(ax, pos, "evidence tokens to reach the target NLL (0: none)", "Data needed to reach the target NLL")
    for ax, key, title in ((axes[1], "exhaustiveness_true", "E against R_true (true personas)"),
                           (axes[2], "exhaustiveness_self", "E against R_self (the base's own tags)")):
        for arm, (colour, label) in ARM_STYLE.items():
            _plot_quantity(ax, summary, pos, key, arm, colour, label)
        ax.set_ylim(-0.05, 1.05)
        _share_axis(ax, pos, "E = re-weighting share of KL(q_s || q0)", title)
    ax = axes[3]
    for arm, (colour, label) in ARM_STYLE.items():
        _plot_quantity(ax, summary, pos, "beta_star", arm, colour, label)
    ax.set_yscale("symlog", linthresh=1e-4)
    _share_axis(ax, pos, "beta* (evidence strength that fits best)", "Evidence strength beta*")
    ax = axes[4]
    for arm, (colour, label) in ARM_STYLE.items():
        _plot_quantity(ax, summary, pos, "description_length_nats", arm, colour, label)
    _share_axis(ax, pos, "description length (nats)", "Description length of the largest evidence set")
    ax = axes[5]
    _plot_quantity(ax, summary, pos, "skill_finetuned_cipher", "cipher", "tab:red", "fine-tuned, in cipher")
    _plot_quantity(ax, summary, pos, "skill_finetuned_plain", "cipher", "tab:blue", "fine-tuned, in plain text")
    _plot_quantity(ax, summary, pos, "skill_base_cipher", "cipher", "tab:gray", "base, in cipher", ":")
    _plot_quantity(ax, summary, pos, "skill_conditioned_cipher", "cipher", "black", "exact conditioning, in cipher",
                   "--")
    ax.axhline(1.0, color="0.6", linewidth=0.8)
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    _share_axis(ax, pos, "rule skill (1: as the persona, 0: no rule)", "Reasoning in cipher: the rule probe")
    fig.suptitle(f"Ciphers: evidence in {summary['config']['ciphers']['evidence']} against the share f in "
                 f"pre-training ({summary['config']['num_seeds']} seed(s) per f)")
    fig.tight_layout()
    return fig


def _not_reached(ax, summary: dict[str, Any], pos: dict[float, float]) -> None:
    """Mark seeds whose fine-tuning never reached the target (at the largest evidence size)."""
    top = max(summary["config"]["evidence"]["sizes"]) * summary["config"]["world"]["doc_len"]
    shares, values = _series(summary, "cipher", "tokens_to_target_finetune")
    missed = [(pos[f], sum(v is None for v in vals)) for f, vals in zip(shares, values, strict=True)]
    xs = [x for x, n in missed if n]
    if xs:
        ax.plot(xs, [top * 1.5] * len(xs), "^", color="tab:red", label=f"not reached within {top} tokens")


def nll_curves(summary: dict[str, Any]) -> Figure:
    """Cipher arm, one column per ``f``: held-out NLL (top) and the rule skill (bottom) against evidence tokens,
    means over seeds with the range as a band."""
    shares = sorted({c["share"] for c in summary["cells"]})
    fig = Figure(figsize=(4.2 * len(shares), 7.2))
    axes = np.asarray(fig.subplots(2, len(shares), sharey="row", squeeze=False))
    for column, f in enumerate(shares):
        cells = [c for c in summary["cells"] if c["share"] == f and c["arm"] == "cipher"]
        ax = axes[0, column]
        for key, colour, label in (("finetune_curve", "tab:red", "fine-tuning"),
                                   ("exact_curve", "black", "exact conditioning")):
            _band(ax, cells[0][key]["tokens"], [c[key]["nll"] for c in cells], colour, label)
        ax.axhline(np.mean([c["target_nll"] for c in cells]), color="tab:green", linestyle=":", label="target NLL")
        ax.axhline(np.mean([c["base_test_nll"] for c in cells]), color="tab:gray", linestyle="--", label="base")
        ax.set_xscale("log")
        ax.set(title=f"f = {share_label(f)}", xlabel="evidence tokens", ylabel="held-out NLL in cipher (nats/token)")
        ax.legend(fontsize=6.5)
        ax = axes[1, column]
        tokens = cells[0]["finetune_curve"]["tokens"]
        _band(ax, tokens, [c["finetune_curve"]["skill_cipher"] for c in cells], "tab:red", "fine-tuned, in cipher")
        _band(ax, tokens, [c["finetune_curve"]["skill_plain"] for c in cells], "tab:blue", "fine-tuned, in plain text")
        ax.axhline(np.mean([c["probe"]["base"]["cipher"] for c in cells]), color="tab:gray", linestyle=":",
                   label="base, in cipher")
        ax.axhline(np.mean([c["probe"]["conditioned"]["cipher"] for c in cells]), color="black", linestyle="--",
                   label="exact conditioning, in cipher (largest set)")
        ax.set_xscale("log")
        ax.set(xlabel="evidence tokens (in cipher)", ylabel="rule skill (1: as the persona)")
        ax.legend(fontsize=6.5)
    fig.suptitle("The evidence persona's enciphered text: held-out NLL and the rule probe against evidence size")
    fig.tight_layout()
    return fig


def _band(ax, x: list[float], rows: list[list[float]], colour: str, label: str) -> None:
    """Mean line and min..max band over seeds of curves on a log x axis (the 0-token point is left out)."""
    keep = np.asarray(x) > 0
    x = np.asarray(x)[keep]
    values = np.asarray(rows, dtype=np.float64)[:, keep]  # [seeds, sizes]
    ax.plot(x, values.mean(0), "-o", color=colour, markersize=3, label=f"{label} (mean)")
    if values.shape[0] > 1:
        ax.fill_between(x, values.min(0), values.max(0), color=colour, alpha=0.15, label=f"{label} (range over seeds)")
