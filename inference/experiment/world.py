"""A simulated persona world, its base model, and the evidence of each arm.

* :func:`make_world`: persona tables and held-out contexts (with the persona that wrote each);
* :func:`load_base` / :func:`pretrain_base`: the base transformer ``q0``, pre-trained with
  persona tags (DESIGN.md §3.2), from the shipped checkpoint or trained now;
* :func:`measure_base`: what every arm compares against (``q0`` on the held-out contexts,
  the components of ``R_true`` and ``R_self``, the floors);
* :func:`arm_persona` and :func:`arm_evidence`: who writes an arm's evidence, and the evidence.

Seeds: the world (persona tables, corpus, held-out contexts) comes from ``world.seed``;
evidence, training and inference from the experiment's ``seed`` through :func:`child_seed`.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from inference.comparison import projection
from inference.experiment.config import ArmConfig, ExperimentConfig, WorldConfig
from inference.finetuning.training import pretrain
from inference.runtime import single_thread
from models.counts import Evidence, make_evidence
from models.errors import InputError
from models.lm_checkpoint import load_checkpoint
from models.mixture import simulate_corpus
from models.personas import MarkovPersonas, random_personas
from models.predictive import mixture_logprobs, persona_logprobs
from models.transformer import PersonaLM, TransformerConfig, next_token_logprobs

#: the base checkpoint shipped for the default world (``psm pretrain`` regenerates it)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "data" / "base_default"
#: world fields that do not change what the base was trained on
HELDOUT_FIELDS = ("heldout_contexts",)


@dataclass(frozen=True)
class World:
    """A simulated persona world and its held-out contexts."""

    config: WorldConfig
    personas: MarkovPersonas
    heldout: Tensor  # [n, T] contexts drawn from the persona mixture
    writer: Tensor  # [n] the persona that wrote each held-out context


@dataclass
class Base:
    """The pre-trained base and what every arm compares against."""

    model: PersonaLM
    q0: Tensor  # [n, T, V] next-token log-probs on the held-out contexts
    components_true: Tensor  # [K, n, T, V] the true personas on the held-out contexts
    components_self: Tensor  # [K, n, T, V] the base prompted with each persona tag
    floor_true: projection.Projection
    floor_self: projection.Projection
    summary: dict[str, Any]


def make_world(config: WorldConfig) -> World:
    """Persona tables and held-out contexts of a world (both from ``config.seed``)."""
    personas = random_personas(config.num_personas, config.vocab_size, config.order, config.concentration, seed=config.seed)
    heldout, writer = simulate_corpus(personas, config.heldout_contexts, config.doc_len, seed=config.seed + 1)
    return World(config, personas, heldout, writer)


def model_config(config: ExperimentConfig) -> TransformerConfig:
    """The transformer sizes of an experiment (room for BOS, a tag and a whole document)."""
    w, b = config.world, config.base
    return TransformerConfig(vocab_size=w.vocab_size, num_personas=w.num_personas, block_size=w.doc_len + 2,
                             n_layer=b.n_layer, n_head=b.n_head, n_embd=b.n_embd)


@single_thread
def pretrain_base(config: ExperimentConfig, world: World, progress: bool = False, **checkpoints: Any) -> PersonaLM:
    """Pre-train the base on a fresh corpus of the world, with persona tags (DESIGN.md §3.2).

    ``checkpoints``: ``checkpoint_dir``, ``checkpoint_every``, ``resume`` of :func:`~inference.finetune.pretrain`.
    """
    w, b = config.world, config.base
    tokens, persona = simulate_corpus(world.personas, w.corpus_docs, w.doc_len, seed=w.seed + 2)
    model, _ = pretrain(model_config(config), tokens, persona, p_tag=b.p_tag, steps=b.steps,
                        batch_size=b.batch_size, lr=b.lr, seed=config.seed, progress=progress, **checkpoints)
    return model


def base_source(config: ExperimentConfig) -> Path | None:
    """Where the base comes from: a checkpoint folder, or None to pre-train one now.

    ``base.checkpoint``: ``"auto"`` (the default) is the shipped checkpoint when the world and
    the ``[base]`` settings are the ones it was trained with (the demo's; the experiment seed
    does not matter, as in ``psm demo --seed``), else pre-training; ``"default"`` is the shipped
    checkpoint, always; ``""`` always pre-trains; anything else is a checkpoint folder.
    """
    choice = config.base.checkpoint
    if choice == "":
        return None
    if choice == "default":
        return DEFAULT_CHECKPOINT
    if choice == "auto":
        shipped = json.loads((DEFAULT_CHECKPOINT / "base.json").read_text())["base"]
        trained_on = json.loads((DEFAULT_CHECKPOINT / "world.json").read_text())
        settings = {k: v for k, v in dataclasses.asdict(config.base).items() if k != "checkpoint"}
        same_base = settings == {k: v for k, v in shipped.items() if k != "checkpoint"}
        return DEFAULT_CHECKPOINT if same_base and _same_world(trained_on, config) else None
    return Path(choice)


def _same_world(trained_on: dict[str, Any], config: ExperimentConfig) -> bool:
    ours = {k: v for k, v in dataclasses.asdict(config.world).items() if k not in HELDOUT_FIELDS}
    return {k: v for k, v in trained_on.items() if k not in HELDOUT_FIELDS} == ours


def load_base(config: ExperimentConfig, world: World, progress: bool = False) -> PersonaLM:
    """The base model: from :func:`base_source`'s checkpoint, or pre-trained now."""
    path = base_source(config)
    if path is None:
        return pretrain_base(config, world, progress)
    model = load_checkpoint(path)
    world_file = path / "world.json"
    if world_file.is_file() and not _same_world(json.loads(world_file.read_text()), config):
        raise InputError(f"{path}: the base checkpoint was trained on another world ({world_file}); "
                         "set base.checkpoint = \"\" to pre-train one for this world")
    if model.config != model_config(config):
        raise InputError(f"{path}: checkpoint sizes {model.config} do not match [base]/[world] of the config")
    return model


