"""Device settings: cpu, cuda, cuda:N, auto; the autocast dtype of each."""

import pytest
import torch

from models.devices import autocast_dtype, check_device_name, resolve_device
from models.errors import InputError


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert autocast_dtype(torch.device("cpu")) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error():
    for name in ("cuda", "cuda:0"):
        with pytest.raises(InputError, match="no CUDA") as err:
            resolve_device(name)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:x", "", 0, None])
def test_bad_device_names(bad):
    with pytest.raises(InputError, match="device must be one of"):
        check_device_name(bad)
