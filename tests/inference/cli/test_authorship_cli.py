"""``psm federalist``, ``psm attribute`` and ``psm run`` kind ``novelists`` at tiny size: outputs, seeds,
one-line errors that leave no files; and every ``psm`` command is run by some test.

The sizes are seconds-sized (one or two short NUTS chains, a few words): these tests check what
the commands write and refuse, not the attribution results (the README reports full runs).
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest

from inference.cli import COMMANDS, main

TESTS = Path(__file__).resolve().parents[1]
TINY_NOVELISTS = TESTS / "experiment" / "tiny_novelists.toml"
NOVELS = Path(__file__).resolve().parents[3] / "models" / "data" / "authorship" / "novels"
FEDERALIST = NOVELS.parent / "federalist" / "papers.jsonl.gz"
TINY_NUTS = ["--num-chains", "2", "--num-samples", "10", "--warmup", "10"]
DISPUTED = {49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 62, 63}
JOINT = {18, 19, 20}


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(argv: list, capsys, out: Path, message: str) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("psm: error:") and message in err, err
    assert not out.exists()


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- psm federalist


def federalist_argv(out: Path, *extra, seed: int = 0) -> list:
    return ["federalist", "--likelihood", "negbin", *TINY_NUTS, "--bootstrap", "3", "--seed", seed, "--out", out,
            "--quiet", *extra]


@pytest.fixture(scope="module")
def federalist_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("federalist") / "out"
    assert main([str(a) for a in federalist_argv(out)]) == 0
    return out


def test_federalist_writes_the_table_for_every_disputed_and_joint_paper(federalist_run):
    names = {p.name for p in federalist_run.iterdir()}
    assert {"table.csv", "summary.json", "idata_negbin.nc", "log_odds.png", "calibration.png"} <= names
    rows = read_table(federalist_run / "table.csv")
    assert set(rows[0]) >= {"paper", "method", "p_madison", "log_odds", "interval_low", "interval_high"}
    by_method: dict[str, set[int]] = {}
    for row in rows:
        by_method.setdefault(row["method"], set()).add(int(row["paper"]))
    assert DISPUTED <= by_method["negbin"] and JOINT <= by_method["negbin"]
    assert {"delta", "logistic"} <= set(by_method)  # the baselines on the same papers
    for row in rows:
        if row["method"] == "negbin" and int(row["paper"]) in DISPUTED:
            p = float(row["p_madison"])
            assert 0 <= p <= 1 and float(row["interval_low"]) <= float(row["interval_high"])
    summary = json.loads((federalist_run / "summary.json").read_text())
    assert summary["config"]["num_chains"] == 2 and summary["config"]["seed"] == 0


def test_federalist_same_seed_same_table(federalist_run, tmp_path, capsys):
    again = tmp_path / "again"
    assert run(federalist_argv(again), capsys)[0] == 0
    assert (again / "table.csv").read_bytes() == (federalist_run / "table.csv").read_bytes()


@pytest.mark.parametrize("extra, message", [
    (["--papers", "missing.jsonl"], "missing.jsonl"),
    (["--num-words", "1"], "--num-words"),
    (["--bootstrap", "0"], "--bootstrap"),
])
def test_federalist_refuses_bad_input(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = federalist_argv(out, *[str(tmp_path / e) if e.endswith(".jsonl") else e for e in extra])
    refused(argv, capsys, out, message)


def test_federalist_refuses_a_papers_file_that_is_not_jsonl_and_an_existing_out(tmp_path, capsys, federalist_run):
    bad = tmp_path / "papers.jsonl"
    bad.write_text('{"number": 1, "author": "HAMILTON"\n')
    refused(federalist_argv(tmp_path / "out", "--papers", bad), capsys, tmp_path / "out", "papers.jsonl")
    before = (federalist_run / "table.csv").read_bytes()
    code, _, err = run(federalist_argv(federalist_run), capsys)
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err
    assert (federalist_run / "table.csv").read_bytes() == before


# ---------------------------------------------------------------- psm attribute


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> Path:
    """A manifest of two of the bundled novelists, one book each; the text of a third; a Federalist paper."""
    root = tmp_path_factory.mktemp("candidates")
    rows = [("Dickens_Oliver_1839.txt.gz", "Charles Dickens"), ("Hardy_Tess_1891.txt.gz", "Thomas Hardy")]
    with open(root / "manifest.jsonl", "w") as f:
        for name, author in rows:
            shutil.copy(NOVELS / name, root / name)
            f.write(json.dumps({"file": name, "author": author}) + "\n")
    stevenson = gzip.open(NOVELS / "Stevenson_Arrow_1888.txt.gz", "rt", encoding="utf-8").read()
    (root / "stevenson.txt").write_text(stevenson[200_000:215_000])
    papers = [json.loads(line) for line in gzip.open(FEDERALIST, "rt", encoding="utf-8")]
    (root / "federalist.txt").write_text(" ".join(p["text"] for p in papers[9:12]))
    return root


def attribute_argv(candidates: Path, text: str, out: Path, *extra) -> list:
    return ["attribute", "--text", candidates / text, "--authors", candidates / "manifest.jsonl", *TINY_NUTS,
            "--out", out, "--quiet", *extra]


def test_attribute_writes_the_documented_fields(candidates, tmp_path, capsys):
    out = tmp_path / "out"
    code, said, err = run(attribute_argv(candidates, "stevenson.txt", out), capsys)
    assert code == 0 and "best" in said + err
    found = json.loads((out / "attribution.json").read_text())
    assert found["authors"] == ["Charles Dickens", "Thomas Hardy"]
    assert len(found["posterior"]) == 2 and sum(found["posterior"]) == pytest.approx(1.0)
    assert found["best"] == found["authors"][max(range(2), key=found["posterior"].__getitem__)]
    assert 0 < found["out_of_support_p"] <= 1 and found["flagged"] == (found["out_of_support_p"] <= 0.05)
    assert len(found["chunks"]) == 6  # 15,000 characters: six chunks of 500 words
    for row in found["chunks"]:
        assert row["flagged"] == (row["out_of_support_p"] <= 0.05) and row["best"] in found["authors"]
    assert found["settings"]["chunk_words"] == 500 and found["settings"]["seed"] == 0
    again = tmp_path / "again"
    assert run(attribute_argv(candidates, "stevenson.txt", again), capsys)[0] == 0
    assert json.loads((again / "attribution.json").read_text())["posterior"] == found["posterior"]


@pytest.mark.parametrize("text", ["federalist.txt", "stevenson.txt"])
def test_attribute_flags_a_text_by_none_of_the_candidates(candidates, tmp_path, capsys, text):
    """Three Federalist papers, or 15,000 characters of Stevenson, against Dickens and Hardy: the mean of the
    text's chunk statistics is far below the best author's held-out chunks'."""
    out = tmp_path / "out"
    assert run(attribute_argv(candidates, text, out), capsys)[0] == 0
    found = json.loads((out / "attribution.json").read_text())
    assert found["flagged"] and found["out_of_support_p"] <= 0.05


