"""The four fine-tuning methods on a Hugging Face causal LM (:class:`models.hf_lm.CausalLMLoss`).

``full``        every parameter;
``last_layer``  the last transformer block, the final norm and the output head (the largest
                ``ModuleList`` of the network is taken as its blocks; the final norm is the last
                ``*Norm`` module outside them). When the head is tied to the input embedding
                (GPT-2), training the head trains that embedding too: they are one tensor;
``lora``        ``peft`` LoRA adapters of rank ``rank`` (``lora_alpha = rank``, so ``W + B A`` as in
                :mod:`inference.finetuning.adapters`; ``B = 0`` at start) on every linear map of the
                network but the output head (``target_modules="all-linear"``), base weights frozen;
``k_params``    ``k`` scalars of the whole network chosen at random (seeded), trained as a sparse
                delta (:class:`~inference.finetuning.adapters.SparseDelta`); a tensor tied between two
                modules gets one shared delta, so the tie holds.

:func:`merged_hf_state` returns the trained weights with adapters merged (``peft``'s
``merge_and_unload`` on a copy, or the parametrizations), keyed like ``CausalLMLoss.state_dict()``.
``peft`` is imported only when ``lora`` is asked for.
"""

from __future__ import annotations

import copy
import warnings

from torch import Tensor, nn
from torch.nn.utils import parametrize

from inference.finetuning.adapters import SparseDelta, k_param_positions, merged_state
from inference.finetuning.loop import check_positive_int
from models.errors import InputError
from models.hf_lm import INSTALL_HINT


def import_peft():
    """``peft``, or a one-line error saying how to install the optional extra."""
    try:
        import peft
    except ImportError:
        raise InputError(f"LoRA on a Hugging Face model needs peft: {INSTALL_HINT}") from None
    return peft


def prepare_hf(work: nn.Module, method: str, *, rank: int, k: int, seed: int) -> list[nn.Parameter]:
    """Freeze and adapt ``work`` (a ``CausalLMLoss``) for ``method``; return the trainable parameters."""
    if method == "full":
        return list(work.parameters())
    work.requires_grad_(False)
    if method == "last_layer":
        for module in last_layer_modules(work.lm):
            module.requires_grad_(True)
    elif method == "lora":
        check_positive_int(rank=rank)
        peft = import_peft()
        config = peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules="all-linear", bias="none")
        with warnings.catch_warnings():  # GPT-2's Conv1D layers: peft switches fan_in_fan_out itself, and says so
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            work.lm = peft.get_peft_model(work.lm, config)
    else:  # k_params
        _sparse_deltas(work, k, seed)
    return [p for p in work.parameters() if p.requires_grad]


def last_layer_modules(lm: nn.Module) -> list[nn.Module]:
    """The last transformer block, the final norm and the output head of a causal LM (module docstring)."""
    lists = [m for m in lm.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise InputError(f"{type(lm).__name__}: no list of transformer blocks found (last_layer needs one)")
    blocks = max(lists, key=len)
    inside = {id(m) for m in blocks.modules()}
    norms = [m for m in lm.modules() if "Norm" in type(m).__name__ and id(m) not in inside]
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if head is None or not norms:
        raise InputError(f"{type(lm).__name__}: no output head or final norm found (last_layer needs both)")
    return [blocks[-1], norms[-1], head]


def _sparse_deltas(work: nn.Module, k: int, seed: int) -> None:
    """Register one :class:`SparseDelta` per parameter holding chosen scalars, on every module that holds it."""
    chosen = k_param_positions(work, k, seed)  # [k]
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in work.modules():
        for name, p in module._parameters.items():
            if p is not None:
                holders.setdefault(id(p), []).append((module, name))
    start = 0
    for _, p in list(work.named_parameters()):
        local = chosen[(chosen >= start) & (chosen < start + p.numel())] - start
        if len(local):
            delta = SparseDelta(local.to(p.device)).to(p.device)
            for module, name in holders[id(p)]:  # a tied tensor: the same delta on each holder
                parametrize.register_parametrization(module, name, delta)
        start += p.numel()


def merged_hf_state(work: nn.Module) -> dict[str, Tensor]:
    """Trained weights of ``work`` (a ``CausalLMLoss``) with adapters merged, keyed ``lm.*``."""
    if type(work.lm).__module__.startswith("peft"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            lm = copy.deepcopy(work.lm).merge_and_unload()
        return {f"lm.{key}": value.detach().clone() for key, value in lm.state_dict().items()}
    return merged_state(work)
