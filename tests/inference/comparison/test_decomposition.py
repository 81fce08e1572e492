"""The exhaustiveness decomposition (DESIGN.md §3.3): the identity, its two ends, and a brute-force check."""

import itertools
import math

import numpy as np
import pytest
import torch

from inference.comparison.decomposition import decompose, decomposition_interval, fit
from inference.comparison.tilt import Tilt
from inference.conditioning.condition import condition
from models.counts import make_evidence
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import make_personas, random_personas
from models.predictive import mixture_logprobs, persona_logprobs
from models.transformer import TransformerConfig, next_token_logprobs


@pytest.fixture(scope="module")
def world():
    personas = random_personas(4, 6, order=1, seed=0)
    contexts, writer = simulate_corpus(personas, 48, 10, seed=1)
    components = persona_logprobs(personas, contexts)  # [K, n, T, V]
    q0 = mixture_logprobs(components, contexts, personas.prior.log())  # the exact prior mixture
    return personas, contexts, components, q0


def _random_change(q0, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(q0 + scale * torch.randn(q0.shape, generator=g, dtype=torch.float64), -1)


@pytest.mark.parametrize("scale, seed", [(0.05, 0), (0.5, 1), (2.0, 2)])
def test_identity_total_is_reweighting_plus_other_on_random_models(world, scale, seed):
    personas, contexts, components, q0 = world
    base = _random_change(q0, 0.3, 10 + seed)  # a base that is not a persona mixture
    q_s = _random_change(base, scale, seed)
    d = decompose(q_s, base, components, contexts, personas.prior)
    assert d.total > 0 and d.reweighting >= 0 and d.other >= 0
    assert abs(d.total - d.reweighting - d.other) < 1e-10 * max(1.0, d.total)
    assert abs(d.identity_gap) < 1e-10 * max(1.0, d.total)
    assert 0 <= d.exhaustiveness <= 1


def test_identity_holds_on_trained_models():
    """A tiny transformer fine-tuned a few steps, against its own tag-prompted personas (R_self)."""
    from inference.finetuning.training import finetune, pretrain

    personas = random_personas(3, 5, order=1, concentration=0.3, seed=4)
    tokens, who = simulate_corpus(personas, 300, 10, seed=5)
    config = TransformerConfig(vocab_size=5, num_personas=3, block_size=11, n_layer=1, n_head=2, n_embd=16)
    base, _ = pretrain(config, tokens, who, steps=60, batch_size=32, lr=1e-2, seed=0)
    evidence, _ = simulate_corpus(personas.subset([1]), 32, 10, seed=6)
    tuned = finetune(base, make_evidence(evidence), steps=20, lr=3e-3, batch_size=16, seed=0).snapshots[20]
    contexts, _ = simulate_corpus(personas, 24, 10, seed=7)
    q0, q_s = next_token_logprobs(base, contexts), next_token_logprobs(tuned, contexts)
    components = torch.stack([next_token_logprobs(base, contexts, tag=h) for h in range(3)])
    d = decompose(q_s, q0, components, contexts, torch.full((3,), 1 / 3, dtype=torch.float64))
    assert d.total > 1e-4
    assert abs(d.identity_gap) < 1e-10 * d.total


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0, 3.0])
def test_the_exact_conditioned_predictive_is_all_reweighting(world, beta):
    """q0 = the prior persona mixture, q_s = the exact posterior predictive: E = 1 at theta = 1."""
    personas, contexts, components, q0 = world
    tokens, _ = simulate_corpus(personas.subset([2]), 3, 10, seed=3)
    posterior = condition(personas, make_evidence(tokens), model="global", method="exact", beta=beta)
    q_s = posterior.predictive(contexts)
    d = decompose(q_s, q0, components, contexts, personas.prior)
    assert d.exhaustiveness == pytest.approx(1.0, abs=1e-6)
    assert d.other < 1e-6 * d.total
    assert d.theta == pytest.approx(1.0, abs=1e-3)
    torch.testing.assert_close(d.weights, posterior.weights, rtol=0, atol=2e-3)


def test_a_change_orthogonal_to_every_reweighting_is_not_reweighting():
    """Personas that agree on tokens 2 and 3 cannot move mass between them: E = 0."""
    rng = np.random.default_rng(0)
    K, V = 3, 4
    rows = rng.dirichlet(np.ones(2), size=(K, 1 + V))  # how each persona splits 0.6 between tokens 0 and 1
    tables = np.concatenate([0.6 * rows, np.broadcast_to([0.25, 0.15], (K, 1 + V, 2))], -1)  # [K, 1 + V, V]
    personas = make_personas(np.full(K, 1 / K), tables[:, 0], tables[:, 1:])
    contexts, _ = simulate_corpus(personas, 40, 8, seed=1)
    components = persona_logprobs(personas, contexts)
    q0 = mixture_logprobs(components, contexts, personas.prior.log())
    shift = torch.tensor([0.0, 0.0, 0.4, -0.4], dtype=torch.float64)  # mass from token 3 to token 2
    q_s = q0 + shift
    inside = torch.logsumexp(q0[..., 2:], -1, keepdim=True) - torch.logsumexp(q_s[..., 2:], -1, keepdim=True)
    q_s = torch.cat([q0[..., :2], q_s[..., 2:] + inside], -1)  # same mass on {2, 3} as q0
    d = decompose(q_s, q0, components, contexts, personas.prior)
    assert d.total > 1e-3
    assert d.exhaustiveness == pytest.approx(0.0, abs=1e-6)


