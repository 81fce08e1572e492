"""Numerical stability: large evidence, strong tempering, zero-probability transitions, extreme personas.

What must hold everywhere: posterior weights are finite and sum to one; the log evidence, the
document log-likelihoods and every array of ``to_arviz()`` hold no NaN and no infinity; a
predictive log-probability is ``-inf`` only where the exact probability is zero (a token that
every persona with posterior weight forbids) and each predictive row sums to one.

Sizes are the largest that run in seconds on 2 shared cores: 10^6 evidence tokens for the
exact paths, a few hundred tokens for SVI and NUTS. ``benchmarks/bench_stability.py`` runs
the full sizes (10^7 tokens, beta 100).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inference.conditioning import exact
from inference.conditioning.condition import condition
from models.counts import count_transitions, make_evidence, total_counts
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import MarkovPersonas, anchored_table_prior, make_personas, random_personas
from models.predictive import mixture_predictive

V = 5
#: peaked personas (most entries underflow to exactly zero), moderate, and flat ones
CONCENTRATIONS = (1e-3, 1.0, 1e3)
BETAS = (0.0, 1.0, 100.0)


def one_persona_evidence(personas: MarkovPersonas, writer: int, num_docs: int, doc_len: int, seed: int):
    """Evidence written by persona ``writer`` alone (so it is possible under it)."""
    tokens, _ = simulate_corpus(personas.subset([writer]), num_docs, doc_len, seed=seed)
    return make_evidence(tokens.numpy())


def check_weights(weights: torch.Tensor, tol: float = 1e-12) -> None:
    assert torch.isfinite(weights).all() and (weights >= 0).all()
    assert abs(float(weights.sum(-1).max()) - 1) < tol and abs(float(weights.sum(-1).min()) - 1) < tol


def check_predictive(posterior, contexts: torch.Tensor) -> None:
    """No NaN, no +inf, rows normalised, and -inf exactly where every weighted persona forbids the token."""
    logp = posterior.predictive(contexts)  # [n, T, V]
    assert not torch.isnan(logp).any() and not (logp == math.inf).any()
    assert torch.allclose(logp.logsumexp(-1), torch.zeros(logp.shape[:-1], dtype=logp.dtype), atol=1e-9)
    if posterior.table_samples is None:
        p = posterior.personas  # under uniform weights a token has probability zero iff every persona forbids it
        components = mixture_predictive(p.log_table(), torch.zeros(p.num_personas), contexts, p.vocab_size, p.order)
        support = posterior.weights > 0
        if support.all():
            assert torch.equal(torch.isinf(logp), torch.isinf(components))


def check_arviz(posterior, allow_neg_inf: bool = False) -> None:
    """Every numeric array of the InferenceData is free of NaN and (unless allowed) infinities."""
    idata = posterior.to_arviz()
    for group in idata.groups():
        for name, var in idata[group].data_vars.items():
            values = np.asarray(var.values)
            if values.dtype.kind != "f":
                continue
            assert not np.isnan(values).any(), (group, name)
            assert not (values == np.inf).any(), (group, name)
            if not allow_neg_inf:
                assert np.isfinite(values).all(), (group, name)


@pytest.fixture(scope="module", params=CONCENTRATIONS, ids=lambda c: f"conc{c:g}")
def big_world(request):
    """Three bigram personas over five tokens and 10^6 evidence tokens from persona 1."""
    personas = random_personas(3, V, 1, concentration=request.param, seed=11)
    evidence = one_persona_evidence(personas, writer=1, num_docs=1000, doc_len=1000, seed=12)
    return personas, evidence


@pytest.mark.parametrize("beta", BETAS)
def test_global_exact_at_a_million_tokens(big_world, beta):
    personas, evidence = big_world
    assert evidence.num_tokens == 10**6
    posterior = condition(personas, evidence, "global", "exact", beta)
    check_weights(posterior.weights)
    assert math.isfinite(posterior.log_evidence)
    if beta > 0:
        assert float(posterior.weights[1]) > 0.5  # the writer wins (all mass at these sizes)
        assert torch.isfinite(posterior.doc_log_likelihood()).all()
    else:
        assert torch.equal(posterior.weights, personas.prior)
        assert not torch.isnan(posterior.doc_log_likelihood()).any()
    check_predictive(posterior, evidence.tokens[:8, :200])
    check_arviz(posterior, allow_neg_inf=beta == 0)  # a prior draw may be a persona that forbids the evidence


@pytest.mark.parametrize("beta", [1.0, 100.0])
def test_global_exact_with_uncertain_tables_at_a_million_tokens(big_world, beta):
    personas, evidence = big_world
    posterior = condition(personas, evidence, "global", "exact", beta, table_prior=anchored_table_prior(personas, 50.0))
    check_weights(posterior.weights)
    assert math.isfinite(posterior.log_evidence)
    assert torch.isfinite(posterior.table_samples).all()
    check_predictive(posterior, evidence.tokens[:4, :100])
    check_arviz(posterior)


@pytest.mark.parametrize("beta", BETAS)
def test_mixture_exact_at_a_million_tokens(beta):
    """100 documents of 10^4 tokens from three peaked personas: each is impossible under some persona."""
    personas = random_personas(3, V, 1, concentration=1e-3, seed=5)
    tokens, writer = simulate_corpus(personas, 100, 10_000, seed=6)
    evidence = make_evidence(tokens.numpy())
    posterior = condition(personas, evidence, "mixture", "exact", beta)
    check_weights(posterior.weights)
    check_weights(posterior.weight_samples)
    assert math.isfinite(posterior.log_evidence)
    assert torch.isfinite(posterior.doc_log_likelihood()).all()  # marginal over each document's persona
    if beta > 0:  # every document is identified: the assignments are the writers
        assert (posterior.persona_samples == writer).all()
    check_predictive(posterior, tokens[:4, :300])
    check_arviz(posterior)


def test_equal_personas_keep_equal_weights_under_huge_evidence():
    """Three copies of one persona, 10^6 tokens, beta 100: |log joint| ~ 1e8, the weights stay exactly 1/3.

    Subtracting the log evidence from the log joint (instead of a log-softmax) loses the digits of
    the weights once |log joint| is large: then they no longer sum to one.
    """
    one = random_personas(1, V, 1, concentration=1.0, seed=2)
    personas = make_personas(np.full(3, 1 / 3), one.init.expand(3, -1).numpy(), one.trans.expand(3, -1, -1).numpy())
    evidence = one_persona_evidence(one, 0, 1000, 1000, seed=3)
    for beta in (1.0, 100.0, 1e20):
        posterior = condition(personas, evidence, "global", "exact", beta)
        torch.testing.assert_close(posterior.weights, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-15)
        assert abs(float(posterior.weights.sum()) - 1) < 1e-15


def test_normalisation_is_exact_where_the_log_joint_is_huge():
    """The exact normalisers directly, at log joints of -1e301 (beta 1e300)."""
    log_w, log_z = exact._normalise(torch.full((3,), -1e301, dtype=torch.float64))
    assert math.isfinite(float(log_z))
    torch.testing.assert_close(log_w.exp(), torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-15)
    log_w, _ = exact._normalise(torch.tensor([-1e301, -1e301 + 1e286, -2e301], dtype=torch.float64))
    assert torch.equal(log_w.exp(), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))


def test_zero_probability_transitions_give_zero_weight_not_nan():
    """Personas 1 and 2 forbid a transition persona 0 uses: their weights are exactly zero, nothing is NaN."""
    base = random_personas(3, V, 1, concentration=1.0, seed=7)
    trans = base.trans.clone()
    trans[1:, 0, 0] = 0.0
    trans[0, 0, 0] = 0.5
    trans = trans / trans.sum(-1, keepdim=True)
    personas = make_personas(base.prior, base.init, trans)
    tokens = torch.zeros(20, 50, dtype=torch.long)  # 0 -> 0 throughout
    evidence = make_evidence(tokens.numpy())
    for beta in (1.0, 100.0):
        posterior = condition(personas, evidence, "global", "exact", beta)
        assert torch.equal(posterior.weights, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
        assert math.isfinite(posterior.log_evidence) and torch.isfinite(posterior.doc_log_likelihood()).all()
        check_predictive(posterior, tokens[:2])
        check_arviz(posterior)
        mixture = condition(personas, evidence, "mixture", "exact", beta)
        assert (mixture.persona_samples == 0).all()
        check_weights(mixture.weights)
        check_arviz(mixture)


def test_impossible_evidence_is_refused_in_one_line():
    """A transition no persona allows: a clear error from exact, SVI and MCMC alike (not NaN)."""
    base = random_personas(2, V, 1, concentration=1.0, seed=8)
    trans = base.trans.clone()
    trans[:, 0, 0] = 0.0
    personas = make_personas(base.prior, base.init, trans / trans.sum(-1, keepdim=True))
    evidence = make_evidence(np.zeros((3, 4), dtype=np.int64))
    for model, method, options in [("global", "exact", {}), ("mixture", "exact", {}),
                                   ("mixture", "svi", {"num_steps": 2}), ("mixture", "mcmc", {"num_samples": 2})]:
        with pytest.raises(InputError, match="zero probability") as info:
            condition(personas, evidence, model, method, 1.0, **options)
        assert "\n" not in str(info.value)
    assert condition(personas, evidence, "mixture", "exact", 0.0).weights.sum() == pytest.approx(1.0)  # beta 0: prior


def test_tempering_that_would_overflow_is_refused():
    """beta * tokens beyond 1e300 (tempered log-likelihoods past float64) is an InputError, not NaN weights."""
    personas = random_personas(3, V, 1, concentration=1.0, seed=9)
    evidence = one_persona_evidence(personas, 0, 10, 10, seed=10)
    for model in ("global", "mixture"):
        posterior = condition(personas, evidence, model, "exact", 1e290)  # beta * 100 tokens = 1e292: fine
        check_weights(posterior.weights)
        assert math.isfinite(posterior.log_evidence)
        with pytest.raises(InputError, match="beta"):
            condition(personas, evidence, model, "exact", 1e299)
    table_prior = anchored_table_prior(personas, 5.0)
    totals = total_counts(evidence, V, 1)
    with pytest.raises(InputError, match="overflows"):
        exact.global_posterior_dirichlet(personas.prior.log(), table_prior, totals, 1e306)
    with pytest.raises(InputError, match="overflows"):
        exact.global_posterior(personas.prior.log(), personas.log_table(), totals, 1e308)


def test_counts_of_a_million_tokens_are_exact():
    personas = random_personas(2, V, 2, concentration=0.5, seed=13)
    tokens, _ = simulate_corpus(personas, 500, 2000, seed=14)
    mask = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(15)) < 0.9
    evidence = make_evidence(tokens.numpy(), mask.numpy())
    counts = count_transitions(evidence, V, 2)
    totals = total_counts(evidence, V, 2)
    assert torch.equal(counts.totals(), totals) and float(totals.sum()) == evidence.num_tokens
    assert torch.equal(counts.per_doc_tokens(), mask.sum(1).double())


def test_long_contexts_keep_the_predictive_normalised():
    """Contexts of 5,000 tokens: prefix log-likelihoods ~ -1e4 (peaked) must not turn the in-context weights NaN."""
    for conc in CONCENTRATIONS:
        personas = random_personas(3, V, 1, concentration=conc, seed=16)
        evidence = one_persona_evidence(personas, 2, 4, 50, seed=17)
        posterior = condition(personas, evidence, "mixture", "exact", 1.0)
        contexts, _ = simulate_corpus(personas, 3, 5000, seed=18)
        check_predictive(posterior, contexts)


# ---------------------------------------------------------------- SVI and NUTS at small sizes


def small_world(conc: float, seed: int = 1):
    personas = random_personas(3, 4, 1, concentration=conc, seed=seed)
    tokens, _ = simulate_corpus(personas, 12, 50, seed=seed + 1)
    return personas, make_evidence(tokens.numpy())


@pytest.mark.parametrize("conc", [1e-3, 1e3], ids=["peaked", "flat"])
@pytest.mark.parametrize("method, options", [
    ("svi", dict(num_steps=150, num_samples=50)),
    ("mcmc", dict(num_samples=50, warmup_steps=50, num_chains=2)),
])
def test_mixture_svi_and_mcmc_stay_finite_at_beta_100(conc, method, options):
    personas, evidence = small_world(conc)
    posterior = condition(personas, evidence, "mixture", method, 100.0, seed=0, **options)
    check_weights(posterior.weights, tol=1e-9)
    check_weights(posterior.weight_samples, tol=1e-9)
    assert torch.isfinite(posterior.doc_log_likelihood()).all()
    check_predictive(posterior, evidence.tokens[:3, :20])
    check_arviz(posterior)


@pytest.mark.parametrize("conc", [1e-3, 1e3], ids=["peaked", "flat"])
def test_global_svi_with_uncertain_tables_stays_finite_at_beta_100(conc):
    personas, evidence = small_world(conc)
    posterior = condition(personas, evidence, "global", "svi", 100.0, table_prior=anchored_table_prior(personas, 50.0),
                          seed=0, num_steps=150, num_samples=50)
    check_weights(posterior.weights, tol=1e-9)
    check_weights(posterior.weight_samples, tol=1e-9)
    assert torch.isfinite(posterior.table_samples).all()
    check_predictive(posterior, evidence.tokens[:3, :20])
    check_arviz(posterior)


def test_global_mcmc_with_uncertain_tables_stays_finite_at_beta_100():
    """Small on purpose: NUTS on a beta-100 posterior of peaked tables takes deep trees (see the benchmark)."""
    personas = random_personas(3, 4, 1, concentration=1.0, seed=3)
    evidence = one_persona_evidence(personas, 0, 4, 10, seed=4)
    posterior = condition(personas, evidence, "global", "mcmc", 100.0, table_prior=anchored_table_prior(personas, 50.0),
                          seed=0, num_samples=30, warmup_steps=30, num_chains=2)
    check_weights(posterior.weights, tol=1e-9)
    check_weights(posterior.weight_samples, tol=1e-9)
    assert torch.isfinite(posterior.table_samples).all()
    check_arviz(posterior)
