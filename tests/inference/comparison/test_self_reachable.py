"""R_self of a base model through the interface: the kept vocabulary, the full-vocabulary KL, and
conditioning the persona mixture on evidence."""

import pytest
import torch

from inference.comparison.kl import mean_kl
from inference.comparison.self_reachable import (
    comparison_vocabulary,
    conditioned_log_weights,
    evidence_loglik,
    full_kl,
    rest_mass,
)
from models.counts import make_evidence
from models.errors import InputError
from models.tagged_lm import TaggedLM
from models.transformer import PersonaLM, TransformerConfig

V, K, T = 12, 3, 8


@pytest.fixture(scope="module")
def models():
    config = TransformerConfig(vocab_size=V, num_personas=K, block_size=T + 1, n_layer=1, n_head=2, n_embd=16)
    torch.manual_seed(0)
    a, b = PersonaLM(config).eval(), PersonaLM(config).eval()
    contexts = torch.randint(0, 5, (6, T), generator=torch.Generator().manual_seed(1))  # tokens 0..4 only
    return TaggedLM(a), TaggedLM(b), contexts


def test_the_vocabulary_keeps_every_context_token_then_the_heaviest(models):
    a, _, contexts = models
    voc = comparison_vocabulary(a, contexts, 7)
    assert voc.covers(contexts) and voc.keep.numel() == 7 and voc.width == 8
    mass = sum(a.next_token_logprobs(contexts, h).exp().sum((0, 1)) for h in (None, 0, 1, 2))
    outside = [v for v in range(5, V)]
    top = sorted(outside, key=lambda v: -float(mass[v]))[:2]
    assert set(top) <= set(voc.keep.tolist())
    assert comparison_vocabulary(a, contexts, V).full
    with pytest.raises(InputError):
        comparison_vocabulary(a, contexts, 0)


def test_full_kl_streams_the_exact_value_and_bounds_the_coarsened_one(models, monkeypatch):
    a, b, contexts = models
    exact = mean_kl(a.next_token_logprobs(contexts), b.next_token_logprobs(contexts))
    monkeypatch.setattr("inference.comparison.self_reachable.MAX_BLOCK_ELEMENTS", 2 * T * V)  # blocks of 2 rows
    assert full_kl(a, b, contexts) == pytest.approx(exact, rel=1e-12)
    voc = comparison_vocabulary(a, contexts, 6)
    coarse = mean_kl(a.next_token_logprobs(contexts, vocabulary=voc), b.next_token_logprobs(contexts, vocabulary=voc))
    assert coarse <= exact + 1e-12
    mass = rest_mass(a.next_token_logprobs(contexts, vocabulary=voc), voc)
    assert 0 < mass["mean"] <= mass["max"] < 1


def test_evidence_loglik_is_the_summed_persona_likelihood(models):
    a, _, contexts = models
    mask = torch.arange(T).expand(6, -1) >= 2
    evidence = make_evidence(contexts.numpy(), mask.numpy())
    expected = torch.stack([a.context_loglik(contexts, h, mask).sum() for h in range(K)])
    assert torch.allclose(evidence_loglik(a, evidence), expected)


def test_conditioning_the_persona_mixture():
    log_prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    loglik = torch.tensor([-100.0, -90.0, -float("inf")], dtype=torch.float64)
    out = conditioned_log_weights(log_prior, loglik, [0.0, 0.1, 1.0])
    assert torch.allclose(out[0.0], log_prior)  # beta = 0: the prior, an impossible persona too
    post = out[1.0].exp()
    assert torch.allclose(post.sum(), torch.tensor(1.0, dtype=torch.float64)) and post[2] == 0
    expected = torch.softmax(log_prior[:2] + torch.tensor([-100.0, -90.0], dtype=torch.float64), 0)
    assert torch.allclose(post[:2], expected)
    assert out[0.1].exp()[1] < post[1]  # a weaker beta moves less
    with pytest.raises(InputError):
        conditioned_log_weights(log_prior, loglik[:2], [1.0])
