"""The elicitation experiment: config validation (one line naming the key; k above the parameter
count), the evidence kinds, and ``psm run`` end to end at tiny size."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.cli import main
from inference.diagnostics import load_netcdf
from inference.experiment.config import read_toml
from inference.experiment.elicitation import evidence_sets
from inference.experiment.elicitation_config import (
    ElicitationExperiment,
    elicitation_from_dict,
    learning_rates,
    num_parameters,
    smoke,
)
from inference.experiment.kinds import load_experiment
from inference.experiment.world import make_world
from models.errors import InputError

TINY = Path(__file__).with_name("tiny_elicitation.toml")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("elicitation") / "out"
    assert main(["run", str(TINY), "--out", str(out), "--quiet"]) == 0
    return out


def test_run_writes_every_file_and_the_shares_are_of_the_full_gain(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    raw = read_toml(TINY)
    ks, seeds, total = raw["finetune"]["ks"], raw["num_seeds"], summary["num_parameters"]
    assert set(summary["kinds"]) == {"in_support", "rule"}
    for result in summary["kinds"].values():
        runs = result["runs"]
        assert len(runs) == (len(ks) + 1) * seeds
        full = [r["share"] for r in runs if r["k"] == total]
        assert np.mean(full) == pytest.approx(1.0)  # the reference is the mean of the full runs
        for r in runs:
            expected = (result["base_test_nll"] - r["test_nll"]) / result["gain"]
            assert r["share"] == pytest.approx(expected)
            assert r["step"] in raw["finetune"]["snapshots"]
        first_lr = {r["k"]: r["lr"] for r in runs if r["seed"] == summary["config"]["seed"]}
        assert all(r["lr"] == first_lr[r["k"]] for r in runs)  # later seeds reuse the first seed's choice
        fit = result["fit"]
        assert fit["k50_interval"][0] <= fit["k50"] <= fit["k50_interval"][1]
        assert {"r_hat_max", "ess_min", "slope", "sigma"} <= set(fit)
        assert [row["site"] for row in result["fit_summary"]] == ["log10_k50", "slope", "sigma"]
        e = result["exhaustiveness"]
        assert e["k"] == [*ks, total] and len(e["true"]) == len(e["ci_self"]) == len(ks) + 1
    for kind in ("in_support", "rule"):
        assert "posterior" in load_netcdf(tiny_run / f"logistic_{kind}.nc").groups()
    assert (tiny_run / "runs.csv").read_text().count("\n") == 2 * (len(ks) + 1) * seeds + 1
    assert (tiny_run / "k50.csv").read_text().count("\n") == 3
    assert "![curves and fits](elicitation.png)" in (tiny_run / "report.md").read_text()


def test_the_rule_evidence_repeats_and_the_in_support_evidence_does_not():
    config = smoke(ElicitationExperiment())
    data = evidence_sets(config, make_world(config.world))
    p = config.evidence.period
    rule, plain = data["rule"]["evidence"], data["in_support"]["evidence"]
    assert torch.equal(rule[:, p:], rule[:, :-p])
    assert not torch.equal(plain[:, p:], plain[:, :-p])
    assert not torch.equal(data["rule"]["test"], data["rule"]["validation"])


@pytest.mark.parametrize("raw, key", [
    ({"finetune": {"ks": [10, 10_000_000]}}, r"finetune.ks\[1\] = 10000000: k must lie in \[1, 233952\)"),
    ({"finetune": {"ks": [300, 10]}}, "finetune.ks"),
    ({"finetune": {"ks": [0]}}, r"finetune.ks\[0\]"),
    ({"finetune": {"lr_factors": [-0.1]}}, "finetune.lr_factors"),
    ({"finetune": {"lr_all": 0.0}}, "finetune.lr_all"),
    ({"finetune": {"snapshots": [0, 100]}}, "finetune.snapshots"),
    ({"evidence": {"period": 16}}, "evidence.period"),
    ({"evidence": {"doc_len": 64}}, "evidence.doc_len"),
    ({"evidence": {"persona": 9}}, "evidence.persona"),
    ({"fit": {"level": 1.5}}, "fit.level"),
    ({"world": {"vocab_size": 1}}, "world.vocab_size"),
    ({"colour": 1}, "colour"),
    ({"kind": "ciphers"}, "kind"),
])
def test_bad_configs_name_the_key_in_one_line(raw, key, tmp_path):
    with pytest.raises(InputError, match=key) as err:
        elicitation_from_dict({"kind": "elicitation"} | raw, tmp_path)
    assert "\n" not in str(err.value)


def test_k_above_the_parameter_count_exits_2_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace("ks = [10, 300]", "ks = [10, 100000]"))
    out = tmp_path / "out"
    assert main(["run", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "finetune.ks[1]" in err and "parameters" in err and err.count("\n") == 1
    assert not out.exists()


def test_the_shipped_config_loads_and_its_smoke_version_is_valid():
    module, config = load_experiment("elicitation")
    assert module.__name__ == "inference.experiment.elicitation"
    assert config.base.checkpoint == "default" and num_parameters(config) == 233_952
    small = smoke(config)
    assert elicitation_from_dict({"kind": "elicitation", **small.to_dict()}, Path(".")) == small


def test_the_learning_rate_grid_grows_as_k_shrinks():
    config = ElicitationExperiment()
    total = 233_952
    full, few = learning_rates(config, total, total), learning_rates(config, 10, total)
    assert full == pytest.approx([1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    assert few == pytest.approx([f * (total / 10) ** 0.5 for f in full])
