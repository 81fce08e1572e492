"""Hostile input to conditioning: condition() and the posterior predictive."""


from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inference.conditioning.condition import Posterior, condition
from models.counts import Evidence, make_evidence
from models.personas import (
    anchored_table_prior,
    make_personas,
)
from tests.hostile.common import (
    HOSTILE_SIZE,
    K,
    V,
    check_counts,
    evidence_arrays,
    expect_refused_or_ok,
    hostile,
    one_hostile,
    token_arrays,
)


def _tiny_engine(method: str) -> dict:
    return {"svi": dict(num_steps=2, num_samples=4), "mcmc": dict(num_samples=4, warmup_steps=2, num_chains=1)}.get(method, {})


VALID_EVIDENCE = st.tuples(
    hnp.arrays(np.int64, st.tuples(st.integers(1, 5), st.integers(1, 6)), elements=st.integers(0, V - 1)),
    st.sampled_from([None, "ones", "first-off"]))


@hostile(300)
@given(one_hostile({
    "arrays": (VALID_EVIDENCE, evidence_arrays()),
    "direct": (st.booleans(), st.booleans()),
    "model": (st.sampled_from(["global", "mixture"]), st.sampled_from(["Global", "", None])),
    "method": (st.sampled_from(["exact", "exact", "svi", "mcmc"]), st.sampled_from(["nuts", "", None])),
    "beta": (st.one_of(st.sampled_from([0.0, 1.0, 100.0, 1e290]), st.floats(0, 10)),
             st.sampled_from([-1.0, math.nan, math.inf, -math.inf, "1", None, [1.0, 2.0], 1e308])),
    "alpha": (st.sampled_from([1.0, 0.5, [1.0, 1.0, 2.0]]), st.sampled_from([0.0, -1.0, math.nan, [1.0, 2.0], "a"])),
    "seed": (st.integers(0, 2**32 - 1), HOSTILE_SIZE),
    "strength": (st.sampled_from([None, 5.0]), st.sampled_from([-1.0, math.nan, "5"])),
    "zero_tables": (st.just(False), st.just(True)),
    "extra_option": (st.none(), st.sampled_from(["bogus", "num_steps"])),
}, valid_share=4))
def test_condition_refuses_or_returns_a_normalised_posterior(world, args):
    personas = world[0]
    arrays, direct, model, method, beta, alpha, seed, strength, zero_tables, extra_option = (args[k] for k in (
        "arrays", "direct", "model", "method", "beta", "alpha", "seed", "strength", "zero_tables", "extra_option"))
    if args["hostile_field"] is None:  # the valid combinations of model, method and table prior
        strength = 5.0 if model == "global" and method != "exact" else None if model == "mixture" and method == "exact" else strength
    if isinstance(arrays[1], str):
        mask = np.ones(arrays[0].shape, bool)
        mask[:, 0] = arrays[1] == "ones" or arrays[0].shape[1] == 1
        arrays = (arrays[0], mask)
    if zero_tables:  # every persona forbids token 0 after token 0 and as a first token: impossible evidence
        init, trans = personas.init.clone(), personas.trans.clone()
        init[:, 0], trans[:, 0, 0] = 0.0, 0.0
        personas = make_personas(personas.prior, init / init.sum(-1, keepdim=True), trans / trans.sum(-1, keepdim=True))
    tokens, mask = arrays

    def call():
        if direct:  # bypass make_evidence: condition() must check what it is given itself
            t = torch.as_tensor(tokens.astype(np.int64)) if tokens.dtype.kind in "iu" else torch.zeros(tokens.shape)
            m = torch.ones(t.shape, dtype=torch.bool) if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool))
            evidence = Evidence(t, m)
        else:
            evidence = make_evidence(tokens, mask)
        table_prior = None if strength is None else anchored_table_prior(personas, strength)
        options = _tiny_engine(method)
        if extra_option:
            options[extra_option] = 3
        return condition(personas, evidence, model, method, beta, alpha=alpha, table_prior=table_prior, seed=seed,
                         **options)

    posterior = expect_refused_or_ok("api:condition", call)
    assert posterior is not None or args["hostile_field"] is not None, "valid arguments refused"
    if posterior is not None:
        assert isinstance(posterior, Posterior) and posterior.weights.shape == (K,)
        assert torch.isfinite(posterior.weights).all() and abs(float(posterior.weights.sum()) - 1) < 1e-6
        assert torch.isfinite(posterior.weight_samples).all()
        assert not torch.isnan(posterior.doc_log_likelihood()).any()
        if posterior.log_evidence is not None:
            assert math.isfinite(posterior.log_evidence)


@hostile(250)
@given(contexts=st.one_of(hnp.arrays(np.int64, st.tuples(st.integers(0, 4), st.integers(0, 7)), elements=st.integers(0, V - 1)),
                          token_arrays(6), st.sampled_from([[[0, 1]], [0, 1], "ab", None, [[0.5]]])),
       as_tensor=st.booleans(), model=st.sampled_from(["global", "mixture"]))
def test_predictive_refuses_or_returns_distributions(world, contexts, as_tensor, model):
    personas, evidence = world
    posterior = condition(personas, evidence, model)

    def call():
        c = contexts
        if as_tensor and isinstance(c, np.ndarray) and c.dtype.kind in "iufb" and c.dtype != np.uint64:
            c = torch.as_tensor(c)
        return posterior.predictive(c)

    logp = expect_refused_or_ok("api:predictive", call)
    if logp is not None:
        n, t = np.shape(contexts)
        assert logp.shape == (n, t, V) and not torch.isnan(logp).any()
        assert torch.allclose(logp.logsumexp(-1), torch.zeros(n, t, dtype=logp.dtype), atol=1e-9)




def test_predictive_of_empty_contexts_is_empty(world):
    """No contexts, or contexts of no tokens, give an empty result (an IndexError before)."""
    posterior = condition(*world)
    assert posterior.predictive(torch.zeros(0, 3, dtype=torch.long)).shape == (0, 3, V)
    assert posterior.predictive(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, V)


TARGETS = {"api:condition": 240, "api:predictive": 200}


def test_cases_tried_are_counted(request):
    """Every target of this module ran at least its number of examples (about 80% of max_examples)."""
    check_counts(TARGETS, globals(), request)
