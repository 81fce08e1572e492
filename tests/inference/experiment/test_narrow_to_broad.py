"""kind = "narrow_to_broad": config validation, and the experiment end to end at tiny size through psm run."""

import json
from pathlib import Path

import matplotlib.image
import pytest

from inference.cli import main
from inference.experiment import narrow_config
from inference.experiment.config import read_toml
from inference.experiment.kinds import load_experiment
from inference.experiment.narrow_report import findings
from models.errors import InputError

TINY = Path(__file__).with_name("tiny_narrow.toml")
SHIPPED = Path(__file__).resolve().parents[3] / "inference" / "experiment" / "configs" / "narrow_to_broad.toml"
FIGURES = ("trait_rates.png", "conditioned_by_beta.png", "exhaustiveness_by_domain.png")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("narrow") / "out"
    assert main(["run", str(TINY), "--out", str(out), "--quiet"]) == 0
    return out


def test_psm_run_writes_the_summary_report_and_figures(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    config = narrow_config.load(read_toml(TINY))
    D, B = config.world.num_domains, len(config.measure.betas)
    assert [a["arm"] for a in summary["arms"]] == ["plain", "inoculated"]
    prior = summary["world"]["trait_rate_prior"]
    for arm in summary["arms"]:
        assert len(arm["trait_rate_conditioned"]) == D and all(len(r) == B for r in arm["trait_rate_conditioned"])
        assert arm["posterior_weights"][0] == pytest.approx([1 / 3] * 3)  # beta = 0 is the prior
        assert [r[0] for r in arm["trait_rate_conditioned"]] == pytest.approx(prior)  # and so is its trait rate
        for rates in arm["trait_rate_finetuned"]:
            assert len(rates) == len(arm["steps"])
            assert all(0 <= r["lo"] <= r["mean"] <= r["hi"] <= 1 for r in rates)
        assert len(arm["domains"]) == D
        for dom in arm["domains"]:
            assert len(dom["exhaustiveness_true"]) == len(arm["steps"])
    assert set(findings(summary)) == {"plain", "inoculated"}
    report = (tiny_run / "report.md").read_text()
    for name in FIGURES:
        assert f"({name})" in report
        assert matplotlib.image.imread(tiny_run / name).shape[0] > 100
    assert "Findings (computed)" in report


def test_the_shipped_config_is_valid():
    module, config = load_experiment(SHIPPED)
    assert module.__name__ == "inference.experiment.narrow_to_broad"
    assert config.world.num_domains >= 2 and config.evidence.num_docs > 0


@pytest.mark.parametrize("edit, key", [
    ({"world": {"num_domains": 1}}, "world.num_domains"),
    ({"world": {"trait_persona": 9}}, "world.trait_persona"),
    ({"world": {"trait_rate": 1.0}}, "world.trait_rate"),
    ({"world": {"smoothing": 0.0}}, "world.smoothing"),
    ({"world": {"colour": 1}}, "world.colour"),
    ({"evidence": {"domain": 5}}, "evidence.domain"),
    ({"evidence": {"writer": -1}}, "evidence.writer"),
    ({"finetune": {"snapshots": [0, 3]}}, "finetune.snapshots"),
    ({"finetune": {"method": "magic"}}, "finetune.method"),
    ({"measure": {"betas": [1.0, 0.0]}}, "measure.betas"),
    ({"measure": {"samples": 0}}, "measure.samples"),
    ({"base": {"n_embd": 10, "n_head": 4}}, "base.n_embd"),
    ({"seed": -1}, "seed"),
    ({"arms": []}, "arms"),
])
def test_bad_configs_name_the_key_in_one_line(edit, key):
    raw = {"kind": "narrow_to_broad", **edit}
    with pytest.raises(InputError, match=key.replace(".", r"\.")) as err:
        narrow_config.load(raw)
    assert "\n" not in str(err.value)


def test_a_bad_config_exits_2_with_one_line_and_no_output(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text(TINY.read_text().replace("writer = 0", "writer = 7"))
    assert main(["run", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("psm: error:") and "evidence.writer" in err
    assert not (tmp_path / "out").exists()
