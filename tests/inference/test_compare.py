import itertools
import math

import numpy as np
import pytest
import torch

from inference import compare as C
from inference.condition import condition
from inference.diagnostics import elpd_table
from inference.exact import mixture_predictive
from models.counts import make_evidence
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import random_personas


@pytest.fixture(scope="module")
def world():
    """Four bigram personas over six tokens, 64 held-out contexts of 12 tokens, evidence from persona 1."""
    personas = random_personas(4, 6, order=1, seed=0)
    contexts, _ = simulate_corpus(personas, 64, 12, seed=1)
    ev_tokens, _ = simulate_corpus(personas.subset([1]), 3, 12, seed=2)
    return personas, contexts, make_evidence(ev_tokens.numpy())


def exact_predictive(personas, evidence, contexts, beta):
    return condition(personas, evidence, model="global", method="exact", beta=beta)


def novel_logprobs(contexts, vocab_size, seed):
    """Next-token log-probs of a fresh persona outside the support."""
    return C.persona_logprobs(random_personas(1, vocab_size, order=1, seed=seed), contexts)[0]


# ----------------------------------------------------------------------------- components and KL


@pytest.mark.parametrize("order", [0, 1, 2])
def test_persona_logprobs_read_the_tables(order):
    p = random_personas(2, 3, order=order, seed=order)
    ctx = torch.randint(0, 3, (4, 5), generator=torch.Generator().manual_seed(order))
    got = C.persona_logprobs(p, ctx)
    for k, d, t in itertools.product(range(2), range(4), range(5)):  # explicit loops
        doc = ctx[d].tolist()
        row = p.init[k] if t == 0 else p.trans[(k,) + tuple(doc[max(t - order + j, 0)] for j in range(order))]
        torch.testing.assert_close(got[k, d, t], row.log(), rtol=0, atol=1e-12)


def test_kl_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(3, 4, 5, generator=gen, dtype=torch.float64) * 2, -1)
    p = torch.softmax(torch.randn(3, 4, 5, generator=gen, dtype=torch.float64), -1)
    q[0, 0] = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0], dtype=torch.float64)  # zeros in q: no contribution
    mask = torch.rand(3, 4, generator=gen) < 0.7
    got = C.kl(q.log(), p.log(), mask)
    brute = torch.zeros(3, 4, dtype=torch.float64)
    for i, t, v in itertools.product(range(3), range(4), range(5)):
        if mask[i, t] and q[i, t, v] > 0:
            brute[i, t] += q[i, t, v] * (math.log(q[i, t, v]) - math.log(p[i, t, v]))
    torch.testing.assert_close(got, brute, rtol=0, atol=1e-12)
    assert C.mean_kl(q.log(), p.log(), mask) == pytest.approx(float(brute.sum() / mask.sum()), abs=1e-12)
    torch.testing.assert_close(C.kl_per_context(q.log(), p.log(), mask),
                               brute.sum(-1) / mask.sum(-1).clamp(min=1).double(), rtol=0, atol=1e-12)


def test_kl_is_infinite_not_nan_where_p_is_zero_and_q_is_not():
    q = torch.tensor([[[0.5, 0.5, 0.0]]], dtype=torch.float64).log()
    p_ok = torch.tensor([[[0.5, 0.5, 0.0]]], dtype=torch.float64).log()  # q = p = 0 on the last token
    p_bad = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=torch.float64).log()
    assert C.kl(q, p_ok).item() == 0.0
    assert C.kl(q, p_bad).item() == math.inf
    with pytest.raises(InputError):
        C.kl(q, p_ok[..., :2])


# ----------------------------------------------------------------------------- mixtures


@pytest.mark.parametrize("order", [0, 1, 2])
def test_mixture_logprobs_equal_the_exact_predictive(order):
    p = random_personas(3, 4, order=order, seed=5)
    ctx, _ = simulate_corpus(p, 16, 9, seed=6)
    for w in ([0.2, 0.3, 0.5], [0.0, 0.4, 0.6]):  # a zero weight too
        log_w = torch.tensor(w, dtype=torch.float64).log()
        got = C.mixture_logprobs(C.persona_logprobs(p, ctx), ctx, log_w)
        want = mixture_predictive(p.log_table(), log_w, ctx, 4, order)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_mixture_logprobs_are_differentiable_in_the_weights(world):
    personas, contexts, _ = world
    comp = C.persona_logprobs(personas, contexts[:3, :5])
    theta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: C.mixture_logprobs(comp, contexts[:3, :5], t), (theta,))


