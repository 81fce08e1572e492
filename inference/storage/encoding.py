"""How a checkpoint's state becomes JSON plus tensors, and how runs are fingerprinted.

* :func:`encode` / :func:`decode`: a state tree (dicts, lists, tuples, numbers,
  strings, tensors, NumPy arrays) as a JSON-ready tree plus a dictionary of tensors for
  safetensors, and back, exactly (tuples, non-string keys, NaN survive);
* :func:`rng_state` / :func:`set_rng_state`: the torch, Python and NumPy global RNGs;
* :func:`fingerprint`: a short hash of a run's settings and data, which a checkpoint
  must carry to be resumed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import Any

import numpy as np
import pyro.util
import torch
from torch import Tensor

from models.errors import InputError


def encode(state: Any) -> tuple[Any, dict[str, Tensor]]:
    """Split a state tree into a JSON-ready tree and the tensors it refers to.

    Tensors become ``{"$tensor": name}``, NumPy arrays ``{"$ndarray": name, "dtype": ...}``
    (stored as a tensor; uint32 widened to int64), tuples ``{"$tuple": [...]}``, dicts
    with a non-string (or ``$``-prefixed) key ``{"$dict": [[key, value], ...]}``;
    tensor names are the paths of the tensors in the tree.
    """
    tensors: dict[str, Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, Tensor):
            return {"$tensor": _put(tensors, path, obj.detach().cpu().contiguous().clone())}
        if isinstance(obj, np.ndarray):
            wide = obj.astype(np.int64) if obj.dtype == np.uint32 else obj
            return {"$ndarray": _put(tensors, path, torch.from_numpy(np.ascontiguousarray(wide)).clone()),
                    "dtype": obj.dtype.str}
        if isinstance(obj, (bool, int, str)) or obj is None:
            return obj
        if isinstance(obj, float):
            return obj  # json writes NaN / Infinity and reads them back
        if isinstance(obj, (np.integer, np.floating)):
            return obj.item()
        if isinstance(obj, tuple):
            return {"$tuple": [walk(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in obj):
                return {k: walk(v, f"{path}/{k}") for k, v in obj.items()}
            return {"$dict": [[walk(k, f"{path}/key"), walk(v, f"{path}/{k}")] for k, v in obj.items()]}
        raise TypeError(f"cannot checkpoint a {type(obj).__name__} (at {path or '/'})")

    return walk(state, ""), tensors


def decode(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "$tensor" in tree:
        return tensors[tree["$tensor"]]
    if "$ndarray" in tree:
        return tensors[tree["$ndarray"]].numpy().astype(np.dtype(tree["dtype"]))
    if "$tuple" in tree:
        return tuple(decode(v, tensors) for v in tree["$tuple"])
    if "$dict" in tree:
        return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in tree["$dict"]}
    return {k: decode(v, tensors) for k, v in tree.items()}


def _put(tensors: dict[str, Tensor], path: str, value: Tensor) -> str:
    name, n = path or "/", 1
    while name in tensors:
        name, n = f"{path}#{n}", n + 1
    tensors[name] = value
    return name


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)):
        raise TypeError(f"unhashable key {key!r}")
    return key


# ---------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Torch, Python ``random`` and NumPy global RNG states (``pyro.util.get_rng_state``), encodable."""
    return pyro.util.get_rng_state()


def set_rng_state(state: Any, source: str | os.PathLike = "checkpoint") -> None:
    """Restore :func:`rng_state`; a malformed state raises a one-line :class:`InputError`."""
    try:
        version, internal, gauss = state["random"]
        name, keys, pos, has_gauss, cached = state["numpy"]
        pyro.util.set_rng_state({
            "torch": state["torch"],
            "random": (version, tuple(internal), gauss),
            "numpy": (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
        })
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{source}: damaged checkpoint (bad RNG state: {_first_line(exc)})") from None


# ---------------------------------------------------------------- fingerprints


def fingerprint(*objs: Any) -> str:
    """A short SHA-256 of tensors, arrays, numbers, strings, containers, dataclasses and functions.

    Tensors and arrays count by dtype, shape and bytes; dataclasses by type and fields;
    functions by module and qualified name (``functools.partial`` and Pyro messengers,
    e.g. ``poutine.condition``, by their contents too); other objects by type only.
    """
    digest = hashlib.sha256()
    seen: set[int] = set()

    def feed(obj: Any) -> None:
        if isinstance(obj, Tensor):
            t = obj.detach().cpu().contiguous()
            digest.update(f"T{tuple(t.shape)}{t.dtype}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, np.ndarray):
            digest.update(f"A{obj.shape}{obj.dtype.str}".encode())
            digest.update(np.ascontiguousarray(obj).tobytes())
        elif obj is None or isinstance(obj, (bool, int, float, str, np.generic)):
            digest.update(f"{type(obj).__name__}:{obj!r};".encode())
        elif isinstance(obj, (list, tuple)):
            digest.update(f"{type(obj).__name__}[{len(obj)}".encode())
            for v in obj:
                feed(v)
            digest.update(b"]")
        elif isinstance(obj, dict):
            digest.update(f"dict[{len(obj)}".encode())
            for k in sorted(obj, key=repr):
                feed(k)
                feed(obj[k])
            digest.update(b"]")
        elif id(obj) in seen:
            digest.update(b"<cycle>")
        else:
            seen.add(id(obj))
            if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
                digest.update(_qualname(type(obj)).encode())
                for f in dataclasses.fields(obj):
                    feed(f.name)
                    feed(getattr(obj, f.name))
            elif isinstance(obj, functools.partial):
                digest.update(b"partial")
                feed(obj.func)
                feed(obj.args)
                feed(obj.keywords)
            elif isinstance(obj, pyro.poutine.messenger.Messenger):
                digest.update(_qualname(type(obj)).encode())
                feed({k: v for k, v in vars(obj).items() if not k.startswith("_")})
            else:
                digest.update(_qualname(obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)).encode())
                if hasattr(obj, "__wrapped__"):
                    feed(obj.__wrapped__)

    for obj in objs:
        feed(obj)
    return digest.hexdigest()[:16]


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
