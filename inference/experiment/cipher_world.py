"""The cipher world: rule personas, ciphers, a corpus with a share ``f`` enciphered, and its base model.

* :func:`make_cipher_world`: the ``K`` rule personas (:func:`models.rules.rule_personas`), the
  ciphers (the identity first, then ``[ciphers] names``) and the held-out contexts on which ``E``
  and ``beta*`` are measured: half plain, half written through the evidence cipher (all from
  ``world.seed``);
* :func:`pretrain_cipher_base`: for one share ``f`` and one seed, a plain corpus of which exactly
  ``round(f N)`` documents are enciphered (the ciphers in turn), and a base pre-trained on it with the
  *joint* persona ``c * K + h`` as its tag (DESIGN.md §3.2; with ``f = 0`` the cipher tags are never
  seen). For one seed the corpus and the training run are the same at every ``f`` except for the
  enciphered documents, and the enciphered sets are nested (``f = 0.1%`` inside ``1%`` inside ``10%``);
* :func:`measure_cipher_base`: the base against the joint persona set *restricted to its support*
  (the personas whose prior ``pi(h) P(c)`` is positive): with ``f = 0`` that is the ``K`` plain
  personas, and every re-weighting, hence ``R_true`` and ``R_self``, leaves the ciphers out.

The joint persona index equals the base's tag index on the support (plain personas first), so the
shared :func:`inference.experiment.world.measure_base` builds ``R_self`` from the right tags.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from inference.experiment.ciphers_config import CiphersExperiment
from inference.experiment.world import Base, World, child_seed, measure_base
from inference.finetuning.training import pretrain
from inference.runtime import single_thread
from models.ciphers import (
    cipher_permutation,
    cipher_prior,
    encipher,
    encipher_personas,
    enciphered_corpus,
    product_personas,
    support,
)
from models.mixture import simulate_corpus
from models.personas import MarkovPersonas
from models.rules import conjugate_rule, rule_map, rule_personas
from models.transformer import PersonaLM, TransformerConfig


@dataclass(frozen=True)
class CipherWorld:
    """The personas, the ciphers and the held-out contexts of a cipher experiment."""

    config: CiphersExperiment
    personas: MarkovPersonas  # K plain rule personas (order lag)
    bigram: Tensor  # [K, V, V] what each persona writes when the rule is silent
    rule: Tensor  # [V] g, the rule in plain text
    sigmas: list[Tensor]  # C + 1 substitutions [V]: the identity, then [ciphers] names
    evidence_cipher: int  # index of the evidence's cipher in sigmas (>= 1)
    heldout: Tensor  # [n, T] contexts: half plain, half in the evidence cipher
    heldout_writer: Tensor  # [n] joint persona c * K + h of each

    @property
    def num_personas(self) -> int:
        return self.personas.num_personas

    def joint(self, share: float) -> MarkovPersonas:
        """The ``K * (C + 1)`` joint personas ``(h, c)`` with prior ``pi(h) P(c)`` at share ``f``."""
        return product_personas(self.personas, self.sigmas, cipher_prior(share, len(self.sigmas) - 1))

    def writer(self, cipher: int) -> MarkovPersonas:
        """The evidence persona writing through cipher ``cipher`` (0: plain), as one persona."""
        h = self.config.evidence.persona
        return encipher_personas(self.personas.subset([h]), self.sigmas[cipher])

    def writer_index(self, cipher: int) -> int:
        """The joint index ``c * K + h`` of the evidence persona in cipher ``cipher``."""
        return cipher * self.num_personas + self.config.evidence.persona

    def rule_in(self, cipher: int) -> tuple[Tensor, Tensor]:
        """The rule ``sigma g sigma^-1`` and the evidence persona's bigram ``[V, V]`` as they read in cipher ``cipher``."""
        sigma = self.sigmas[cipher]
        inv = torch.empty_like(sigma).scatter_(0, sigma, torch.arange(len(sigma)))
        bigram = self.bigram[self.config.evidence.persona]
        return conjugate_rule(self.rule, sigma), bigram[inv][:, inv]


def make_cipher_world(config: CiphersExperiment) -> CipherWorld:
    """The world of a cipher experiment (module docstring); everything from ``world.seed``."""
    w, c = config.world, config.ciphers
    personas, bigram = rule_personas(w.num_personas, w.vocab_size, lag=w.lag, rule_prob=w.rule_prob,
                                     shift=w.rule_shift, concentration=w.concentration, seed=w.seed)
    sigmas = [torch.arange(w.vocab_size)] + [cipher_permutation(name, w.vocab_size) for name in c.names]
    ev = 1 + list(c.names).index(c.evidence)
    half = w.heldout_contexts // 2
    plain, who_plain = simulate_corpus(personas, half, w.doc_len, seed=w.seed + 1)
    other, who_other = simulate_corpus(personas, w.heldout_contexts - half, w.doc_len, seed=w.seed + 2)
    heldout = torch.cat([plain, encipher(other, sigmas[ev])])
    writer = torch.cat([who_plain, ev * w.num_personas + who_other])
    return CipherWorld(config, personas, bigram, rule_map(w.vocab_size, w.rule_shift), sigmas, ev, heldout, writer)


def base_config(config: CiphersExperiment) -> TransformerConfig:
    """The base's sizes: a tag per joint persona, room for BOS, a tag and a whole document."""
    w, b = config.world, config.base
    return TransformerConfig(vocab_size=w.vocab_size, num_personas=w.num_personas * (1 + len(config.ciphers.names)),
                             block_size=w.doc_len + 2, n_layer=b.n_layer, n_head=b.n_head, n_embd=b.n_embd)


@single_thread
def pretrain_cipher_base(world: CipherWorld, share: float, seed: int, progress: bool = False) -> PersonaLM:
    """Pre-train the base on a corpus with a share ``f`` of enciphered documents (module docstring)."""
    config = world.config
    w, b = config.world, config.base
    tokens, persona = simulate_corpus(world.personas, w.corpus_docs, w.doc_len, seed=child_seed(seed, "corpus"))
    tokens, joint = enciphered_corpus(tokens, persona, world.sigmas[1:], share, w.num_personas,
                                      seed=child_seed(seed, "encipher"))
    model, _ = pretrain(base_config(config), tokens, joint, p_tag=b.p_tag, steps=b.steps, batch_size=b.batch_size,
                        lr=b.lr, seed=child_seed(seed, "pretrain"), progress=progress)
    return model


@single_thread
def measure_cipher_base(model: PersonaLM, world: CipherWorld, share: float) -> tuple[Base, World]:
    """The base against the supported joint personas: ``(Base, World)`` for the shared comparisons.

    The returned :class:`~inference.experiment.world.World` holds the supported joint personas
    (their prior renormalised), the held-out contexts and their writers (joint indices).
    """
    joint = world.joint(share)
    index = support(joint)
    if not torch.equal(index, torch.arange(len(index))):  # plain personas first: f = 0 keeps 0..K-1
        raise AssertionError("the support of the joint personas must be a prefix of the tag indices")
    reachable = World(world.config.world, joint.subset(index), world.heldout, world.heldout_writer)
    return measure_base(model, reachable), reachable
