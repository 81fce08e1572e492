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


def plot_rank(idata: az.InferenceData, var_names: list[str] | None = None):
    """Rank plot (one panel per chain overlay) of the continuous variables; returns the Figure."""
    names = var_names or [v for v in ("w", "persona_probs") if v in idata.posterior]
    axes = az.plot_rank(idata, var_names=names, kind="vlines", show=False)
    return np.asarray(axes).ravel()[0].figure


def plot_ppc(idata: az.InferenceData, num_pp_samples: int = 50):
    """Posterior predictive check of the evidence tokens; returns the Figure."""
    ax = az.plot_ppc(idata, var_names=["tokens"], num_pp_samples=num_pp_samples, random_seed=0, show=False)
    return np.asarray(ax).ravel()[0].figure
