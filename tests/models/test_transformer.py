"""The small causal transformer: layout of documents, predictions and sampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.errors import InputError
from models.transformer import (
    PersonaLM,
    TransformerConfig,
    make_inputs,
    next_token_logprobs,
    num_parameters,
    sample_completions,
)

V, K, T = 6, 2, 8


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_config_token_ids_and_validation(config):
    assert (config.tag_token(0), config.tag_token(1), config.bos, config.total_vocab) == (6, 7, 8, 9)
    bad = [dict(vocab_size=1), dict(num_personas=-1), dict(block_size=0), dict(n_head=3), dict(dropout=1.0),
           dict(n_layer=2.0), dict(vocab_size=True)]
    for change in bad:
        fields = dict(vocab_size=V, num_personas=K, block_size=T + 1, n_layer=1, n_head=2, n_embd=16) | change
        with pytest.raises(InputError) as excinfo:
            TransformerConfig(**fields)
        _one_line_error(excinfo)
    with pytest.raises(InputError, match="unknown"):
        TransformerConfig.from_dict(config.to_dict() | {"n_embed": 3})


def test_make_inputs_layout(config, docs):
    idx, targets = make_inputs(docs, None, config)
    assert torch.equal(idx[:, 0], torch.full((5,), config.bos)) and torch.equal(idx[:, 1:], docs[:, :-1])
    assert torch.equal(targets, docs)
    tags = torch.tensor([0, -1, 1, -1, 0])
    idx, targets = make_inputs(docs, tags, config)
    assert idx.shape == targets.shape == (5, T + 1)
    for i, h in enumerate(tags.tolist()):
        if h >= 0:  # [BOS, TAG_h, x_0 .. x_{T-2}] -> [-, x_0 .. x_{T-1}]
            assert idx[i, :2].tolist() == [config.bos, config.tag_token(h)]
            assert torch.equal(idx[i, 2:], docs[i, :-1]) and targets[i, 0] == -100
            assert torch.equal(targets[i, 1:], docs[i])
        else:  # [BOS, x_0 .. x_{T-1}] -> [x_0 .. x_{T-1}, -]
            assert idx[i, 0] == config.bos and torch.equal(idx[i, 1:], docs[i])
            assert torch.equal(targets[i, :-1], docs[i]) and targets[i, -1] == -100
    # every data token is a target exactly once; BOS and tags never are
    assert (targets >= 0).sum() == docs.numel() and (targets < V).all()


def test_forward_shapes_and_masked_loss(model, config, docs):
    idx, targets = make_inputs(docs, torch.tensor([0, -1, 1, -1, 0]), config)
    logits, loss = model(idx, targets)
    assert logits.shape == (5, T + 1, V)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(loss, expected)
    _, none = model(idx)
    assert none is None
    _, zero = model(idx, torch.full_like(targets, -100))
    assert zero.item() == 0.0
    with pytest.raises(InputError):
        model(torch.zeros(1, config.block_size + 1, dtype=torch.long))


def test_next_token_logprobs_normalised_and_matches_forward(model, config, docs):
    for tag in (None, 0, 1):
        lp = next_token_logprobs(model, docs, tag=tag, batch_size=2)
        assert lp.shape == (5, T, V) and lp.dtype == torch.float64
        assert torch.allclose(lp.logsumexp(-1), torch.zeros(5, T, dtype=torch.float64), atol=1e-12)
    # tagged rows equal the forward pass on [BOS, TAG, x_0 ..]: position 1 predicts x_0
    idx = torch.cat([torch.tensor([[config.bos, config.tag_token(1)]]), docs[:1, :-1]], 1)
    logits, _ = model(idx)
    assert torch.allclose(next_token_logprobs(model, docs[:1], tag=1)[0], logits[0, 1:].double().log_softmax(-1), atol=1e-6)


def test_next_token_logprobs_is_causal_and_tag_matters(model, docs):
    base = next_token_logprobs(model, docs, tag=0)
    changed = docs.clone()
    t = 4
    changed[:, t] = (changed[:, t] + 1) % V
    after = next_token_logprobs(model, changed, tag=0)
    assert torch.equal(base[:, : t + 1], after[:, : t + 1])  # rows <= t do not see x_t
    assert not torch.allclose(base[:, t + 1], after[:, t + 1])  # row t + 1 does
    assert (next_token_logprobs(model, docs, tag=1) - base).abs().max() > 1e-4
    assert (next_token_logprobs(model, docs, tag=None) - base).abs().max() > 1e-4


def test_bad_contexts_and_tags_are_refused(model, docs):
    for bad in (docs.float(), docs[0], docs + V, torch.zeros(1, T + 1, dtype=torch.long)):
        with pytest.raises(InputError) as excinfo:
            next_token_logprobs(model, bad, tag=0)
        _one_line_error(excinfo)
    for tag in (-1, K, 0.5, True):
        with pytest.raises(InputError):
            next_token_logprobs(model, docs, tag=tag)


def test_sample_completions_shapes_seed_and_distribution(model, docs):
    out = sample_completions(model, docs[:, :3], 4, tag=1, seed=5)
    assert out.shape == (5, 7) and torch.equal(out[:, :3], docs[:, :3]) and out.max() < V
    assert torch.equal(out, sample_completions(model, docs[:, :3], 4, tag=1, seed=5))
    # first tokens of whole sampled documents follow row 0 of next_token_logprobs
    n = 4000
    first = sample_completions(model, torch.zeros(n, 0, dtype=torch.long), 1, tag=0, seed=7)[:, 0]
    p = next_token_logprobs(model, first[:1, None], tag=0)[0, 0].exp()  # [V]
    freq = torch.bincount(first, minlength=V).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() < 5 * se + 1e-9).all()
    with pytest.raises(InputError):
        sample_completions(model, docs, 2, tag=0)  # does not fit in block_size


def test_num_parameters(model, config):
    C = config.n_embd
    per_block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    expected = config.total_vocab * C + config.block_size * C + per_block + 2 * C + C * V
    assert num_parameters(model) == expected


def test_loss_is_log_of_vocab_at_uniform_logits(config, docs):
    model = PersonaLM(config)
    torch.nn.init.zeros_(model.lm_head.weight)
    idx, targets = make_inputs(docs, None, config)
    _, loss = model(idx, targets)
    assert math.isclose(loss.item(), math.log(V), rel_tol=1e-6)
