"""Any Hugging Face causal LM behind the base-model interface, with personas given by prompts.

    from models.hf_lm import load_hf_model
    from models.persona_prompts import load_persona_prompts
    lm = load_hf_model("gpt2-local", load_persona_prompts("personas.toml"), device="auto")
    lm.next_token_logprobs(contexts, persona=0)           # [n, T, V]: q0(x_t | prompt_0, x_<t)

:func:`load_hf_model` reads ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a LOCAL folder
(``local_files_only=True``, never ``trust_remote_code``: nothing is downloaded or executed), in
float32. ``transformers`` is an optional extra (``pip install -e '.[hf]'``): it is imported only
here, when a model is loaded.

Reading a context. Every input starts with the tokenizer's BOS token (its EOS when it has no
BOS, as for GPT-2, whose ``<|endoftext|>`` is both): the unprompted model reads
``[start, x_0, ..., x_{T-2}]``, persona ``h`` reads ``[start, prompt_h, x_0, ..., x_{T-2}]``,
where ``prompt_h`` is the persona's text tokenised on its own (no special tokens) and the
context's ids follow it unchanged. Row ``t`` of the result is the distribution of ``x_t``, so
position 0 is the first token after the start (or the prompt). All contexts of one call share
one prefix, so no padding is ever needed (nothing shifts positions); batches are cut so that
one ``[rows, L, V]`` float32 logits block stays below :data:`MAX_LOGIT_ELEMENTS`.

:class:`HFCausalLM` itself needs only a network whose ``forward(input_ids=...)`` returns an
object with ``.logits`` (and, for fast sampling, ``past_key_values``), the prompts as token ids and
the start id, so the tests can run the toolkit's own transformer through exactly this code.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base_model import Vocabulary, check_persona, check_token_ids
from models.devices import resolve_device
from models.errors import InputError
from models.persona_prompts import PersonaPrompt

#: largest ``rows x positions x V`` logits block of one forward pass in evaluation
MAX_LOGIT_ELEMENTS = 2**25
#: what to install when transformers (or peft) is missing
INSTALL_HINT = "pip install -e '.[hf]' (transformers and peft)"
IGNORE_INDEX = -100


def import_transformers():
    """``transformers``, or a one-line :class:`InputError` saying how to install the optional extra."""
    try:
        import transformers
    except ImportError:
        raise InputError(f"Hugging Face models need the optional extra: {INSTALL_HINT}") from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own logging at ERROR and its progress bars off for the block, then restored."""
    logging = import_transformers().utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_hf_model(folder: str | os.PathLike, prompts: Sequence[PersonaPrompt] = (), *,
                  device: str | torch.device = "cpu") -> HFCausalLM:
    """A causal LM and its tokenizer from a local Hugging Face folder, prompted by ``prompts``.

    Parameters
    ----------
    folder : path
        A folder written by ``save_pretrained`` (``config.json``, weights, tokenizer files); ``~`` expands.
    prompts : sequence of PersonaPrompt
        The personas (:mod:`models.persona_prompts`); empty for a model without personas.
    device : str or torch.device
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (:mod:`models.devices`).
    """
    transformers = import_transformers()
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: no such model folder (a local Hugging Face model folder is needed)")
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: not a Hugging Face model folder (no config.json)")
    target = resolve_device(device)
    with quiet_transformers():
        try:
            network = transformers.AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... for unusable folders
            raise InputError(f"{folder}: not a loadable causal LM ({_first_line(exc)})") from None
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        except Exception as exc:
            raise InputError(f"{folder}: no usable tokenizer ({_first_line(exc)})") from None
    if len(tokenizer) < 2 or not _encoder(tokenizer)("The"):  # transformers 5 builds an empty one when files are missing
        raise InputError(f"{folder}: no usable tokenizer (no tokenizer files, or an empty vocabulary)")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise InputError(f"{folder}: the tokenizer has neither a BOS nor an EOS token to start a document with")
    config = network.config
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 10**9
    network = network.to(device=target, dtype=torch.float32)
    encode = _encoder(tokenizer)
    lm = HFCausalLM(network, [encode(p.prompt) for p in prompts], start, persona_names=[p.name for p in prompts],
                    max_positions=int(positions), tokenizer=tokenizer)
    if len(tokenizer) > lm.vocab_size:
        raise InputError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but the model predicts {lm.vocab_size}")
    return lm


def _encoder(tokenizer):
    def encode(text: str) -> list[int]:
        with quiet_transformers():  # no "sequence longer than the model" warning: texts are chunked after
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return encode


