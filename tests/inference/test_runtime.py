"""Torch threads around sampling and training: one by default, PSM_THREADS overrides, the caller's restored."""

from __future__ import annotations

import pytest
import torch

from inference.runtime import default_threads, single_thread, torch_threads
from models.errors import InputError


@pytest.fixture
def caller_threads():
    """The caller runs with 2 threads (restored after the test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_one_thread_inside_and_the_callers_setting_after(monkeypatch, caller_threads):
    monkeypatch.delenv("PSM_THREADS", raising=False)
    with torch_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == caller_threads
    with torch_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == caller_threads


def test_the_callers_setting_is_restored_after_an_error(monkeypatch, caller_threads):
    monkeypatch.delenv("PSM_THREADS", raising=False)
    with pytest.raises(RuntimeError, match="inside"), torch_threads():
        raise RuntimeError("inside")
    assert torch.get_num_threads() == caller_threads


def test_psm_threads_is_honoured(monkeypatch, caller_threads):
    monkeypatch.setenv("PSM_THREADS", "3")
    assert default_threads() == 3
    seen = []
    single_thread(lambda: seen.append(torch.get_num_threads()))()
    assert seen == [3] and torch.get_num_threads() == caller_threads


@pytest.mark.parametrize("text", ["two", "0", "-1", "", "1.5"])
def test_a_bad_psm_threads_is_a_one_line_input_error(monkeypatch, caller_threads, text):
    monkeypatch.setenv("PSM_THREADS", text)
    with pytest.raises(InputError) as info, torch_threads():
        pass
    message = str(info.value)
    assert "PSM_THREADS" in message and repr(text) in message and "\n" not in message
    assert torch.get_num_threads() == caller_threads
