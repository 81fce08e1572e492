"""A tiny Hugging Face model folder for the tests, built locally (nothing is downloaded).

A byte-level BPE tokenizer (``tokenizers``) is trained on the fixture text of
``tests/data/novelists``, a randomly initialised GPT-2 of a few thousand parameters is built from a
``transformers.GPT2Config``, pre-trained for a few steps on the novelists' text (each chunk read
after its writer's persona prompt half of the time, as the toolkit's own base is pre-trained with
tags), and both are written with ``save_pretrained`` into a folder that ``load_hf_model`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub from the tests

DATA = Path(__file__).resolve().parent / "data" / "novelists"
PROMPTS = DATA / "prompts.toml"
EVIDENCE = DATA / "evidence"
HELDOUT = DATA / "heldout"
SIZES = {"vocab_size": 320, "n_positions": 96, "n_embd": 32, "n_layer": 2, "n_head": 2}


def fixture_texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(HELDOUT.glob("*.txt")) + sorted(EVIDENCE.glob("*.txt"))]


def train_tokenizer(vocab_size: int = SIZES["vocab_size"]):
    """A byte-level BPE tokenizer fitted on the fixture text, with ``<|endoftext|>`` as BOS and EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(fixture_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def random_gpt2(seed: int = 0, **sizes):
    """A randomly initialised GPT-2 (no dropout) from a ``GPT2Config`` of the given sizes."""
    from transformers import GPT2Config, GPT2LMHeadModel

    s = SIZES | sizes
    config = GPT2Config(vocab_size=s["vocab_size"], n_positions=s["n_positions"], n_embd=s["n_embd"],
                        n_layer=s["n_layer"], n_head=s["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def write_tiny_gpt2(folder: Path, *, steps: int = 40, seed: int = 0) -> Path:
    """Tokenizer and a briefly pre-trained tiny GPT-2, saved into ``folder`` (module docstring)."""
    from inference.finetuning.lm_training import finetune_lm
    from models.counts import make_evidence
    from models.hf_lm import HFCausalLM, quiet_transformers
    from models.lm_text import chunk_documents, read_documents
    from models.persona_prompts import load_persona_prompts

    tokenizer = train_tokenizer()
    network = random_gpt2(seed)
    prompts = load_persona_prompts(PROMPTS)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    lm = HFCausalLM(network, [encode(p.prompt) for p in prompts], 0, persona_names=[p.name for p in prompts],
                    max_positions=SIZES["n_positions"])
    chunks = chunk_documents(read_documents(HELDOUT) + read_documents(EVIDENCE), encode, 40)
    names = [p.name for p in prompts]
    generator = torch.Generator().manual_seed(seed)
    rows, masks = [], []
    for tokens, author in zip(chunks.tokens, chunks.authors, strict=True):
        prompt = lm.prompt_ids[names.index(author)] if author in names and torch.rand(1, generator=generator) < 0.5 \
            else torch.zeros(0, dtype=torch.long)
        rows.append(torch.cat([prompt, tokens])[:40])
        masks.append(torch.arange(40) >= prompt.numel())
    evidence = make_evidence(torch.stack(rows).numpy(), torch.stack(masks).numpy())
    trained = finetune_lm(lm, evidence, method="full", steps=steps, lr=3e-3, batch_size=16, seed=seed)
    final = trained.snapshots[steps]
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        final.network.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder
