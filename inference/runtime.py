"""How many threads torch uses while the toolkit computes, set and restored around each call.

The toolkit's tensors are small (a NUTS potential over a ``[D, K]`` matrix, a 2-layer
transformer): on the 2-core machines it runs on, a second intra-op thread costs more in
synchronisation than it gives, and when the cores are shared it made NUTS 5-25x and
fine-tuning up to 20x slower. Sampling, training and the experiment runner therefore use
**one** torch thread by default, restoring the caller's setting afterwards (nothing global
is left changed). Set the environment variable ``PSM_THREADS`` to use more, e.g.
``PSM_THREADS=8`` on a big machine.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def default_threads() -> int:
    """``PSM_THREADS`` when set to a positive integer, else 1."""
    text = os.environ.get("PSM_THREADS", "1")
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        from models.errors import InputError

        raise InputError(f"PSM_THREADS must be a positive integer, got {text!r}")
    return value


@contextmanager
def torch_threads(threads: int | None = None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op torch threads (default :func:`default_threads`), then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(default_threads() if threads is None else threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_thread(fn: F) -> F:
    """Decorator: run ``fn`` under :func:`torch_threads` (one thread unless ``PSM_THREADS`` says otherwise)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
