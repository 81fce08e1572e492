"""What fine-tuning trains: the four methods as parametrizations of a copy of the base.

``full``        every parameter;
``last_layer``  the last transformer block and the output head (``ln_f``, ``lm_head``);
``lora``        low-rank adapters ``W + B A`` (rank ``rank``, ``B = 0`` at start) on every
                linear map inside the blocks; base weights frozen;
``k_params``    ``k`` scalars of the whole model chosen at random (seeded): a trainable
                sparse delta ``W + scatter(delta)`` (Donoway et al. 2025).

Adapters and deltas are ``torch.nn.utils.parametrize`` parametrizations;
:func:`materialise` turns a trained copy back into a plain
:class:`~models.transformer.PersonaLM` with them merged (:func:`merged_state` gives the merged
weights of any module). The Hugging Face side (``peft`` LoRA) is :mod:`inference.finetuning.hf_adapters`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from inference.finetuning.loop import check_positive_int
from models.errors import InputError
from models.tagged_lm import model_from_state
from models.transformer import PersonaLM, TransformerConfig, num_parameters

__all__ = ["LoRADelta", "SparseDelta", "k_param_positions", "materialise", "merged_state", "model_from_state",
           "prepare"]


class LoRADelta(nn.Module):
    """Parametrization ``W -> W + scale * B @ A`` with ``A`` [r, in], ``B`` [out, r] (``B = 0`` at start)."""

    def __init__(self, out_features: int, in_features: int, rank: int, scale: float = 1.0):
        super().__init__()
        self.A = nn.Parameter(torch.randn(rank, in_features) / math.sqrt(in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = scale

    def forward(self, W: Tensor) -> Tensor:
        return W + self.scale * (self.B @ self.A)


class SparseDelta(nn.Module):
    """Parametrization ``W -> W + scatter(delta)`` at fixed flat positions ``index`` [k]."""

    def __init__(self, index: Tensor):
        super().__init__()
        self.register_buffer("index", index, persistent=True)
        self.delta = nn.Parameter(torch.zeros(len(index)))

    def forward(self, W: Tensor) -> Tensor:
        return W.reshape(-1).index_add(0, self.index, self.delta.to(W.dtype)).view_as(W)


def k_param_positions(model: nn.Module, k: int, seed: int) -> Tensor:
    """The ``k`` scalars that ``k_params`` trains: sorted ``[k]`` positions in the concatenation
    of ``model.named_parameters()`` flattened in order (a seeded uniform draw without replacement)."""
    total = num_parameters(model)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
        raise InputError(f"k must be an integer in [1, {total}] (the model's parameter count), got {k!r}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:k].sort().values


def prepare(work: PersonaLM, method: str, *, rank: int, k: int, seed: int) -> list[nn.Parameter]:
    """Freeze and parametrize ``work`` for ``method``; return the trainable parameters."""
    if method == "full":
        return list(work.parameters())
    work.requires_grad_(False)
    if method == "last_layer":
        for module in (work.blocks[-1], work.ln_f, work.lm_head):
            module.requires_grad_(True)
    elif method == "lora":
        check_positive_int(rank=rank)
        for block in work.blocks:
            for linear in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                out_f, in_f = linear.weight.shape
                parametrize.register_parametrization(linear, "weight", LoRADelta(out_f, in_f, min(rank, out_f, in_f)))
    else:  # k_params
        named = list(work.named_parameters())
        chosen = k_param_positions(work, k, seed)  # [k]
        start = 0
        for name, p in named:
            local = chosen[(chosen >= start) & (chosen < start + p.numel())] - start
            if len(local):
                module = work.get_submodule(name.rpartition(".")[0])
                parametrize.register_parametrization(module, name.rpartition(".")[2], SparseDelta(local))
            start += p.numel()
    return [p for p in work.parameters() if p.requires_grad]


def materialise(work: PersonaLM, config: TransformerConfig) -> PersonaLM:
    """A plain PersonaLM with the current (merged) weights of ``work``."""
    return model_from_state(config, merged_state(work))


def merged_state(work: nn.Module) -> dict[str, Tensor]:
    """The state dict of ``work`` with every parametrization merged: detached clones under the
    plain parameter names (``blocks.0.attn.c_attn.weight``, not ``...parametrizations.weight.original``)."""
    state = {}
    for mod_name, module in work.named_modules():
        if "parametrizations" in mod_name.split("."):
            continue
        prefix = f"{mod_name}." if mod_name else ""
        for name, p in module.named_parameters(recurse=False):
            state[prefix + name] = p.detach().clone()
        for name, b in module.named_buffers(recurse=False):
            if name not in module._non_persistent_buffers_set:
                state[prefix + name] = b.detach().clone()
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:
                state[prefix + name] = getattr(module, name).detach().clone()
    return state
