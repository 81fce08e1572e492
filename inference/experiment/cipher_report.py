"""The cipher experiment's outputs: the table over seeds, ``cells.csv``, ``table.csv``, ``report.md``
and the figures of :mod:`inference.experiment.cipher_plots`, written through
:func:`inference.storage.outputs.atomic_output_dir`. The findings in ``report.md`` are computed
from the numbers, never typed in.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from inference import diagnostics
from inference.experiment import cipher_plots
from inference.experiment.cipher_plots import share_label
from inference.storage.outputs import atomic_output_dir, to_jsonable, write_json_atomic

#: the per-cell numbers the table aggregates over seeds, and where each lives in a cell
SCALARS = {
    "tokens_to_target_finetune": lambda c: c["tokens_to_target_finetune"],
    "tokens_to_target_exact": lambda c: c["tokens_to_target_exact"],
    "exhaustiveness_true": lambda c: c["exhaustiveness_true"],
    "exhaustiveness_self": lambda c: c["exhaustiveness_self"],
    "beta_star": lambda c: c["beta_star"],
    "kl_to_base": lambda c: c["kl_to_base"],
    "description_length_nats": lambda c: c["description_length_nats"],
    "base_test_nll": lambda c: c["base_test_nll"],
    "finetuned_test_nll": lambda c: c["finetune_curve"]["nll"][-1],
    "conditioned_test_nll": lambda c: c["exact_curve"]["nll"][-1],
    "writer_nll": lambda c: c["writer_nll"],
    "posterior_on_writer": lambda c: c["exact_curve"]["posterior_on_writer"][-1],
    "skill_base_cipher": lambda c: c["probe"]["base"]["cipher"],
    "skill_base_plain": lambda c: c["probe"]["base"]["plain"],
    "skill_finetuned_cipher": lambda c: c["probe"]["finetuned"]["cipher"],
    "skill_finetuned_plain": lambda c: c["probe"]["finetuned"]["plain"],
    "skill_conditioned_cipher": lambda c: c["probe"]["conditioned"]["cipher"],
}


def scalars(cell: dict[str, Any]) -> dict[str, float | None]:
    """The numbers of one cell that the table aggregates (None: not reached or undefined)."""
    return {key: _number(get(cell)) for key, get in SCALARS.items()}


def aggregate(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``(share, arm)``: for every scalar its per-seed ``values``, and ``mean``, ``min``,
    ``max`` over the defined ones with ``defined`` (how many: tokens not reached and undefined ``E``
    are None)."""
    rows = []
    keys = sorted({(c["share"], c["arm"]) for c in cells}, key=lambda k: (k[0], k[1] != "cipher"))
    for share, arm in keys:
        group = [scalars(c) for c in cells if c["share"] == share and c["arm"] == arm]
        row: dict[str, Any] = {"share": share, "arm": arm, "seeds": len(group)}
        for key in SCALARS:
            values = [g[key] for g in group]
            finite = [v for v in values if v is not None]
            row[key] = {"values": values, "defined": len(finite),
                        "mean": float(np.mean(finite)) if finite else None,
                        "min": min(finite) if finite else None, "max": max(finite) if finite else None}
        rows.append(row)
    return rows


