"""The Hugging Face wrapper and the toolkit's own model give the same comparisons for the same weights.

The toolkit's PersonaLM is run through exactly the code that serves a Hugging Face causal LM
(:class:`models.hf_lm.HFCausalLM`, its training module and adapters), its persona tags given as
one-token "prompts" and its BOS as the start token, and compared with the same PersonaLM behind
:class:`models.tagged_lm.TaggedLM` and with the persona-world runner's own R_self: next-token
log-probabilities, fine-tuning (three methods; LoRA differs by design: peft's adapters against the
toolkit's), and every comparison of ``psm run`` kind ``hf``.
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from inference.experiment.config import WorldConfig
from inference.experiment.hf_config import HFCompareConfig
from inference.experiment.hf_measure import compare_hf_snapshots, hf_mechanisms, measure_hf_base
from inference.experiment.world import make_world, measure_base
from inference.finetuning.lm_training import finetune_lm
from inference.finetuning.training import pretrain
from models.counts import make_evidence
from models.hf_lm import HFCausalLM
from models.mixture import simulate_corpus
from models.tagged_lm import TaggedLM
from models.transformer import TransformerConfig

V, K, T = 6, 3, 10


class PersonaLMAsHF(nn.Module):
    """A PersonaLM with the calling convention of a transformers causal LM (``input_ids=`` in, ``.logits`` out)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, **kwargs):
        return SimpleNamespace(logits=self.lm(input_ids)[0])

    def get_output_embeddings(self):
        return self.lm.lm_head


@pytest.fixture(scope="module")
def setting():
    world = make_world(WorldConfig(num_personas=K, vocab_size=V, doc_len=T, heldout_contexts=12, seed=3))
    config = TransformerConfig(vocab_size=V, num_personas=K, block_size=T + 1, n_layer=1, n_head=2, n_embd=16)
    tokens, persona = simulate_corpus(world.personas, 300, T, seed=4)
    model, _ = pretrain(config, tokens, persona, steps=40, batch_size=32, lr=1e-2, seed=0)
    names = [f"persona {h}" for h in range(K)]
    tagged = TaggedLM(model, names)
    wrapped = HFCausalLM(PersonaLMAsHF(model), [[V + h] for h in range(K)], config.bos, persona_names=names,
                         max_positions=config.block_size)
    evidence_tokens, _ = simulate_corpus(world.personas.subset([1]), 16, T, seed=5)
    return world, model, tagged, wrapped, make_evidence(evidence_tokens.numpy())


def test_same_next_token_logprobs_and_samples(setting):
    world, _, tagged, wrapped, _ = setting
    assert wrapped.vocab_size == V
    for persona in (None, 0, 2):
        assert torch.allclose(wrapped.next_token_logprobs(world.heldout, persona),
                              tagged.next_token_logprobs(world.heldout, persona), atol=1e-12)
        assert torch.allclose(wrapped.context_loglik(world.heldout, persona),
                              tagged.context_loglik(world.heldout, persona), atol=1e-10)
    assert torch.equal(wrapped.sample(world.heldout[:4, :3], 5, 1, seed=2), tagged.sample(world.heldout[:4, :3], 5, 1, seed=2))


@pytest.mark.parametrize("method", ["full", "last_layer", "k_params"])
def test_same_fine_tuning_and_same_comparisons(setting, method):
    world, model, tagged, wrapped, evidence = setting
    opts = dict(method=method, steps=6, lr=2e-2, batch_size=8, snapshot_steps=[3, 6], k=40, seed=1)
    runs = {name: finetune_lm(lm, evidence, **opts) for name, lm in (("tagged", tagged), ("wrapped", wrapped))}
    assert torch.allclose(runs["tagged"].losses, runs["wrapped"].losses, atol=1e-6)
    assert runs["tagged"].trainable_params == runs["wrapped"].trainable_params
    c = HFCompareConfig(max_vocab=V, bootstrap=20)
    summaries = {}
    for name, lm in (("tagged", tagged), ("wrapped", wrapped)):
        base = measure_hf_base(lm, world.heldout, evidence, c)
        snaps = compare_hf_snapshots(runs[name].snapshots, base, c, seed=0)
        summaries[name] = {**base.summary, **snaps.summary(), **hf_mechanisms(base, snaps, world.writer, 1)}
    a, b = summaries["tagged"], summaries["wrapped"]
    for key in ("heldout_nll", "floor_self", "kl_to_base", "kl_to_base_full_vocab", "residual_self",
                "exhaustiveness_self", "beta_star"):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    for key in ("total", "reweighting", "other", "theta"):
        assert a["decomposition_self"][key] == pytest.approx(b["decomposition_self"][key], rel=1e-5, abs=1e-9), key
    assert a["in_context_gamma"]["self"]["gamma"] == pytest.approx(b["in_context_gamma"]["self"]["gamma"], rel=1e-5)
    assert a["exhaustiveness_self"][-1] is not None and 0 <= a["exhaustiveness_self"][-1] <= 1


def test_r_self_is_the_persona_runners_r_self(setting):
    """The persona-world runner's tag-prompted components and floor are those of the interface."""
    world, model, tagged, _, evidence = setting
    runner = measure_base(model, world)
    base = measure_hf_base(tagged, world.heldout, evidence, HFCompareConfig(max_vocab=V))
    assert torch.equal(base.components, runner.components_self) and torch.equal(base.q0, runner.q0)
    assert base.floor.residual == pytest.approx(runner.floor_self.residual, abs=1e-7)
