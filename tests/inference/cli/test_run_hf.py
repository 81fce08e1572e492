"""``psm run`` kind ``hf`` at tiny size: a locally built GPT-2 fine-tuned on a few paragraphs of Dickens and
measured on the five novelists' held-out text through every comparison; bad input exits 2 with one line."""

import json
from pathlib import Path

import pytest

from inference.cli import main
from inference.experiment.kinds import load_experiment
from models.errors import InputError
from models.persona_prompts import load_persona_prompts
from tests.tiny_hf import EVIDENCE, HELDOUT, PROMPTS

CONFIGS = Path(__file__).resolve().parents[3] / "inference" / "experiment" / "configs"
TINY = """kind = "hf"
seed = 0
device = "cpu"
[model]
path = "{model}"
personas = "{prompts}"
[data]
evidence = "{evidence}"
heldout = "{heldout}"
evidence_persona = "Charles Dickens"
chunk_tokens = 24
evidence_docs = 24
fresh_docs = 4
heldout_contexts = 10
heldout_tokens = 24
[finetune]
method = "lora"
steps = 6
lr = 1e-2
batch_size = 8
snapshots = [0, 3, 6]
rank = 2
prequential_blocks = 2
prequential_steps = 2
[compare]
max_vocab = 100
bootstrap = 20
attribution_completions = 4
attribution_prompt_tokens = 8
attribution_tokens = 8
attribution_samples = 20
attribution_warmup = 20
"""
FILES = {"summary.json", "report.md", "evidence_kl.png", "evidence_projection.png", "evidence_exhaustiveness.png",
         "evidence_mechanisms.png", "evidence_next_token.png", "evidence_finetune_loss.png",
         "evidence_attribution_rank.png", "evidence_attribution_ppc.png", "evidence_attribution.nc",
         "evidence_elpd.csv"}