# ----------------------------------------------------------------------------- projection and E


@pytest.mark.parametrize("beta", [0.3, 1.0])
def test_projection_of_the_conditioned_predictive_recovers_the_posterior(world, beta):
    personas, contexts, evidence = world
    posterior = exact_predictive(personas, evidence, contexts, beta)
    q = posterior.predictive(contexts)  # the exact p_w with w = P(h | D)
    comp = C.persona_logprobs(personas, contexts)
    q0 = C.mixture_logprobs(comp, contexts, personas.prior.log())
    proj = C.project(q, comp, contexts)
    floor = C.projection_floor(q0, comp, contexts)
    tv = 0.5 * (proj.weights - posterior.weights).abs().sum()
    assert tv < 0.02, (proj.weights, posterior.weights)
    assert proj.converged and proj.residual < 1e-6 and floor.residual < 1e-6
    assert proj.weights.sum() == pytest.approx(1.0)
    e = C.exhaustiveness(C.mean_kl(q, q0), proj.residual, floor.residual)
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
    comp = C.persona_logprobs(personas, contexts)
    q0 = C.mixture_logprobs(comp, contexts, personas.prior.log())
    q = novel_logprobs(contexts, 6, seed=99 + seed)
    proj = C.project(q, comp, contexts)
    brute = brute_force_best_mixture(q, personas, contexts)
    assert proj.residual <= brute + 1e-9  # the optimiser is at least as good as the grid ...
    assert proj.residual == pytest.approx(brute, abs=1e-3)  # ... and the grid is fine enough to meet it
    at_optimum = C.mean_kl(q, C.mixture_logprobs(comp, contexts, proj.weights.log()))  # log-space route
    assert proj.residual == pytest.approx(at_optimum, abs=1e-9)
    e = C.exhaustiveness(C.mean_kl(q, q0), proj.residual, C.projection_floor(q0, comp, contexts).residual)
    assert e < 0.35  # re-weighting closes only part of the gap (towards the nearest persona)
    assert proj.residual > 0.3


def test_exhaustiveness_formula_and_conventions():
    assert C.exhaustiveness(2.0, 0.5, 0.1) == pytest.approx(1 - 0.4 / 2.0)
    assert C.exhaustiveness(1.0, 0.05, 0.1) == 1.0  # residual below the floor: fully explained
    assert C.exhaustiveness(0.1, 3.0, 0.0) == 0.0  # clipped at 0
    assert math.isnan(C.exhaustiveness(0.0, 0.1, 0.1))  # no change: undefined ...
    assert C.exhaustiveness(0.0, 0.1, 0.1, undefined=1.0) == 1.0  # ... unless the caller says otherwise
    assert C.exhaustiveness_deviance(0.2, 1.0) == pytest.approx(0.8)
    assert math.isnan(C.exhaustiveness_deviance(0.0, 0.0))


def partly_novel_case(n, seed):
    """A model 90% an in-support re-weighting, 10% a novel persona (per token): E strictly inside (0, 1)."""
    personas = random_personas(4, 6, order=1, seed=0)
    contexts, _ = simulate_corpus(personas, n, 12, seed=seed)
    comp = C.persona_logprobs(personas, contexts)
    q0 = C.mixture_logprobs(comp, contexts, personas.prior.log())
    q_in = C.mixture_logprobs(comp, contexts, torch.tensor([0.05, 0.85, 0.05, 0.05], dtype=torch.float64).log())
    q = torch.logaddexp(q_in + math.log(0.9), novel_logprobs(contexts, 6, seed=7) + math.log(0.1))
    proj, floor = C.project(q, comp, contexts), C.projection_floor(q0, comp, contexts)
    kl_ctx = C.kl_per_context(q, q0)
    e = C.exhaustiveness(C.mean_kl(q, q0), proj.residual, floor.residual)
    lo, hi = C.exhaustiveness_interval(kl_ctx, proj.kl_per_context, floor.kl_per_context, num_boot=300, seed=1)
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
    assert C.exhaustiveness_interval(kl_ctx + 1, r, r0, seed=5) == C.exhaustiveness_interval(kl_ctx + 1, r, r0, seed=5)
    with pytest.raises(InputError):
        C.exhaustiveness_interval(kl_ctx, r[:5], r0)


