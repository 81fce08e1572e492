"""Running a sweep into a folder that survives being killed, and what it writes.

    DIR/sweep.json          the sweep (experiment, grid, measurement settings)
    DIR/points/<id>.json    each finished point: its settings and rows (written as it finishes)
    DIR/sweep.csv           one row per point and arm (:data:`~inference.experiment.sweep.COLUMNS`)
    DIR/sweep_table.md      medians and ranges over seeds, per setting and arm
    DIR/sweep_E_vs_kl.png   E against KL(q_s || q0), coloured by method
    DIR/sweep_E_vs_size.png E against the number of evidence documents

A new sweep needs a new or empty ``DIR`` (or ``overwrite``, which deletes it first); ``resume``
continues in a ``DIR`` holding the same sweep, skipping the finished points.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from inference.experiment.sweep import COLUMNS, GRID_KEYS, SweepConfig, run_points
from inference.storage.outputs import check_output_dir, write_json_atomic
from models.errors import InputError


def run_sweep(config: SweepConfig, out: str | Path, *, executor: str = "auto", address: str | None = None,
              resume: bool = False, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Run every unfinished point of ``config`` into ``out`` and merge; returns counts and wall time."""
    import time

    out = _prepare(config, Path(out), resume, overwrite)
    points = config.points()
    done = {p.stem for p in (out / "points").glob("*.json")}
    todo = [p for p in points if p["point"] not in done]
    start = time.perf_counter()

    def save(point: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        write_json_atomic(out / "points" / f"{point['point']}.json", {"point": point, "rows": rows})

    used = run_points(config, todo, executor, address, on_done=save, progress=progress) if todo else "none"
    rows = merged_rows(config, out)
    write_outputs(rows, out)
    failed = sum(1 for r in rows if r["error"])
    return {"points": len(points), "ran": len(todo), "skipped": len(points) - len(todo), "rows": len(rows),
            "failed_rows": failed, "executor": used, "seconds": time.perf_counter() - start}


def _prepare(config: SweepConfig, out: Path, resume: bool, overwrite: bool) -> Path:
    """The sweep folder, new or resumed (module docstring)."""
    record = out / "sweep.json"
    if resume:
        if not record.is_file():
            raise InputError(f"{out}: nothing to resume (no sweep.json); run the sweep without --resume")
        if json.loads(record.read_text()) != config.to_dict():
            raise InputError(f"{out}: holds another sweep (sweep.json differs); use another --out")
        return out
    out = check_output_dir(out, overwrite)
    if overwrite and out.exists():
        shutil.rmtree(out)
    (out / "points").mkdir(parents=True)
    write_json_atomic(record, config.to_dict())
    return out


def merged_rows(config: SweepConfig, out: Path) -> list[dict[str, Any]]:
    """The rows of every finished point, in grid order."""
    rows = []
    for point in config.points():
        path = out / "points" / f"{point['point']}.json"
        if path.is_file():
            rows += json.loads(path.read_text())["rows"]
    return rows


def write_outputs(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """``sweep.csv``, ``sweep_table.md`` and the two figures (each written atomically)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _write_text(out / "sweep.csv", buffer.getvalue())
    _write_text(out / "sweep_table.md", summary_table(rows))
    for name, fig in (("sweep_E_vs_kl.png", e_against_kl(rows)), ("sweep_E_vs_size.png", e_against_size(rows))):
        tmp = out / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=110)
        tmp.replace(out / name)
    return ["sweep.csv", "sweep_table.md", "sweep_E_vs_kl.png", "sweep_E_vs_size.png"]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per setting (all grid keys but the seed) and arm, the median and range over seeds."""
    keys = [k for k in GRID_KEYS if k != "seed"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if not r["error"]:
            groups.setdefault(tuple(r[k] for k in keys) + (r["arm"],), []).append(r)
    head = [*keys, "arm", "seeds", "KL(q_s||q0)", "E_true", "E_self", "beta*", "forgetting", "gamma_true"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, members in groups.items():
        cells = [str(v) for v in group] + [str(len(members))]
        for col in ("kl_to_base", "E_true", "E_self", "beta_star", "forgetting", "gamma_true"):
            cells.append(_median_range([m[col] for m in members]))
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["error"]]
    if failed:
        lines += ["", f"{len(failed)} row(s) failed: " + "; ".join(f"{r['point']}: {r['error']}" for r in failed[:5])]
    return "\n".join(lines) + "\n"


def _median_range(values: list) -> str:
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not x.size:
        return "undefined"
    return f"{np.median(x):.3g} [{x.min():.3g}, {x.max():.3g}]" if x.size > 1 else f"{x[0]:.3g}"


def e_against_kl(rows: list[dict[str, Any]]) -> Figure:
    """``E`` (with its interval) against ``KL(q_s || q0)`` for both reachable sets, coloured by method."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    methods = sorted({r["method"] for r in rows if r.get("method")}) or ["?"]
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    markers = {}
    for ax, key in zip(axes, ("true", "self"), strict=True):
        for r in rows:
            if r["error"] or r[f"E_{key}"] is None:
                continue
            marker = markers.setdefault(r["arm"], "os^vD"[len(markers) % 5])
            low, high = r[f"E_{key}_low"], r[f"E_{key}_high"]
            yerr = None if low is None else [[max(0.0, r[f"E_{key}"] - low)], [max(0.0, high - r[f"E_{key}"])]]
            ax.errorbar(r["kl_to_base"], r[f"E_{key}"], yerr=yerr, fmt=marker, color=colours.get(r.get("method"), "C0"),
                        ms=5, alpha=0.8, capsize=2)
        ax.set(xscale="log", xlabel=r"KL($q_s$ || $q_0$), nats per position", ylim=(-0.02, 1.02))
        ax.set_title(rf"$E_{{{key}}}$ against how far fine-tuning moved (90% intervals)", fontsize=10)
    axes[0].set_ylabel("E = re-weighting share")
    handles = [axes[0].plot([], [], "o", color=c, label=m)[0] for m, c in colours.items()]
    handles += [axes[0].plot([], [], m, color="grey", label=f"arm {a}")[0] for a, m in markers.items()]
    axes[1].legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def e_against_size(rows: list[dict[str, Any]]) -> Figure:
    """Median ``E`` over seeds (bars: range) against the number of evidence documents, per method and arm."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    ok = [r for r in rows if not r["error"] and r.get("num_docs") is not None]
    for ax, key in zip(axes, ("true", "self"), strict=True):
        series: dict[tuple, dict[int, list[float]]] = {}
        for r in ok:
            if r[f"E_{key}"] is not None:
                series.setdefault((r.get("method"), r.get("lr"), r["arm"]), {}).setdefault(r["num_docs"], []).append(
                    r[f"E_{key}"])
        for i, ((method, lr, arm), by_size) in enumerate(sorted(series.items(), key=str)):
            sizes = sorted(by_size)
            med = [float(np.median(by_size[s])) for s in sizes]
            lo = [m - min(by_size[s]) for m, s in zip(med, sizes, strict=True)]
            hi = [max(by_size[s]) - m for m, s in zip(med, sizes, strict=True)]
            ax.errorbar(sizes, med, yerr=[lo, hi], fmt="-o" if arm == "in_support" else "--s", ms=4, capsize=2,
                        color=f"C{i % 10}", label=f"{method}, lr {lr:g}, {arm}")
        ax.set(xscale="log", xlabel="evidence documents", ylim=(-0.02, 1.02))
        ax.set_title(rf"$E_{{{key}}}$ against evidence size (median, range over seeds)", fontsize=10)
    axes[0].set_ylabel("E = re-weighting share")
    axes[1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig
