"""Output folders: committed whole or not at all, never mixed with an earlier run."""

import json

import numpy as np
import pytest
import torch

from inference.storage import outputs
from models.errors import InputError


def test_atomic_output_dir_commits_or_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(KeyError):
        with outputs.atomic_output_dir(out) as tmp:
            outputs.write_json_atomic(tmp / "a.json", {"x": 1})
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []  # the parents it created are gone too

    with outputs.atomic_output_dir(out) as tmp:
        outputs.write_json_atomic(tmp / "a.json", {"x": float("nan"), "y": np.float32(2.0), "z": torch.tensor([1, 2])})
    assert [p.name for p in out.iterdir()] == ["a.json"]
    assert [p.name for p in out.parent.iterdir()] == ["out"]
    assert json.loads((out / "a.json").read_text()) == {"x": None, "y": 2.0, "z": [1, 2]}


def test_check_output_dir_refuses_files(tmp_path):
    (tmp_path / "f").write_text("")
    for bad in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(InputError):
            outputs.check_output_dir(bad)
    assert outputs.check_output_dir(tmp_path / "x" / "y") == tmp_path / "x" / "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    with pytest.raises(InputError, match="empty"):
        outputs.check_output_dir("")
    with pytest.raises(InputError, match="not empty"):
        outputs.check_output_dir(tmp_path)
    assert outputs.check_output_dir(tmp_path, overwrite=True) == tmp_path


def test_overwrite_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    with pytest.raises(InputError, match="not empty"):
        with outputs.atomic_output_dir(out):
            pass
    with outputs.atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("this run")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing renamed aside is left
