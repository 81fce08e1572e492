"""The ``[base]`` table of the issue-11 experiment kinds: the sizes and pre-training of a base transformer.

Both ``narrow_to_broad`` and ``incontext`` pre-train their own base (their worlds differ from the
default one, so no shipped checkpoint applies); :class:`BaseSizes` holds what they share and
:func:`check_base` its range checks, each error naming its key.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.errors import InputError
from models.limits import FINETUNE_METHODS, MAX_PARAMETERS, check_tokens
from models.transformer import TransformerConfig


@dataclass(frozen=True)
class BaseSizes:
    """A base transformer and its pre-training (``p_tag``: share of documents read with their persona tag)."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    p_tag: float = 0.5


@dataclass(frozen=True)
class FinetuneSizes:
    """How the base is fine-tuned (:func:`inference.finetuning.training.finetune`)."""

    method: str = "full"
    lr: float = 3e-4
    batch_size: int = 32
    rank: int = 4
    k: int = 100


def check_base(b: BaseSizes, *, vocab_size: int, num_personas: int, block_size: int) -> None:
    """Range checks of ``[base]`` for a model of these sizes (one-line errors naming the key)."""
    for key in ("n_layer", "n_head", "n_embd", "steps", "batch_size"):
        positive(f"base.{key}", getattr(b, key))
    if b.n_embd % b.n_head:
        raise InputError(f"base.n_embd ({b.n_embd}) must be a multiple of base.n_head ({b.n_head})")
    parameters = 12 * b.n_layer * b.n_embd**2 + (vocab_size + num_personas + block_size + 2) * b.n_embd
    if parameters > MAX_PARAMETERS:
        raise InputError(f"base.n_layer = {b.n_layer} and base.n_embd = {b.n_embd} make a transformer of about "
                         f"{parameters:.2g} parameters (limit {MAX_PARAMETERS:.0e})")
    check_tokens("base.batch_size x the context length", b.batch_size * block_size)
    positive("base.lr", b.lr)
    if not 0 <= b.p_tag <= 1:
        raise InputError(f"base.p_tag must lie in [0, 1], got {b.p_tag}")


def check_finetune(f: FinetuneSizes) -> None:
    """Range checks of the fine-tuning keys (one-line errors naming the key)."""
    if f.method not in FINETUNE_METHODS:
        raise InputError(f"finetune.method must be one of {', '.join(FINETUNE_METHODS)}, got {f.method!r}")
    for key in ("batch_size", "rank", "k"):
        positive(f"finetune.{key}", getattr(f, key))
    positive("finetune.lr", f.lr)


def transformer_config(b: BaseSizes, *, vocab_size: int, num_personas: int, block_size: int) -> TransformerConfig:
    """The :class:`~models.transformer.TransformerConfig` of a ``[base]`` table."""
    return TransformerConfig(vocab_size=vocab_size, num_personas=num_personas, block_size=block_size,
                             n_layer=b.n_layer, n_head=b.n_head, n_embd=b.n_embd)


def positive(key: str, value) -> None:
    """One-line error unless ``value > 0``."""
    if not value > 0:
        raise InputError(f"{key} must be > 0, got {value!r}")


def index_in(key: str, value, size: int) -> None:
    """One-line error unless ``value`` is an index in ``[0, size)``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
        raise InputError(f"{key} must be an index in [0, {size}), got {value!r}")
