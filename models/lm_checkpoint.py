"""Checkpoints of :class:`~models.transformer.PersonaLM`: written and read without unpickling anything.

A checkpoint is a folder with ``model.safetensors`` (the weights, safetensors)
and ``config.json`` (the :class:`~models.transformer.TransformerConfig` and a
format version)::

    save_checkpoint(model, "runs/base")      # atomic: each file written aside, then renamed
    model = load_checkpoint("runs/base")     # one-line InputError for anything missing or corrupt

:func:`load_state_dict_file` also reads a ``.pt``/``.pth`` state dict, through
``torch.load(weights_only=True)`` only: a pickle that would build anything but
tensors and plain containers (possibly executable code) is refused.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor, nn

from models.errors import InputError
from models.transformer import PersonaLM, TransformerConfig

CHECKPOINT_FORMAT = "psm-persona-lm"
CHECKPOINT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(model: PersonaLM, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed).

    Each file is written under a temporary name and renamed into place.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        tmp = directory / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
        safetensors.torch.save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT})
        os.replace(tmp, directory / WEIGHTS_FILE)
        meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "config": model.config.to_dict()}
        tmp = directory / f".{CONFIG_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, directory / CONFIG_FILE)
    except OSError as exc:
        raise InputError(f"{directory}: cannot write checkpoint ({exc.strerror or exc})") from None
    return directory


def load_config(directory: str | os.PathLike) -> TransformerConfig:
    """Read and validate ``config.json`` of a checkpoint folder."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{path}: no such file (not a model checkpoint folder)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({_first_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint config")
    if meta.get("format_version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: format_version {meta.get('format_version')!r}, expected {CHECKPOINT_VERSION}")
    try:
        return TransformerConfig.from_dict(meta.get("config"))
    except (InputError, TypeError) as exc:
        raise InputError(f"{path}: {_first_line(exc)}") from None


def load_checkpoint(directory: str | os.PathLike) -> PersonaLM:
    """Load a :class:`PersonaLM` written by :func:`save_checkpoint` (safetensors only, no pickle).

    Raises :class:`InputError` (one line) for a missing, corrupt or mismatched file.
    """
    config = load_config(directory)
    state = load_state_dict_file(Path(directory) / WEIGHTS_FILE)
    model = PersonaLM(config)
    load_weights(model, state, source=str(Path(directory) / WEIGHTS_FILE))
    model.eval()
    return model


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str = "state dict") -> None:
    """Copy ``state`` into ``model``; one-line errors for missing, unexpected or misshaped tensors."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(f"{source}: weights do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, value in own.items():
        if state[name].shape != value.shape or state[name].dtype != value.dtype:
            raise InputError(
                f"{source}: tensor {name} is {tuple(state[name].shape)} {state[name].dtype}, "
                f"expected {tuple(value.shape)} {value.dtype}"
            )
        if value.is_floating_point() and not torch.isfinite(state[name]).all():
            raise InputError(f"{source}: tensor {name} has NaN or infinite entries")
    model.load_state_dict(state)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a tensor dictionary from ``.safetensors``, or from ``.pt``/``.pth`` with ``weights_only=True``.

    A pickle that would run code (or build any object other than tensors and
    plain containers) is refused with :class:`InputError`; nothing in it is
    executed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            state = safetensors.torch.load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for corrupt headers and data
            raise InputError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    elif path.suffix in (".pt", ".pth", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), "")
            raise InputError(
                f"{path}: refused to load: the pickle holds objects other than tensors "
                f"(possibly executable code); only plain state dicts load{f' ({reason[:200]})' if reason else ''}"
            ) from None
        except Exception as exc:  # a corrupt archive or pickle stream raises many types (KeyError, IndexError, ...)
            raise InputError(f"{path}: not a readable torch file ({_first_line(exc)})") from None
    else:
        raise InputError(f"{path}: unknown weights format (expected .safetensors, .pt or .pth)")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise InputError(f"{path}: expected a dictionary of named tensors")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
