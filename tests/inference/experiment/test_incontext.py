"""kind = "incontext": config validation, and the experiment end to end at tiny size through psm run."""

import json
from pathlib import Path

import matplotlib.image
import pytest

from inference.cli import main
from inference.diagnostics import load_netcdf
from inference.experiment import incontext_config
from inference.experiment.incontext import CURVES
from inference.experiment.incontext_report import findings
from inference.experiment.kinds import load_experiment
from models.errors import InputError

TINY = Path(__file__).with_name("tiny_incontext.toml")
SHIPPED = Path(__file__).resolve().parents[3] / "inference" / "experiment" / "configs" / "incontext.toml"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("incontext") / "out"
    assert main(["run", str(TINY), "--out", str(out), "--quiet"]) == 0
    return out


def test_psm_run_writes_curves_fits_and_figures(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    shots = summary["config"]["evidence"]["shots"]
    assert list(summary["curves"]) == list(CURVES)
    for name, curve in summary["curves"].items():
        assert len(curve["mean"]) == len(curve["se"]) == len(shots)
        assert all(se >= 0 for se in curve["se"])
        fit = summary["fits"][name]
        assert len(fit["rho"]["mean"]) == summary["config"]["world"]["num_personas"]
        assert sum(fit["rho"]["mean"]) == pytest.approx(1.0)
        assert fit["K"]["q05"] <= fit["K"]["mean"] <= fit["K"]["q95"]
        idata = load_netcdf(tiny_run / f"fit_{name}.nc")
        assert {"posterior", "posterior_predictive", "observed_data"} <= set(idata.groups())
        assert (tiny_run / f"fit_{name}.csv").read_text().startswith(",mean")
        assert matplotlib.image.imread(tiny_run / f"ppc_{name}.png").shape[0] > 100
    # with no evidence every learner reads a fresh document the same way: fine-tuned on nothing is the base
    assert summary["curves"]["finetuned"]["mean"][0] == pytest.approx(summary["curves"]["in_context"]["mean"][0])
    assert len(summary["law_at_world_prior_k1"]) == len(shots)
    assert set(findings(summary)) == set(CURVES)
    report = (tiny_run / "report.md").read_text()
    for name in ("curves.png", "fitted_prior.png"):
        assert f"({name})" in report and matplotlib.image.imread(tiny_run / name).shape[0] > 100


def test_the_shipped_config_is_valid():
    module, config = load_experiment(SHIPPED)
    assert module.__name__ == "inference.experiment.incontext"
    assert config.world.docs_per_context >= config.evidence.shots[-1] + 1
    assert config.base.p_tag == 0.0


@pytest.mark.parametrize("edit, key", [
    ({"world": {"prior": [0.5, 0.5]}}, "world.prior"),
    ({"world": {"vocab_size": 1}}, "world"),
    ({"world": {"docs_per_context": 4}}, "evidence.shots"),
    ({"evidence": {"shots": [1, 2, 4]}}, "evidence.shots"),
    ({"evidence": {"shots": [0, 2, 1]}}, "evidence.shots"),
    ({"evidence": {"persona": 3}}, "evidence.persona"),
    ({"evidence": {"replicates": 1}}, "evidence.replicates"),
    ({"finetune": {"epochs": 0}}, "finetune.epochs"),
    ({"posttrain": {"num_docs": -1}}, "posttrain.num_docs"),
    ({"fit": {"num_chains": 0}}, "fit.num_chains"),
    ({"fit": {"offset": 1}}, "fit.offset"),
    ({"base": {"p_tag": 2.0}}, "base.p_tag"),
    ({"extra": {}}, "extra"),
])
def test_bad_configs_name_the_key_in_one_line(edit, key):
    raw = {"kind": "incontext", **edit}
    with pytest.raises(InputError, match=key.replace(".", r"\.")) as err:
        incontext_config.load(raw)
    assert "\n" not in str(err.value)


def test_base_defaults_to_no_persona_tags():
    assert incontext_config.load({"kind": "incontext", "base": {"steps": 5}}).base.p_tag == 0.0


def test_a_bad_config_exits_2_with_one_line_and_no_output(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text(TINY.read_text().replace("persona = 1", "persona = 5"))
    assert main(["run", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("psm: error:") and "evidence.persona" in err
    assert not (tmp_path / "out").exists()
