"""Training loops: pre-training with persona tags, fine-tuning methods, prequential codes, resumption, n-grams."""

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import safetensors.torch
import torch

from inference.finetuning.adapters import k_param_positions
from inference.finetuning.baselines import ngram_logprobs, ngram_table, train_from_scratch
from inference.finetuning.prequential import masked_nll, prequential_code_length
from inference.finetuning.training import finetune, pretrain
from models.counts import Evidence, make_evidence
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import random_personas
from models.predictive import mixture_predictive
from models.transformer import PersonaLM, TransformerConfig, next_token_logprobs, num_parameters

V, T = 6, 8
CONFIG = TransformerConfig(vocab_size=V, num_personas=2, block_size=T + 1, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(autouse=True)
def _one_thread():
    """Two shared cores: one intra-op thread avoids oversubscription stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world():
    """Three distinctive bigram personas over six tokens; the base model only ever sees personas 0 and 1."""
    personas = random_personas(3, V, order=1, concentration=0.3, seed=11)
    return personas, personas.subset([0, 1])


@pytest.fixture(scope="module")
def base(world):
    _, known = world
    tokens, persona = simulate_corpus(known, 800, T, seed=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, history = pretrain(CONFIG, tokens, persona, steps=300, batch_size=32, lr=1e-2, seed=0)
    torch.set_num_threads(threads)
    return model, history


def _evidence(personas, index, num_docs=16, seed=5):
    tokens, _ = simulate_corpus(personas.subset([index]), num_docs, T, seed=seed)
    return make_evidence(tokens.numpy())


def _doc_nll(model, docs, tag):
    return -next_token_logprobs(model, docs, tag=tag).gather(-1, docs[..., None]).mean().item()


def test_pretrain_learns_the_mixture_and_the_tags(world, base):
    _, known = world
    model, history = base
    assert history.losses.shape == (300,) and history.resumed_from is None
    assert history.losses[-20:].mean() < history.losses[:20].mean() - 0.3
    test, persona = simulate_corpus(known, 300, T, seed=3)
    bayes = -mixture_predictive(known.log_table(), known.prior.log(), test, V, 1).gather(-1, test[..., None]).mean()
    assert _doc_nll(model, test, None) < bayes.item() + 0.1  # close to Bayes-optimal (measured gap ~0.03)
    for h in range(2):  # a tagged prompt prefers its own persona's documents
        docs = test[persona == h]
        assert _doc_nll(model, docs, h) < _doc_nll(model, docs, 1 - h) - 0.5
        assert _doc_nll(model, docs, h) < _doc_nll(model, docs, None)


def test_pretrain_is_seeded_and_validates(world):
    _, known = world
    tokens, persona = simulate_corpus(known, 50, T, seed=2)
    runs = [pretrain(CONFIG, tokens, persona, steps=3, batch_size=8, seed=s)[0] for s in (4, 4, 5)]
    first, same, other = (m.state_dict() for m in runs)
    assert all(torch.equal(first[k], same[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    bad = [
        dict(persona=persona + 2), dict(persona=persona[:-1]), dict(p_tag=1.5), dict(steps=0), dict(lr=-1.0),
        dict(tokens=tokens + V), dict(config=TransformerConfig(V, 2, T, n_layer=1, n_head=2, n_embd=16)),
    ]
    for change in bad:
        args = dict(config=CONFIG, tokens=tokens, persona=persona, steps=2) | change
        with pytest.raises(InputError) as excinfo:
            pretrain(args.pop("config"), args.pop("tokens"), args.pop("persona"), **args)
        assert "\n" not in str(excinfo.value)


def _changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


@pytest.mark.parametrize("method", ["full", "last_layer", "lora", "k_params"])
def test_finetune_trains_only_what_it_should(world, base, method):
    personas, _ = world
    model, _ = base
    evidence = _evidence(personas, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = finetune(model, evidence, method=method, steps=6, lr=1e-2, batch_size=8,
                      snapshot_steps=[0, 3, 6], rank=2, k=40, seed=1)
    assert not _changed(before, model.state_dict())  # the base is not modified
    assert sorted(result.snapshots) == [0, 3, 6] and result.losses.shape == (6,) and result.method == method
    assert all(type(s) is PersonaLM for s in result.snapshots.values())
    assert not _changed(before, result.snapshots[0].state_dict())
    after = result.snapshots[6].state_dict()
    changed = _changed(before, after)
    assert _changed(result.snapshots[3].state_dict(), after)
    if method == "full":
        assert result.trainable_params == num_parameters(model)
        assert {"lm_head.weight", "blocks.0.attn.c_attn.weight", "wte.weight"} <= changed
    elif method == "last_layer":
        top = ("blocks.0.", "ln_f.", "lm_head.")  # one block: the last block is block 0
        assert changed and all(name.startswith(top) for name in changed)
        assert {"wte.weight", "wpe.weight"}.isdisjoint(changed)
    elif method == "lora":
        C = CONFIG.n_embd
        assert result.trainable_params == 2 * ((3 * C + C) + (C + C) + (4 * C + C) + (C + 4 * C))
        linears = {f"blocks.0.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
        assert changed == linears
        for name in linears:  # the update is low rank
            assert torch.linalg.matrix_rank(after[name] - before[name], atol=1e-6) <= 2
    else:
        assert result.trainable_params == 40


def test_k_params_changes_exactly_the_chosen_scalars(world, base):
    personas, _ = world
    model, _ = base
    evidence = _evidence(personas, 2)
    k = 60
    result = finetune(model, evidence, method="k_params", steps=4, lr=1e-2, k=k, seed=3)
    flat = lambda m: torch.cat([p.detach().reshape(-1) for p in m.parameters()])  # noqa: E731
    moved = (flat(result.snapshots[4]) != flat(model)).nonzero().squeeze(-1)
    chosen = k_param_positions(model, k, seed=3)
    assert len(chosen) == k and len(set(chosen.tolist())) == k
    # scalars with a nonzero gradient on the evidence: a chosen one of those must move, nothing else may
    probe = PersonaLM(CONFIG)
    probe.load_state_dict(model.state_dict())
    idx = torch.cat([torch.full((evidence.num_docs, 1), CONFIG.bos), evidence.tokens[:, :-1]], 1)
    probe(idx, evidence.tokens)[1].backward()
    live = torch.cat([p.grad.reshape(-1) for p in probe.parameters()]) != 0
    expected = chosen[live[chosen]]
    assert len(expected) >= k // 3
    assert torch.equal(moved, expected)
    with pytest.raises(InputError):
        finetune(model, evidence, method="k_params", steps=1, k=num_parameters(model) + 1)
    full = finetune(model, evidence, method="k_params", steps=1, k=num_parameters(model))
    assert full.trainable_params == num_parameters(model)


def test_finetune_scores_only_masked_tokens(world, base):
    personas, _ = world
    model, _ = base
    tokens = _evidence(personas, 0).tokens
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, T // 2 : -1] = True  # a completion; the last token is neither target nor input
    evidence = Evidence(tokens, mask)
    other = tokens.clone()
    other[:, -1] = (other[:, -1] + 1) % V
    runs = [finetune(model, Evidence(t, mask), steps=3, lr=1e-2, seed=0) for t in (tokens, other)]
    assert torch.equal(runs[0].losses, runs[1].losses)
    assert not _changed(runs[0].snapshots[3].state_dict(), runs[1].snapshots[3].state_dict())
    # step 0 loss (full batch, no dropout) is the base model's masked NLL per evidence token
    assert math.isclose(runs[0].losses[0].item(), masked_nll(model, evidence) / evidence.num_tokens, rel_tol=1e-5)
    whole = finetune(model, make_evidence(tokens.numpy()), steps=1, lr=1e-2, seed=0)
    assert not math.isclose(whole.losses[0].item(), runs[0].losses[0].item(), rel_tol=1e-3)
    with pytest.raises(InputError):
        finetune(model, evidence, method="adapters", steps=1)
    with pytest.raises(InputError):
        finetune(model, evidence, steps=3, snapshot_steps=[4])


def test_prequential_code_separates_known_from_unseen_persona(world, base):
    personas, _ = world
    model, _ = base
    codes = {}
    for persona in (0, 2):
        evidence = _evidence(personas, persona)
        code = prequential_code_length(model, evidence, steps=30, lr=1e-3, block_size_docs=4, seed=0)
        assert len(code.block_nats) == 4 and sum(code.block_tokens) == code.num_tokens == evidence.num_tokens
        assert math.isclose(code.code_length, sum(code.block_nats)) and float(code) == code.code_length
        first_block = evidence.select(torch.arange(4))
        assert math.isclose(code.block_nats[0], masked_nll(model, first_block), rel_tol=1e-12)
        assert math.isclose(code.description_length, code.code_length - code.num_tokens * code.final_loss)
        codes[persona] = code.code_length / code.num_tokens
    assert codes[2] > codes[0] + 0.5  # measured: about 2.2 vs 1.1 nats per token


def test_train_from_scratch_learns_the_evidence(world):
    personas, _ = world
    evidence = _evidence(personas, 2, num_docs=32)
    config = TransformerConfig(V, 0, T, n_layer=1, n_head=2, n_embd=16)
    model = train_from_scratch(config, evidence, steps=60, lr=1e-2, seed=0)
    assert type(model) is PersonaLM and model.config == config
    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = PersonaLM(config)
    assert masked_nll(model, evidence) < masked_nll(untrained, evidence) - 0.3 * evidence.num_tokens


_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import safetensors.torch, torch
    import models.transformer as mt
    from inference.finetuning.training import finetune, pretrain
    from models.counts import make_evidence

    def run(kind, ckpt, resume):
        generator = torch.Generator().manual_seed(2)
        tokens = torch.randint(6, (200, 8), generator=generator)
        persona = torch.randint(2, (200,), generator=generator)
        config = mt.TransformerConfig(6, 2, 9, n_layer=1, n_head=2, n_embd=16, dropout=0.1)
        opts = dict(checkpoint_dir=ckpt, checkpoint_every=5 if ckpt else None, resume=resume)
        if kind == "pretrain":
            model, history = pretrain(config, tokens, persona, steps=40, batch_size=16, seed=3, **opts)
            state, resumed_from = model.state_dict(), history.resumed_from
            state["losses"] = history.losses
            return state, resumed_from
        base, _ = pretrain(config, tokens, persona, steps=5, batch_size=16, seed=3)
        evidence = make_evidence(tokens[:24].numpy())
        result = finetune(base, evidence, method="lora", steps=40, lr=1e-2, batch_size=8,
                          snapshot_steps=[0, 3, 22, 40], seed=4, **opts)
        state = {f"{s}.{k}": v for s, m in result.snapshots.items() for k, v in m.state_dict().items()}
        state["losses"] = result.losses
        return state, result.resumed_from

    if __name__ == "__main__":
        torch.set_num_threads(1)
        kind, out, ckpt, slow, resume = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1"
        forward = mt.PersonaLM.forward
        def slow_forward(self, idx, targets=None):  # slows the run that gets killed; numerics unchanged
            time.sleep(slow)
            return forward(self, idx, targets)
        mt.PersonaLM.forward = slow_forward
        state, resumed_from = run(kind, ckpt, resume)
        print(f"resumed_from={resumed_from}")
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, out)
    """
)


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_run_killed_midway_and_resumed_matches_uninterrupted(tmp_path, kind):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def command(out, slow, resume):
        return [sys.executable, str(script), kind, str(tmp_path / out), str(ckpt), str(slow), resume]

    killed = subprocess.Popen(command("killed.st", 0.05, "0"), env=env)
    namespace = {"__name__": "train"}
    exec(compile(_SCRIPT, str(script), "exec"), namespace)
    expected, _ = namespace["run"](kind, None, False)  # the uninterrupted run, here (one thread, like the script)
    deadline = time.monotonic() + 60
    while not list(ckpt.glob("train-*/state.json")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed.st").exists()
    steps_done = max(int(p.parent.name.split("-")[1]) for p in ckpt.glob("train-*/state.json"))
    assert 5 <= steps_done < 40
    resumed = subprocess.run(command("resumed.st", 0, "1"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed_from={steps_done}" in resumed.stdout
    got = safetensors.torch.load_file(str(tmp_path / "resumed.st"))
    assert got.keys() == expected.keys() and len(got["losses"]) == 40
    assert all(torch.equal(got[k], expected[k]) for k in got), [k for k in got if not torch.equal(got[k], expected[k])]


def test_resume_refuses_a_checkpoint_of_another_run(world, tmp_path):
    _, known = world
    tokens, persona = simulate_corpus(known, 40, T, seed=2)
    opts = dict(batch_size=8, checkpoint_dir=tmp_path, checkpoint_every=2)
    pretrain(CONFIG, tokens, persona, steps=4, seed=0, **opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000002", "train-000000004"]
    _, history = pretrain(CONFIG, tokens, persona, steps=4, seed=0, resume=True, **opts)
    assert history.resumed_from == 4
    with pytest.raises(InputError, match="different run.*seed"):
        pretrain(CONFIG, tokens, persona, steps=4, seed=1, resume=True, **opts)
    with pytest.raises(InputError, match="both"):
        pretrain(CONFIG, tokens, persona, steps=4, checkpoint_dir=tmp_path)
    (tmp_path / "train-000000004" / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="safetensors"):
        pretrain(CONFIG, tokens, persona, steps=4, seed=0, resume=True, **opts)


def test_ngram_table_closed_form():
    tokens = torch.tensor([[0, 1, 1, 2], [1, 1, 0, 0]])
    mask = torch.tensor([[True, True, True, True], [False, True, True, False]])
    table = ngram_table(Evidence(tokens, mask), 3, order=1, smoothing=0.5).exp().reshape(4, 3)
    # first tokens counted: x_0 = 0 once (the second document's x_0 is masked out)
    assert torch.allclose(table[0], torch.tensor([1.5, 0.5, 0.5], dtype=torch.float64) / 2.5)
    # transitions counted: 0->1, 1->1, 1->2 (doc 0); 1->1, 1->0 (doc 1, masked-in targets)
    assert torch.allclose(table[1], torch.tensor([0.5, 1.5, 0.5], dtype=torch.float64) / 2.5)  # after 0
    assert torch.allclose(table[2], torch.tensor([1.5, 2.5, 1.5], dtype=torch.float64) / 5.5)  # after 1
    assert torch.allclose(table[3], torch.full((3,), 1 / 3, dtype=torch.float64))  # after 2: never seen
    with pytest.raises(InputError):
        ngram_table(Evidence(tokens, mask), 3, order=1, smoothing=0.0)


def test_ngram_logprobs_normalised_and_read_the_table(world):
    personas, _ = world
    evidence = _evidence(personas, 1, num_docs=30)
    for order in (0, 1, 2):
        table = ngram_table(evidence, V, order)
        rows = table.exp().reshape(-1, V)
        assert torch.allclose(rows.sum(-1), torch.ones(len(rows), dtype=torch.float64))
        lp = ngram_logprobs(table, evidence.tokens[:3], V, order)
        assert lp.shape == (3, T, V)
        assert torch.allclose(lp[:, 0], table[:V].expand(3, V))
    table = ngram_table(evidence, V, 1)
    lp = ngram_logprobs(table, evidence.tokens[:3], V, 1)
    prev = evidence.tokens[:3, 2]
    assert torch.allclose(lp[:, 3], table[V:].reshape(V, V)[prev])
