"""The one module that calls ArviZ (0.23.x here; see DESIGN.md §6).

``InferenceData`` is built with ``az.from_dict`` from arrays the toolkit
computes, never with ``from_pyro`` (whose log-likelihood of an enumerated
model is conditional on the persona, not marginal). Groups:

==================== ========================= ====================================
group                variable                   meaning
==================== ========================= ====================================
posterior            ``w`` [persona]            mixture weights (mixture model)
posterior            ``persona_probs`` [persona] ``P(h | D, tables)`` (global, uncertain tables)
posterior            ``persona``                 drawn persona: scalar (global) or [document]
log_likelihood       ``documents`` [document]   pointwise log-likelihood, beta = 1, marginal
                                                 over each document's persona (mixture)
posterior_predictive ``tokens`` [evidence_token] replicated evidence tokens, each drawn given its
                                                 observed context (first 2,000 evidence tokens)
observed_data        ``tokens`` [evidence_token] the evidence tokens themselves
sample_stats         ``lp`` (and ``diverging``)  log-likelihood of each draw; NUTS divergences
==================== ========================= ====================================
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from models.errors import InputError

if TYPE_CHECKING:
    from inference.condition import Posterior

#: evidence tokens replicated in the posterior predictive check
PPC_TOKENS = 2000
#: draws (over all chains) replicated in the posterior predictive check
PPC_DRAWS = 100


def posterior_to_arviz(posterior: Posterior, seed: int = 0) -> az.InferenceData:
    """Build the ``InferenceData`` of a :class:`~inference.condition.Posterior` (table above)."""
    chains, draws = posterior.weight_samples.shape[:2]
    post: dict[str, np.ndarray] = {"persona": posterior.persona_samples.numpy()}
    if posterior.model == "mixture":
        post["w"] = posterior.weight_samples.numpy()
    elif posterior.table_samples is not None:
        post["persona_probs"] = posterior.weight_samples.numpy()
    doc_ll = posterior.doc_log_likelihood()  # [chains, draws, D]
    stats = {"lp": doc_ll.sum(-1).numpy()}
    diverging = posterior.extras.get("diverging")
    if diverging is not None:
        stats["diverging"] = np.asarray(diverging, dtype=bool)
    observed, replicated, thin = _ppc_tokens(posterior, seed)
    persona_dims = ["document"] if posterior.persona_samples.dim() == 3 else []
    idata = az.from_dict(
        posterior=post,
        log_likelihood={"documents": doc_ll.numpy()},
        sample_stats=stats,
        observed_data={"tokens": observed},
        dims={"w": ["persona_index"], "persona_probs": ["persona_index"], "persona": persona_dims,
              "documents": ["document"], "tokens": ["evidence_token"]},
        attrs={"model": posterior.model, "method": posterior.method, "beta": posterior.beta},
    )
    ppc = az.from_dict(
        posterior_predictive={"tokens": replicated},
        dims={"tokens": ["evidence_token"]},
        coords={"draw": thin},
    )
    idata.extend(ppc)
    return _without_timestamps(idata)


def _without_timestamps(idata: az.InferenceData) -> az.InferenceData:
    """Drop ArviZ's ``created_at`` stamps so that the same seed gives the same file contents."""
    for group in idata.groups():
        idata[group].attrs.pop("created_at", None)
    return idata


