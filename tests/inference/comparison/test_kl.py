import itertools
import math

import pytest
import torch

from inference.comparison import kl as C
from inference.conditioning.condition import condition
from models.counts import make_evidence
from models.errors import InputError
from models.mixture import simulate_corpus

# ----------------------------------------------------------------------------- components and KL


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


