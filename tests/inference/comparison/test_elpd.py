"""Held-out ELPD and its ArviZ comparison table."""

import math

import numpy as np
import pytest

from inference.comparison.elpd import heldout_elpd
from inference.diagnostics import elpd_table
from models.errors import InputError


def test_heldout_elpd_and_its_arviz_table():
    rng = np.random.default_rng(0)
    point = rng.normal(-10, 1, (1, 30))  # a point-estimate model: S = 1
    draws = rng.normal(-10.5, 1, (50, 30))
    elpd, se, pointwise = heldout_elpd(point)
    assert elpd == pytest.approx(point.sum()) and se == pytest.approx(math.sqrt(30 * point.var()))
    elpd_b, _, pointwise_b = heldout_elpd(draws)
    brute = [math.log(np.mean(np.exp(draws[:, d]))) for d in range(30)]
    np.testing.assert_allclose(pointwise_b, brute, rtol=0, atol=1e-10)
    table = elpd_table({"point": pointwise, "bayes": pointwise_b}, {"bayes": 50})
    assert list(table.index) == ["point", "bayes"] if elpd > elpd_b else ["bayes", "point"]
    assert table.loc["point", "elpd_loo"] == pytest.approx(elpd)
    assert table.loc["bayes", "elpd_loo"] == pytest.approx(elpd_b)
    assert table.loc["point", "se"] == pytest.approx(se)
    assert (table["p_loo"] == 0).all()
    diff = pointwise - pointwise_b
    worse = table.index[1]
    assert table.loc[worse, "dse"] == pytest.approx(math.sqrt(30 * diff.var()))
    assert table.loc[worse, "elpd_diff"] == pytest.approx(abs(diff.sum()))
    with pytest.raises(ValueError):
        elpd_table({"a": pointwise, "b": pointwise_b[:10]})
    with pytest.raises(InputError):
        heldout_elpd(np.zeros(3))
