"""The one optimiser the comparisons use: L-BFGS with strong-Wolfe line search, in float64."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def lbfgs(objective: Callable[[Tensor], Tensor], start: Tensor, max_iter: int = 200, tol: float = 1e-10
          ) -> tuple[Tensor, float, bool]:
    """Minimise a differentiable scalar ``objective(params)`` from ``start``.

    Returns
    -------
    params : Tensor
        The parameters at the end (detached).
    value : float
        The objective there.
    converged : bool
        Stopped on its tolerance before ``max_iter`` iterations, at a finite value.
    """
    params = start.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
                            tolerance_change=tol, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective(params)
        value.backward()
        return value

    opt.step(closure)
    iterations = opt.state[params].get("n_iter", 0)
    with torch.no_grad():
        value = float(objective(params))
    return params.detach(), value, bool(iterations < max_iter and math.isfinite(value))


#: log-weights (relative to the largest) tried for a vanishing persona by :func:`boundary_scan`
SCAN_LOG_WEIGHTS = (-4.0, -8.0, -12.0, -16.0, -20.0, -24.0, -28.0)


def boundary_scan(objective, best: tuple[Tensor, float, bool], num_logits: int, max_iter: int, tol: float,
                  minimise=lbfgs) -> tuple[Tensor, float, bool]:
    """Try every persona again at a tiny weight: through in-context updating it can pay off.

    With in-context updating a persona with weight ``1e-6`` still takes over the contexts
    that it explains ``1e6`` times better than the others, so objectives over persona
    weights have minima with some ``log w_h`` far below 0 besides the interior ones, and a
    plateau as ``log w_h -> -inf``; L-BFGS on the softmax logits (the first ``num_logits``
    entries of the parameters) may stop in an interior minimum or slide onto the plateau.
    For every persona but the heaviest, the objective is evaluated with its logit set to each
    of :data:`SCAN_LOG_WEIGHTS` (relative to the heaviest); the best improvement restarts
    ``minimise``. Repeated until nothing improves (at most ``num_logits`` rounds). A heuristic,
    checked against brute-force grids in the tests of the projection and the decomposition.
    """
    params, value, converged = best
    for _ in range(num_logits):
        top = int(params[:num_logits].argmax())
        trials = [params.clone().index_fill(0, torch.tensor([h]), float(params[top]) + c)
                  for h in range(num_logits) if h != top for c in SCAN_LOG_WEIGHTS]
        if not trials:
            break
        with torch.no_grad():
            values = torch.stack([objective(t) for t in trials])  # [trials]
        i = int(values.argmin())
        if not values[i] < value - max(1e-9, 1e-9 * abs(value)):  # smaller gains are noise
            break
        candidate = minimise(objective, trials[i], max_iter, tol)
        if not candidate[1] < value:
            break
        params, value, converged = candidate
    return params, value, converged
