"""psm run / demo / pretrain end to end at tiny size: every documented field, every figure."""

import json
import math
from pathlib import Path

import matplotlib.image
import pytest

from inference.cli import main
from inference.diagnostics import load_netcdf

TINY = Path(__file__).with_name("tiny_experiment.toml")

BASE_FIELDS = {"heldout_nll", "bayes_optimal_nll", "floor_true", "floor_self",
               "projection_weights_true", "projection_weights_self", "num_parameters"}
ARM_FIELDS = {"arm", "evidence_persona", "evidence_tokens", "steps", "kl_to_base", "beta_star",
              "projection_weights_true", "projection_weights_self", "residual_true", "residual_self",
              "exhaustiveness_true", "exhaustiveness_self", "exhaustiveness_ci_true", "exhaustiveness_ci_self",
              "decomposition_true", "decomposition_self", "decomposition_by_context", "forgetting",
              "in_context_gamma", "posterior_weights_beta1", "attribution", "heldout_elpd",
              "description_length_nats", "prequential_code_nats", "final_training_loss"}
DECOMPOSITION = {"total", "reweighting", "other", "theta", "weights", "reason"}
PER_STEP = ("kl_to_base", "beta_star", "projection_weights_true", "projection_weights_self", "residual_true",
            "residual_self", "exhaustiveness_true", "exhaustiveness_self", "exhaustiveness_ci_true",
            "exhaustiveness_ci_self")


