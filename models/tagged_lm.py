"""The toolkit's own transformer behind the base-model interface (:mod:`models.base_model`).

:class:`TaggedLM` wraps a :class:`~models.transformer.PersonaLM`: persona ``h`` is its tag token
(DESIGN.md §3.2), an unprompted context is read after BOS alone, and everything delegates to
:func:`~models.transformer.next_token_logprobs` and :func:`~models.transformer.sample_completions`,
so results through the interface equal the PersonaLM functions' exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor

from models.base_model import Vocabulary, check_token_ids
from models.errors import InputError
from models.transformer import (
    IGNORE_INDEX,
    PersonaLM,
    TransformerConfig,
    make_inputs,
    next_token_logprobs,
    sample_completions,
)


def model_from_state(config: TransformerConfig, state: dict[str, Tensor]) -> PersonaLM:
    """A PersonaLM that takes ``state``'s tensors as its own: built on the meta device, so
    nothing is initialised and the global RNG (dropout) is untouched."""
    with torch.device("meta"):
        model = PersonaLM(config)
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)


class TaggedLM:
    """A :class:`PersonaLM` as a :class:`~models.base_model.LanguageModel` (module docstring).

    Parameters
    ----------
    model : PersonaLM
    persona_names : sequence of str, optional
        Names of the ``K`` tags (default ``tag 0``, ``tag 1``, ...).
    """

    def __init__(self, model: PersonaLM, persona_names: Sequence[str] | None = None):
        if not isinstance(model, PersonaLM):
            raise InputError(f"TaggedLM wraps a PersonaLM, got {type(model).__name__}")
        K = model.config.num_personas
        names = tuple(persona_names) if persona_names is not None else tuple(f"tag {h}" for h in range(K))
        if len(names) != K:
            raise InputError(f"{len(names)} persona names for a model with {K} tags")
        self.model, self.persona_names = model, names
        self.vocab_size = model.config.vocab_size
        self.max_positions = model.config.block_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def next_token_logprobs(self, contexts: Tensor, persona: int | None = None, *,
                            vocabulary: Vocabulary | None = None) -> Tensor:
        """``[n, T, V]`` float64 (``[n, T, width]`` with ``vocabulary``); see :mod:`models.base_model`."""
        logp = next_token_logprobs(self.model, contexts, tag=persona)  # [n, T, V]
        return logp if vocabulary is None else vocabulary.coarsen(logp)

    def context_loglik(self, contexts: Tensor, persona: int | None = None, mask: Tensor | None = None) -> Tensor:
        """``[n]`` float64 summed log-probability of the (masked-in) context tokens after persona ``persona``."""
        contexts = check_token_ids(contexts, self.vocab_size, "contexts")
        logp = self.next_token_logprobs(contexts, persona)  # [n, T, V]
        picked = logp.gather(-1, contexts[..., None]).squeeze(-1)  # [n, T]
        return picked.sum(-1) if mask is None else torch.where(mask, picked, torch.zeros_like(picked)).sum(-1)

    def sample(self, prompts: Tensor, num_tokens: int, persona: int | None = None, seed: int = 0) -> Tensor:
        """``[n, T0 + num_tokens]``: each prompt followed by ancestral samples."""
        return sample_completions(self.model, prompts, num_tokens, tag=persona, seed=seed)

    def training_module(self) -> PersonaLM:
        """A deep copy of the network in train mode, every parameter trainable."""
        return copy.deepcopy(self.model).train().requires_grad_(True)

    def training_batch(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(idx, targets)`` of untagged documents: ``[BOS, x_0, ..., x_{T-2}]`` and the masked-in ``x``."""
        idx, targets = make_inputs(tokens, None, self.model.config)  # [D, T] each
        return idx, torch.where(mask, targets, IGNORE_INDEX)

    def with_weights(self, state: dict[str, Tensor]) -> TaggedLM:
        """A frozen TaggedLM with these weights (keys of :meth:`training_module`'s state dict)."""
        return TaggedLM(model_from_state(self.model.config, state), self.persona_names)
