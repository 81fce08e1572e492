"""Fine-tuning through the base-model interface: the toolkit's transformer (exactly as before) and a
Hugging Face GPT-2 (the four methods, peft LoRA, tied weights, checkpoints and resume, devices, cost)."""

import shutil

import pytest
import torch

from inference.finetuning.lm_training import LMFinetuneResult, finetune_lm
from inference.finetuning.prequential import prequential_code_length
from inference.finetuning.training import finetune, pretrain
from models.counts import make_evidence
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import random_personas
from models.tagged_lm import TaggedLM
from models.transformer import TransformerConfig

V, T = 6, 8
CONFIG = TransformerConfig(vocab_size=V, num_personas=2, block_size=T + 1, n_layer=1, n_head=2, n_embd=16)
METHODS = ("full", "lora", "last_layer", "k_params")


@pytest.fixture(scope="module")
def persona_base():
    personas = random_personas(2, V, order=1, concentration=0.3, seed=11)
    tokens, persona = simulate_corpus(personas, 200, T, seed=2)
    model, _ = pretrain(CONFIG, tokens, persona, steps=20, batch_size=32, lr=1e-2, seed=0)
    evidence_tokens, _ = simulate_corpus(personas.subset([1]), 12, T, seed=3)
    return model, make_evidence(evidence_tokens.numpy())


@pytest.mark.parametrize("method", METHODS)
def test_the_interface_reproduces_finetune_exactly(persona_base, method):
    model, evidence = persona_base
    opts = dict(method=method, steps=5, lr=1e-2, batch_size=5, snapshot_steps=[0, 2, 5], rank=2, k=30, seed=3)
    old = finetune(model, evidence, **opts)
    new = finetune_lm(TaggedLM(model), evidence, **opts)
    assert torch.equal(old.losses, new.losses) and old.trainable_params == new.trainable_params
    for s in (0, 2, 5):
        for key, value in old.snapshots[s].state_dict().items():
            assert torch.equal(value, new.snapshots[s].model.state_dict()[key]), (s, key)
    assert isinstance(finetune(TaggedLM(model), evidence, **opts), LMFinetuneResult)  # finetune dispatches


def test_cost_and_device(persona_base):
    model, evidence = persona_base
    result = finetune_lm(TaggedLM(model), evidence, steps=3, lr=1e-2, device="cpu")
    assert result.cost["device"] == "cpu" and result.cost["autocast"] is None
    assert result.cost["seconds_per_step"] > 0 and result.cost["peak_memory_bytes"] > 2**20
    assert result.cost["memory_kind"] == "process peak RSS"
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            finetune_lm(TaggedLM(model), evidence, steps=1, device="cuda")
    with pytest.raises(InputError, match="interface"):
        finetune_lm(model, evidence, steps=1)


# ----------------------------------------------------------------------------- a Hugging Face GPT-2
# (tiny_hf_folder skips these without the hf extra)

@pytest.fixture(scope="module")
def gpt2(tiny_hf_folder):
    from models.hf_lm import load_hf_model
    from models.persona_prompts import load_persona_prompts
    from tests.tiny_hf import EVIDENCE, PROMPTS

    lm = load_hf_model(tiny_hf_folder, load_persona_prompts(PROMPTS))
    ids = lm.encode((EVIDENCE / "Dickens_Oliver_1839.txt").read_text())
    tokens = torch.tensor(ids[: 12 * 16]).view(12, 16)
    mask = torch.arange(16).expand(12, -1) >= 2
    return lm, make_evidence(tokens.numpy(), mask.numpy())


def _weights(lm):
    return {k: v.clone() for k, v in lm.network.state_dict().items()}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_what_it_should_on_gpt2(gpt2, method):
    lm, evidence = gpt2
    before = _weights(lm)
    lr = {"full": 1e-2, "last_layer": 1e-2, "lora": 5e-2, "k_params": 5e-2}[method]
    result = finetune_lm(lm, evidence, method=method, steps=4, lr=lr, batch_size=12, rank=2, k=25, seed=1)
    after = _weights(result.snapshots[4])
    assert all(torch.equal(before[k], v) for k, v in _weights(lm).items())  # the base is untouched
    assert all(torch.equal(before[k], v) for k, v in _weights(result.snapshots[0]).items())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    net = lm.network
    if method == "full":
        assert result.trainable_params == sum(p.numel() for p in net.parameters())
        assert "transformer.h.0.attn.c_attn.weight" in changed
    elif method == "last_layer":
        assert changed and all(k.startswith(("transformer.h.1.", "transformer.ln_f", "lm_head", "transformer.wte"))
                               for k in changed)
    elif method == "lora":  # rank 2 on every Conv1D of the blocks: 2 * (in + out) each
        linear = [m for m in net.modules() if type(m).__name__ == "Conv1D"]
        assert result.trainable_params == sum(2 * sum(m.weight.shape) for m in linear)
        assert changed and all(".h." in k and k.endswith("weight") for k in changed)
    else:
        assert result.trainable_params == 25
        moved = sum(int((before[k] != after[k]).sum()) for k in changed if k != "lm_head.weight")
        assert 0 < moved <= 25
    snapshot = result.snapshots[4].network
    assert torch.equal(snapshot.lm_head.weight, snapshot.transformer.wte.weight)  # the tie holds
    assert result.losses.shape == (4,) and torch.isfinite(result.losses).all()
    assert result.losses[-1] < result.losses[0]


def test_gpt2_resumes_bit_identically(gpt2, tmp_path):
    lm, evidence = gpt2
    opts = dict(method="lora", steps=6, lr=2e-2, batch_size=5, rank=2, seed=2, snapshot_steps=[0, 3, 6])
    whole = finetune_lm(lm, evidence, **opts)
    ckpt = tmp_path / "ckpt"
    finetune_lm(lm, evidence, checkpoint_dir=ckpt, checkpoint_every=3, **opts)
    shutil.rmtree(ckpt / "train-000000006")  # as if killed between step 3 and step 6
    resumed = finetune_lm(lm, evidence, checkpoint_dir=ckpt, checkpoint_every=3, resume=True, **opts)
    assert resumed.resumed_from == 3 and torch.equal(resumed.losses, whole.losses)
    for s in (3, 6):
        a, b = _weights(whole.snapshots[s]), _weights(resumed.snapshots[s])
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_gpt2_prequential_code(gpt2):
    lm, evidence = gpt2
    code = prequential_code_length(lm, evidence, method="last_layer", lr=1e-2, steps=2, batch_size=6,
                                   block_size_docs=6, seed=0)
    assert len(code.block_nats) == 2 and code.num_tokens == int(evidence.mask.sum())
    assert code.block_nats[0] == pytest.approx(float(-lm.context_loglik(evidence.tokens[:6], None,
                                                                         evidence.mask[:6]).sum()))
