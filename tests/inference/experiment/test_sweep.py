"""psm sweep: grid points as independent jobs (in-process and as Ray tasks), resumable, failures recorded."""

import csv
import json
from pathlib import Path

import pytest

from inference.cli import main
from inference.experiment.sweep import COLUMNS, SweepConfig, load_sweep, point_id

SMOKE = """experiment = "demo"
[grid]
seed = [0, 1]
method = ["full"]
lr = [3e-4]
steps = [2]
num_docs = [8]
[measure]
bootstrap = 10
"""


@pytest.fixture(autouse=True)
def _smoke(monkeypatch):
    monkeypatch.setenv("PSM_SMOKE", "1")  # the demo experiment at tiny size


def rows(out: Path) -> list[dict]:
    with open(out / "sweep.csv") as f:
        return list(csv.DictReader(f))


def sweep(tmp_path, text=SMOKE, name="sweep.toml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    import os

    os.environ["PSM_SMOKE"] = "1"
    try:
        root = tmp_path_factory.mktemp("sweep")
        assert main(["sweep", str(sweep(root)), "--out", str(root / "out"), "--executor", "local", "--quiet"]) == 0
    finally:
        os.environ.pop("PSM_SMOKE", None)
    return root / "out"


def test_local_sweep_writes_one_row_per_point_and_arm(local_run):
    table = rows(local_run)
    assert list(table[0]) == COLUMNS
    assert len(table) == 2 * 2 and {r["arm"] for r in table} == {"in_support", "novel"}
    assert all(r["error"] == "" for r in table)
    for r in table:
        assert 0 <= float(r["E_true_low"]) <= float(r["E_true"]) <= float(r["E_true_high"]) <= 1
        assert float(r["kl_to_base"]) > 0
    for name in ("sweep_table.md", "sweep_E_vs_kl.png", "sweep_E_vs_size.png", "sweep.json"):
        assert (local_run / name).is_file()
    assert len(list((local_run / "points").glob("*.json"))) == 2


def test_ray_runs_the_same_points_to_the_same_numbers(local_run, tmp_path, capsys):
    import ray  # noqa: F401  (installed by the dev extra; the sweep's optional dependency)

    assert main(["sweep", str(sweep(tmp_path)), "--out", str(tmp_path / "ray"), "--executor", "ray", "--quiet"]) == 0
    assert "by ray" in capsys.readouterr().out
    numbers = [c for c in COLUMNS if c not in ("seconds",)]
    strip = [{k: r[k] for k in numbers} for r in rows(tmp_path / "ray")]
    assert strip == [{k: r[k] for k in numbers} for r in rows(local_run)]


def test_a_killed_sweep_resumes_without_redoing_finished_points(local_run, tmp_path, capsys):
    config = load_sweep(sweep(tmp_path))
    out = tmp_path / "out"
    (out / "points").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps(config.to_dict()))
    first = config.points()[0]["point"]
    finished = json.loads((local_run / "points" / f"{first}.json").read_text())
    finished["rows"][0]["kl_to_base"] = 123.0  # a marker: a recomputed point would not carry it
    (out / "points" / f"{first}.json").write_text(json.dumps(finished))
    assert main(["sweep", str(tmp_path / "sweep.toml"), "--out", str(out), "--resume", "--executor", "local",
                 "--quiet"]) == 0
    assert "1 run now" in capsys.readouterr().out
    table = rows(out)
    assert len(table) == 4 and float(table[0]["kl_to_base"]) == 123.0


def test_resume_refuses_another_sweep_and_a_fresh_folder(local_run, tmp_path, capsys):
    other = sweep(tmp_path, SMOKE.replace("seed = [0, 1]", "seed = [5]"), "other.toml")
    assert main(["sweep", str(other), "--out", str(local_run), "--resume", "--quiet"]) == 2
    assert "another sweep" in capsys.readouterr().err
    assert main(["sweep", str(other), "--out", str(tmp_path / "new"), "--resume", "--quiet"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["sweep", str(other), "--out", str(local_run), "--quiet"]) == 2  # an earlier sweep: not without flags
    assert "not empty" in capsys.readouterr().err


def test_a_failing_point_is_recorded_and_does_not_stop_the_others(tmp_path):
    text = SMOKE.replace("seed = [0, 1]", "seed = [0]").replace("lr = [3e-4]", "lr = [3e-4, 1e9]")
    assert main(["sweep", str(sweep(tmp_path, text)), "--out", str(tmp_path / "out"), "--executor", "local",
                 "--quiet"]) == 0
    table = rows(tmp_path / "out")
    failed = [r for r in table if r["error"]]
    assert len(failed) == 1 and float(failed[0]["lr"]) == 1e9 and "diverged" in failed[0]["error"]
    assert len([r for r in table if not r["error"]]) == 2  # the good point's two arms


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[grid]", "[gird]"), "gird"),
    (lambda t: t.replace('method = ["full"]', 'method = ["fool"]'), "grid.method"),
    (lambda t: t.replace("seed = [0, 1]", "seed = [0, 0]"), "repeats"),
    (lambda t: t.replace("seed = [0, 1]", "seed = []"), "non-empty"),
    (lambda t: t.replace("lr = [3e-4]", "lr = [-1.0]"), "grid.lr"),
    (lambda t: t.replace('experiment = "demo"', 'experiment = "missing.toml"'), "missing.toml"),
    (lambda t: t + "\n[oops", "not valid TOML"),
])
def test_bad_sweep_files_exit_2_with_one_line_and_no_output(tmp_path, capsys, edit, message):
    path = sweep(tmp_path, edit(SMOKE))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not (tmp_path / "out").exists()


def test_points_are_the_grid_in_order_with_stable_ids():
    config = SweepConfig(grid={"seed": (0, 1), "method": ("full", "lora")})
    points = config.points()
    assert [(p["seed"], p["method"]) for p in points] == [(0, "full"), (0, "lora"), (1, "full"), (1, "lora")]
    assert points[0]["point"] == point_id({"seed": 0, "method": "full"}) != points[1]["point"]
