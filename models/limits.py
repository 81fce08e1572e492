"""Shared limits and choices: one place for the numbers every layer checks against.

Sizes beyond these are refused with a one-line :class:`~models.errors.InputError`
before any work starts (they are typos, or would not fit in memory). This module
imports nothing heavy, so the command line can use it while parsing arguments.
"""

from __future__ import annotations

import math
import numbers

from models.errors import InputError

#: largest seed anywhere (NumPy's legacy seeding, used by ``pyro.set_rng_seed``, needs 32 bits)
MAX_SEED = 2**32 - 1
#: largest integer a config key takes (larger values are typos, and overflow torch's 64-bit sizes)
MAX_INT = 2**32 - 1
#: most tokens in one simulated corpus, held-out set, evidence set or training batch
MAX_TOKENS = 50_000_000
#: largest total number of persona table entries (all personas)
MAX_TABLE_ENTRIES = 50_000_000
#: most parameters of a base transformer built from a config (about ``12 * n_layer * n_embd**2``)
MAX_PARAMETERS = 200_000_000
#: most posterior draws over all chains (SVI or MCMC)
MAX_DRAWS = 10_000_000
#: most SVI steps or MCMC warm-up steps
MAX_STEPS = 10_000_000
#: most MCMC chains
MAX_CHAINS = 64

#: chains x draws the exact conditioning methods hand out (iid draws, for ArviZ and SBC)
EXACT_DRAWS = (4, 250)

#: the four ways to fine-tune a base model (see :mod:`inference.finetuning.adapters`)
FINETUNE_METHODS = ("full", "lora", "last_layer", "k_params")
#: the evidence models of :func:`models.mixture.persona_model`
EVIDENCE_MODELS = ("global", "mixture")
#: the model names ``psm condition`` and ``psm sbc`` accept (``global-tables``: global with uncertain tables)
CONDITION_MODELS = ("global", "global-tables", "mixture")


def check_seed(seed: int, name: str = "seed", high: int = MAX_SEED) -> int:
    """``seed`` as an ``int``; one-line :class:`InputError` unless it is an integer in ``[0, high]``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= high:
        raise InputError(f"{name} must be an integer in [0, {high}], got {seed!r}")
    return int(seed)


def check_tokens(what: str, tokens: int, limit: int = MAX_TOKENS) -> None:
    """One-line error when ``tokens`` (a count) exceeds ``limit``."""
    if tokens > limit:
        raise InputError(f"{what} = {tokens} tokens is too many (limit {limit:.0e})")


def check_sizes(*, num_personas: int, vocab_size: int, order: int) -> None:
    """One-line errors for persona sizes that make no sense or would not fit in memory."""
    for name, value, low in (("num_personas", num_personas, 1), ("vocab_size", vocab_size, 2), ("order", order, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    log_entries = (order + 1) * math.log(vocab_size) + math.log(num_personas)  # no huge integer powers
    if log_entries > math.log(MAX_TABLE_ENTRIES):
        raise InputError(
            f"{num_personas} personas of order {order} over {vocab_size} tokens need "
            f"about 10^{log_entries / math.log(10):.1f} table entries (limit {MAX_TABLE_ENTRIES:.0e})"
        )
