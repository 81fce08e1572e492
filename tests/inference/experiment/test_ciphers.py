"""The cipher experiment: config validation (one line naming the key), the data-efficiency helper,
and ``psm run`` end to end at tiny size (exit 0 and every file; a bad config exits 2 and writes nothing)."""

import json
import math
from pathlib import Path

import matplotlib.image
import pytest

from inference.cli import main
from inference.experiment.cipher_arm import tokens_to_target
from inference.experiment.ciphers_config import CiphersExperiment, ciphers_from_dict, smoke
from inference.experiment.config import read_toml
from inference.experiment.kinds import SHIPPED_CONFIGS, load_experiment
from models.errors import InputError

TINY = Path(__file__).with_name("tiny_ciphers.toml")
CELL_FIELDS = {"share", "seed", "arm", "writer_joint_index", "in_support", "base_test_nll", "writer_nll", "target_nll",
               "finetune_curve", "exact_curve", "tokens_to_target_finetune", "tokens_to_target_exact",
               "exhaustiveness_true", "exhaustiveness_self", "exhaustiveness_ci_true", "exhaustiveness_ci_self",
               "beta_star", "kl_to_base", "decomposition_true", "decomposition_self", "description_length_nats",
               "prequential_code_nats", "posterior_top_persona", "posterior_top_weight", "evidence_tokens",
               "probe", "base"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ciphers") / "out"
    assert main(["run", str(TINY), "--out", str(out), "--quiet"]) == 0
    return out


def test_run_writes_every_cell_and_file(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    raw = read_toml(TINY)
    shares = raw["ciphers"]["shares"]
    assert len(summary["cells"]) == len(shares) * raw["num_seeds"] * 2
    for cell in summary["cells"]:
        assert set(cell) >= CELL_FIELDS
        curve = cell["finetune_curve"]
        assert curve["tokens"] == [0, *(n * raw["world"]["doc_len"] for n in raw["evidence"]["sizes"])]
        assert curve["nll"][0] == cell["base_test_nll"] and curve["skill_cipher"][0] == cell["probe"]["base"]["cipher"]
        assert all(len(v) == len(curve["tokens"]) for v in curve.values())
        assert cell["exact_curve"]["tokens"][0] == 0
        assert cell["exact_curve"]["tokens"][-1] == raw["evidence"]["sizes"][-1] * raw["world"]["doc_len"]
        d = cell["decomposition_true"]
        assert d["total"] == pytest.approx(d["reweighting"] + d["other"], rel=1e-8, abs=1e-12)
        assert set(cell["probe"]) == {"base", "finetuned", "conditioned"}
        assert all(math.isfinite(v) for p in cell["probe"].values() for v in p.values())
    # f = 0 puts the evidence cipher outside the support; the plain control is always inside
    by = {(c["share"], c["arm"]): c for c in summary["cells"]}
    assert not by[(0.0, "cipher")]["in_support"] and by[(0.1, "cipher")]["in_support"]
    assert by[(0.0, "plain")]["in_support"]
    assert by[(0.0, "cipher")]["exact_curve"]["posterior_on_writer"][-1] == 0.0
    assert {(r["share"], r["arm"]) for r in summary["table"]} == set(by)
    for name in ("ciphers.png", "nll_curves.png"):
        assert matplotlib.image.imread(tiny_run / name).shape[0] > 100
    assert (tiny_run / "cells.csv").read_text().count("\n") == len(summary["cells"]) + 1
    assert (tiny_run / "table.csv").read_text().count("\n") == len(summary["table"]) + 1
    report = (tiny_run / "report.md").read_text()
    assert "![each quantity against f](ciphers.png)" in report and "f = 10%" in report


def test_same_seed_same_numbers(tiny_run, tmp_path):
    assert main(["run", str(TINY), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    first, again = (json.loads((d / "summary.json").read_text()) for d in (tiny_run, tmp_path / "again"))
    first.pop("timing"), again.pop("timing")
    assert first == again


@pytest.mark.parametrize("raw, key", [
    ({"ciphers": {"names": ["vigenere"]}, }, r"ciphers.names\[0\]"),
    ({"ciphers": {"names": ["rot12"]}}, r"ciphers.names\[0\]"),
    ({"ciphers": {"names": ["none"]}}, r"ciphers.names\[0\]"),
    ({"ciphers": {"evidence": "atbash", "names": ["rot3"]}}, "ciphers.evidence"),
    ({"ciphers": {"shares": [0.0, 1.5]}}, r"ciphers.shares\[1\]"),
    ({"ciphers": {"shares": [-0.01]}}, r"ciphers.shares\[0\]"),
    ({"ciphers": {"shares": ["often"]}}, "ciphers.shares"),
    ({"ciphers": {"colour": 1}}, "ciphers.colour"),
    ({"evidence": {"sizes": [16, 4]}}, "evidence.sizes"),
    ({"evidence": {"persona": 4}}, "evidence.persona"),
    ({"evidence": {"persona": "novel"}}, "evidence.persona"),
    ({"world": {"lag": 6}}, "lag"),
    ({"world": {"rule_prob": 2.0}}, "world.rule_prob"),
    ({"finetune": {"method": "magic"}}, "finetune.method"),
    ({"finetune": {"snapshots": [0, 10]}}, "finetune.snapshots"),
    ({"compare": {"betas": [1.0]}}, "compare.betas"),
    ({"num_seeds": 0}, "num_seeds"),
    ({"kind": "personas"}, "kind"),
])
def test_bad_configs_name_the_key_in_one_line(raw, key):
    with pytest.raises(InputError, match=key) as err:
        ciphers_from_dict({"kind": "ciphers"} | raw)
    assert "\n" not in str(err.value)


def test_a_bad_config_exits_2_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace('names = ["random1", "atbash"]', 'names = ["random1", "enigma"]'))
    out = tmp_path / "out"
    assert main(["run", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("psm: error:") and "ciphers.names[1]" in err and err.count("\n") == 1
    assert not out.exists()


def test_the_shipped_config_is_the_default_and_its_smoke_version_is_valid():
    module, config = load_experiment("ciphers")  # a bare name runs the shipped config
    assert module.__name__ == "inference.experiment.ciphers"
    assert config == CiphersExperiment()
    assert ciphers_from_dict({"kind": "ciphers", **smoke(config).to_dict()}) == smoke(config)
    assert (SHIPPED_CONFIGS / "ciphers.toml").is_file()


def test_tokens_to_target_interpolates_in_log_tokens():
    assert tokens_to_target([10, 100, 1000], [3.0, 2.0, 1.0], 1.5) == pytest.approx(10**2.5)
    assert tokens_to_target([10, 100], [1.0, 0.5], 2.0) == 10  # the first point already reaches it
    assert tokens_to_target([10, 100], [3.0, 2.5], 2.0) is None
    assert tokens_to_target([0, 10, 100], [1.0, 0.5, 0.4], 2.0) == 0  # no evidence needed
    assert tokens_to_target([0, 10, 100], [3.0, 1.0, 0.5], 2.0) == 10  # after 0 tokens: an upper bound
