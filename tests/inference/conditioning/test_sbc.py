"""Simulation-based calibration: the rank statistic, the uniformity test, calibrated exact methods
pass it and deliberately mis-calibrated ones fail it at the same N, the engines plug in, ``psm sbc``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference.cli import main
from inference.conditioning import sbc
from models.errors import InputError

LEVEL = 1e-3
#: simulations per exact SBC test: enough for beta = 3 to fail at LEVEL (the global model has one
#: discrete parameter with 3 values, so it needs more)
EXACT_SIMS = {"mixture": 200, "global": 400, "global-tables": 200}
JSON_KEYS = {"model", "method", "num_sims", "num_draws", "ranks", "p_value", "min_p_value", "seconds"}


def test_rank_statistic_counts_draws_below_and_splits_ties_uniformly():
    gen = np.random.default_rng(0)
    assert sbc.rank_statistic(2.5, np.array([0.0, 1.0, 3.0, 4.0]), gen) == 2
    n = 3000
    ranks = np.array([sbc.rank_statistic(1, np.array([0, 1, 1, 2]), gen) for _ in range(n)])
    counts = np.bincount(ranks, minlength=5)
    assert counts[0] == counts[4] == 0  # one draw below, one above, two ties: ranks 1, 2 or 3
    se = np.sqrt(n * (1 / 3) * (2 / 3))
    assert np.all(np.abs(counts[1:4] - n / 3) < 5 * se)


def test_bins_cover_every_rank_and_the_test_rejects_skewed_ranks():
    L, B = 99, 7  # 100 ranks into 7 unequal bins
    edges = sbc.bin_edges(L, B)
    assert edges[0] == 0 and edges[-1] == L + 1 and np.all(np.diff(edges) > 0)
    counts, probs = sbc.rank_histogram(np.arange(L + 1), L, B)
    assert counts.sum() == L + 1 and np.allclose(probs, np.diff(edges) / (L + 1)) and np.isclose(probs.sum(), 1)
    np.testing.assert_array_equal(counts, np.diff(edges))  # every rank once: counts equal the widths
    uniform = np.random.default_rng(1).integers(0, L + 1, size=2000)
    assert sbc.uniformity_p_value(uniform, L, 20) > LEVEL
    u_shaped = np.concatenate([uniform[:1000] // 10, L - uniform[1000:] // 10])  # ranks piled at both ends
    assert sbc.uniformity_p_value(u_shaped, L, 20) < 1e-10


@pytest.mark.parametrize("model", list(EXACT_SIMS))
def test_exact_methods_are_calibrated_and_an_overconfident_posterior_is_not(model):
    """Exact conditioning passes at LEVEL; conditioning with beta = 3 on data simulated with
    beta = 1 (an over-confident posterior) fails at the same N: the test can fail."""
    n = EXACT_SIMS[model]
    good = sbc.simulation_based_calibration(model, "exact", n, seed=0)
    assert good.num_sims == n and good.num_draws == sbc.DEFAULT_DRAWS
    for ranks in good.ranks.values():
        assert ranks.shape == (n,) and ranks.min() >= 0 and ranks.max() <= good.num_draws
    assert good.min_p_value == min(good.p_values.values()) > LEVEL, good.p_values
    bad = sbc.simulation_based_calibration(model, "exact", n, seed=0, beta=3.0)
    assert bad.min_p_value < LEVEL, bad.p_values


def test_parameters_of_each_model():
    names = {model: set(sbc.simulation_based_calibration(model, "exact", 2, seed=1).ranks) for model in sbc.MODELS}
    assert names["mixture"] == {"w[0]", "w[1]", "w[2]"}
    assert names["global"] == {"h"}
    assert names["global-tables"] == {"h"} | {f"trans[hmap,0,{v}]" for v in range(4)}


@pytest.mark.parametrize("model, method, options", [
    ("mixture", "svi", {"num_steps": 20}),
    ("global-tables", "svi", {"num_steps": 10, "guide": "normal"}),
    ("mixture", "mcmc", {"warmup_steps": 10, "thin": 2}),
    ("global-tables", "mcmc", {"warmup_steps": 5, "thin": 2}),
])
def test_sampling_engines_plug_in(model, method, options):
    L = 9
    result = sbc.simulation_based_calibration(model, method, 2, seed=0, num_draws=L, **options)
    for ranks in result.ranks.values():
        assert ranks.shape == (2,) and ranks.min() >= 0 and ranks.max() <= L
    if method == "mcmc":
        assert result.options["engine"]["num_samples"] == L * options["thin"]
        assert set(result.diagnostics) == {"divergences", "median_ess_min"}
    else:
        assert result.options["engine"]["num_samples"] == L
        assert result.diagnostics["median_steps"] <= options["num_steps"]


def test_same_seed_same_ranks_other_seed_other_ranks():
    a, b, c = (sbc.simulation_based_calibration("mixture", "exact", 8, seed=s) for s in (3, 3, 4))
    for name in a.ranks:
        np.testing.assert_array_equal(a.ranks[name], b.ranks[name])
    assert any(not np.array_equal(a.ranks[k], c.ranks[k]) for k in a.ranks)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(model="hmm", method="exact"), "choose one of mixture, global, global-tables"),
    (dict(model="global", method="svi"), "choose one of exact"),
    (dict(model="mixture", method="bogus"), "choose one of exact, svi, mcmc"),
    (dict(model="mixture", method="exact", num_sims=0), "num_sims"),
    (dict(model="mixture", method="exact", num_draws=0), "num_draws"),
    (dict(model="mixture", method="exact", num_draws=sbc.MAX_DRAWS + 1), "num_draws"),
    (dict(model="mixture", method="exact", num_steps=10), "takes no engine options"),
    (dict(model="mixture", method="svi", guide="laplace"), "unknown SVI guide"),
    (dict(model="mixture", method="exact", beta=float("nan")), "beta"),
    (dict(model="mixture", method="exact", alpha=-1.0), "alpha"),
])
def test_bad_arguments_raise_one_line_input_errors(kwargs, fragment):
    kwargs = {"num_sims": 2, "seed": 0, **kwargs}
    with pytest.raises(InputError, match=fragment) as info:
        sbc.simulation_based_calibration(**kwargs)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- psm sbc


def sbc_argv(out, *extra, model="mixture", method="exact", num_sims="20") -> list[str]:
    return ["sbc", "--model", model, "--method", method, "--num-sims", num_sims, "--seed", "0",
            "--out", str(out), "--quiet", *extra]


def test_cli_writes_sbc_json_and_a_png(tmp_path, capsys):
    out = tmp_path / "sbc"
    assert main(sbc_argv(out, "--num-draws", "49")) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("\n") == 1 and str(out / "sbc.json") in stdout
    summary = json.loads((out / "sbc.json").read_text())
    assert JSON_KEYS <= set(summary)
    assert summary["model"] == "mixture" and summary["method"] == "exact"
    assert summary["num_sims"] == 20 and summary["num_draws"] == 49
    assert set(summary["ranks"]) == set(summary["p_value"]) == {"w[0]", "w[1]", "w[2]"}
    assert all(len(r) == 20 and all(0 <= x <= 49 for x in r) for r in summary["ranks"].values())
    assert summary["min_p_value"] == min(summary["p_value"].values())
    api = sbc.simulation_based_calibration("mixture", "exact", 20, seed=0, num_draws=49)
    assert summary["ranks"] == {k: v.tolist() for k, v in api.ranks.items()}  # the CLI is the API
    png = out / "sbc_ranks.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert sorted(p.name for p in out.iterdir()) == ["sbc.json", "sbc_ranks.png"]


@pytest.mark.parametrize("argv_extra, kwargs, fragment", [
    ((), dict(num_sims="0"), "--num-sims"),
    ((), dict(num_sims="many"), "--num-sims"),
    ((), dict(model="global", method="svi"), "choose one of exact"),
    ((), dict(model="lda"), "--model"),
    (("--num-draws", "0"), {}, "--num-draws"),
    (("--beta", "-1"), {}, "--beta"),
    (("--beta", "nan"), {}, "--beta"),
    (("--guide", "normal"), {}, "--guide applies to method svi"),
    (("--thin", "2"), dict(method="svi"), "--thin applies to method mcmc"),
    (("--guide", "laplace"), dict(method="svi"), "unknown SVI guide"),
])
def test_cli_bad_input_exits_2_with_one_line_and_no_files(tmp_path, capsys, argv_extra, kwargs, fragment):
    out = tmp_path / "nested" / "sbc"
    code = main(sbc_argv(out, *argv_extra, **kwargs))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("psm: error: ") and err.count("\n") == 1 and fragment in err, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_an_output_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert main(sbc_argv(target, num_sims="2")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_help_lists_the_models(capsys):
    assert main(["sbc", "--help"]) == 0
    text = capsys.readouterr().out
    for model, methods in sbc.MODELS.items():
        assert model in text and f"({', '.join(methods)})" in text


@pytest.mark.parametrize("model, num_params", [("global", 1), ("mixture", 3)])
def test_rank_plot_is_an_oo_figure_with_a_labelled_band_and_a_title_that_fits(model, num_params):
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from inference.conditioning.sbc_ranks import plot_ranks

    result = sbc.simulation_based_calibration(model, "exact", 20, seed=1, num_draws=19)
    open_before = plt.get_fignums()
    fig = plot_ranks(result)
    assert isinstance(fig, Figure) and plt.get_fignums() == open_before  # no pyplot state
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    title = fig.get_suptitle()
    assert result.model in title and f"N = {result.num_sims}" in title
    drawn, page = fig.get_tightbbox(renderer), fig.bbox_inches  # everything drawn (titles too) lies on the page
    assert page.x0 <= drawn.x0 and drawn.x1 <= page.x1 and page.y0 <= drawn.y0 and drawn.y1 <= page.y1
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("99% band" in label for label in labels) and "observed ranks" in labels
    assert sum(ax.get_visible() for ax in fig.axes) == num_params
    assert all(ax.get_xlabel() for ax in fig.axes if ax.get_visible())
