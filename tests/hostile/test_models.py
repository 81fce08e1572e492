"""Hostile input to the models API: evidence arrays, persona tables, random personas, simulation."""


from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from models.counts import make_evidence
from models.mixture import simulate_corpus
from models.personas import (
    load_personas,
    make_personas,
    random_personas,
)
from tests.hostile.common import (
    HOSTILE_FLOAT,
    HOSTILE_SIZE,
    SMALL,
    K,
    V,
    check_counts,
    check_personas,
    evidence_arrays,
    expect_refused_or_ok,
    hostile,
    one_hostile,
    persona_arrays,
)

# ---------------------------------------------------------------- the API: arrays


@hostile(500)
@given(evidence_arrays(), st.one_of(st.none(), st.integers(-1, 6)))
def test_make_evidence_refuses_or_builds_valid_evidence(arrays, vocab_size):
    tokens, mask = arrays
    evidence = expect_refused_or_ok("api:make_evidence", lambda: make_evidence(tokens, mask, vocab_size))
    if evidence is not None:
        assert evidence.tokens.dtype == torch.long and evidence.tokens.dim() == 2
        assert evidence.mask.dtype == torch.bool and evidence.mask.shape == evidence.tokens.shape
        assert evidence.num_tokens >= 1 and int(evidence.tokens.min()) >= 0
        assert vocab_size is None or int(evidence.tokens.max()) < vocab_size
        assert torch.equal(evidence.tokens, torch.as_tensor(tokens.astype(np.int64)))


@hostile(300)
@given(persona_arrays())
def test_persona_tables_are_refused_or_valid(arrays):
    if {"prior", "init", "trans"} <= set(arrays):
        personas = expect_refused_or_ok("api:make_personas",
                                        lambda: make_personas(arrays["prior"], arrays["init"], arrays["trans"]))
        if personas is not None:
            check_personas(personas)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "personas.npz"
        np.savez(path, **arrays)
        personas = expect_refused_or_ok("api:load_personas", lambda: load_personas(path))
        if personas is not None:
            check_personas(personas)
            assert "order" not in arrays or int(arrays["order"]) == personas.order


@hostile(250)
@given(one_hostile({
    "num_personas": (SMALL, HOSTILE_SIZE),
    "vocab_size": (SMALL.map(lambda v: v + 1), HOSTILE_SIZE),
    "order": (st.integers(0, 2), HOSTILE_SIZE),
    "concentration": (st.sampled_from([1e-3, 0.5, 1e3, 1e-300, np.float32(0.5)]), HOSTILE_FLOAT),
    "seed": (st.integers(0, 2**32 - 1), HOSTILE_SIZE),
    "prior": (st.sampled_from([None, "uniform"]), st.sampled_from(["short", "nan"])),
}))
def test_random_personas_refuses_or_draws_valid_tables(args):
    num_personas, vocab_size, order, concentration, seed, prior = (
        args[k] for k in ("num_personas", "vocab_size", "order", "concentration", "seed", "prior"))

    def call():
        p = None
        if prior is not None and type(num_personas) is int and 0 < num_personas < 100:
            p = {"uniform": np.full(num_personas, 1 / num_personas), "short": np.ones(max(1, num_personas - 1)),
                 "nan": np.full(num_personas, np.nan)}[prior]
        return random_personas(num_personas, vocab_size, order, concentration, seed=seed, prior=p)

    personas = expect_refused_or_ok("api:random_personas", call)
    assert personas is not None or args["hostile_field"] is not None, "valid arguments refused"
    if personas is not None:
        check_personas(personas)
        assert (personas.num_personas, personas.vocab_size, personas.order) == (num_personas, vocab_size, order)


@hostile(250)
@given(one_hostile({
    "num_docs": (SMALL, HOSTILE_SIZE),
    "doc_len": (SMALL, HOSTILE_SIZE),
    "seed": (st.integers(0, 2**63 - 1), HOSTILE_SIZE),
    "evidence": (st.sampled_from(["mixture", "global"]), st.sampled_from(["documents", ""])),
    "alpha": (st.sampled_from([None, "ok"]), st.sampled_from(["short", "zero", "nan", "text", "scalar"])),
}))
def test_simulate_corpus_refuses_or_simulates(world, args):
    personas = world[0]
    num_docs, doc_len, seed, evidence, alpha = (args[k] for k in ("num_docs", "doc_len", "seed", "evidence", "alpha"))
    if alpha == "ok" and evidence == "global":
        alpha = None  # alpha belongs to the mixture model: that combination is a refusal, not a valid call
    a = None if alpha is None else {"ok": torch.ones(K), "short": torch.ones(K - 1), "zero": torch.zeros(K),
                                    "nan": torch.full((K,), math.nan), "text": "one", "scalar": 1.0}[alpha]
    result = expect_refused_or_ok("api:simulate_corpus",
                                  lambda: simulate_corpus(personas, num_docs, doc_len, seed=seed, evidence=evidence, alpha=a))
    assert result is not None or args["hostile_field"] is not None, "valid arguments refused"
    if result is not None:
        tokens, persona = result
        assert tokens.shape == (num_docs, doc_len) and tokens.dtype == torch.long
        assert int(tokens.min()) >= 0 and int(tokens.max()) < V
        assert persona.shape == (num_docs,) and 0 <= int(persona.min()) and int(persona.max()) < K


TARGETS = {"api:make_evidence": 400, "api:make_personas": 150, "api:load_personas": 240, "api:random_personas": 200, "api:simulate_corpus": 200}


def test_cases_tried_are_counted(request):
    """Every target of this module ran at least its number of examples (about 80% of max_examples)."""
    check_counts(TARGETS, globals(), request)
