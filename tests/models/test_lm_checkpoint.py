"""PersonaLM checkpoints: round trips, corrupt and missing files, and pickles that would run code."""

import json
import os
import pickle

import pytest
import torch

from models.errors import InputError
from models.lm_checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
)
from models.transformer import next_token_logprobs


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_checkpoint_round_trip(model, docs, tmp_path):
    save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == [CONFIG_FILE, WEIGHTS_FILE]  # no temporary files left
    meta = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert meta["config"] == model.config.to_dict() and meta["format_version"] == 1
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    for tag in (None, 1):
        assert torch.equal(next_token_logprobs(loaded, docs, tag=tag), next_token_logprobs(model, docs, tag=tag))


def test_corrupt_or_missing_checkpoints_are_refused(model, tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(model, folder)
    weights = (folder / WEIGHTS_FILE).read_bytes()
    config = (folder / CONFIG_FILE).read_text()

    def refused(what):
        with pytest.raises(InputError) as excinfo:
            load_checkpoint(folder)
        assert what in _one_line_error(excinfo)

    (folder / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    refused("safetensors")
    (folder / WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    refused("safetensors")
    (folder / WEIGHTS_FILE).unlink()
    refused("no such file")
    (folder / WEIGHTS_FILE).write_bytes(weights)
    (folder / CONFIG_FILE).write_text(config[:20])
    refused("JSON")
    meta = json.loads(config)
    for change, what in [({"format_version": 99}, "format_version"), ({"config": {**meta["config"], "extra": 1}}, "unknown"),
                         ({"config": {**meta["config"], "n_embd": 32, "n_head": 2}}, "expected (9, 32)"), ({"format": "x"}, "not a")]:
        (folder / CONFIG_FILE).write_text(json.dumps(meta | change))
        refused(what)
    (folder / CONFIG_FILE).unlink()
    refused("no such file")
    with pytest.raises(InputError):
        load_checkpoint(tmp_path / "nowhere")


class _RunsACommand:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_and_not_executed(model, tmp_path):
    marker = tmp_path / "pwned"
    evil_torch = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _RunsACommand(marker)}, evil_torch)
    evil_plain = tmp_path / "evil.pth"
    evil_plain.write_bytes(pickle.dumps(_RunsACommand(marker)))
    for path in (evil_torch, evil_plain):
        with pytest.raises(InputError) as excinfo:
            load_state_dict_file(path)
        assert "refused" in _one_line_error(excinfo)
    assert not marker.exists()
    # a plain state dict saved with torch.save still loads
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    state = load_state_dict_file(good)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(InputError, match="unknown weights format"):
        load_state_dict_file(tmp_path / "w.txt")