def _number(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def write_ciphers(summary: dict[str, Any], out: str | Path, overwrite: bool = False) -> list[str]:
    """Write every output into ``out`` (new or empty unless ``overwrite``); returns the file names."""
    with atomic_output_dir(out, overwrite) as tmp:
        figures = {"ciphers.png": cipher_plots.against_share(summary),
                   "nll_curves.png": cipher_plots.nll_curves(summary)}
        for name, fig in figures.items():
            fig.savefig(tmp / name, dpi=110)
            diagnostics.close_figure(fig)
        (tmp / "cells.csv").write_text(cells_csv(summary["cells"]))
        (tmp / "table.csv").write_text(table_csv(summary["table"]))
        write_json_atomic(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(report_markdown(to_jsonable(summary)))
    return [*figures, "cells.csv", "table.csv", "summary.json", "report.md"]


def cells_csv(cells: list[dict[str, Any]]) -> str:
    """One row per ``(share, seed, arm)``: every scalar of the table."""
    rows = [{"share": c["share"], "seed": c["seed"], "arm": c["arm"], "in_support": c["in_support"], **scalars(c)}
            for c in cells]
    return _csv(rows)


def table_csv(table: list[dict[str, Any]]) -> str:
    """One row per ``(share, arm)``: ``<scalar>_mean``, ``_min``, ``_max``, ``_defined``."""
    rows = []
    for row in table:
        flat = {"share": row["share"], "arm": row["arm"], "seeds": row["seeds"]}
        for key in SCALARS:
            flat |= {f"{key}_{stat}": row[key][stat] for stat in ("mean", "min", "max", "defined")}
        rows.append(flat)
    return _csv(rows)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- report


def report_markdown(summary: dict[str, Any]) -> str:
    """The report: setting, the table over seeds, the computed findings, the figures."""
    c = summary["config"]
    w, ci = c["world"], c["ciphers"]
    seeds = c["num_seeds"]
    lines = [
        "# Ciphers: selecting a persona the base knows, or teaching a new one?",
        "",
        f"World: {w['num_personas']} rule personas over {w['vocab_size']} tokens (bigram, and with probability "
        f"{w['rule_prob']} the token {w['lag']} back shifted by {w['rule_shift']}); ciphers "
        f"{', '.join(ci['names'])}; the evidence is persona {c['evidence']['persona']} written in "
        f"`{ci['evidence']}`. Shares f of enciphered pre-training documents: "
        f"{', '.join(share_label(f) for f in ci['shares'])}; {seeds} seed(s) each (a corpus, a base of "
        f"{summary['num_parameters']:,} parameters and evidence per seed). Ranges are min..max over seeds.",
        "",
        "| f | arm | tokens to target: fine-tuning | exact | E_true | E_self | beta* | description length (nats) "
        "| rule skill in cipher: fine-tuned | in plain | conditioned |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["table"]:
        lines.append(
            f"| {share_label(row['share'])} | {row['arm']} | {_tokens(row['tokens_to_target_finetune'])} | "
            f"{_tokens(row['tokens_to_target_exact'])} | {_stat(row['exhaustiveness_true'])} | "
            f"{_stat(row['exhaustiveness_self'])} | {_stat(row['beta_star'], '.2g')} | "
            f"{_stat(row['description_length_nats'], '.0f')} | {_stat(row['skill_finetuned_cipher'])} | "
            f"{_stat(row['skill_finetuned_plain'])} | {_stat(row['skill_conditioned_cipher'])} |")
    lines += ["", "## What came out", "", *findings(summary), "",
              "![each quantity against f](ciphers.png)", "", "![held-out NLL against evidence tokens](nll_curves.png)",
              "", f"Wall time {summary['timing']['seconds']:.0f} s (CPU time {summary['timing']['cpu_seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def findings(summary: dict[str, Any]) -> list[str]:
    """Sentences computed from the table (cipher arm unless said)."""
    rows = {(r["share"], r["arm"]): r for r in summary["table"]}
    shares = sorted({r["share"] for r in summary["table"]})
    out = []
    for f in shares:
        r = rows.get((f, "cipher"))
        if r is None:
            continue
        ft, ex = r["tokens_to_target_finetune"], r["tokens_to_target_exact"]
        out.append(
            f"- f = {share_label(f)}: evidence tokens to the target NLL: fine-tuning {_tokens(ft)} "
            f"(reached in {ft['defined']}/{r['seeds']} seeds), exact conditioning {_tokens(ex)} "
            f"({ex['defined']}/{r['seeds']}); E_true {_stat(r['exhaustiveness_true'])}, beta* "
            f"{_stat(r['beta_star'], '.2g')}; the fine-tuned model applies the rule in cipher with skill "
            f"{_stat(r['skill_finetuned_cipher'])} against {_stat(r['skill_finetuned_plain'])} in plain text.")
    ft = [rows[(f, "cipher")]["tokens_to_target_finetune"]["mean"] for f in shares if (f, "cipher") in rows]
    reached = [(f, v) for f, v in zip(shares, ft, strict=True) if v is not None]
    if len(reached) >= 2:
        trend = "fewer" if reached[-1][1] < reached[0][1] else "no fewer"
        out.append(f"- From f = {share_label(reached[0][0])} to {share_label(reached[-1][0])} fine-tuning needs "
                   f"{trend} evidence tokens ({reached[0][1]:.0f} -> {reached[-1][1]:.0f}, means over the seeds "
                   "that reach the target).")
    return out


def _stat(stat: dict[str, Any], spec: str = ".2f") -> str:
    if stat["mean"] is None:
        return "undefined"
    if stat["min"] == stat["max"]:
        return format(stat["mean"], spec)
    return f"{format(stat['mean'], spec)} ({format(stat['min'], spec)}..{format(stat['max'], spec)})"


def _tokens(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "not reached"
    text = _stat(stat, ".0f")
    missing = len(stat["values"]) - stat["defined"]
    return text + (f", not reached in {missing}" if missing else "")


def closing_lines(summary: dict[str, Any], out, names: list[str]) -> str:
    """What ``psm run`` prints: the time, the files, and one line per share for the cipher arm."""
    lines = [f"ran the cipher experiment ({len(summary['cells'])} cells) in {summary['timing']['seconds']:.1f} s; "
             f"wrote {len(names)} files to {out}/:",
             f"  {out}/summary.json  (every number)", f"  {out}/report.md  (table, findings and figures)"]
    for row in summary["table"]:
        if row["arm"] == "cipher":
            lines.append(f"  f={share_label(row['share'])}: tokens to target fine-tuning "
                         f"{_tokens(row['tokens_to_target_finetune'])}, exact {_tokens(row['tokens_to_target_exact'])}; "
                         f"E_true={_stat(row['exhaustiveness_true'])}; rule skill in cipher "
                         f"{_stat(row['skill_finetuned_cipher'])}")
    return "\n".join(lines)