def _ppc_tokens(posterior: Posterior, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed evidence tokens [N] and replicates [chains, draws', N] drawn given observed contexts."""
    from models.counts import feature_index

    ev, V = posterior.evidence, posterior.personas.vocab_size
    doc, pos = ev.mask.nonzero(as_tuple=True)
    doc, pos = doc[:PPC_TOKENS], pos[:PPC_TOKENS]  # [N]
    observed = ev.tokens[doc, pos]
    feats = feature_index(ev.tokens, V, posterior.personas.order)[doc, pos]
    row = torch.where(pos == 0, torch.zeros_like(feats), feats - observed)  # [N] start of each row
    chains, draws = posterior.weight_samples.shape[:2]
    thin = np.arange(0, draws, max(1, draws * chains // PPC_DRAWS))
    gen = torch.Generator().manual_seed(seed)
    weights = posterior.weight_samples[:, thin]  # [c, s', K]
    if posterior.model == "global":
        persona = posterior.persona_samples[:, thin][..., None].expand(-1, -1, len(doc))  # [c, s', N]
    else:  # a fresh persona per replicated document: the predictive of new documents
        doc_persona = torch.multinomial(weights.reshape(-1, weights.shape[-1]), ev.num_docs, True, generator=gen)
        persona = doc_persona.reshape(chains, len(thin), ev.num_docs)[..., doc]  # [c, s', N]
    entry = row[:, None] + torch.arange(V)  # [N, V] flat-table entries of each token's row
    if posterior.table_samples is None:
        logits = posterior.personas.log_table()[persona[..., None], entry]  # [c, s', N, V]
    else:
        c_idx = torch.arange(chains)[:, None, None, None]
        s_idx = torch.as_tensor(thin)[None, :, None, None]
        logits = posterior.table_samples[c_idx, s_idx, persona[..., None], entry]  # [c, s', N, V]
    probs = torch.softmax(logits, -1).reshape(-1, V)
    replicated = torch.multinomial(probs, 1, generator=gen).reshape(chains, len(thin), len(doc))
    return observed.numpy(), replicated.numpy(), thin


def convergence(idata: az.InferenceData, var_names: list[str] | None = None) -> dict[str, float]:
    """``r_hat_max``, ``ess_min`` (bulk) and ``divergences`` over the continuous posterior variables."""
    names = var_names or [v for v in ("w", "persona_probs") if v in idata.posterior]
    out = {"r_hat_max": math.nan, "ess_min": math.nan, "divergences": 0}
    if names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rhat = az.rhat(idata, var_names=names)
            ess = az.ess(idata, var_names=names, method="bulk")
            # constant draws (one persona) give all-NaN R-hat and ESS: reported as NaN
            out["r_hat_max"] = float(max(np.nanmax(rhat[v].values) for v in names))
            out["ess_min"] = float(min(np.nanmin(ess[v].values) for v in names))
    if "sample_stats" in idata and "diverging" in idata.sample_stats:
        out["divergences"] = int(idata.sample_stats["diverging"].values.sum())
    return out


def summary(idata: az.InferenceData, var_names: list[str] | None = None):
    """ArviZ summary table (pandas DataFrame) of the continuous posterior variables."""
    names = var_names or [v for v in ("w", "persona_probs") if v in idata.posterior] or ["persona"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return az.summary(idata, var_names=names)


def loo(idata: az.InferenceData) -> Any:
    """PSIS-LOO of the pointwise document log-likelihood (``az.loo``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.loo(idata, pointwise=True)


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
    """Read an ``InferenceData`` file; one-line error when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        idata = az.from_netcdf(str(path), engine="h5netcdf")
        for group in idata.groups():
            idata[group].load()
        return idata
    except Exception as exc:  # h5py/xarray raise many types for corrupt files
        raise InputError(f"{path}: not a readable InferenceData netCDF file ({type(exc).__name__})") from None


def plot_trace(idata: az.InferenceData, var_names: list[str] | None = None, kind: str = "rank_bars"):
    """Trace (or rank) plot of the continuous variables; returns the matplotlib Figure."""
    names = var_names or [v for v in ("w", "persona_probs") if v in idata.posterior] or ["persona"]
    axes = az.plot_trace(idata, var_names=names, kind=kind, compact=True, show=False)
    return np.asarray(axes).ravel()[0].figure


def plot_rank(idata: az.InferenceData, var_names: list[str] | None = None, title: str | None = None):
    """Rank plot (chains overlaid, one panel per entry) of the continuous variables; returns the Figure."""
    names = var_names or [v for v in ("w", "persona_probs") if v in idata.posterior]
    size = sum(int(np.prod(idata.posterior[v].shape[2:])) for v in names)
    cols = min(size, 3)
    axes = az.plot_rank(idata, var_names=names, kind="vlines", show=False,
                        figsize=(3.3 * cols, 2.6 * -(-size // cols)))
    fig = np.asarray(axes).ravel()[0].figure
    fig.suptitle(title or "rank plot: uniform ranks in every chain mean the chains agree")
    fig.tight_layout()
    return fig


def plot_ppc(idata: az.InferenceData, title: str | None = None):
    """Posterior predictive check of the evidence tokens (see :func:`plot_frequency_ppc`)."""
    return plot_frequency_ppc(idata, "tokens", title or "posterior predictive check: evidence tokens")


def plot_frequency_ppc(idata: az.InferenceData, name: str, title: str = "posterior predictive check"):
    """Frequency of every value of a discrete variable: observed against replicated.

    Bars are the observed frequencies; dots with bars are the median and 90% interval
    of the replicated frequencies over posterior draws. Observed bars outside the
    intervals are what the model does not reproduce. Returns the Figure.
    """
    import matplotlib.pyplot as plt

    observed = np.asarray(idata.observed_data[name].values).ravel().astype(np.int64)
    replicated = np.asarray(idata.posterior_predictive[name].values).astype(np.int64)  # [chain, draw, N]
    replicated = replicated.reshape(-1, replicated.shape[-1])  # [draws, N]
    size = int(max(observed.max(), replicated.max())) + 1
    obs_freq = np.bincount(observed, minlength=size) / len(observed)
    rep_freq = np.stack([np.bincount(r, minlength=size) for r in replicated]) / replicated.shape[1]  # [draws, size]
    lo, mid, hi = np.quantile(rep_freq, [0.05, 0.5, 0.95], axis=0)
    outside = int(((obs_freq < lo) | (obs_freq > hi)).sum())
    fig, ax = plt.subplots(figsize=(max(5.0, 0.28 * size + 2), 3.4))
    values = np.arange(size)
    ax.bar(values, obs_freq, color="lightgrey", edgecolor="black", label="observed")
    ax.errorbar(values, mid, yerr=[mid - lo, hi - mid], fmt="o", color="tab:orange", ms=3, capsize=2,
                label="replicated: median, 90% interval")
    ax.set(xlabel=name.replace("_", " "), ylabel="frequency",
           title=f"{title}\n{outside} of {size} values outside the 90% interval ({replicated.shape[0]} draws)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- persona attribution

#: completion tokens replicated in the attribution's posterior predictive check
ATTRIBUTION_PPC_TOKENS = 2000


def attribution_to_arviz(
    samples: torch.Tensor,
    doc_loglik: torch.Tensor,
    *,
    alpha: torch.Tensor,
    divergences: torch.Tensor | None = None,
    seed: int = 0,
    persona: torch.Tensor | None = None,
    components: torch.Tensor | None = None,
    tokens: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    prompt_loglik: torch.Tensor | None = None,
) -> az.InferenceData:
    """``InferenceData`` of a persona attribution (:func:`inference.attribution.attribute`).

    ==================== ============================== ==========================================
    group                variable                        meaning
    ==================== ============================== ==========================================
    posterior            ``w`` [persona_index]           mixture weights explaining the completions
    posterior            ``persona`` [completion]        each completion's persona given the draw
                                                         (only when ``persona`` is given)
    log_likelihood       ``completions`` [completion]    ``log sum_h w_h p(y_d | c_d, h)``, marginal
                                                         over the completion's persona
    posterior_predictive ``tokens`` [completion_token]   with ``components``: every scored completion
                                                         token replicated given its observed prefix,
                                                         by a fresh persona ``z ~ w`` per completion
                                                         (first 2,000 tokens, 100 draws)
                         ``best_persona`` [completion]   without: a fresh persona ``z ~ w`` per
                                                         completion (100 draws)
    observed_data        ``tokens`` / ``best_persona``   the completion tokens / each completion's
                                                         best-fitting persona ``argmax_h doc_loglik``
    sample_stats         ``lp``, ``diverging``           log joint density of ``w``; divergences
    ==================== ============================== ==========================================

    The token check asks whether the token frequencies of the model's completions
    are what a re-weighting of the personas would write (a novel behaviour shows
    up as observed frequencies outside the replicated ones). The ``best_persona``
    fallback compares how often each persona best explains a completion with how
    often the fitted mixture would pick it; it is exact only when personas are
    distinguishable from one completion (the classifier's errors blur it).
    """
    chains, draws, K = samples.shape
    # persona weights of each completion after its prompt: log w_h + log p(c_d | h), normalised
    logits = samples.log()[..., None, :] + (0.0 if prompt_loglik is None else prompt_loglik)  # [c, s, D or 1, K]
    logits = logits - torch.logsumexp(logits, -1, keepdim=True)
    marginal = torch.logsumexp(logits + doc_loglik, -1)  # [c, s, D]
    prior = torch.distributions.Dirichlet(alpha.to(samples.dtype)).log_prob(samples)  # [c, s]
    stats = {"lp": (prior + marginal.sum(-1)).numpy()}
    if divergences is not None:
        stats["diverging"] = np.asarray(divergences, dtype=bool)
    thin = np.arange(0, draws, max(1, draws * chains // PPC_DRAWS))
    gen = torch.Generator().manual_seed(seed)
    D = doc_loglik.shape[0]
    probs = logits[:, thin].exp().expand(chains, len(thin), D, K).reshape(-1, K)  # [c * s' * D, K]
    fresh = torch.multinomial(probs, 1, generator=gen).reshape(chains, len(thin), D)  # a fresh persona per completion
    if components is not None:
        if tokens is None or mask is None:
            raise InputError("the token posterior predictive check needs components, tokens and mask together")
        doc, pos = mask.nonzero(as_tuple=True)
        doc, pos = doc[:ATTRIBUTION_PPC_TOKENS], pos[:ATTRIBUTION_PPC_TOKENS]  # [N]
        logits = components[fresh[..., doc], doc, pos]  # [c, s', N, V]
        probs = torch.softmax(logits.to(torch.float64), -1).reshape(-1, logits.shape[-1])
        replicated = torch.multinomial(probs, 1, generator=gen).reshape(chains, len(thin), len(doc))
        name, dim, observed = "tokens", "completion_token", tokens[doc, pos].numpy()
    else:
        name, dim = "best_persona", "completion"
        observed, replicated = doc_loglik.argmax(-1).numpy(), fresh
    post = {"w": samples.numpy()}
    if persona is not None:
        post["persona"] = np.asarray(persona)
    idata = az.from_dict(
        posterior=post,
        log_likelihood={"completions": marginal.numpy()},
        sample_stats=stats,
        observed_data={name: observed},
        dims={"w": ["persona_index"], "persona": ["completion"], "completions": ["completion"], name: [dim]},
        attrs={"model": "attribution", "alpha": alpha.tolist()},
    )
    idata.extend(az.from_dict(posterior_predictive={name: replicated.numpy()}, dims={name: [dim]},
                              coords={"draw": thin}))
    return _without_timestamps(idata)


def mcse_mean(idata: az.InferenceData, var_name: str = "w") -> np.ndarray:
    """Monte Carlo standard error of the posterior mean of every entry of ``var_name`` (``az.mcse``), unrounded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(az.mcse(idata, var_names=[var_name], method="mean")[var_name].values, dtype=np.float64)


def plot_attribution_ppc(idata: az.InferenceData, title: str | None = None):
    """Posterior predictive check of an attribution (completion tokens, or best persona); returns the Figure."""
    name = "tokens" if "tokens" in idata.observed_data else "best_persona"
    return plot_frequency_ppc(idata, name, title or "attribution: posterior predictive check")


# ----------------------------------------------------------------------------- held-out ELPD table


def elpd_table(pointwise_draws: dict[str, Any], *, method: str = "stacking"):
    """One ArviZ comparison table (``az.compare``) of candidates' held-out ELPD.

    Parameters
    ----------
    pointwise_draws : dict
        ``{candidate: [S, N] array}``: log-likelihood of each of the same ``N`` fresh
        held-out documents under each of ``S`` posterior draws of the candidate.
    method : str
        ``az.compare``'s weighting: ``stacking`` (default; here it is stacking on
        genuinely held-out densities), ``BB-pseudo-BMA`` or ``pseudo-BMA``.

    Returns
    -------
    pandas.DataFrame
        ``az.compare``'s table, best first: ``rank``, ``elpd_loo``, ``p_loo``,
        ``elpd_diff``, ``weight``, ``se``, ``dse``, ``warning``, ``scale``.

    Notes
    -----
    No cross-validation happens: the documents are fresh, so each candidate's
    ``elpd_loo`` column holds its held-out ``sum_d log mean_s p(y_d | theta_s)``
    (:func:`inference.compare.heldout_elpd`), with ArviZ's ``se`` and, from the
    pointwise values, ArviZ's ``elpd_diff`` and paired ``dse``. The ELPD is wrapped
    in ``az.ELPDData`` with the fields ``az.loo`` produces so that ``az.compare``
    (and ``az.plot_compare``) accept it; the column keeps ArviZ's ``loo`` label.
    A point-estimate model (a fine-tuned network, an n-gram, the conditioned model
    at known tables) enters with one draw (``S = 1``): its pointwise ELPD is its
    log-likelihood. ``p_loo`` is 0 for every candidate: held-out data need no
    correction for overfitting, so there is no effective number of parameters to
    report. ``warning`` is True when some document has zero probability (``-inf``).
    """
    import xarray as xr

    from inference.compare import heldout_elpd

    if not pointwise_draws:
        raise InputError("no candidate to compare")
    elpds, sizes = {}, set()
    for name, draws in pointwise_draws.items():
        draws = np.asarray(torch.as_tensor(np.asarray(draws), dtype=torch.float64))
        if draws.ndim == 1:
            draws = draws[None, :]
        elpd, se, pointwise = heldout_elpd(draws)
        sizes.add(pointwise.shape[0])
        elpds[name] = az.ELPDData(
            data=[elpd, se, 0.0, draws.shape[0], pointwise.shape[0], bool(not np.isfinite(pointwise).all()),
                  xr.DataArray(pointwise, dims=["document"], name="loo_i"), "log", 0.7],
            index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "scale", "good_k"],
        )
    if len(sizes) != 1:
        raise InputError(f"every candidate must score the same held-out documents, got counts {sorted(sizes)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.compare(elpds, ic="loo", method=method, scale="log")
