"""One interface for a base model: what the comparisons, fine-tuning and attribution need from it.

A *base model* is a causal LM over a vocabulary of ``V`` tokens with ``K`` personas it can be
prompted with. The toolkit's own :class:`~models.transformer.PersonaLM` prompts with a persona
tag token (:class:`models.tagged_lm.TaggedLM`); a Hugging Face causal LM prompts with a persona's
text, e.g. ``"The following was written by Charles Dickens.\\n"`` (:class:`models.hf_lm.HFCausalLM`).
Either way ``q0(y | c, h)`` is the model read after persona ``h``'s prompt, and the reachable set
``R_self`` (DESIGN.md §3.2) is the in-context mixture of those ``K`` prompted models
(:func:`persona_components` stacks them into the ``[K, n, T, V]`` tensor of
:mod:`models.predictive`).

==========================================  ==================================================
member                                      meaning
==========================================  ==================================================
``vocab_size``                              ``V``, the size of every next-token distribution
``persona_names``                           the ``K`` personas' names
``max_positions``                           longest input (start token + prompt + context)
``device``                                  where the network runs
``next_token_logprobs(c, h, vocabulary=)``  ``[n, T, V]`` float64 on the CPU: row ``t`` is
                                            ``log q(x_t | start, prompt_h, x_<t)``; ``h=None``
                                            reads the context unprompted
``context_loglik(c, h, mask=)``             ``[n]`` ``log q(c | h)`` (masked-in tokens)
``sample(prompts, num_tokens, h, seed=)``   ancestral samples after each prompt
``training_module()``                       a fresh trainable copy of the network (train mode)
                                            whose ``forward(idx, targets)`` returns
                                            ``(logits, mean loss)``
``training_batch(tokens, mask)``            ``(idx, targets)`` of unprompted documents; only
                                            masked-in tokens are targets
``with_weights(state)``                     a frozen model of the same kind and personas with
                                            the weights of a trained ``training_module()``
==========================================  ==================================================

Real vocabularies are large (GPT-2: 50,257), and the comparisons hold ``[K, n, T, V]`` float64
tensors; :class:`Vocabulary` coarsens every next-token distribution onto a kept set of tokens
plus one *rest* column holding the summed probability of every other token. Coarsening is
linear in probabilities, so the persona mixture of coarsened components is the coarsened
mixture exactly, as long as every context token is kept (its own probability, not the rest's,
drives the in-context update); a KL between coarsened distributions is a lower bound on the KL
between the full ones (data processing).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from models.errors import InputError


@runtime_checkable
class LanguageModel(Protocol):
    """A base model as the comparisons and fine-tuning see it (module docstring)."""

    vocab_size: int
    persona_names: tuple[str, ...]
    max_positions: int
    device: torch.device

    def next_token_logprobs(self, contexts: Tensor, persona: int | None = None, *,
                            vocabulary: Vocabulary | None = None) -> Tensor: ...

    def context_loglik(self, contexts: Tensor, persona: int | None = None, mask: Tensor | None = None) -> Tensor: ...

    def sample(self, prompts: Tensor, num_tokens: int, persona: int | None = None, seed: int = 0) -> Tensor: ...

    def training_module(self) -> nn.Module: ...

    def training_batch(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]: ...

    def with_weights(self, state: dict[str, Tensor]) -> LanguageModel: ...


def persona_components(model: LanguageModel, contexts: Tensor, *, vocabulary: Vocabulary | None = None) -> Tensor:
    """``[K, n, T, V']`` next-token log-probabilities of the model prompted with each persona (``R_self``)."""
    K = len(model.persona_names)
    if K == 0:
        raise InputError("the model has no personas to prompt with (R_self needs at least one)")
    return torch.stack([model.next_token_logprobs(contexts, h, vocabulary=vocabulary) for h in range(K)])


class Vocabulary:
    """A kept set of tokens and one *rest* column: the coarsening of next-token distributions.

    Parameters
    ----------
    keep : Tensor
        Token ids kept, any order, duplicates allowed (sorted and made unique here).
    size : int
        ``V``, the full vocabulary.

    Attributes
    ----------
    keep : Tensor
        ``[M]`` sorted unique kept ids.
    width : int
        Columns of a coarsened distribution: ``M + 1`` (the last is the rest), or ``V`` when
        every token is kept (then nothing changes).
    """

    def __init__(self, keep: Tensor, size: int):
        keep = torch.as_tensor(keep).long().unique()  # [M] sorted
        if keep.numel() == 0 or int(keep.min()) < 0 or int(keep.max()) >= size:
            raise InputError(f"vocabulary ids must be a non-empty set in [0, {size})")
        self.keep, self.size = keep, int(size)
        self.full = keep.numel() == size
        self.width = self.size if self.full else keep.numel() + 1
        self._column = torch.full((size,), keep.numel(), dtype=torch.long)  # [V] column of each id (rest: M)
        self._column[keep] = torch.arange(keep.numel())
        self._rest = torch.ones(size, dtype=torch.bool)
        self._rest[keep] = False

    def index(self, tokens: Tensor) -> Tensor:
        """Column of each token id (the rest column for a token not kept); same shape as ``tokens``."""
        return tokens.long() if self.full else self._column[tokens.long()]

    def covers(self, tokens: Tensor) -> bool:
        """Whether every id in ``tokens`` is kept."""
        return self.full or not bool(self._rest[tokens.long()].any())

    def coarsen(self, logprobs: Tensor) -> Tensor:
        """``[..., V]`` log-probabilities as ``[..., width]``: the kept columns, then the log rest mass."""
        if self.full:
            return logprobs
        rest_idx = self._rest.nonzero().squeeze(-1).to(logprobs.device)  # [V - M]
        kept = logprobs.index_select(-1, self.keep.to(logprobs.device))  # [..., M]
        rest = torch.logsumexp(logprobs.index_select(-1, rest_idx), -1, keepdim=True)  # [..., 1]
        return torch.cat([kept, rest], -1)

    def names(self, decode) -> list[str]:
        """Readable label of each column, ``decode(id)`` for a kept token and ``"<rest>"`` for the rest."""
        labels = [decode(int(i)) for i in self.keep]
        return labels if self.full else labels + ["<rest>"]


def choose_vocabulary(mass: Tensor, required: Tensor, max_size: int) -> Vocabulary:
    """The tokens a comparison keeps: every ``required`` id, then the most probable others.

    Parameters
    ----------
    mass : Tensor
        ``[V]`` summed probability of each token over the models and positions that matter.
    required : Tensor
        Token ids that must be kept (every context token, so the in-context update is exact).
    max_size : int
        Kept ids at most, unless the required ones alone are more (then all of those are kept).
    """
    V = mass.shape[0]
    required = torch.as_tensor(required).long().reshape(-1).unique()
    if max_size >= V:
        return Vocabulary(torch.arange(V), V)
    free = max(0, max_size - required.numel())
    ranked = mass.double().clone()
    ranked[required] = -1.0  # already in
    extra = ranked.argsort(descending=True)[:free]
    return Vocabulary(torch.cat([required, extra]), V)


def check_token_ids(tokens, vocab_size: int, name: str, max_len: int | None = None) -> Tensor:
    """``tokens`` as a non-empty ``[n, T]`` int64 CPU tensor of ids in ``[0, V)``; one-line error otherwise."""
    tokens = torch.as_tensor(tokens)
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise InputError(f"{name} must be integer token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2 or tokens.numel() == 0:
        raise InputError(f"{name} must be a non-empty [n, T] array of token ids, got shape {tuple(tokens.shape)}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size:
        raise InputError(f"{name} must lie in [0, {vocab_size}), found {int(tokens.min())}..{int(tokens.max())}")
    if max_len is not None and tokens.shape[1] > max_len:
        raise InputError(f"{name} of {tokens.shape[1]} tokens exceed the {max_len} positions the model reads")
    return tokens.long().cpu()


def check_persona(persona, num_personas: int) -> None:
    """One-line error unless ``persona`` is ``None`` or an index in ``[0, K)``."""
    if persona is not None and (isinstance(persona, bool) or not isinstance(persona, int)
                                or not 0 <= persona < num_personas):
        raise InputError(f"persona must be an index in [0, {num_personas}) or None, got {persona!r}")