def test_the_optimiser_agrees_with_a_brute_force_grid():
    """K = 3 personas on a tiny world: a grid over the simplex and theta finds no better tilt."""
    personas = random_personas(3, 3, order=1, concentration=0.5, seed=8)
    contexts, _ = simulate_corpus(personas, 6, 5, seed=9)
    components = persona_logprobs(personas, contexts)
    q0 = _random_change(mixture_logprobs(components, contexts, personas.prior.log()), 0.2, 1)
    q_s = _random_change(q0, 0.6, 2)
    tilt = Tilt(q_s, q0, components, contexts, personas.prior)
    d = fit(tilt)
    step = 0.025
    grid = [(a, b, 1 - a - b) for a, b in itertools.product(np.arange(0, 1 + 1e-9, step), repeat=2) if a + b <= 1 + 1e-9]
    w = torch.tensor(grid, dtype=torch.float64).clamp(min=1e-9)  # [G, K]
    thetas = torch.linspace(-4, 6, 101, dtype=torch.float64)
    with torch.no_grad():
        phis = torch.stack([tilt.phi(row.log()) for row in w])  # [G, n, T, V]
        best = math.inf
        for theta in thetas:  # grid over theta; vectorised over the simplex grid
            log_q = torch.log_softmax(q0 + theta * phis, -1)  # [G, n, T, V]
            kl = (tilt.q_prob * (q_s - log_q)).sum(-1).sum((-1, -2)) / tilt.positions.sum()  # [G]
            best = min(best, float(kl.min()))
    found = d.other  # the optimiser's objective: KL(q_s || q*)
    assert found <= best + 1e-9
    assert found >= best - 0.02 * d.total  # the grid is fine enough to come close to the optimum


def test_undefined_when_the_model_has_not_moved(world):
    personas, contexts, components, q0 = world
    d = decompose(q0, q0, components, contexts, personas.prior)
    assert d.exhaustiveness is None and "not moved" in d.reason
    tilt = Tilt(q0, q0, components, contexts, personas.prior)
    assert all(math.isnan(x) for x in decomposition_interval(tilt, d))


def test_bootstrap_interval_contains_the_estimate_and_a_refit_is_close(world):
    personas, contexts, components, q0 = world
    base = _random_change(q0, 0.2, 3)
    tokens, _ = simulate_corpus(personas.subset([1]), 3, 10, seed=4)
    target = condition(personas, make_evidence(tokens), beta=0.3).predictive(contexts)
    q_s = torch.log_softmax(0.5 * base + 0.5 * target, -1)  # partly conditioning, partly not
    tilt = Tilt(q_s, base, components, contexts, personas.prior)
    d = fit(tilt)
    fixed = decomposition_interval(tilt, d, num_boot=200, seed=0)
    assert fixed[0] <= d.exhaustiveness <= fixed[1] and fixed[1] - fixed[0] < 0.5
    assert decomposition_interval(tilt, d, num_boot=200, seed=0) == fixed  # reproducible
    refit = decomposition_interval(tilt, d, num_boot=30, seed=0, refit="full")
    assert refit[0] <= d.exhaustiveness + 0.05 and refit[1] >= d.exhaustiveness - 0.05
    with pytest.raises(InputError, match="refit"):
        decomposition_interval(tilt, d, refit="sometimes")


def test_bad_inputs_are_one_line_errors(world):
    personas, contexts, components, q0 = world
    with pytest.raises(InputError, match="persona weights"):
        decompose(q0, q0, components, contexts, torch.tensor([1.0, -1.0, 0.5, 0.5]))
    with pytest.raises(InputError, match="q_s has shape"):
        decompose(q0[:3], q0, components, contexts, personas.prior)
    with pytest.raises(InputError):
        decompose(q0, q0, components, contexts + 100, personas.prior)


def partly_novel_case(n, seed):
    """A model 90% an in-support re-weighting, 10% a novel persona (per token): E strictly inside (0, 1)."""
    personas = random_personas(4, 6, order=1, seed=0)
    contexts, _ = simulate_corpus(personas, n, 12, seed=seed)
    comp = persona_logprobs(personas, contexts)
    q0 = mixture_logprobs(comp, contexts, personas.prior.log())
    q_in = mixture_logprobs(comp, contexts, torch.tensor([0.05, 0.85, 0.05, 0.05], dtype=torch.float64).log())
    novel = persona_logprobs(random_personas(1, 6, order=1, seed=7), contexts)[0]
    q = torch.logaddexp(q_in + math.log(0.9), novel + math.log(0.1))
    tilt = Tilt(q, q0, comp, contexts, personas.prior)
    d = fit(tilt)
    return (d.exhaustiveness, *decomposition_interval(tilt, d, num_boot=300, seed=1))


def test_interval_contains_the_estimate_and_shrinks_with_more_contexts():
    e_small, lo_small, hi_small = partly_novel_case(32, seed=3)
    e_large, lo_large, hi_large = partly_novel_case(512, seed=4)
    assert 0.2 < e_small < 0.95 and 0.2 < e_large < 0.95
    assert lo_small <= e_small <= hi_small and lo_large <= e_large <= hi_large
    assert (hi_large - lo_large) < 0.6 * (hi_small - lo_small)  # ~ 1/4 expected at 16x the contexts
