import pytest
import torch

from inference.conditioning.condition import condition
from models.errors import InputError
from models.personas import anchored_table_prior
from models.predictive import mixture_predictive


@pytest.mark.parametrize("model", ["global", "mixture"])
def test_exact_posterior_has_every_documented_part(tiny_world, model):
    personas, ev, _ = tiny_world
    post = condition(personas, ev, model=model, method="exact", beta=0.8, seed=1)
    assert post.weights.sum() == pytest.approx(1.0)
    assert post.log_evidence is not None and post.seconds > 0
    chains, draws = post.weight_samples.shape[:2]
    assert post.persona_samples.shape == ((chains, draws) if model == "global" else (chains, draws, ev.num_docs))
    assert post.doc_log_likelihood().shape == (chains, draws, ev.num_docs)
    pred = post.predictive(ev.tokens[:4])
    torch.testing.assert_close(pred.exp().sum(-1), torch.ones(4, ev.doc_len, dtype=torch.float64))
    expected = mixture_predictive(personas.log_table(), post.weights.log(), ev.tokens[:4], 4, 1)
    torch.testing.assert_close(pred, expected)
    summary = post.summary()
    assert set(summary) == {"method", "model", "beta", "weights", "log_evidence", "diagnostics", "seconds"}


def test_global_persona_draws_follow_the_posterior(tiny_world):
    personas, ev, _ = tiny_world
    post = condition(personas, ev.select(torch.arange(2)), model="global", beta=0.05, seed=0)
    freq = torch.bincount(post.persona_samples.flatten(), minlength=3).double() / post.persona_samples.numel()
    se = (post.weights * (1 - post.weights) / post.persona_samples.numel()).sqrt()
    assert ((freq - post.weights).abs() <= 4 * se + 1e-12).all()


def test_uncertain_tables_give_a_monte_carlo_predictive(tiny_world):
    personas, ev, _ = tiny_world
    post = condition(personas, ev, model="global", method="exact", table_prior=anchored_table_prior(personas, 30.0))
    assert post.table_samples is not None
    pred = post.predictive(ev.tokens[:2])
    torch.testing.assert_close(pred.exp().sum(-1), torch.ones(2, ev.doc_len, dtype=torch.float64))


def test_uncertain_tables_are_drawn_jointly_with_the_persona(tiny_world):
    """Row h_s of draw s comes from its posterior, the others from their prior, and the mean of
    P(h | tables_s, D) over the draws is the exact P(h | D) (within 4 Monte Carlo standard errors)."""
    personas, ev, _ = tiny_world
    prior = anchored_table_prior(personas, 5.0)
    post = condition(personas, ev.select(torch.arange(1)), model="global", method="exact", beta=0.1,
                     table_prior=prior, seed=3)
    assert post.weights.max() < 0.95  # the check needs an undecided posterior
    draws = post.weight_samples.flatten(0, 1)  # [S, K]
    se = draws.std(0) / draws.shape[0] ** 0.5
    assert ((draws.mean(0) - post.weights).abs() <= 4 * se + 1e-12).all()
    persona = post.persona_samples.flatten()  # [S]
    probs = post.table_samples.flatten(0, 1).exp()  # [S, K, F]
    prior_mean = prior.flat() / prior.flat().sum(-1, keepdim=True)  # [K, R, V]
    for k in range(personas.num_personas):  # a persona that did not write the evidence keeps its prior rows
        others = probs[persona != k, k]  # [n, F]
        se = others.std(0) / others.shape[0] ** 0.5
        assert ((others.mean(0) - prior_mean[k].flatten()).abs() <= 4 * se + 1e-12).all()


def test_beta_zero_returns_the_prior(tiny_world):
    personas, ev, _ = tiny_world
    torch.testing.assert_close(condition(personas, ev, beta=0.0).weights, personas.prior)
    alpha = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    mix = condition(personas, ev, model="mixture", beta=0.0, alpha=alpha)
    torch.testing.assert_close(mix.weights, alpha / alpha.sum())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model="local"), "global, mixture"),
        (dict(method="laplace"), "exact, svi, mcmc"),
        (dict(beta=-1.0), "beta"),
        (dict(beta=float("nan")), "beta"),
        (dict(beta=float("inf")), "beta"),
        (dict(beta="strong"), "beta"),
        (dict(model="mixture", alpha=-1.0), "alpha"),
        (dict(model="mixture", alpha=[1.0, 2.0]), "alpha"),
        (dict(model="global", method="svi"), "exact"),
        (dict(model="global", method="mcmc"), "table_prior"),
        (dict(method="exact", num_steps=10), "engine options"),
    ],
)
def test_combinations_that_make_no_sense_are_refused(tiny_world, kwargs, message):
    personas, ev, _ = tiny_world
    with pytest.raises(InputError, match=message) as err:
        condition(personas, ev, **kwargs)
    assert "\n" not in str(err.value)


def test_mixture_exact_with_uncertain_tables_is_refused(tiny_world):
    personas, ev, _ = tiny_world
    with pytest.raises(InputError, match="svi"):
        condition(personas, ev, model="mixture", method="exact", table_prior=anchored_table_prior(personas))
