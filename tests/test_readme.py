"""The README's "API in ten lines" runs as printed (a README that lies fails here)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_api_example_runs():
    text = README.read_text()
    match = re.search(r"## The API in ten lines\n\n```python\n(.*?)```", text, re.S)
    assert match, "README has no 'The API in ten lines' python block"
    code = match.group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    post, idata = scope["post"], scope["idata"]
    torch.testing.assert_close(post.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert {"posterior", "posterior_predictive", "log_likelihood", "observed_data", "sample_stats"} <= set(idata.groups())


def test_every_figure_and_shipped_config_the_readme_names_exists():
    text = README.read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert figures, "README shows no figure"
    missing = [f for f in figures if not (README.parent / f).is_file()]
    assert not missing, f"README links missing figures: {missing}"
    from inference.experiment.kinds import SHIPPED_CONFIGS

    for line in re.findall(r"psm run ([a-z_|]+) --out", text):
        for name in line.split("|"):
            assert (SHIPPED_CONFIGS / f"{name}.toml").is_file(), f"README runs an unshipped config {name!r}"
