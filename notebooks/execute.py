"""Execute notebooks at full size and keep their outputs (``make notebooks``).

    python notebooks/execute.py [NOTEBOOK.ipynb ...]     # all notebooks when none is named

Each notebook runs top to bottom in its own folder with ``PSM_SMOKE`` unset (full size) and is
written back with its outputs; only volatile metadata (execution timestamps, the kernel's
version strings) is stripped, so a re-run changes a file only where a result changed.
``PSM_SMOKE=1`` runs them in smoke mode instead (what the tests do, without writing anything back
unless ``--write`` is given).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
#: per-notebook time limit, seconds
TIMEOUT = 3600


def strip_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop execution timestamps and kernel/language versions; keep every output."""
    nb.metadata.pop("widgets", None)
    nb.metadata.get("language_info", {}).pop("version", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def execute(path: Path, write: bool) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    seconds = time.perf_counter() - start
    if write:
        nbformat.write(strip_metadata(nb), path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all)")
    parser.add_argument("--write", action="store_true", help="in smoke mode too, write the outputs back")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(HERE.glob("*.ipynb"))
    smoke = os.environ.get("PSM_SMOKE") == "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    for path in paths:
        seconds = execute(path, write=args.write or not smoke)
        print(f"{path.name}: {seconds:.0f} s ({'smoke' if smoke else 'full'} mode)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