def test_attribute_chunk_words_and_level(candidates, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(attribute_argv(candidates, "stevenson.txt", out, "--chunk-words", "1000", "--level", "0.5"), capsys)[0] == 0
    found = json.loads((out / "attribution.json").read_text())
    assert len(found["chunks"]) == 3 and found["settings"]["level"] == 0.5
    assert found["flagged"] == (found["out_of_support_p"] <= 0.5)


@pytest.mark.parametrize("text, extra, message", [
    ("missing.txt", [], "missing.txt"),
    ("empty.txt", [], "empty"),
    ("stevenson.txt", ["--level", "1.5"], "--level"),
    ("stevenson.txt", ["--chunk-words", "5"], "--chunk-words"),
    ("stevenson.txt", ["--authors", "one_author.jsonl"], "at least two"),
    ("binary.txt", [], "binary"),
    ("stevenson.txt", ["--authors", "missing_file.jsonl"], "does not exist"),
])
def test_attribute_refuses_bad_input(candidates, tmp_path, capsys, text, extra, message):
    (candidates / "empty.txt").write_text("   \n")
    (candidates / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (candidates / "missing_file.jsonl").write_text(json.dumps({"file": "gone.txt", "author": "A"}) + "\n")
    with open(candidates / "one_author.jsonl", "w") as f:
        f.write(json.dumps({"file": "Dickens_Oliver_1839.txt.gz", "author": "Charles Dickens"}) + "\n")
    extra = [str(candidates / e) if e.endswith(".jsonl") else e for e in extra]
    out = tmp_path / "out"
    refused(attribute_argv(candidates, text, out, *extra), capsys, out, message)


# ---------------------------------------------------------------- psm run, kind novelists


def test_run_novelists_writes_accuracy_support_and_the_lm_test(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(["run", TINY_NOVELISTS, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "accuracy.csv", "confusion_negbin.csv", "confusion_delta.csv", "support.png",
            "lm.png", "idata_wordrates.nc"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert {"negbin", "ngram", "delta", "logistic"} <= set(summary["accuracy"])
    assert all(0 <= a <= 1 for a in summary["accuracy"].values() if isinstance(a, float))
    left_out = summary["support_left_out"]
    assert left_out["author"] == summary["lm"]["left_out_author"]  # left out of training: the detection test
    assert left_out["author"] not in summary["lm"]["authors_in_pretraining"]
    for method in ("negbin", "ngram", "combined"):
        rates = left_out[method]
        assert 0 <= rates["false_flag_rate"] <= 1 and 0 <= rates["detection_rate"] <= 1 and rates["left_out_chunks"] > 0
        assert 0 <= rates["chapter_false_flag_rate"] <= 1 and 0 <= rates["book_detection_rate"] <= 1
    assert {"arms", "decomposition"} <= set(summary["lm"])
    for found in summary["lm"]["arms"].values():  # E_self at every moved snapshot, inside its interval's range
        first, *moved = found["snapshots"]
        assert first["step"] == 0 and first["exhaustiveness_self"] is None
        for row in moved:
            low, high = row["exhaustiveness_ci_self"]
            assert 0 <= row["exhaustiveness_self"] <= 1 and low <= high
            assert row["reweighting_self"] + row["other_self"] == pytest.approx(row["kl_to_base"], rel=1e-6, abs=1e-9)


def test_the_shipped_novelists_config_is_the_default():
    from inference.experiment.kinds import load_experiment
    from inference.experiment.novelists_config import NovelistsConfig

    _, config = load_experiment("novelists")
    assert config == NovelistsConfig()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("[data]", "[dta]"), "dta"),
    (lambda t: t.replace("max_words_per_book = 20000", "max_words_per_book = 20000\nheldout_fraction = 1.5"),
     "data.heldout_fraction"),
    (lambda t: t.replace('likelihoods = ["negbin"]', 'likelihoods = ["gauss"]'), "wordrates.likelihoods"),
    (lambda t: t.replace("max_words_per_book = 20000", 'max_words_per_book = 20000\nheldout_author = "Jane Austen"'),
     "data.heldout_author"),
    (lambda t: t.replace("[lm]", '[lm]\nfinetune_author = "Jane Austen"'), "lm.finetune_author"),
    (lambda t: t.replace("max_words_per_book = 20000", 'max_words_per_book = 20000\nmanifest = "none.jsonl"'),
     "none.jsonl"),
])
def test_run_novelists_refuses_bad_configs(tmp_path, capsys, edit, message):
    (tmp_path / "bad.toml").write_text(edit(TINY_NOVELISTS.read_text()))
    refused(["run", tmp_path / "bad.toml", "--out", tmp_path / "out", "--quiet"], capsys, tmp_path / "out", message)


# ---------------------------------------------------------------- every command has a test


#: each ``psm`` command and a test file that runs it end to end
COMMAND_TESTS = {
    "simulate": "cli/test_cli.py",
    "condition": "cli/test_cli.py",
    "run": "experiment/test_experiment.py",
    "demo": "experiment/test_experiment.py",
    "pretrain": "experiment/test_experiment.py",
    "sbc": "conditioning/test_sbc.py",
    "sweep": "experiment/test_sweep.py",
    "federalist": "cli/test_authorship_cli.py",
    "attribute": "cli/test_authorship_cli.py",
}


def test_every_command_is_in_the_list_and_its_test_runs_it():
    assert sorted(c.name for c in COMMANDS) == sorted(COMMAND_TESTS)
    for name, test in COMMAND_TESTS.items():
        source = (TESTS / test).read_text()
        assert f'"{name}"' in source, f"{test} does not run psm {name}"
