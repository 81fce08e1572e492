"""Every notebook runs top to bottom in smoke mode (PSM_SMOKE=1), and none is left out."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = [
    "01_quickstart.ipynb",
    "02_finetuning_as_conditioning.ipynb",
    "03_ciphers.ipynb",
    "04_elicitation.ipynb",
    "05_narrow_to_broad.ipynb",
    "06_incontext_vs_finetuning.ipynb",
    "07_federalist.ipynb",
    "08_novelists.ipynb",
]


def test_every_notebook_is_in_the_list():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("PSM_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors
