"""Prequential (online) code length of evidence under fine-tuning, and the description length.

Blier & Ollivier (2018); Donoway et al. (2025): the evidence is coded block by block,
each block by the base fine-tuned on the blocks before it. The code length minus
``n`` times the final loss per token is the *description length*: what fine-tuning had
to learn beyond what the final model still pays, small when it elicits a behaviour the
base had, large when it teaches one (DESIGN.md §3, item 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from inference.finetuning.loop import check_evidence_sizes, check_positive_int
from inference.finetuning.training import finetune
from models.base_model import LanguageModel
from models.counts import Evidence
from models.transformer import PersonaLM, next_token_logprobs


@dataclass(frozen=True)
class PrequentialCode:
    """Online (prequential) code length of evidence under fine-tuning.

    Attributes
    ----------
    code_length : float
        Total code length in nats: block ``b`` coded by the model fine-tuned on blocks ``< b``.
    block_nats : list[float]
        Code length of each block.
    block_tokens : list[int]
        Evidence tokens in each block.
    final_loss : float
        NLL per evidence token after fine-tuning on all the evidence.
    num_tokens : int
        Evidence tokens in total.
    """

    code_length: float
    block_nats: list[float]
    block_tokens: list[int]
    final_loss: float
    num_tokens: int

    @property
    def description_length(self) -> float:
        """``code_length - num_tokens * final_loss`` (Donoway et al.): small when fine-tuning only elicits."""
        return self.code_length - self.num_tokens * self.final_loss

    def __float__(self) -> float:
        return float(self.code_length)


def masked_nll(model: PersonaLM | LanguageModel, evidence: Evidence) -> float:
    """Summed NLL (nats) of the masked-in evidence tokens under the untagged (unprompted) model."""
    if not isinstance(model, PersonaLM):
        return float(-model.context_loglik(evidence.tokens, None, evidence.mask).sum())
    logp = next_token_logprobs(model, evidence.tokens)  # [D, T, V]
    picked = logp.gather(-1, evidence.tokens.unsqueeze(-1)).squeeze(-1)  # [D, T]
    return float(-(picked * evidence.mask).sum())


def prequential_code_length(
    model: PersonaLM | LanguageModel,
    evidence: Evidence,
    *,
    method: str = "full",
    lr: float = 1e-3,
    steps: int = 50,
    batch_size: int = 64,
    block_size_docs: int = 8,
    rank: int = 4,
    k: int = 100,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> PrequentialCode:
    """Prequential (online) code length of the evidence under fine-tuning, in nats.

    The documents are split into consecutive blocks of ``block_size_docs``;
    block 0 is coded by the base model, block ``b`` by the base fine-tuned
    (``method``, ``lr``, ``steps``) on blocks ``< b``. The returned object also
    holds the final loss per token after fine-tuning on all of it, and
    ``description_length = code_length - num_tokens * final_loss``.
    ``float(result)`` is the code length. ``model`` is a PersonaLM or any base model of the
    interface (:mod:`models.base_model`); ``device`` is where the fine-tuning runs.
    """
    check_positive_int(block_size_docs=block_size_docs)
    if isinstance(model, PersonaLM):
        check_evidence_sizes(evidence, model.config.vocab_size, model.config.block_size)
    else:
        check_evidence_sizes(evidence, model.vocab_size, model.max_positions)
    opts = dict(method=method, lr=lr, steps=steps, batch_size=batch_size, rank=rank, k=k,
                weight_decay=weight_decay, seed=seed, snapshot_steps=[steps], device=device)
    D = evidence.num_docs
    bounds = list(range(0, D, block_size_docs)) + [D]
    block_nats, block_tokens = [], []
    for b in tqdm(range(len(bounds) - 1), desc="prequential", disable=not progress):
        block = evidence.select(torch.arange(bounds[b], bounds[b + 1]))
        block_tokens.append(block.num_tokens)
        if block.num_tokens == 0:
            block_nats.append(0.0)
            continue
        seen = evidence.select(torch.arange(bounds[b]))
        coder = model if b == 0 or seen.num_tokens == 0 else finetune(model, seen, **opts).snapshots[steps]
        block_nats.append(masked_nll(coder, block))
    final = finetune(model, evidence, **opts).snapshots[steps]
    return PrequentialCode(
        float(sum(block_nats)), block_nats, block_tokens, masked_nll(final, evidence) / evidence.num_tokens,
        evidence.num_tokens,
    )
