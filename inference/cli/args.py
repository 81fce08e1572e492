"""Argument helpers shared by every ``psm`` command: types, common flags, the one-line output.

Nothing here imports torch, Pyro, NumPy or ArviZ: ``psm --help`` and usage errors stay fast.
"""

from __future__ import annotations

import argparse
import math

from models.limits import MAX_SEED


class UsageError(Exception):
    """An argument argparse could not accept (reported like :class:`~models.errors.InputError`)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: raises :class:`UsageError` instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


class Command:
    """A ``psm`` subcommand: its name, one-line help, argument builder and runner.

    (A plain class: ``dataclasses`` alone would double the start-up time of ``psm --help``.)
    """

    __slots__ = ("name", "help", "add_arguments", "run")

    def __init__(self, name: str, help: str, add_arguments, run) -> None:
        self.name, self.help, self.add_arguments, self.run = name, help, add_arguments, run


# ---------------------------------------------------------------- argument types


def _number(text: str, kind: type, low: float, high: float | None, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    finite = kind is int or math.isfinite(value)
    if not (finite and value >= low and (high is None or value <= high)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def bounded_int(low: int, high: int | None = None):
    """argparse type: an integer in ``[low, high]``."""
    what = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        return _number(text, int, low, high, what)

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (refuses NaN and infinities)."""
    return _number(text, float, 0.0, None, "a finite number >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text, float, 0.0, None, "a finite number > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def path(text: str):
    """argparse type: a :class:`~pathlib.Path` (pathlib is imported only when an argument is parsed)."""
    from pathlib import Path

    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def folder(text: str):
    """argparse type: a folder path; the empty string is refused (``Path("")`` would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty string")
    return path(text)


# ---------------------------------------------------------------- common flags

SEED_HELP = "seed of every random choice the command makes (default 0)"


def add_seed(parser: argparse.ArgumentParser, help: str = SEED_HELP, default: int | None = 0) -> None:
    """``--seed S``: the same meaning on every command."""
    parser.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=default, metavar="S", help=help)


def add_out(parser: argparse.ArgumentParser, default: str | None = None, what: str = "output folder") -> None:
    """``--out DIR`` and ``--overwrite``.

    A folder that exists and is not empty is refused unless ``--overwrite`` is given;
    then the command's outputs replace the folder whole (nothing of the earlier run
    is left), once the command has succeeded.
    """
    if default is None:
        parser.add_argument("--out", type=folder, required=True, metavar="DIR", help=what)
    else:
        # argparse passes a string default through ``type`` when it is used
        parser.add_argument("--out", type=folder, default=default, metavar="DIR", help=f"{what} (default {default})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DIR whole if it exists and is not empty (default: refuse)")


def device_name(text: str) -> str:
    """argparse type: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (whether CUDA exists is checked when the run starts)."""
    import re

    if text in ("cpu", "cuda", "auto") or re.fullmatch(r"cuda:\d{1,2}", text):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}")


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: where the networks train and are evaluated (overrides the config's ``device``)."""
    parser.add_argument("--device", type=device_name, default=None, metavar="D",
                        help="cpu, cuda, cuda:N or auto (CUDA when torch sees a GPU); default: the config's device")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def say(message: str) -> None:
    """The one human line (or few) a command prints on stdout when it is done."""
    print(message, flush=True)


def files(out, names: list[str]) -> str:
    """``out/a, out/b, ...`` for the closing line of a command."""
    return ", ".join(str(out / name) for name in names)


def output_folder(args: argparse.Namespace, what: str = "out"):
    """Check ``--out`` (and ``--overwrite``) before any work: see :func:`inference.storage.outputs.check_output_dir`."""
    from inference.storage.outputs import check_output_dir

    return check_output_dir(getattr(args, what), overwrite=getattr(args, "overwrite", False))
