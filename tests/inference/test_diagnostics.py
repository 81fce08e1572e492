import numpy as np
import pytest

from inference import diagnostics
from inference.conditioning.condition import condition


@pytest.mark.parametrize("model", ["global", "mixture"])
def test_inference_data_round_trips_through_netcdf(tiny_world, tmp_path, model):
    personas, ev, _ = tiny_world
    idata = condition(personas, ev, model=model, method="exact", seed=2).to_arviz()
    for group in ("posterior", "posterior_predictive", "log_likelihood", "observed_data", "sample_stats"):
        assert group in idata.groups()
    path = diagnostics.save_netcdf(idata, tmp_path / "post.nc")
    again = diagnostics.load_netcdf(path)
    assert again.groups() == idata.groups()
    for group in idata.groups():
        a, b = idata[group], again[group]
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values)
            assert a[name].dims == b[name].dims
    assert not list(tmp_path.glob(".*tmp"))


def test_exact_mixture_draws_pass_the_convergence_checks(tiny_world):
    personas, ev, _ = tiny_world
    idata = condition(personas, ev, model="mixture", method="exact").to_arviz()
    conv = diagnostics.convergence(idata)
    assert conv["r_hat_max"] < 1.01 and conv["ess_min"] > 400 and conv["divergences"] == 0
    assert diagnostics.summary(idata).shape[0] == 3
    assert np.isfinite(diagnostics.loo(idata).elpd_loo)


def test_log_likelihood_is_the_marginal_per_document(tiny_world):
    personas, ev, _ = tiny_world
    post = condition(personas, ev, model="mixture", method="exact")
    idata = post.to_arviz()
    np.testing.assert_allclose(idata.log_likelihood["documents"].values, post.doc_log_likelihood().numpy())


def test_corrupt_netcdf_is_refused(tmp_path):
    (tmp_path / "bad.nc").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="not a readable"):
        diagnostics.load_netcdf(tmp_path / "bad.nc")
    with pytest.raises(ValueError, match="no such file"):
        diagnostics.load_netcdf(tmp_path / "none.nc")


def test_plots_return_figures(tiny_world):
    personas, ev, _ = tiny_world
    idata = condition(personas, ev, model="mixture", method="exact").to_arviz()
    for fig in (diagnostics.plot_trace(idata), diagnostics.plot_rank(idata), diagnostics.plot_ppc(idata)):
        assert fig.axes