@single_thread
def measure_base(model: PersonaLM, world: World) -> Base:
    """Held-out NLL against Bayes, the components of both reachable sets, and the floors."""
    personas, heldout = world.personas, world.heldout
    q0 = next_token_logprobs(model, heldout)  # [n, T, V]
    components_true = persona_logprobs(personas, heldout)  # [K, n, T, V]
    components_self = torch.stack([next_token_logprobs(model, heldout, tag=h) for h in range(personas.num_personas)])
    bayes = mixture_logprobs(components_true, heldout, personas.prior.log())  # [n, T, V]
    floor_true = projection.projection_floor(q0, components_true, heldout, init=personas.prior)
    floor_self = projection.projection_floor(q0, components_self, heldout, init=personas.prior)
    summary = {
        "heldout_nll": _nll(q0, heldout),
        "bayes_optimal_nll": _nll(bayes, heldout),
        "floor_true": floor_true.residual,
        "floor_self": floor_self.residual,
        "projection_weights_true": floor_true.weights.tolist(),
        "projection_weights_self": floor_self.weights.tolist(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return Base(model, q0, components_true, components_self, floor_true, floor_self, summary)


def arm_persona(world: World, arm: ArmConfig, seed: int) -> tuple[MarkovPersonas, int | None]:
    """The persona that writes an arm's evidence: a known one, or a fresh one outside the support."""
    if arm.persona == "novel":
        w = world.config
        novel = random_personas(1, w.vocab_size, w.order, arm.concentration, seed=child_seed(seed, "novel", arm.name))
        return novel, None
    return world.personas.subset([arm.persona]), int(arm.persona)


def arm_evidence(writer: MarkovPersonas, arm: ArmConfig, num_docs: int, seed: int) -> Evidence:
    """Documents of the arm's persona; tokens before ``prompt_len`` are context, not evidence."""
    tokens, _ = simulate_corpus(writer, num_docs, arm.doc_len, seed=seed)
    mask = torch.arange(arm.doc_len).expand(num_docs, -1) >= arm.prompt_len
    return make_evidence(tokens.numpy(), mask.numpy())


def _nll(logp: Tensor, tokens: Tensor) -> float:
    return float(-logp.gather(-1, tokens.unsqueeze(-1)).mean())



def child_seed(seed: int, *names: Any) -> int:
    """The seed of one named random choice of the runner, e.g. ``child_seed(seed, "evidence", arm.name)``.

    Stable across processes (a CRC of the names, not Python's salted ``hash``), so a
    notebook can rebuild exactly the evidence an arm used.
    """
    return (seed * 1_000_003 + zlib.crc32(repr(names).encode())) % 2**31
