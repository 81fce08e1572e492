"""The one module that calls ArviZ (0.23.x here; see DESIGN.md §6): arrays in, ArviZ out.

It imports no other toolkit module. Callers compute NumPy arrays (posterior draws
``[chain, draw, ...]``, pointwise log-likelihoods, replicated data) and this module
turns them into ``InferenceData``, convergence numbers, tables and figures. Bad
input raises :class:`ValueError` with a one-line message (the toolkit's
``InputError`` is a ``ValueError`` too; the command line exits with code 2 on both).

``InferenceData`` is built with ``az.from_dict``, never with ``from_pyro`` (whose
log-likelihood of an enumerated model is conditional on the persona, not marginal).

One convention for every R-hat and ESS the toolkit reports: ArviZ's rank-normalised
split R-hat and bulk ESS (:func:`rhat_ess`, :func:`convergence`).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

#: the continuous variables a convergence check looks at, when present
CONTINUOUS = ("w", "persona_probs")


def inference_data(
    *,
    posterior: dict[str, np.ndarray],
    log_likelihood: dict[str, np.ndarray] | None = None,
    sample_stats: dict[str, np.ndarray] | None = None,
    observed_data: dict[str, np.ndarray] | None = None,
    posterior_predictive: dict[str, np.ndarray] | None = None,
    predictive_draws: np.ndarray | None = None,
    dims: dict[str, list[str]] | None = None,
    attrs: dict[str, Any] | None = None,
    coords: dict[str, Any] | None = None,
) -> az.InferenceData:
    """``InferenceData`` from arrays (``[chain, draw, ...]`` for the sampled groups).

    Parameters
    ----------
    posterior, log_likelihood, sample_stats : dict
        Arrays ``[chain, draw, ...]``.
    observed_data : dict
        Arrays of the data themselves.
    posterior_predictive : dict
        Replicated data ``[chain, draw', ...]`` for a thinned subset of the draws.
    predictive_draws : array
        ``[draw']`` the draw indices the replicates belong to.
    dims : dict
        Dimension names of every variable (beyond chain and draw).
    attrs : dict
        Attributes of the groups. ArviZ's ``created_at`` stamps are dropped, so the
        same arrays always give the same file.
    coords : dict, optional
        Labels of the named dimensions (e.g. ``{"author": [...], "word": [...]}``, the shot counts of a curve).
    """
    idata = az.from_dict(posterior=posterior, log_likelihood=log_likelihood, sample_stats=sample_stats,
                         observed_data=observed_data, dims=dims, attrs=attrs, coords=coords)
    if posterior_predictive:
        pp_coords = dict(coords or {})
        if predictive_draws is not None:
            pp_coords["draw"] = np.asarray(predictive_draws)
        idata.extend(az.from_dict(posterior_predictive=posterior_predictive, dims=dims, coords=pp_coords or None))
    for group in idata.groups():
        idata[group].attrs.pop("created_at", None)
    return idata


# ----------------------------------------------------------------------------- convergence


def rhat_ess(samples: dict[str, np.ndarray]) -> dict[str, Any]:
    """Rank-normalised split R-hat and bulk ESS of ``[chain, draw, ...]`` draws (ArviZ).

    Returns
    -------
    dict
        ``r_hat_max`` and ``ess_min`` over every entry of every variable, and per
        variable ``r_hat`` (max) and ``ess`` (min). NaN where ArviZ gives NaN (fewer
        than 4 draws per chain, a constant coordinate); NaN entries are skipped.
    """
    r_hat, ess = {}, {}
    for name, x in samples.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 2:
            raise ValueError(f"samples[{name!r}] must be [chain, draw, ...], got shape {x.shape}")
        flat = x.reshape(*x.shape[:2], -1)  # [c, s, n]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            data = az.convert_to_dataset({name: flat})
            r = np.asarray(az.rhat(data)[name].values, dtype=np.float64) if x.shape[1] >= 4 else np.array([math.nan])
            e = np.asarray(az.ess(data, method="bulk")[name].values, dtype=np.float64) if x.shape[1] >= 4 \
                else np.array([math.nan])
        r_hat[name] = _nan_reduce(r, np.max)
        ess[name] = _nan_reduce(e, np.min)
    values = [v for v in r_hat.values() if v == v]
    sizes = [v for v in ess.values() if v == v]
    return {"r_hat_max": max(values) if values else math.nan, "ess_min": min(sizes) if sizes else math.nan,
            "r_hat": r_hat, "ess": ess}


def _nan_reduce(x: np.ndarray, reduce) -> float:
    x = x[~np.isnan(x)]
    return float(reduce(x)) if x.size else math.nan


def convergence(idata: az.InferenceData, var_names: list[str] | None = None) -> dict[str, float]:
    """``r_hat_max``, ``ess_min`` (bulk) and ``divergences`` over the continuous posterior variables."""
    names = var_names or [v for v in CONTINUOUS if v in idata.posterior]
    out = {"r_hat_max": math.nan, "ess_min": math.nan, "divergences": 0}
    if names:
        found = rhat_ess({v: idata.posterior[v].values for v in names})
        out["r_hat_max"], out["ess_min"] = found["r_hat_max"], found["ess_min"]
    if "sample_stats" in idata and "diverging" in idata.sample_stats:
        out["divergences"] = int(idata.sample_stats["diverging"].values.sum())
    return out


def mcse_mean(idata: az.InferenceData, var_name: str = "w") -> np.ndarray:
    """Monte Carlo standard error of the posterior mean of every entry of ``var_name`` (``az.mcse``), unrounded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(az.mcse(idata, var_names=[var_name], method="mean")[var_name].values, dtype=np.float64)


def summary(idata: az.InferenceData, var_names: list[str] | None = None):
    """ArviZ summary table (pandas DataFrame) of the continuous posterior variables."""
    names = var_names or [v for v in CONTINUOUS if v in idata.posterior] or ["persona"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return az.summary(idata, var_names=names)


def loo(idata: az.InferenceData) -> Any:
    """PSIS-LOO of the pointwise log-likelihood (``az.loo``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.loo(idata, pointwise=True)


def psis_log_weights(log_ratios: np.ndarray, reff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed importance weights (``az.psislw``) of draws, one set per observation.

    Parameters
    ----------
    log_ratios : array
        ``[S, N]`` log importance ratios of ``S`` draws for each of ``N`` observations (for
        leave-one-out: ``-log p(y_n | draw)``).
    reff : float
        Relative MCMC efficiency ``ESS / S``.

    Returns
    -------
    log_weights : np.ndarray
        ``[S, N]`` smoothed log weights, normalised over the draws of each observation.
    pareto_k : np.ndarray
        ``[N]`` the fitted Pareto shape; above 0.7 the weights are unreliable.
    """
    x = np.asarray(log_ratios, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or not np.isfinite(x).all():
        raise ValueError(f"log_ratios must be a finite [draws >= 2, N] array, got shape {x.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        log_weights, pareto_k = az.psislw(x.T, reff=reff)
    return np.asarray(log_weights).T, np.asarray(pareto_k)


# ----------------------------------------------------------------------------- files


def save_netcdf(idata: az.InferenceData, path: str | os.PathLike) -> Path:
    """Write ``idata`` to ``path`` atomically (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        idata.to_netcdf(str(tmp), engine="h5netcdf")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_netcdf(path: str | os.PathLike) -> az.InferenceData:
    """Read an ``InferenceData`` file; one-line ``ValueError`` when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        idata = az.from_netcdf(str(path), engine="h5netcdf")
        for group in idata.groups():
            idata[group].load()
        return idata
    except Exception as exc:  # h5py/xarray raise many types for corrupt files
        raise ValueError(f"{path}: not a readable InferenceData netCDF file ({type(exc).__name__})") from None


# ----------------------------------------------------------------------------- held-out ELPD table


def elpd_table(pointwise: dict[str, np.ndarray], num_draws: dict[str, int] | None = None, *,
               method: str = "stacking"):
    """One ArviZ comparison table (``az.compare``) of candidates' held-out ELPD.

    Parameters
    ----------
    pointwise : dict
        ``{candidate: [N] array}``: each candidate's log predictive density of each of the
        same ``N`` fresh held-out documents (:func:`inference.comparison.elpd.heldout_elpd`).
    num_draws : dict, optional
        Posterior draws behind each candidate's densities (1 for a point estimate).
    method : str
        ``az.compare``'s weighting: ``stacking`` (default), ``BB-pseudo-BMA`` or ``pseudo-BMA``.

    Returns
    -------
    pandas.DataFrame
        Best first: ``rank``, ``elpd_loo``, ``p_loo``, ``elpd_diff``, ``weight``, ``se``,
        ``dse``, ``warning``, ``scale``.

    Notes
    -----
    No cross-validation happens: the documents are fresh, so each candidate's ``elpd_loo``
    column holds its held-out ``sum_d log mean_s p(y_d | theta_s)``, with ArviZ's ``se``
    (``sqrt(N var_d)``) and, from the pointwise values, ArviZ's ``elpd_diff`` and paired
    ``dse``. The ELPD is wrapped in ``az.ELPDData`` with the fields ``az.loo`` produces so
    that ``az.compare`` accepts it; the column keeps ArviZ's ``loo`` label. ``p_loo`` is 0:
    held-out data need no correction for overfitting. ``warning`` is True when some
    document has zero probability (``-inf``).
    """
    import xarray as xr

    if not pointwise:
        raise ValueError("no candidate to compare")
    elpds, sizes = {}, set()
    for name, values in pointwise.items():
        values = np.asarray(values, dtype=np.float64).ravel()
        sizes.add(values.shape[0])
        finite = bool(np.isfinite(values).all())
        se = float(math.sqrt(values.shape[0] * values.var())) if finite else math.nan
        elpds[name] = az.ELPDData(
            data=[float(values.sum()), se, 0.0, (num_draws or {}).get(name, 1), values.shape[0], not finite,
                  xr.DataArray(values, dims=["document"], name="loo_i"), "log", 0.7],
            index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "scale", "good_k"],
        )
    if len(sizes) != 1:
        raise ValueError(f"every candidate must score the same held-out documents, got counts {sorted(sizes)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.compare(elpds, ic="loo", method=method, scale="log")


# ----------------------------------------------------------------------------- figures


def close_figure(fig) -> None:
    """Release a saved figure: ArviZ draws through pyplot, which keeps every figure until closed."""
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_trace(idata: az.InferenceData, var_names: list[str] | None = None, kind: str = "rank_bars"):
    """Trace (or rank) plot of the continuous variables; returns the matplotlib Figure."""
    names = var_names or [v for v in CONTINUOUS if v in idata.posterior] or ["persona"]
    axes = az.plot_trace(idata, var_names=names, kind=kind, compact=True, show=False)
    return np.asarray(axes).ravel()[0].figure


def plot_rank(idata: az.InferenceData, var_names: list[str] | None = None, title: str | None = None):
    """Rank plot (chains overlaid, one panel per entry) of the continuous variables; returns the Figure."""
    names = var_names or [v for v in CONTINUOUS if v in idata.posterior]
    size = sum(int(np.prod(idata.posterior[v].shape[2:])) for v in names)
    cols = min(size, 3)
    axes = az.plot_rank(idata, var_names=names, kind="vlines", show=False,
                        figsize=(3.3 * cols, 2.6 * -(-size // cols) + 0.6))
    fig = np.asarray(axes).ravel()[0].figure
    fig.suptitle(title or "rank plot: uniform ranks in every chain mean the chains agree", fontsize=10)
    fig.tight_layout()
    return fig


def plot_ppc(idata: az.InferenceData, title: str | None = None):
    """Posterior predictive check of the evidence tokens (see :func:`plot_frequency_ppc`)."""
    return plot_frequency_ppc(idata, "tokens", title or "posterior predictive check: evidence tokens")


def plot_attribution_ppc(idata: az.InferenceData, title: str | None = None):
    """Posterior predictive check of an attribution (completion tokens, or best persona); returns the Figure."""
    name = "tokens" if "tokens" in idata.observed_data else "best_persona"
    return plot_frequency_ppc(idata, name, title or "attribution: posterior predictive check")


def plot_frequency_ppc(idata: az.InferenceData, name: str, title: str = "posterior predictive check"):
    """Frequency of every value of a discrete variable: observed against replicated.

    Bars are the observed frequencies; dots with bars are the median and 90% interval
    of the replicated frequencies over posterior draws. Observed bars outside the
    intervals are what the model does not reproduce. Returns the Figure (no pyplot:
    nothing global is touched).
    """
    from matplotlib.figure import Figure

    observed = np.asarray(idata.observed_data[name].values).ravel().astype(np.int64)
    replicated = np.asarray(idata.posterior_predictive[name].values).astype(np.int64)  # [chain, draw, N]
    replicated = replicated.reshape(-1, replicated.shape[-1])  # [draws, N]
    size = int(max(observed.max(), replicated.max())) + 1
    obs_freq = np.bincount(observed, minlength=size) / len(observed)
    rep_freq = np.stack([np.bincount(r, minlength=size) for r in replicated]) / replicated.shape[1]  # [draws, size]
    lo, mid, hi = np.quantile(rep_freq, [0.05, 0.5, 0.95], axis=0)
    outside = int(((obs_freq < lo) | (obs_freq > hi)).sum())
    fig = Figure(figsize=(max(6.0, 0.3 * size + 2.5), 3.8))
    ax = fig.subplots()
    values = np.arange(size)
    ax.bar(values, obs_freq, color="lightgrey", edgecolor="black", label="observed frequency")
    ax.errorbar(values, mid, yerr=[mid - lo, hi - mid], fmt="o", color="tab:orange", ms=3, capsize=2,
                label="replicated: median and 90% interval")
    ax.set(xlabel=name.replace("_", " "), ylabel="frequency")
    ax.set_title(f"{title}\n{outside} of {size} values outside the 90% interval ({replicated.shape[0]} draws)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curve_ppc(idata: az.InferenceData, x: np.ndarray, name: str, *, title: str = "posterior predictive check",
                   xlabel: str = "x", ylabel: str | None = None):
    """Posterior predictive check of a fitted curve (``az.plot_lm``): the observed points against the 94%
    HDI of the replicated ones at every ``x``. Returns a ``Figure`` (no pyplot state is touched).

    Parameters
    ----------
    idata : InferenceData
        With ``observed_data[name]`` ``[N]`` and ``posterior_predictive[name]`` ``[chain, draw, N]``.
    x : array
        ``[N]`` the abscissa of the points.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_lm(y=name, idata=idata, x=np.asarray(x, dtype=np.float64), y_hat=name, kind_pp="hdi", axes=ax,
                   show=False, textsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel or name)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
