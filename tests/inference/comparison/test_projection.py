"""Persona projection: the sanity checks of DESIGN.md §3 (item 2)."""

import itertools

import numpy as np
import pytest
import torch

from inference.comparison import kl as C
from inference.comparison import projection as P
from inference.conditioning.condition import condition
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import random_personas
from models.predictive import mixture_logprobs, persona_logprobs


def novel_logprobs(contexts, vocab_size, seed):
    """Next-token log-probs of a fresh persona outside the support."""
    return persona_logprobs(random_personas(1, vocab_size, order=1, seed=seed), contexts)[0]


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_projection_of_the_conditioned_predictive_recovers_the_posterior(compare_world, beta):
    personas, contexts, evidence = compare_world
    posterior = condition(personas, evidence, model="global", beta=beta)
    q = posterior.predictive(contexts)  # the exact p_w with w = P(h | D)
    comp = persona_logprobs(personas, contexts)
    q0 = mixture_logprobs(comp, contexts, personas.prior.log())
    proj = P.project(q, comp, contexts)
    floor = P.projection_floor(q0, comp, contexts)
    tv = 0.5 * (proj.weights - posterior.weights).abs().sum()
    assert tv < 0.02, (proj.weights, posterior.weights)
    assert proj.converged and proj.residual < 1e-6 and floor.residual < 1e-6
    assert proj.weights.sum() == pytest.approx(1.0)
    assert proj.kl_per_context.shape == (contexts.shape[0],)
    assert float((proj.kl_per_context * proj.positions).sum() / proj.positions.sum()) == pytest.approx(proj.residual)


def brute_force_best_mixture(q, personas, contexts):
    """min of mean KL(q || p_w) over grids of the simplex (K = 3, bigram tables), in NumPy.

    Independent of the code under test: ``p_w(v | x_<t) = sum_h w_h P_h(x_<t) p_h(v | x_t-1)
    / sum_h w_h P_h(x_<t)`` straight from the tables, in probability space. The grid is in
    log-ratio coordinates ``w ∝ (e^a, e^b, 1)``, ``a, b`` in [-30, 30] (with in-context
    updating weights as small as 1e-8 can matter; a linear grid never reaches them),
    then a finer local grid around the best point.
    """
    init, trans = personas.init.numpy(), personas.trans.numpy()  # [K, V], [K, V, V]
    x = contexts.numpy()
    n, T = x.shape
    rows = np.concatenate([np.broadcast_to(init[:, None, None, :], (3, n, 1, init.shape[1])),
                           trans[:, x[:, :-1]]], axis=2)  # [K, n, T, V]
    token_p = np.take_along_axis(rows, x[None, :, :, None], -1)[..., 0]  # [K, n, T]
    prefix = np.concatenate([np.ones((3, n, 1)), np.cumprod(token_p, -1)[..., :-1]], -1)  # [K, n, T]
    qp, ql = q.exp().numpy(), q.numpy()

    def objectives(ab):  # [G, 2] -> [G]
        w = np.exp(np.concatenate([ab, np.zeros((len(ab), 1))], 1))  # [G, K]
        num = np.einsum("gk,knt,kntv->gntv", w, prefix, rows)
        den = np.einsum("gk,knt->gnt", w, prefix)[..., None]
        return (qp * (ql - np.log(num / den))).sum(-1).mean((1, 2))

    coarse = np.arange(-30, 30.01, 1.5)
    grid = np.array(list(itertools.product(coarse, coarse)))
    values = np.concatenate([objectives(g) for g in np.array_split(grid, 20)])
    fine = np.arange(-1.5, 1.51, 0.05)
    local = grid[values.argmin()] + np.array(list(itertools.product(fine, fine)))
    return float(min(values.min(), np.concatenate([objectives(g) for g in np.array_split(local, 20)]).min()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_of_a_persona_outside_the_support(seed):
    personas = random_personas(3, 6, order=1, seed=seed)
    contexts, _ = simulate_corpus(personas, 64, 12, seed=10 + seed)
    comp = persona_logprobs(personas, contexts)
    q = novel_logprobs(contexts, 6, seed=99 + seed)
    proj = P.project(q, comp, contexts)
    brute = brute_force_best_mixture(q, personas, contexts)
    assert proj.residual <= brute + 1e-9  # the optimiser is at least as good as the grid ...
    assert proj.residual == pytest.approx(brute, abs=1e-3)  # ... and the grid is fine enough to meet it
    at_optimum = C.mean_kl(q, mixture_logprobs(comp, contexts, proj.weights.log()))  # log-space route
    assert proj.residual == pytest.approx(at_optimum, abs=1e-9)
    assert proj.residual > 0.3  # no re-weighting comes close


def test_bad_inputs_get_one_line_errors(compare_world):
    personas, contexts, _ = compare_world
    comp = persona_logprobs(personas, contexts)
    with pytest.raises(InputError):
        P.project(comp[0, :5], comp, contexts)
    with pytest.raises(InputError):
        P.project(comp[0], comp, contexts, init=torch.tensor([1.0, -1.0, 0.0, 0.0]))
