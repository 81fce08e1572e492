"""A Hugging Face causal LM behind the base-model interface: prompts, offsets, blocks, sampling, loading."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from models.base_model import LanguageModel, persona_components
from models.errors import InputError

pytest.importorskip("transformers")

from models import hf_lm  # noqa: E402
from models.hf_lm import CausalLMLoss, load_hf_model  # noqa: E402
from models.persona_prompts import PersonaPrompt, load_persona_prompts  # noqa: E402
from tests.tiny_hf import PROMPTS  # noqa: E402


@pytest.fixture(scope="module")
def lm(tiny_hf_folder):
    return load_hf_model(tiny_hf_folder, load_persona_prompts(PROMPTS))


@pytest.fixture(scope="module")
def contexts(lm):
    ids = lm.encode("It was the best of times, it was the worst of times, it was the age of wisdom. " * 3)
    return torch.tensor(ids[:60]).view(3, 20)


def _manual(lm, contexts, persona):
    """log_softmax of one forward pass over [start, prompt, context], read at the context's positions."""
    prefix = lm.prefix(persona)
    idx = torch.cat([prefix.expand(contexts.shape[0], -1), contexts], 1)
    with torch.no_grad():
        logits = lm.network(input_ids=idx).logits.double().log_softmax(-1)
    return logits[:, prefix.numel() - 1: -1]


def test_loading_a_local_folder(lm, tiny_hf_folder):
    assert isinstance(lm, LanguageModel)
    assert lm.vocab_size == 320 and lm.max_positions == 96 and lm.start_id == 0
    assert lm.persona_names[1] == "Charles Dickens"
    assert lm.tokenizer.decode(lm.prompt_ids[1].tolist()) == "The following was written by Charles Dickens.\n"
    assert lm.device == torch.device("cpu")


def test_next_token_logprobs_read_the_context_after_the_prompt(lm, contexts, monkeypatch):
    for persona in (None, 0, 3):
        got = lm.next_token_logprobs(contexts, persona)
        assert got.shape == (3, 20, 320) and got.dtype == torch.float64
        assert torch.allclose(got, _manual(lm, contexts, persona), atol=1e-6)
        assert torch.allclose(got.exp().sum(-1), torch.ones(3, 20, dtype=torch.float64))
    monkeypatch.setattr(hf_lm, "MAX_LOGIT_ELEMENTS", 1)  # one row per block: the same numbers
    assert torch.allclose(lm.next_token_logprobs(contexts, 2), _manual(lm, contexts, 2), atol=1e-6)
    assert not torch.allclose(lm.next_token_logprobs(contexts, 0), lm.next_token_logprobs(contexts, None))


def test_context_loglik_and_components(lm, contexts):
    mask = torch.arange(20).expand(3, -1) >= 5
    full = lm.next_token_logprobs(contexts, 1)
    picked = full.gather(-1, contexts[..., None]).squeeze(-1)
    assert torch.allclose(lm.context_loglik(contexts, 1), picked.sum(-1))
    assert torch.allclose(lm.context_loglik(contexts, 1, mask), (picked * mask).sum(-1))
    components = persona_components(lm, contexts)
    assert components.shape == (5, 3, 20, 320) and torch.equal(components[1], full)


def test_training_convention_matches_evaluation(lm, contexts):
    """The loss the trainer minimises is the mean NLL of the masked-in tokens that evaluation reports."""
    mask = torch.arange(20).expand(3, -1) >= 4
    idx, targets = lm.training_batch(contexts, mask)
    assert idx[:, 0].eq(lm.start_id).all() and torch.equal(idx[:, 1:], contexts[:, :-1])
    _, loss = CausalLMLoss(lm.network).eval()(idx, targets)
    expected = -lm.context_loglik(contexts, None, mask).sum() / mask.sum()
    assert abs(float(loss) - float(expected)) < 1e-5


def test_sampling_with_and_without_the_cache_agree(lm, contexts):
    first = lm.sample(contexts[:, :4], 6, persona=1, seed=5)
    assert first.shape == (3, 10) and torch.equal(first[:, :4], contexts[:, :4])
    assert torch.equal(first, lm.sample(contexts[:, :4], 6, persona=1, seed=5))
    assert not torch.equal(first, lm.sample(contexts[:, :4], 6, persona=1, seed=6))

    class NoCache(torch.nn.Module):  # the network without a key-value cache: every step re-reads the sequence
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, input_ids, **kwargs):
            return SimpleNamespace(logits=self.net(input_ids=input_ids, use_cache=False).logits)

    uncached = hf_lm.HFCausalLM(NoCache(lm.network), lm.prompt_ids, lm.start_id, persona_names=lm.persona_names,
                                max_positions=lm.max_positions, vocab_size=lm.vocab_size)
    assert torch.equal(uncached.sample(contexts[:, :4], 6, persona=1, seed=5), first)


def test_inputs_that_do_not_fit_are_refused_in_one_line(lm, contexts):
    too_long = torch.zeros(1, 95, dtype=torch.long)
    for call in (lambda: lm.next_token_logprobs(too_long, 1), lambda: lm.sample(contexts[:, :4], 100),
                 lambda: lm.next_token_logprobs(contexts + 400), lambda: lm.next_token_logprobs(contexts, 5)):
        with pytest.raises(InputError) as err:
            call()
        assert "\n" not in str(err.value)


def test_unusable_folders_are_one_line_errors(tmp_path, tiny_hf_folder):
    with pytest.raises(InputError, match="no such model folder"):
        load_hf_model(tmp_path / "none")
    with pytest.raises(InputError, match="no config.json"):
        load_hf_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(InputError, match="not a loadable causal LM") as err:
        load_hf_model(tmp_path)
    assert "\n" not in str(err.value)
    model_only = tmp_path / "model_only"
    load_hf_model(tiny_hf_folder).network.save_pretrained(model_only)
    with pytest.raises(InputError, match="tokenizer"):
        load_hf_model(model_only, [PersonaPrompt("A", "a")])


def test_without_the_extra_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(InputError, match=r"pip install -e '\.\[hf\]'"):
        load_hf_model(".")


def test_the_toolkit_imports_no_transformers_until_a_model_is_loaded():
    code = ("import sys, models, inference, models.hf_lm, models.base_model, inference.experiment.hf_runner, "
            "inference.finetuning.lm_training, inference.cli; "
            "sys.exit(int(any(m in sys.modules for m in ('transformers', 'peft'))))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
