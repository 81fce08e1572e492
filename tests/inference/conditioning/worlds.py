"""Small persona worlds shared by the SVI and MCMC tests (both compare against the exact posterior)."""

import torch

from models.counts import count_transitions, make_evidence
from models.mixture import simulate_corpus
from models.personas import anchored_table_prior, random_personas

K, V, ORDER, D, T = 3, 4, 1, 10, 8


def mixture_world(seed: int):
    """Documents drawn mostly from persona 0, so the posterior of ``w`` sits far from its prior."""
    personas = random_personas(K, V, ORDER, concentration=0.5, seed=seed, prior=torch.tensor([0.7, 0.2, 0.1]))
    tokens, persona = simulate_corpus(personas, D, T, seed=seed)
    evidence = make_evidence(tokens)
    kwargs = dict(tokens=evidence.tokens, mask=evidence.mask, counts=count_transitions(evidence, V, ORDER),
                  evidence="mixture", beta=1.0, alpha=torch.ones(K, dtype=torch.float64))
    return personas, evidence, persona, (personas, D, T), kwargs


def global_world():
    """Weak evidence on uncertain unigram tables: the persona posterior is spread out."""
    personas = random_personas(3, 3, 0, concentration=2.0, seed=0)
    tokens, _ = simulate_corpus(personas, 4, 8, seed=0)
    return personas, make_evidence(tokens), anchored_table_prior(personas, 30.0, 1.0)