class HFCausalLM:
    """A causal LM network prompted by personas, as a :class:`~models.base_model.LanguageModel`.

    Parameters
    ----------
    network : nn.Module
        ``forward(input_ids=...)`` returns an object with ``logits`` ``[B, L, V]``.
    prompt_ids : sequence of sequence of int
        Each persona's prompt as token ids (read after the start token).
    start_id : int
        The token every input starts with.
    persona_names : sequence of str
    max_positions : int
        Longest input the network reads.
    tokenizer : optional
        The Hugging Face tokenizer (for :meth:`encode` and :meth:`decode`).
    vocab_size : int, optional
        ``V``; default the rows of the network's output embedding (else ``network.config.vocab_size``).
    """

    def __init__(self, network: nn.Module, prompt_ids: Sequence[Sequence[int]], start_id: int, *,
                 persona_names: Sequence[str], max_positions: int, tokenizer=None, vocab_size: int | None = None):
        if len(persona_names) != len(prompt_ids):
            raise InputError(f"{len(persona_names)} persona names for {len(prompt_ids)} prompts")
        self.network = network.eval().requires_grad_(False)
        self.prompt_ids = [torch.as_tensor(list(p), dtype=torch.long) for p in prompt_ids]
        self.start_id, self.persona_names = int(start_id), tuple(persona_names)
        self.max_positions, self.tokenizer = int(max_positions), tokenizer
        head = network.get_output_embeddings() if hasattr(network, "get_output_embeddings") else None
        if vocab_size is None:
            vocab_size = head.weight.shape[0] if head is not None else network.config.vocab_size
        self.vocab_size = int(vocab_size)
        # the key-value cache is ``cache`` in transformers >= 5.x, ``past_key_values`` before
        self._cache = "cache" if "cache" in inspect.signature(network.forward).parameters else "past_key_values"

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    # ----------------------------------------------------------------- reading
    def prefix(self, persona: int | None) -> Tensor:
        """``[L0]`` the ids read before a context: the start token, then persona ``persona``'s prompt."""
        check_persona(persona, len(self.persona_names))
        start = torch.tensor([self.start_id])
        return start if persona is None else torch.cat([start, self.prompt_ids[persona]])

    def _inputs(self, contexts: Tensor, persona: int | None) -> tuple[Tensor, int]:
        prefix = self.prefix(persona)  # [L0]
        contexts = check_token_ids(contexts, self.vocab_size, "contexts")
        n, T = contexts.shape
        if prefix.numel() + T - 1 > self.max_positions:
            raise InputError(f"contexts of {T} tokens after a prefix of {prefix.numel()} need "
                             f"{prefix.numel() + T - 1} positions; the model reads {self.max_positions}")
        return torch.cat([prefix.expand(n, -1), contexts[:, :-1]], 1), prefix.numel()  # [n, L0 + T - 1]

    @torch.no_grad()
    def _logprob_blocks(self, idx: Tensor, offset: int) -> Iterator[tuple[int, Tensor]]:
        """``(row, [b, T, V] float64 log-probs on the device)`` for consecutive blocks of rows of ``idx``."""
        self.network.eval()
        n, L = idx.shape
        rows = max(1, MAX_LOGIT_ELEMENTS // (L * self.vocab_size))
        for lo in range(0, n, rows):  # memory blocks, not a per-document loop
            logits = self.network(input_ids=idx[lo: lo + rows].to(self.device), use_cache=False).logits  # [b, L, V]
            yield lo, logits[:, offset - 1:, : self.vocab_size].double().log_softmax(-1)

    def next_token_logprobs(self, contexts: Tensor, persona: int | None = None, *,
                            vocabulary: Vocabulary | None = None) -> Tensor:
        """``[n, T, V]`` float64 on the CPU (``[n, T, width]`` with ``vocabulary``); module docstring."""
        idx, offset = self._inputs(contexts, persona)
        width = self.vocab_size if vocabulary is None else vocabulary.width
        out = torch.empty(idx.shape[0], idx.shape[1] - offset + 1, width, dtype=torch.float64)
        for lo, logp in self._logprob_blocks(idx, offset):
            out[lo: lo + logp.shape[0]] = (logp if vocabulary is None else vocabulary.coarsen(logp)).cpu()
        return out

    def context_loglik(self, contexts: Tensor, persona: int | None = None, mask: Tensor | None = None) -> Tensor:
        """``[n]`` float64 ``log q(c | h)``: summed log-probability of the (masked-in) context tokens."""
        idx, offset = self._inputs(contexts, persona)
        contexts = check_token_ids(contexts, self.vocab_size, "contexts")
        out = torch.empty(idx.shape[0], dtype=torch.float64)
        for lo, logp in self._logprob_blocks(idx, offset):
            b = logp.shape[0]
            picked = logp.gather(-1, contexts[lo: lo + b, :, None].to(logp.device)).squeeze(-1).cpu()  # [b, T]
            if mask is not None:
                picked = torch.where(mask[lo: lo + b], picked, torch.zeros_like(picked))
            out[lo: lo + b] = picked.sum(-1)
        return out

    @torch.no_grad()
    def sample(self, prompts: Tensor, num_tokens: int, persona: int | None = None, seed: int = 0) -> Tensor:
        """``[n, T0 + num_tokens]``: each prompt followed by ``num_tokens`` ancestral samples.

        Sampling draws on a CPU generator seeded with ``seed`` (the global RNG is untouched) and
        reuses the network's key-value cache when it returns one. An EOS token is an ordinary sample.
        """
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
            raise InputError(f"num_tokens must be an integer >= 0, got {num_tokens!r}")
        prompts = torch.as_tensor(prompts).long()
        prefix = self.prefix(persona)
        if prompts.dim() != 2:
            raise InputError(f"prompts must be [n, T0], got shape {tuple(prompts.shape)}")
        if prompts.numel() and (int(prompts.min()) < 0 or int(prompts.max()) >= self.vocab_size):
            raise InputError(f"prompts must lie in [0, {self.vocab_size})")
        if prefix.numel() + prompts.shape[1] + num_tokens - 1 > self.max_positions:
            raise InputError(f"prompts of {prompts.shape[1]} tokens and {num_tokens} samples exceed the "
                             f"{self.max_positions} positions the model reads")
        self.network.eval()
        generator = torch.Generator().manual_seed(seed)
        seq = torch.cat([prefix.expand(prompts.shape[0], -1), prompts], 1).to(self.device)  # [n, L]
        step_input, past = seq, None
        for _ in range(num_tokens):  # autoregressive: one position per step, vectorised over n
            cache = {} if past is None else {self._cache: past}
            out = self.network(input_ids=step_input, use_cache=True, **cache)
            probs = out.logits[:, -1, : self.vocab_size].double().softmax(-1).cpu()  # [n, V]
            nxt = torch.multinomial(probs, 1, generator=generator).to(self.device)  # [n, 1]
            seq = torch.cat([seq, nxt], 1)
            past = getattr(out, self._cache, None)
            step_input = seq if past is None else nxt
        return seq[:, prefix.numel():].cpu()

    # ----------------------------------------------------------------- fine-tuning
    def training_module(self) -> nn.Module:
        """A deep copy of the network in train mode (dropout as its config says), every parameter trainable."""
        return CausalLMLoss(copy.deepcopy(self.network)).train().requires_grad_(True)

    def training_batch(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(idx, targets)`` of unprompted documents: ``[start, x_0, ..., x_{T-2}]`` and the masked-in ``x``."""
        tokens = check_token_ids(tokens, self.vocab_size, "evidence tokens", self.max_positions)
        start = torch.full((tokens.shape[0], 1), self.start_id, dtype=torch.long)
        return torch.cat([start, tokens[:, :-1]], 1), torch.where(mask, tokens, IGNORE_INDEX)

    def with_weights(self, state: dict[str, Tensor]) -> HFCausalLM:
        """A frozen model with the weights of a trained :meth:`training_module` (keys ``lm.*``)."""
        network = copy.deepcopy(self.network)
        stripped = {key.removeprefix("lm."): value for key, value in state.items()}
        network.load_state_dict(stripped, strict=True)
        clone = copy.copy(self)
        clone.network = network.eval().requires_grad_(False)
        return clone

    # ----------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens)."""
        if self.tokenizer is None:
            raise InputError("this model has no tokenizer")
        return _encoder(self.tokenizer)(text)

    def decode(self, token: int) -> str:
        """The text of one token id (``<id>`` without a tokenizer)."""
        return f"<{token}>" if self.tokenizer is None else self.tokenizer.decode([token])


class CausalLMLoss(nn.Module):
    """``forward(idx, targets) -> (logits, mean cross-entropy over scored targets)`` around a causal LM.

    ``targets[:, t]`` is the token that follows ``idx[:, t]`` (``-100``: not scored), the
    convention of :class:`~models.transformer.PersonaLM`, so the toolkit's training loop drives both.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, idx: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.lm(input_ids=idx, use_cache=False).logits  # [B, L, V']
        V = logits.shape[-1]
        flat = targets.reshape(-1)
        total = F.cross_entropy(logits.reshape(-1, V).float(), flat, ignore_index=IGNORE_INDEX, reduction="sum")
        return logits, total / (flat != IGNORE_INDEX).sum().clamp(min=1)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
