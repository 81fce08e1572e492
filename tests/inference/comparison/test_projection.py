"""Persona projection and exhaustiveness: the sanity checks of DESIGN.md §3 (items 2 and 3)."""

import itertools
import math

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
    e = P.exhaustiveness(C.mean_kl(q, q0), proj.residual, floor.residual)
    assert e >= 0.99
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
    q0 = mixture_logprobs(comp, contexts, personas.prior.log())
    q = novel_logprobs(contexts, 6, seed=99 + seed)
    proj = P.project(q, comp, contexts)
    brute = brute_force_best_mixture(q, personas, contexts)
    assert proj.residual <= brute + 1e-9  # the optimiser is at least as good as the grid ...
    assert proj.residual == pytest.approx(brute, abs=1e-3)  # ... and the grid is fine enough to meet it
    at_optimum = C.mean_kl(q, mixture_logprobs(comp, contexts, proj.weights.log()))  # log-space route
    assert proj.residual == pytest.approx(at_optimum, abs=1e-9)
    e = P.exhaustiveness(C.mean_kl(q, q0), proj.residual, P.projection_floor(q0, comp, contexts).residual)
    assert e < 0.35  # re-weighting closes only part of the gap (towards the nearest persona)
    assert proj.residual > 0.3


def test_exhaustiveness_formula_and_conventions():
    assert P.exhaustiveness(2.0, 0.5, 0.1) == pytest.approx(1 - 0.4 / 2.0)
    assert P.exhaustiveness(1.0, 0.05, 0.1) == 1.0  # residual below the floor: fully explained
    assert P.exhaustiveness(0.1, 3.0, 0.0) == 0.0  # clipped at 0
    assert math.isnan(P.exhaustiveness(0.0, 0.1, 0.1))  # no change: undefined ...
    assert P.exhaustiveness(0.0, 0.1, 0.1, undefined=1.0) == 1.0  # ... unless the caller says otherwise
    assert P.exhaustiveness_deviance(0.2, 1.0) == pytest.approx(0.8)
    assert math.isnan(P.exhaustiveness_deviance(0.0, 0.0))


def partly_novel_case(n, seed):
    """A model 90% an in-support re-weighting, 10% a novel persona (per token): E strictly inside (0, 1)."""
    personas = random_personas(4, 6, order=1, seed=0)
    contexts, _ = simulate_corpus(personas, n, 12, seed=seed)
    comp = persona_logprobs(personas, contexts)
    q0 = mixture_logprobs(comp, contexts, personas.prior.log())
    q_in = mixture_logprobs(comp, contexts, torch.tensor([0.05, 0.85, 0.05, 0.05], dtype=torch.float64).log())
    q = torch.logaddexp(q_in + math.log(0.9), novel_logprobs(contexts, 6, seed=7) + math.log(0.1))
    proj, floor = P.project(q, comp, contexts), P.projection_floor(q0, comp, contexts)
    kl_ctx = C.kl_per_context(q, q0)
    e = P.exhaustiveness(C.mean_kl(q, q0), proj.residual, floor.residual)
    lo, hi = P.exhaustiveness_interval(kl_ctx, proj.kl_per_context, floor.kl_per_context, num_boot=300, seed=1)
    return e, lo, hi


def test_exhaustiveness_interval_contains_the_estimate_and_shrinks_with_more_contexts():
    e_small, lo_small, hi_small = partly_novel_case(32, seed=3)
    e_large, lo_large, hi_large = partly_novel_case(512, seed=4)
    assert 0.2 < e_small < 0.9 and 0.2 < e_large < 0.9
    assert lo_small <= e_small <= hi_small and lo_large <= e_large <= hi_large
    assert (hi_large - lo_large) < 0.6 * (hi_small - lo_small)  # ~ 1/4 expected at 16x the contexts


def test_exhaustiveness_interval_is_reproducible_and_checks_shapes():
    gen = torch.Generator().manual_seed(0)
    kl_ctx, r, r0 = (torch.rand(20, generator=gen, dtype=torch.float64) for _ in range(3))
    assert P.exhaustiveness_interval(kl_ctx + 1, r, r0, seed=5) == P.exhaustiveness_interval(kl_ctx + 1, r, r0, seed=5)
    with pytest.raises(InputError):
        P.exhaustiveness_interval(kl_ctx, r[:5], r0)


def test_bad_inputs_get_one_line_errors(compare_world):
    personas, contexts, _ = compare_world
    comp = persona_logprobs(personas, contexts)
    with pytest.raises(InputError):
        P.project(comp[0, :5], comp, contexts)
    with pytest.raises(InputError):
        P.project(comp[0], comp, contexts, init=torch.tensor([1.0, -1.0, 0.0, 0.0]))
