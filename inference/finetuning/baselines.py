"""The directly trained baselines of DESIGN.md §2: an n-gram fitted on the evidence, and a
transformer trained from scratch on it.

The n-gram is an add-``smoothing`` (Lidstone) Markov chain of a given order, fitted on the
masked-in evidence tokens only, in the flat log-table layout of
:meth:`models.personas.MarkovPersonas.log_table` (``V`` first-token entries,
then ``V**order`` rows of ``V`` transitions), so that it scores and predicts
with the same machinery as a persona:

    p(x_0 = v)           = (n_v + λ) / (sum_u n_u + V λ)
    p(x_t = v | ctx = c) = (n_{c,v} + λ) / (sum_u n_{c,u} + V λ)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from inference.finetuning.training import finetune
from models.counts import Evidence, total_counts
from models.errors import InputError
from models.limits import check_sizes
from models.predictive import mixture_predictive
from models.transformer import PersonaLM, TransformerConfig


def ngram_table(evidence: Evidence, vocab_size: int, order: int, smoothing: float = 0.5) -> Tensor:
    """Flat log table ``[F]`` float64 of the smoothed ML Markov chain on the evidence.

    Parameters
    ----------
    evidence : Evidence
        Documents and mask; only masked-in tokens are counted (their contexts
        may be masked out, as for an SFT completion).
    vocab_size, order : int
        ``V`` and the Markov order ``n`` (``F = V + V**n * V``).
    smoothing : float
        Pseudo-count ``λ > 0`` added to every entry.
    """
    check_sizes(num_personas=1, vocab_size=vocab_size, order=order)
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not math.isfinite(smoothing) or smoothing <= 0:
        raise InputError(f"smoothing must be a positive number, got {smoothing!r}")
    if not isinstance(evidence, Evidence):
        raise InputError(f"evidence must be an Evidence, got {type(evidence).__name__}")
    if evidence.tokens.numel() and (evidence.tokens.min() < 0 or evidence.tokens.max() >= vocab_size):
        raise InputError(f"evidence tokens must lie in [0, {vocab_size})")
    counts = total_counts(evidence, vocab_size, order).reshape(-1, vocab_size) + smoothing  # [1 + V**n, V]
    return (counts / counts.sum(-1, keepdim=True)).log().reshape(-1)  # [F]


def ngram_logprobs(log_table: Tensor, contexts: Tensor, vocab_size: int, order: int) -> Tensor:
    """Next-token log-probabilities ``[n, T, V]`` of one n-gram table on ``contexts`` [n, T]."""
    F = vocab_size * (1 + vocab_size**order)
    if log_table.shape != (F,):
        raise InputError(f"log_table has shape {tuple(log_table.shape)}, expected ({F},) for V={vocab_size}, order={order}")
    return mixture_predictive(log_table[None], log_table.new_zeros(1), contexts, vocab_size, order)


def train_from_scratch(
    config: TransformerConfig,
    evidence: Evidence,
    *,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
    **checkpointing,
) -> PersonaLM:
    """The "trained from scratch on D" baseline: same architecture, random init, full training."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = PersonaLM(config)
    result = finetune(model, evidence, method="full", steps=steps, lr=lr, batch_size=batch_size,
                      snapshot_steps=[steps], seed=seed, progress=progress, **checkpointing)
    return result.snapshots[steps]
