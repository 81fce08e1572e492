"""Distributions over text: persona emission tables, the Pyro persona models,
the small causal transformer, tokenizers and corpora.

Nothing in ``models`` trains or conditions; that lives in ``inference``.
"""

from models.counts import Evidence, TransitionCounts, count_transitions, feature_index
from models.errors import InputError
from models.markov import MarkovChain
from models.mixture import persona_model, simulate_corpus
from models.personas import (
    MarkovPersonas,
    TablePrior,
    anchored_table_prior,
    load_personas,
    random_personas,
    save_personas,
)

__all__ = [
    "Evidence",
    "InputError",
    "MarkovChain",
    "MarkovPersonas",
    "TablePrior",
    "TransitionCounts",
    "anchored_table_prior",
    "count_transitions",
    "feature_index",
    "load_personas",
    "persona_model",
    "random_personas",
    "save_personas",
    "simulate_corpus",
]