# ----------------------------------------------------------------------------- beta*


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_beta_star_recovers_the_beta_of_the_exact_predictive(world, beta):
    personas, contexts, _ = world
    ev_tokens, _ = simulate_corpus(personas, 2, 10, seed=8)  # short evidence: the posterior still moves with beta
    evidence = make_evidence(ev_tokens.numpy())
    q = exact_predictive(personas, evidence, contexts, beta).predictive(contexts)
    grid = [0.1 * 1.6**i for i in range(10)]  # 0.1 .. 6.9; neither 0.5 nor 2 is on it
    preds = {b: exact_predictive(personas, evidence, contexts, b).predictive(contexts) for b in grid}
    kls = C.kl_by_beta(q, preds)
    assert list(kls) == sorted(grid)
    got = C.beta_star(list(kls), list(kls.values()))
    assert got == pytest.approx(beta, rel=0.1)


def test_beta_star_at_the_edges():
    assert C.beta_star([0.0, 1.0, 2.0], [0.1, 0.2, 0.3]) == 0.0  # minimum at the edge: unrefined
    assert C.beta_star([0.0, 1.0, 2.0], [0.3, 0.1, 0.2]) == 1.0  # neighbour beta = 0: no log, unrefined
    b = [0.5, 1.0, 2.0]
    kls = [(math.log(x) - math.log(0.8)) ** 2 for x in b]  # exact parabola in log beta, vertex at 0.8
    assert C.beta_star(b, kls) == pytest.approx(0.8)
    with pytest.raises(InputError):
        C.beta_star([1.0, 2.0], [0.1])


# ----------------------------------------------------------------------------- ELPD and code length


def test_heldout_elpd_and_its_arviz_table():
    rng = np.random.default_rng(0)
    point = rng.normal(-10, 1, (1, 30))  # a point-estimate model: S = 1
    draws = rng.normal(-10.5, 1, (50, 30))
    elpd, se, pointwise = C.heldout_elpd(point)
    assert elpd == pytest.approx(point.sum()) and se == pytest.approx(math.sqrt(30 * point.var()))
    elpd_b, _, pointwise_b = C.heldout_elpd(draws)
    brute = [math.log(np.mean(np.exp(draws[:, d]))) for d in range(30)]
    np.testing.assert_allclose(pointwise_b, brute, rtol=0, atol=1e-10)
    table = elpd_table({"point": point, "bayes": draws})
    assert list(table.index) == ["point", "bayes"] if elpd > elpd_b else ["bayes", "point"]
    assert table.loc["point", "elpd_loo"] == pytest.approx(elpd)
    assert table.loc["bayes", "elpd_loo"] == pytest.approx(elpd_b)
    assert (table["p_loo"] == 0).all()
    diff = pointwise - pointwise_b
    worse = table.index[1]
    assert table.loc[worse, "dse"] == pytest.approx(math.sqrt(30 * diff.var()))
    assert table.loc[worse, "elpd_diff"] == pytest.approx(abs(diff.sum()))
    with pytest.raises(InputError):
        elpd_table({"a": point, "b": draws[:, :10]})


def test_description_length():
    assert C.description_length(500.0, 100, 2.0) == pytest.approx(300.0)
    with pytest.raises(InputError):
        C.description_length(float("nan"), 100, 2.0)


def test_bad_inputs_get_one_line_errors(world):
    personas, contexts, _ = world
    comp = C.persona_logprobs(personas, contexts)
    with pytest.raises(InputError):
        C.mixture_logprobs(comp, contexts[:5], torch.zeros(4, dtype=torch.float64))
    with pytest.raises(InputError):
        C.mixture_logprobs(comp, contexts, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(InputError):
        C.project(comp[0, :5], comp, contexts)
    with pytest.raises(InputError):
        C.project(comp[0], comp, contexts, init=torch.tensor([1.0, -1.0, 0.0, 0.0]))
    with pytest.raises(InputError):
        C.persona_logprobs(personas, contexts + 6)
