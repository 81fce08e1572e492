"""The base-model interface: vocabulary coarsening, and the toolkit's transformer behind it (TaggedLM)."""

import pytest
import torch

from models.base_model import (
    LanguageModel,
    Vocabulary,
    check_token_ids,
    choose_vocabulary,
    persona_components,
)
from models.errors import InputError
from models.predictive import mixture_logprobs
from models.tagged_lm import TaggedLM
from models.transformer import next_token_logprobs, sample_completions

V, K, T = 6, 2, 8


def _random_logprobs(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).log_softmax(-1)


def test_coarsening_keeps_the_kept_tokens_and_pools_the_rest():
    logp = _random_logprobs(3, 4, 10)
    voc = Vocabulary(torch.tensor([7, 2, 2, 5]), 10)
    assert voc.keep.tolist() == [2, 5, 7] and voc.width == 4 and not voc.full
    out = voc.coarsen(logp)  # [3, 4, 4]
    assert torch.allclose(out.exp().sum(-1), torch.ones(3, 4, dtype=torch.float64))
    assert torch.equal(out[..., :3], logp[..., [2, 5, 7]])
    rest = logp.exp()[..., [0, 1, 3, 4, 6, 8, 9]].sum(-1)
    assert torch.allclose(out[..., 3].exp(), rest)
    assert voc.index(torch.tensor([[2, 7, 0]])).tolist() == [[0, 2, 3]]  # 0 is not kept: the rest column
    assert voc.covers(torch.tensor([5, 7])) and not voc.covers(torch.tensor([5, 1]))
    full = Vocabulary(torch.arange(10), 10)
    assert full.full and full.width == 10 and full.coarsen(logp) is logp
    assert voc.names(lambda i: f"t{i}") == ["t2", "t5", "t7", "<rest>"]


def test_the_mixture_of_coarsened_components_is_the_coarsened_mixture():
    """Coarsening is linear in probabilities and keeps every context token: p_w commutes with it."""
    components = _random_logprobs(3, 5, 6, 12, seed=1)  # [K, n, T, V]
    contexts = torch.randint(0, 12, (5, 6), generator=torch.Generator().manual_seed(2))
    log_w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64).log()
    voc = Vocabulary(torch.cat([contexts.reshape(-1), torch.tensor([11])]), 12)
    assert not voc.full
    full = voc.coarsen(mixture_logprobs(components, contexts, log_w))
    coarse = mixture_logprobs(voc.coarsen(components), voc.index(contexts), log_w)
    assert torch.allclose(full, coarse, atol=1e-12)


def test_a_coarsened_kl_is_a_lower_bound():
    q, p = _random_logprobs(4, 5, 20, seed=3), _random_logprobs(4, 5, 20, seed=4)
    voc = Vocabulary(torch.arange(0, 20, 3), 20)

    def mean_kl(a, b):
        return float((a.exp() * (a - b)).sum(-1).mean())

    assert mean_kl(voc.coarsen(q), voc.coarsen(p)) <= mean_kl(q, p) + 1e-12


def test_choose_vocabulary_keeps_the_required_then_the_heaviest():
    mass = torch.tensor([5.0, 0.1, 3.0, 0.2, 4.0, 0.3])
    voc = choose_vocabulary(mass, torch.tensor([1, 1, 3]), 4)
    assert voc.keep.tolist() == [0, 1, 3, 4]
    assert choose_vocabulary(mass, torch.tensor([1]), 6).full
    assert choose_vocabulary(mass, torch.tensor([1, 3, 5]), 2).keep.tolist() == [1, 3, 5]  # required wins
    with pytest.raises(InputError):
        Vocabulary(torch.tensor([6]), 6)


@pytest.mark.parametrize("bad, match", [(torch.tensor([[1.0]]), "integer"), (torch.tensor([1, 2]), r"\[n, T\]"),
                                        (torch.tensor([[6]]), r"\[0, 6\)"), (torch.zeros(1, 9, dtype=torch.long), "exceed")])
def test_check_token_ids_refuses_in_one_line(bad, match):
    with pytest.raises(InputError, match=match) as err:
        check_token_ids(bad, 6, "contexts", max_len=8)
    assert "\n" not in str(err.value)


def test_tagged_lm_is_the_persona_lm_through_the_interface(model, docs):
    lm = TaggedLM(model, ["a", "b"])
    assert isinstance(lm, LanguageModel) and lm.vocab_size == V and lm.persona_names == ("a", "b")
    for tag in (None, 0, 1):
        assert torch.equal(lm.next_token_logprobs(docs, tag), next_token_logprobs(model, docs, tag=tag))
        picked = next_token_logprobs(model, docs, tag=tag).gather(-1, docs[..., None]).squeeze(-1)
        assert torch.allclose(lm.context_loglik(docs, tag), picked.sum(-1))
    mask = torch.arange(T).expand_as(docs) >= 3
    assert torch.allclose(lm.context_loglik(docs, 1, mask), (picked * mask).sum(-1))
    components = persona_components(lm, docs)
    assert components.shape == (K, 5, T, V) and torch.equal(components[0], next_token_logprobs(model, docs, tag=0))
    assert torch.equal(lm.sample(docs[:, :2], 4, 1, seed=3), sample_completions(model, docs[:, :2], 4, tag=1, seed=3))
    copy = lm.with_weights({k: v.clone() for k, v in lm.training_module().state_dict().items()})
    assert torch.equal(copy.next_token_logprobs(docs, 0), lm.next_token_logprobs(docs, 0))
    idx, targets = lm.training_batch(docs, mask)
    assert idx[:, 0].eq(model.config.bos).all() and (targets == torch.where(mask, docs, -100)).all()
    with pytest.raises(InputError, match="names"):
        TaggedLM(model, ["only one"])
