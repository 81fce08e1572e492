"""The small causal transformer: the base model ``q0`` and the neural baselines.

A nanoGPT-style decoder (pre-LayerNorm blocks, causal self-attention through
``F.scaled_dot_product_attention``, learned positions) over three kinds of
token::

    0 .. V-1        data tokens x
    V + h           the persona (author) tag of persona h, h = 0 .. K-1
    V + K           BOS, the beginning of every document

A document of ``T`` data tokens is read as ``[BOS, x_0, ..., x_{T-1}]``
(untagged) or ``[BOS, TAG_h, x_0, ..., x_{T-1}]`` (tagged, DESIGN.md §3.2,
``R_self``). The model only ever *predicts* data tokens: its output head has
``V`` rows, so every next-token distribution is over the data tokens alone
and BOS or a tag is never a target (they are inputs only).

``q0(x_t | x_<t, h)`` is :func:`next_token_logprobs` with ``tag=h``; the
untagged model (``tag=None``) is trained to be the persona mixture.

Checkpoints (save and load, never unpickling anything) are in
:mod:`models.lm_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.errors import InputError

#: targets equal to this are not scored
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of a :class:`PersonaLM`.

    Attributes
    ----------
    vocab_size : int
        ``V`` data tokens.
    num_personas : int
        ``K`` persona tags (0 is allowed: a model without tags).
    block_size : int
        Longest input the model reads, in positions. A tagged document of
        ``T`` data tokens needs ``T + 1`` positions, an untagged one ``T``.
    n_layer, n_head, n_embd : int
        Depth, attention heads and width (``n_embd`` divisible by ``n_head``).
    dropout : float
        Dropout probability in ``[0, 1)``.
    """

    vocab_size: int
    num_personas: int
    block_size: int
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 96
    dropout: float = 0.0

    def __post_init__(self) -> None:
        lows = {"vocab_size": 2, "num_personas": 0, "block_size": 1, "n_layer": 1, "n_head": 1, "n_embd": 1}
        for name, low in lows.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InputError(f"TransformerConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.n_embd % self.n_head:
            raise InputError(f"TransformerConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise InputError(f"TransformerConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.vocab_size * self.n_embd > 200_000_000 or self.block_size > 1_000_000:
            raise InputError(f"TransformerConfig too large (V={self.vocab_size}, block_size={self.block_size})")

    @property
    def bos(self) -> int:
        """Token id of the beginning of a document: ``V + K``."""
        return self.vocab_size + self.num_personas

    @property
    def total_vocab(self) -> int:
        """Input vocabulary ``V + K + 1`` (data tokens, tags, BOS)."""
        return self.vocab_size + self.num_personas + 1

    def tag_token(self, h: int) -> int:
        """Token id of persona ``h``'s tag: ``V + h``."""
        return self.vocab_size + h

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> TransformerConfig:
        """Build a config from a dict, refusing unknown or missing keys (one-line error)."""
        if not isinstance(fields, dict):
            raise InputError(f"transformer config must be a mapping, got {type(fields).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise InputError(f"unknown transformer config key(s): {', '.join(unknown)}")
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in fields)
        if missing:
            raise InputError(f"transformer config is missing key(s): {', '.join(missing)}")
        return cls(**fields)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        B, L, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x [B, L, C]
        q, k, v = (z.view(B, L, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))  # [B, H, L, C/H]
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # [B, H, L, C/H]
        y = y.transpose(1, 2).contiguous().view(B, L, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class PersonaLM(nn.Module):
    """Causal LM over data tokens, persona tags and BOS (module docstring).

    The output head predicts the ``V`` data tokens only (it is not tied to the
    input embedding, which also holds the tags and BOS).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.total_vocab, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits of the next data token at every position.

        Parameters
        ----------
        idx : Tensor
            ``[B, L]`` int64 input tokens in ``[0, V + K]``, ``L <= block_size``.
        targets : Tensor, optional
            ``[B, L]`` int64 data tokens in ``[0, V)``, or ``-100`` where not scored.

        Returns
        -------
        logits : Tensor
            ``[B, L, V]``.
        loss : Tensor or None
            Mean cross-entropy over the scored targets (0 when none is scored).
        """
        B, L = idx.shape
        if L > self.config.block_size:
            raise InputError(f"input of {L} positions is longer than block_size {self.config.block_size}")
        pos = torch.arange(L, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # [B, L, C]
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # [B, L, V]
        if targets is None:
            return logits, None
        flat = targets.reshape(-1)
        total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=IGNORE_INDEX, reduction="sum")
        return logits, total / (flat != IGNORE_INDEX).sum().clamp(min=1)


def num_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def make_inputs(tokens: Tensor, tags: Tensor | None, config: TransformerConfig) -> tuple[Tensor, Tensor]:
    """Model inputs and targets for documents, some of them tagged.

    Parameters
    ----------
    tokens : Tensor
        ``[n, T]`` data tokens.
    tags : Tensor or None
        ``[n]`` persona of each document's tag, ``-1`` for an untagged
        document; ``None`` tags none.
    config : TransformerConfig

    Returns
    -------
    idx, targets : Tensor
        ``[n, L]`` with ``L = T`` when nothing is tagged, else ``T + 1``.
        Every data token is a target exactly once; BOS and tags never are.
        Untagged rows in a tagged batch read their last token as an input
        whose target is ``-100`` (a causal model never looks ahead, so this
        changes nothing before it).
    """
    n, T = tokens.shape
    bos = torch.full((n, 1), config.bos, dtype=torch.long, device=tokens.device)
    if tags is None:
        return torch.cat([bos, tokens[:, :-1]], 1), tokens  # [n, T]
    tagged = (tags >= 0).unsqueeze(1)  # [n, 1]
    tag_tok = (config.vocab_size + tags.clamp(min=0)).unsqueeze(1)  # [n, 1]
    ignore = torch.full((n, 1), IGNORE_INDEX, dtype=torch.long, device=tokens.device)
    idx = torch.where(
        tagged, torch.cat([bos, tag_tok, tokens[:, :-1]], 1), torch.cat([bos, tokens], 1)
    )  # [n, T + 1]
    targets = torch.where(tagged, torch.cat([ignore, tokens], 1), torch.cat([tokens, ignore], 1))  # [n, T + 1]
    return idx, targets


def _check_tokens(tokens: Tensor, config: TransformerConfig, name: str, extra_positions: int) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dtype in (torch.bool,) or tokens.is_floating_point() or tokens.is_complex():
        raise InputError(f"{name} must be an integer tensor")
    if tokens.dim() != 2:
        raise InputError(f"{name} must be [n, T], got shape {tuple(tokens.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= config.vocab_size):
        raise InputError(f"{name} must lie in [0, {config.vocab_size}), found {int(tokens.min())}..{int(tokens.max())}")
    if tokens.shape[1] + extra_positions > config.block_size:
        raise InputError(
            f"{name} of {tokens.shape[1]} tokens need {tokens.shape[1] + extra_positions} positions "
            f"(block_size is {config.block_size})"
        )
    return tokens.long()


def _check_tag(tag: int | None, config: TransformerConfig) -> None:
    if tag is not None and (isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag < config.num_personas):
        raise InputError(f"tag must be a persona in [0, {config.num_personas}) or None, got {tag!r}")


@torch.no_grad()
def next_token_logprobs(model: PersonaLM, contexts: Tensor, tag: int | None = None, batch_size: int = 1024) -> Tensor:
    """Next-token log-probabilities over the data tokens, ``[n, T, V]`` float64.

    Row ``t`` is ``log q(x_t = v | BOS, [TAG_tag], x_<t)``: position 0 is the
    first-token distribution. The model is put in eval mode.

    Parameters
    ----------
    model : PersonaLM
    contexts : Tensor
        ``[n, T]`` data tokens.
    tag : int or None
        Persona tag to prompt with (``R_self``); ``None`` for the plain model.
    batch_size : int
        Documents per forward pass.
    """
    config = model.config
    _check_tag(tag, config)
    contexts = _check_tokens(contexts, config, "contexts", extra_positions=int(tag is not None))
    model.eval()
    n, T = contexts.shape
    out = torch.empty(n, T, config.vocab_size, dtype=torch.float64)
    tags = None if tag is None else torch.full((n,), tag, dtype=torch.long)
    idx, _ = make_inputs(contexts, tags, config)  # [n, T] or [n, T + 1]
    offset = 0 if tag is None else 1  # the tag's own position predicts x_0
    device = next(model.parameters()).device
    for lo in range(0, n, batch_size):  # memory chunks
        logits, _ = model(idx[lo : lo + batch_size].to(device))  # [b, L, V]
        out[lo : lo + batch_size] = logits[:, offset : offset + T].double().log_softmax(-1).cpu()
    return out


@torch.no_grad()
def sample_completions(
    model: PersonaLM, prompts: Tensor, num_tokens: int, tag: int | None = None, seed: int = 0
) -> Tensor:
    """Sample ``num_tokens`` data tokens after each prompt (ancestral sampling).

    Parameters
    ----------
    prompts : Tensor
        ``[n, T0]`` data tokens (``T0`` may be 0: sample whole documents).
    num_tokens : int
        Tokens to append.
    tag : int or None
        Persona tag to prompt with.
    seed : int
        Seed of the sampling generator (global RNG untouched).

    Returns
    -------
    Tensor
        ``[n, T0 + num_tokens]`` int64: the prompts followed by the samples.
    """
    config = model.config
    _check_tag(tag, config)
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
        raise InputError(f"num_tokens must be an integer >= 0, got {num_tokens!r}")
    need = num_tokens - 1 + int(tag is not None)  # positions beyond the prompt's own
    seqs = _check_tokens(prompts, config, "prompts", extra_positions=max(need, 0) + 1)
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    n = seqs.shape[0]
    head = [torch.full((n, 1), config.bos, dtype=torch.long)]
    if tag is not None:
        head.append(torch.full((n, 1), config.tag_token(tag), dtype=torch.long))
    idx = torch.cat(head + [seqs], 1)  # [n, L]
    for _ in range(num_tokens):  # autoregressive: one position per step, vectorised over n
        logits, _ = model(idx.to(device))
        probs = logits[:, -1].double().softmax(-1).cpu()  # [n, V]
        nxt = torch.multinomial(probs, 1, generator=generator)  # [n, 1]
        idx = torch.cat([idx, nxt], 1)
    return idx[:, len(head) :]
