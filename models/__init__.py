"""Distributions over text: persona tables, the Pyro persona models, the in-context persona
mixture, the small causal transformer, evidence with its sufficient statistics, and the one
interface for a base model (the toolkit's transformer, or any local Hugging Face causal LM
prompted by personas; ``transformers`` is an optional extra, imported only to load one).

Nothing in ``models`` trains or conditions; that lives in :mod:`inference`.

    from models import random_personas, simulate_corpus, make_evidence
    personas = random_personas(num_personas=4, vocab_size=8, order=1, seed=0)
    tokens, who = simulate_corpus(personas, num_docs=20, doc_len=30, seed=1)
    evidence = make_evidence(tokens)

The names below are imported lazily (on first use), so ``import models`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> module that defines it
_EXPORTS = {
    "InputError": "models.errors",
    "MarkovPersonas": "models.personas",
    "TablePrior": "models.personas",
    "anchored_table_prior": "models.personas",
    "load_personas": "models.personas",
    "make_personas": "models.personas",
    "random_personas": "models.personas",
    "save_personas": "models.personas",
    "Evidence": "models.counts",
    "TransitionCounts": "models.counts",
    "count_transitions": "models.counts",
    "feature_index": "models.counts",
    "load_evidence": "models.counts",
    "make_evidence": "models.counts",
    "save_evidence": "models.counts",
    "total_counts": "models.counts",
    "MarkovChain": "models.markov",
    "persona_model": "models.mixture",
    "simulate_corpus": "models.mixture",
    "mixture_logprobs": "models.predictive",
    "mixture_predictive": "models.predictive",
    "persona_logprobs": "models.predictive",
    "PersonaLM": "models.transformer",
    "TransformerConfig": "models.transformer",
    "next_token_logprobs": "models.transformer",
    "sample_completions": "models.transformer",
    "load_checkpoint": "models.lm_checkpoint",
    "save_checkpoint": "models.lm_checkpoint",
    "LanguageModel": "models.base_model",
    "Vocabulary": "models.base_model",
    "persona_components": "models.base_model",
    "TaggedLM": "models.tagged_lm",
    "HFCausalLM": "models.hf_lm",
    "load_hf_model": "models.hf_lm",
    "PersonaPrompt": "models.persona_prompts",
    "load_persona_prompts": "models.persona_prompts",
    "read_documents": "models.lm_text",
    "chunk_documents": "models.lm_text",
    "resolve_device": "models.devices",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load on first use
    from models.base_model import LanguageModel, Vocabulary, persona_components  # noqa: F401
    from models.counts import (  # noqa: F401
        Evidence,
        TransitionCounts,
        count_transitions,
        feature_index,
        load_evidence,
        make_evidence,
        save_evidence,
        total_counts,
    )
    from models.devices import resolve_device  # noqa: F401
    from models.errors import InputError  # noqa: F401
    from models.hf_lm import HFCausalLM, load_hf_model  # noqa: F401
    from models.lm_checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
    from models.lm_text import chunk_documents, read_documents  # noqa: F401
    from models.markov import MarkovChain  # noqa: F401
    from models.mixture import persona_model, simulate_corpus  # noqa: F401
    from models.persona_prompts import PersonaPrompt, load_persona_prompts  # noqa: F401
    from models.personas import (  # noqa: F401
        MarkovPersonas,
        TablePrior,
        anchored_table_prior,
        load_personas,
        make_personas,
        random_personas,
        save_personas,
    )
    from models.predictive import mixture_logprobs, mixture_predictive, persona_logprobs  # noqa: F401
    from models.tagged_lm import TaggedLM  # noqa: F401
    from models.transformer import (  # noqa: F401
        PersonaLM,
        TransformerConfig,
        next_token_logprobs,
        sample_completions,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
