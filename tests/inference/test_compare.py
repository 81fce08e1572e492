import itertools
import math

import numpy as np
import pytest
import torch

from inference.comparison import kl as C
from inference.comparison.elpd import heldout_elpd
from inference.conditioning.condition import condition
from inference.diagnostics import elpd_table
from models.counts import make_evidence
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import random_personas
from models.predictive import mixture_logprobs, mixture_predictive, persona_logprobs

# ----------------------------------------------------------------------------- components and KL


@pytest.mark.parametrize("order", [0, 1, 2])
def test_persona_logprobs_read_the_tables(order):
    p = random_personas(2, 3, order=order, seed=order)
    ctx = torch.randint(0, 3, (4, 5), generator=torch.Generator().manual_seed(order))
    got = persona_logprobs(p, ctx)
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
        got = mixture_logprobs(persona_logprobs(p, ctx), ctx, log_w)
        want = mixture_predictive(p.log_table(), log_w, ctx, 4, order)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_mixture_logprobs_are_differentiable_in_the_weights(compare_world):
    personas, contexts, _ = compare_world
    comp = persona_logprobs(personas, contexts[:3, :5])
    theta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: mixture_logprobs(comp, contexts[:3, :5], t), (theta,))


# ----------------------------------------------------------------------------- beta*


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_beta_star_recovers_the_beta_of_the_exact_predictive(compare_world, beta):
    personas, contexts, _ = compare_world
    ev_tokens, _ = simulate_corpus(personas, 2, 10, seed=8)  # short evidence: the posterior still moves with beta
    evidence = make_evidence(ev_tokens.numpy())
    q = condition(personas, evidence, model="global", beta=beta).predictive(contexts)
    grid = [0.1 * 1.6**i for i in range(10)]  # 0.1 .. 6.9; neither 0.5 nor 2 is on it
    preds = {b: condition(personas, evidence, model="global", beta=b).predictive(contexts) for b in grid}
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