def write_config(folder: Path, model: Path, name="hf.toml", **replace) -> Path:
    text = TINY.format(model=model, prompts=PROMPTS, evidence=EVIDENCE, heldout=HELDOUT)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / name
    path.write_text(text)
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def hf_run(tiny_hf_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_run")
    config = write_config(root, tiny_hf_folder)
    out = root / "out"
    code = main(["run", str(config), "--out", str(out), "--quiet", "--device", "cpu"])
    return code, out


def test_psm_run_hf_writes_every_file(hf_run):
    code, out = hf_run
    assert code == 0
    assert {p.name for p in out.iterdir()} == FILES
    assert all((out / name).read_bytes()[:4] == b"\x89PNG" for name in FILES if name.endswith(".png"))


def test_the_summary_holds_every_comparison(hf_run):
    _, out = hf_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "hf" and summary["model"]["class"] == "GPT2LMHeadModel"
    assert summary["data"]["evidence_persona"] == "Charles Dickens" and summary["data"]["evidence_docs"] == 24
    assert sum(summary["data"]["heldout_writers"].values()) == 10 and len(summary["data"]["heldout_writers"]) == 5
    arm = summary["arms"][0]
    assert arm["steps"] == [3, 6] and arm["evidence_persona"] == 1
    d = arm["decomposition_self"]
    for s in range(2):
        assert abs(d["total"][s] - d["reweighting"][s] - d["other"][s]) < 1e-9  # the exact split
        assert arm["kl_to_base_full_vocab"][s] >= arm["kl_to_base"][s] - 1e-12  # kept tokens: a lower bound
        e, (lo, hi) = arm["exhaustiveness_self"][s], arm["exhaustiveness_ci_self"][s]
        assert 0 <= lo <= hi <= 1 and 0 <= e <= 1
        assert 0 <= arm["rest_mass"][s]["mean"] <= arm["rest_mass"][s]["max"] < 1
    assert len(arm["projection_weights_self"][-1]) == 5 and abs(sum(arm["posterior_weights_beta1"]) - 1) < 1e-9
    assert set(arm["decomposition_by_context"]["self"]) == {"evidence_persona", "other_personas", "early", "middle",
                                                           "late"}
    assert arm["forgetting"]["contexts"] == 8 and arm["forgetting"]["bayes_nll"] is None
    assert arm["in_context_gamma"]["self"]["gamma"] > 0
    assert len(arm["attribution"]["weights_mean"]) == 5
    assert {"base", "finetuned", "self_projection", "conditioned_beta_1"} <= set(arm["heldout_elpd"])
    assert arm["description_length_nats"] is not None and arm["final_training_loss"] > 0
    training = summary["training"]
    assert training["device"] == "cpu" and training["seconds_per_step"] > 0 and training["peak_memory_bytes"] > 0
    assert training["trainable_parameters"] > 0 and training["method"] == "lora"
    assert "R_true" in summary["not_measured"] and summary["base"]["vocabulary"]["kept"] == 100


def test_the_report_is_computed_from_the_summary(hf_run):
    _, out = hf_run
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    e = summary["arms"][0]["exhaustiveness_self"][-1]
    assert f"E_self = {e:.3f}" in report and "Not measured for a real LM" in report
    assert "Charles Dickens" in report and "![evidence_kl](evidence_kl.png)" in report


def _assert_refused(code, out, err, out_dir, match):
    assert code == 2 and out == ""
    assert err.startswith("psm: error: ") and err.count("\n") == 1 and match in err, err
    assert not out_dir.exists()


@pytest.mark.parametrize("replace, match", [
    ({'method = "lora"': 'method = "magic"'}, "finetune.method"),
    ({"max_vocab = 100": "max_vocabulary = 100"}, "unknown key compare.max_vocabulary"),
    ({str(PROMPTS): "/no/such/prompts.toml"}, "no such file"),
    ({'evidence_persona = "Charles Dickens"': 'evidence_persona = "Jane Austen"'}, "Jane Austen"),
    ({"heldout_contexts = 10": "heldout_contexts = 500"}, "data.heldout"),
    ({'device = "cpu"': 'device = "tpu"'}, "device"),
])
def test_bad_configs_exit_2_with_one_line_and_no_files(tiny_hf_folder, tmp_path, capsys, replace, match):
    config = write_config(tmp_path, tiny_hf_folder, **replace)
    code, out, err = run(["run", config, "--out", tmp_path / "out", "--quiet"], capsys)
    _assert_refused(code, out, err, tmp_path / "out", match)


def test_bad_model_folders_and_prompt_files_exit_2(tiny_hf_folder, tmp_path, capsys):
    cases = [(write_config(tmp_path, tmp_path / "none", "a.toml"), "no such model folder"),
             (write_config(tmp_path, tmp_path, "b.toml"), "no config.json")]
    (tmp_path / "prompts.toml").write_text("[[personas]]\nprompt = 'x'\n")
    cases.append((write_config(tmp_path, tiny_hf_folder, "c.toml", **{str(PROMPTS): str(tmp_path / "prompts.toml")}),
                  "personas[0].name"))
    for config, match in cases:
        code, out, err = run(["run", config, "--out", tmp_path / "out", "--quiet"], capsys)
        _assert_refused(code, out, err, tmp_path / "out", match)


def test_device_flag(tiny_hf_folder, tmp_path, capsys):
    import torch

    config = write_config(tmp_path, tiny_hf_folder)
    if not torch.cuda.is_available():
        code, out, err = run(["run", config, "--out", tmp_path / "out", "--device", "cuda"], capsys)
        _assert_refused(code, out, err, tmp_path / "out", "no CUDA")
    code, out, err = run(["run", config, "--out", tmp_path / "out", "--device", "gpu"], capsys)
    _assert_refused(code, out, err, tmp_path / "out", "--device")
    personas = Path(__file__).resolve().parents[1] / "experiment" / "tiny_experiment.toml"
    code, out, err = run(["run", personas, "--out", tmp_path / "out", "--device", "cpu"], capsys)
    _assert_refused(code, out, err, tmp_path / "out", "kind 'personas' run on the CPU")


def test_the_shipped_example_config_is_valid():
    module, config = load_experiment(CONFIGS / "hf.toml", seed=4, device="cpu")
    assert module.__name__ == "inference.experiment.hf_runner" and config.seed == 4 and config.device == "cpu"
    assert Path(config.model.path).is_absolute() and config.model.path.endswith("models/gpt2")
    assert [p.name for p in load_persona_prompts(config.model.personas)][1] == "Charles Dickens"
    novels = Path(config.data.heldout)
    assert novels.parts[-3:] == ("data", "authorship", "novels")
    if novels.is_dir():  # the bundled novels (their own branch); the evidence is one of them
        assert Path(config.data.evidence).is_file()
    with pytest.raises(InputError, match="--device"):
        load_experiment(Path(__file__).resolve().parents[1] / "experiment" / "tiny_experiment.toml", device="cpu")


def test_a_rerun_resumes_from_the_fine_tuning_checkpoints(tiny_hf_folder, tmp_path, capsys):
    replace = {'rank = 2': 'rank = 2\ncheckpoint_dir = "ckpt"\ncheckpoint_every = 3',
               "attribution_completions = 4": "attribution_completions = 0", "prequential_blocks = 2":
               "prequential_blocks = 0", "bootstrap = 20": "bootstrap = 5"}
    config = write_config(tmp_path, tiny_hf_folder, **replace)
    code, first, err = run(["run", config, "--out", tmp_path / "first", "--quiet"], capsys)
    assert code == 0, err
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"train-000000003", "train-000000006"}
    code, again, err = run(["run", config, "--out", tmp_path / "again", "--quiet"], capsys)
    assert code == 0 and "resumed after the last step" in again, err
    a, b = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("first", "again"))
    assert b["training"]["resumed_from"] == 6 and a["training"]["resumed_from"] is None
    assert a["arms"][0]["exhaustiveness_self"] == b["arms"][0]["exhaustiveness_self"]
    assert a["arms"][0]["final_training_loss"] == b["arms"][0]["final_training_loss"]
    assert "evidence_attribution.nc" not in {p.name for p in (tmp_path / "first").iterdir()}
