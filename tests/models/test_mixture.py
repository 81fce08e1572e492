import pyro
import pytest
import scipy.stats
import torch
from pyro.infer import TraceEnum_ELBO

from inference.conditioning.exact import global_posterior
from models.counts import count_transitions, make_evidence, total_counts
from models.errors import InputError
from models.mixture import persona_model, simulate_corpus
from models.personas import random_personas


def chi_square_p_value(observed, expected_probs):
    """Pooled chi-square over rows; cells with expected count < 5 are merged into one per row."""
    stat, dof = 0.0, 0
    for obs, p in zip(observed, expected_probs, strict=True):
        n = obs.sum()
        if n == 0:
            continue
        exp = n * p
        big = exp >= 5
        o = torch.cat([obs[big], obs[~big].sum().reshape(1)]) if (~big).any() else obs[big]
        e = torch.cat([exp[big], exp[~big].sum().reshape(1)]) if (~big).any() else exp[big]
        keep = e > 0
        stat += float(((o[keep] - e[keep]) ** 2 / e[keep]).sum())
        dof += int(keep.sum()) - 1
    return scipy.stats.chi2.sf(stat, dof)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_simulated_transitions_match_the_tables(order):
    personas = random_personas(2, 4, order=order, concentration=1.0, seed=10 + order)
    tokens, persona = simulate_corpus(personas, 3000, 16, seed=order)
    V = 4
    for k in range(2):
        ev = make_evidence(tokens[persona == k].numpy())
        totals = total_counts(ev, V, order)  # [F]
        first, trans = totals[:V], totals[V:].reshape(-1, V)
        p_first = chi_square_p_value(first[None], personas.init[k][None])
        p_trans = chi_square_p_value(trans, personas.trans[k].reshape(-1, V))
        assert p_first > 1e-3 and p_trans > 1e-3, (p_first, p_trans)


def test_chi_square_detects_a_wrong_table():
    personas = random_personas(2, 4, order=1, concentration=1.0, seed=11)
    tokens, persona = simulate_corpus(personas, 3000, 16, seed=1)
    ev = make_evidence(tokens[persona == 0].numpy())
    trans = total_counts(ev, 4, 1)[4:].reshape(4, 4)
    assert chi_square_p_value(trans, personas.trans[1]) < 1e-6


def test_simulated_personas_follow_the_prior():
    personas = random_personas(3, 4, seed=0).with_prior(torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))
    _, persona = simulate_corpus(personas, 6000, 2, seed=0)
    observed = torch.bincount(persona, minlength=3)
    assert chi_square_p_value(observed[None].double(), personas.prior[None]) > 1e-3


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 3.0])
def test_enumerated_model_gives_the_exact_log_evidence(tiny_world, beta):
    """TraceEnum_ELBO with an empty guide is -log p_beta(D) when the only latent is the persona."""
    personas, ev, _ = tiny_world
    counts = count_transitions(ev, 4, 1)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.clear_param_store()
    kwargs = dict(tokens=ev.tokens, mask=ev.mask, counts=counts, evidence="global", beta=beta)
    loss = elbo.loss(persona_model, lambda *a, **k: None, personas, ev.num_docs, ev.doc_len, **kwargs)
    _, log_z = global_posterior(personas.prior.log(), personas.log_table(), total_counts(ev, 4, 1), beta)
    assert loss == pytest.approx(-float(log_z), abs=1e-8)
    # the token-level path (no precomputed counts) scores the same
    kwargs.pop("counts")
    loss_tokens = elbo.loss(persona_model, lambda *a, **k: None, personas, ev.num_docs, ev.doc_len, **kwargs)
    assert loss_tokens == pytest.approx(loss, abs=1e-8)


def test_mixture_with_fixed_weights_scores_each_document_marginally(tiny_world):
    personas, ev, _ = tiny_world
    counts = count_transitions(ev, 4, 1)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(
        persona_model, lambda *a, **k: None, personas, ev.num_docs, ev.doc_len,
        tokens=ev.tokens, counts=counts, evidence="mixture",
    )
    L = counts.loglik(personas.log_table()[:, None, :])  # [K, D]
    expected = torch.logsumexp(personas.prior.log()[:, None] + L, 0).sum()
    assert loss == pytest.approx(-float(expected), abs=1e-8)


def test_unknown_evidence_model_is_refused(tiny_world):
    personas, ev, _ = tiny_world
    with pytest.raises(InputError, match="global, mixture"):
        persona_model(personas, 2, 3, evidence="local")
