"""Where the toolkit's networks run: ``cpu``, ``cuda`` (or ``cuda:N``) or ``auto``, and the mixed precision
each device supports.

* :func:`resolve_device`: the ``--device`` / ``device =`` setting as a :class:`torch.device`
  (``auto`` is CUDA when torch sees a GPU, else the CPU); asking for CUDA where torch has none
  is a one-line :class:`~models.errors.InputError`, not a silent fall-back;
* :func:`autocast_dtype`: the dtype training autocasts to, ``bfloat16`` on a CUDA device that
  supports it, ``None`` (full float32) on the CPU. Evaluation (the next-token log-probabilities
  every comparison reads) always runs in float32 and takes the log-softmax in float64: the
  comparisons subtract log-probabilities of nearby models, which bfloat16 would swamp.
"""

from __future__ import annotations

import re

import torch

from models.errors import InputError

#: the values ``device`` takes (besides ``cuda:N``)
DEVICES = ("cpu", "cuda", "auto")


def check_device_name(name: object) -> str:
    """``name`` if it is ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; one-line error otherwise (no torch query)."""
    if not isinstance(name, str) or not (name in DEVICES or re.fullmatch(r"cuda:\d{1,2}", name)):
        raise InputError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")
    return name


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """The :class:`torch.device` of a device setting (module docstring)."""
    if isinstance(name, torch.device):
        name = str(name)
    name = check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; use cpu or auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """``torch.bfloat16`` on a CUDA device that supports it, else ``None`` (no autocast)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