def numbers(obj):
    """Every number in a JSON document (None counts as not finite; a ``reason`` is text or None, and a
    group of held-out positions with no position has undefined means)."""
    if isinstance(obj, dict):
        if obj.get("positions") == 0:
            return
        for k, v in obj.items():
            if k != "reason":
                yield from numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers(v)
    elif obj is None or isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def check_outputs(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"world", "base", "arms", "timing"}
    assert set(summary["base"]) >= BASE_FIELDS
    for arm in summary["arms"]:
        assert set(arm) >= ARM_FIELDS
        assert set(arm["attribution"]) == {"weights_mean", "r_hat_max", "ess_min"}
        for key in PER_STEP:
            assert len(arm[key]) == len(arm["steps"]), key
        assert arm["heldout_elpd"].keys() >= {"base", "finetuned", "scratch", "ngram", "conditioned_beta_1"}
        for key in ("true", "self"):
            d = arm[f"decomposition_{key}"]
            assert set(d) == DECOMPOSITION and all(len(v) == len(arm["steps"]) for v in d.values())
            for total, rw, other, e in zip(d["total"], d["reweighting"], d["other"], arm[f"exhaustiveness_{key}"],
                                           strict=True):
                assert total == pytest.approx(rw + other, rel=1e-8, abs=1e-12)  # the identity, per step
                assert e == pytest.approx(rw / total, rel=1e-9)
            groups = arm["decomposition_by_context"][key]
            assert set(groups) == {"evidence_persona", "other_personas", "early", "middle", "late"}
            assert arm["in_context_gamma"][key]["gamma"] > 0
    arms = [{k: v for k, v in arm.items() if k != "evidence_persona"} for arm in summary["arms"]]  # null: novel
    for key, part in (("base", summary["base"]), ("arms", arms)):
        values = list(numbers(part))
        assert values and all(v is not None and math.isfinite(v) for v in values), key
    report = (out / "report.md").read_text()
    figures = [line.split("(")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(figures) == 7 * len(summary["arms"])
    for name in figures:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert matplotlib.image.imread(out / name).shape[0] > 100
    for arm in summary["arms"]:
        for suffix in ("posterior_beta1.nc", "attribution.nc"):
            assert "posterior" in load_netcdf(out / f"{arm['arm']}_{suffix}").groups()
    return summary


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", str(TINY), "--out", str(out), "--quiet"]) == 0
    return out


def test_run_writes_every_documented_field_and_figure(tiny_run):
    summary = check_outputs(tiny_run)
    novel = next(a for a in summary["arms"] if a["arm"] == "novel")
    assert novel["evidence_persona"] is None
    assert next(a for a in summary["arms"] if a["arm"] == "in_support")["evidence_persona"] == 1


def test_same_seed_gives_the_same_summary_and_another_seed_does_not(tiny_run, tmp_path):
    assert main(["run", str(TINY), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    first, again = (json.loads((d / "summary.json").read_text()) for d in (tiny_run, tmp_path / "again"))
    first.pop("timing"), again.pop("timing")
    assert first == again
    for name in ("in_support_posterior_beta1.nc", "in_support_attribution.nc"):
        a, b = load_netcdf(tiny_run / name), load_netcdf(tmp_path / "again" / name)
        for group in a.groups():
            assert a[group].equals(b[group]), (name, group)
    assert main(["run", str(TINY), "--out", str(tmp_path / "other"), "--seed", "7", "--quiet"]) == 0
    other = json.loads((tmp_path / "other" / "summary.json").read_text())
    assert other["arms"] != first["arms"]


def test_demo_in_smoke_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PSM_SMOKE", "1")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 0
    summary = check_outputs(tmp_path / "demo")
    assert [a["arm"] for a in summary["arms"]] == ["in_support", "novel"]
    assert str(tmp_path / "demo" / "report.md") in capsys.readouterr().out


def test_pretrain_writes_a_checkpoint_that_run_uses(tmp_path):
    assert main(["pretrain", str(TINY), "--out", str(tmp_path / "ckpt"), "--quiet"]) == 0
    for name in ("model.safetensors", "config.json", "world.json", "base.json"):
        assert (tmp_path / "ckpt" / name).is_file()
    config = TINY.read_text().replace("[base]\n", '[base]\ncheckpoint = "ckpt"\n')
    (tmp_path / "exp.toml").write_text(config)
    assert main(["run", str(tmp_path / "exp.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    base = json.loads((tmp_path / "out" / "summary.json").read_text())["base"]
    scores = json.loads((tmp_path / "ckpt" / "base.json").read_text())
    assert base["heldout_nll"] == pytest.approx(scores["heldout_nll"])


def test_pretrain_checkpoints_and_resumes_to_the_same_weights(tmp_path, capsys):
    """A run that saves its state, and one resumed from that state, write the weights of a plain run
    (the killed-midway case is tests/inference/test_resume.py)."""
    assert main(["pretrain", str(TINY), "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    saving = ["pretrain", str(TINY), "--checkpoint-dir", str(tmp_path / "state"), "--checkpoint-every", "2", "--quiet"]
    assert main([*saving, "--out", str(tmp_path / "saved")]) == 0
    assert any((tmp_path / "state").iterdir())
    assert main([*saving, "--resume", "--out", str(tmp_path / "resumed")]) == 0
    weights = {name: (tmp_path / name / "model.safetensors").read_bytes() for name in ("plain", "saved", "resumed")}
    assert weights["plain"] == weights["saved"] == weights["resumed"]
    capsys.readouterr()
    code = main(["pretrain", str(TINY), "--resume", "--out", str(tmp_path / "x"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "checkpoint" in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("[world]", "[wrold]"), "wrold"),
        (lambda t: t.replace("vocab_size = 6", "vocab_size = -6"), "world.vocab_size"),
        (lambda t: t.replace("persona = 1", "persona = 17"), "arms[0].persona"),
        (lambda t: t.replace("[base]\n", '[base]\ncheckpoint = "missing"\n'), "missing"),
        (lambda t: t + "\n[oops", "not valid TOML"),
    ],
)
def test_bad_configs_exit_2_with_one_line_and_no_output(tmp_path, capsys, edit, message):
    (tmp_path / "bad.toml").write_text(edit(TINY.read_text()))
    assert main(["run", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("psm: error:") and message in err
    assert not (tmp_path / "out").exists()
