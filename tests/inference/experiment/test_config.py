import pytest

from inference.experiment.config import ExperimentConfig, config_from_dict, demo_config, load_config
from models.errors import InputError


def test_a_small_file_fills_in_the_defaults(tmp_path):
    (tmp_path / "exp.toml").write_text(
        'seed = 3\n[world]\nnum_personas = 4\n[base]\ncheckpoint = "ckpt"\n'
        '[[arms]]\nname = "a"\npersona = 1\n[[arms]]\nname = "b"\npersona = "novel"\n'
    )
    config = load_config(tmp_path / "exp.toml")
    assert config.seed == 3 and config.world.num_personas == 4
    assert config.world.vocab_size == ExperimentConfig().world.vocab_size
    assert [a.persona for a in config.arms] == [1, "novel"]
    assert config.base.checkpoint == str(tmp_path / "ckpt")  # relative to the file


def test_demo_config_is_valid():
    config = demo_config()
    assert config.base.checkpoint == "default"
    assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"wrold": {}}, "wrold"),
        ({"world": {"vocab": 3}}, "world.vocab"),
        ({"world": {"vocab_size": "x"}}, "world.vocab_size"),
        ({"world": {"vocab_size": 1}}, "world.vocab_size"),
        ({"world": {"concentration": float("nan")}}, "world.concentration"),
        ({"base": {"lr": -1.0}}, "base.lr"),
        ({"base": {"n_embd": 10, "n_head": 4}}, "base.n_embd"),
        ({"base": {"p_tag": 1.5}}, "base.p_tag"),
        ({"finetune": {"method": "magic"}}, "finetune.method"),
        ({"finetune": {"snapshots": [1, 2]}}, "finetune.snapshots"),
        ({"finetune": {"steps": 0}}, "finetune.steps"),
        ({"compare": {"betas": [1.0]}}, "compare.betas"),
        ({"compare": {"betas": [-1.0, 1.0]}}, "compare.betas"),
        ({"arms": []}, "arms"),
        ({"arms": [{"persona": 99}]}, "arms[0].persona"),
        ({"arms": [{"persona": "someone"}]}, "arms[0].persona"),
        ({"arms": [{"name": "x", "colour": 1}]}, "arms[0].colour"),
        ({"arms": [{"name": "a"}, {"name": "a"}]}, "names must be unique"),
        ({"arms": [{"prompt_len": 48}]}, "arms[0].prompt_len"),
        ({"seed": "zero"}, "seed"),
    ],
)
def test_bad_configs_name_the_key_in_one_line(raw, key):
    with pytest.raises(InputError, match=key.replace("[", r"\[").replace("]", r"\]")) as err:
        config_from_dict(raw)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_config(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[world\nnum = ")
    with pytest.raises(InputError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_an_empty_config_is_the_demo_experiment_with_the_shipped_base(tmp_path):
    import dataclasses

    from inference.experiment.config import demo_config
    from inference.experiment.world import DEFAULT_CHECKPOINT, base_source

    (tmp_path / "empty.toml").write_text("")
    config = load_config(tmp_path / "empty.toml")
    assert base_source(config) == DEFAULT_CHECKPOINT  # "auto": the shipped base fits the default world
    demo = demo_config()
    assert dataclasses.replace(config, base=demo.base) == demo
    other_world = dataclasses.replace(config, world=dataclasses.replace(config.world, vocab_size=12))
    assert base_source(other_world) is None  # another world: a base is pre-trained for it
    assert base_source(dataclasses.replace(config, base=dataclasses.replace(config.base, checkpoint=""))) is None


def test_an_arm_longer_than_the_worlds_documents_is_refused_before_any_work():
    with pytest.raises(InputError, match=r"arms\[0\].doc_len"):
        config_from_dict({"world": {"doc_len": 12}, "arms": [{"name": "a", "persona": 0, "doc_len": 20}]})
