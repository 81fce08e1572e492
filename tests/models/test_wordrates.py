"""The word-rate model: simulation, the likelihood as a function, and exact enumeration against brute force."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from models.errors import InputError
from models.wordrates import count_loglik, make_data, word_rate_model

F64 = dict(dtype=torch.float64)


def tiny_data(counts=None):
    """Two authors, two words: two known documents, two unknown, one joint."""
    return make_data([100.0, 80.0, 60.0, 90.0, 70.0], [0, 1, -1, -1, -2], counts, num_authors=2, num_words=2,
                     pair=[[-1, -1]] * 4 + [[1, 0]])


def fixed_values(likelihood: str) -> dict[str, torch.Tensor]:
    values = {"mu": torch.tensor([-3.0, -2.5], **F64), "spread": torch.tensor([0.4, 0.3], **F64),
              "log_rate": torch.tensor([[-3.2, -2.2], [-2.6, -2.9]], **F64), "share": torch.tensor([0.3], **F64)}
    if likelihood == "negbin":
        values["dispersion"] = torch.tensor([0.2, 0.05], **F64)
    return values


@pytest.mark.parametrize("likelihood", ["poisson", "negbin"])
def test_simulates_counts_of_every_document(likelihood):
    pyro.set_rng_seed(1)
    data = tiny_data()
    counts = word_rate_model(data, likelihood)
    assert counts.shape == (5, 2) and (counts >= 0).all() and (counts == counts.round()).all()
    trace = poutine.trace(word_rate_model).get_trace(data, likelihood)
    assert trace.nodes["author"]["value"].shape == (2,)
    assert trace.nodes["share"]["value"].shape == (1,)


@pytest.mark.parametrize("likelihood", ["poisson", "negbin"])
def test_exact_enumeration_agrees_with_brute_force(likelihood):
    """Pyro's enumeration of the two unknown authors equals the sum over all 2^2 assignments."""
    data = tiny_data(torch.tensor([[4.0, 9.0], [6.0, 4.0], [2.0, 5.0], [5.0, 3.0], [3.0, 6.0]]))
    values = fixed_values(likelihood)
    fixed = poutine.condition(word_rate_model, data=values)
    enumerated = -TraceEnum_ELBO(max_plate_nesting=1).loss(fixed, lambda *a, **k: None, data, likelihood)
    joint = []
    for assignment in itertools.product(range(2), repeat=2):
        both = poutine.condition(word_rate_model, data={**values, "author": torch.tensor(assignment)})
        joint.append(poutine.trace(both).get_trace(data, likelihood).log_prob_sum())
    assert float(enumerated) == pytest.approx(float(torch.logsumexp(torch.stack(joint), 0)), rel=1e-12)


@pytest.mark.parametrize("likelihood", ["poisson", "negbin"])
def test_count_loglik_is_pyro_density(likelihood):
    counts = torch.tensor([[0.0, 3.0, 17.0], [5.0, 1.0, 0.0]], **F64)
    mean = torch.tensor([[0.5, 2.0, 20.0], [4.0, 0.1, 2.0]], **F64)
    disp = torch.tensor([0.3, 0.01, 1.5], **F64) if likelihood == "negbin" else None
    if disp is None:
        expected = dist.Poisson(mean).log_prob(counts).sum(-1)
    else:
        expected = dist.GammaPoisson(1 / disp, 1 / (disp * mean)).log_prob(counts).sum(-1)
    assert torch.allclose(count_loglik(counts, mean, disp), expected, rtol=1e-12)


def test_make_data_refuses_bad_arrays():
    with pytest.raises(InputError, match="positive number of words"):
        make_data([10.0, 0.0], [0, 1], num_authors=2, num_words=1)
    with pytest.raises(InputError, match="author codes"):
        make_data([10.0], [2], num_authors=2, num_words=1)
    with pytest.raises(InputError, match="more counted words than its length"):
        make_data([3.0], [0], [[2.0, 2.0]], num_authors=1)
    with pytest.raises(InputError, match="two different authors"):
        make_data([3.0], [-2], [[1.0]], num_authors=2, pair=[[0, 0]])
    with pytest.raises(InputError, match="candidate"):
        make_data([3.0], [-1], [[1.0]], num_authors=2, candidates=[[False, False]])
    assert math.isclose(float(make_data([3.0], [0], [[1.0]], num_authors=1).lengths[0]), 3.0)
