"""Held-out predictive performance (DESIGN.md §3, item 5).

Every candidate (the conditioned model at each ``beta``, the base, the fine-tuned model, the
baselines) scores the same fresh documents; :func:`heldout_elpd` sums their log predictive
densities, and :func:`inference.diagnostics.elpd_table` puts the candidates in one ArviZ table.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from models.errors import InputError


def heldout_elpd(doc_loglik_draws: Tensor | np.ndarray) -> tuple[float, float, np.ndarray]:
    """Held-out expected log predictive density of a candidate on fresh documents.

    ``elpd = sum_d log mean_s p(y_d | theta_s)``; ``se = sqrt(N var_d(elpd_d))``
    (ArviZ's convention). A point-estimate model has ``S = 1``.

    Parameters
    ----------
    doc_loglik_draws : array
        ``[S, N]`` log-likelihood of each held-out document under each posterior draw.

    Returns
    -------
    elpd : float
    se : float
    pointwise : np.ndarray
        ``[N]`` ``log mean_s p(y_d | theta_s)``.
    """
    ll = torch.as_tensor(np.asarray(doc_loglik_draws), dtype=torch.float64)
    if ll.dim() != 2 or ll.numel() == 0:
        raise InputError(f"doc_loglik_draws must be a non-empty [draws, documents] array, got shape {tuple(ll.shape)}")
    if torch.isnan(ll).any():
        raise InputError("doc_loglik_draws has NaN entries")
    S, N = ll.shape
    pointwise = (torch.logsumexp(ll, 0) - math.log(S)).numpy()  # [N]
    elpd = float(pointwise.sum())
    se = float(math.sqrt(N * pointwise.var())) if np.isfinite(pointwise).all() else math.nan
    return elpd, se, pointwise
