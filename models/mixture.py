"""The persona models in Pyro: written once, they simulate and they condition.

One function, :func:`persona_model`, is both the generator of synthetic
corpora (call it with ``tokens=None``) and the likelihood that
:mod:`inference` conditions (call it with the evidence). Two evidence models:

``global`` (persona selection: the fine-tuned model *is* one persona)::

    h ~ Categorical(pi)
    for d in documents:  x_d ~ MarkovChain(table[h])        (tempered by beta)

``mixture`` (each evidence document has its own persona)::

    w ~ Dirichlet(alpha)              (or w = pi when alpha is None)
    for d in documents:
        z_d ~ Categorical(w)           (enumerated in parallel when conditioning)
        x_d ~ MarkovChain(table[z_d])  (tempered by beta)

With a :class:`~models.personas.TablePrior` the persona tables are uncertain
too: ``init[k] ~ Dirichlet(a_init[k])`` and ``trans[k, c] ~
Dirichlet(a_trans[k, c])``. Learned personas can swap labels; the toolkit
anchors them instead (:func:`~models.personas.anchored_table_prior` centres
persona ``k``'s prior on a known table ``k``), so label ``k`` keeps its
meaning and R-hat stays honest.

Site names: ``w``, ``init``, ``trans``, ``persona``, ``tokens``.
Plates: ``personas`` (tables), ``documents`` (dim -1).
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.ops.indexing import Vindex
from torch import Tensor

from models.counts import TransitionCounts
from models.errors import InputError
from models.limits import EVIDENCE_MODELS, MAX_TOKENS, check_seed
from models.markov import MarkovChain
from models.personas import MarkovPersonas, TablePrior


def persona_model(
    personas: MarkovPersonas,
    num_docs: int,
    doc_len: int,
    *,
    tokens: Tensor | None = None,
    mask: Tensor | None = None,
    counts: TransitionCounts | None = None,
    evidence: str = "mixture",
    beta: float = 1.0,
    alpha: Tensor | None = None,
    table_prior: TablePrior | None = None,
    subsample_size: int | None = None,
) -> Tensor:
    """Persona model of ``num_docs`` documents of ``doc_len`` tokens.

    Parameters
    ----------
    personas : MarkovPersonas
        Persona prior ``pi`` and (known, or prior-mean) tables.
    num_docs, doc_len : int
        ``D`` and ``T``.
    tokens : Tensor, optional
        ``[D, T]`` observed documents; ``None`` simulates.
    mask : Tensor, optional
        ``[D, T]`` bool, which observed tokens are evidence.
    counts : TransitionCounts, optional
        Precomputed statistics of ``tokens`` under ``mask`` (faster scoring).
    evidence : {"global", "mixture"}
        The evidence model (module docstring).
    beta : float
        Tempering exponent of the evidence likelihood.
    alpha : Tensor, optional
        ``[K]`` Dirichlet concentration of uncertain persona weights
        (``mixture`` only); ``None`` fixes ``w = pi``.
    table_prior : TablePrior, optional
        Dirichlet priors that make the persona tables uncertain.
    subsample_size : int, optional
        Minibatch of documents (SVI); log-likelihoods are rescaled by Pyro.

    Returns
    -------
    Tensor
        ``[D, T]`` (or ``[B, T]`` when subsampling) documents.
    """
    if evidence not in EVIDENCE_MODELS:
        raise InputError(f"unknown evidence model {evidence!r}; choose one of {', '.join(EVIDENCE_MODELS)}")
    K, V, n = personas.num_personas, personas.vocab_size, personas.order

    if table_prior is None:
        log_table = personas.log_table()  # [K, F]
    else:
        with pyro.plate("personas", K):
            init = pyro.sample("init", dist.Dirichlet(table_prior.init))  # [K, V]
            trans = pyro.sample("trans", dist.Dirichlet(table_prior.trans).to_event(1))  # [K, C, V]
        log_table = torch.cat([init.log(), trans.log().flatten(-2)], dim=-1)  # [..., K, F]

    def emission(persona: Tensor, index: Tensor | None) -> MarkovChain:
        table = Vindex(log_table)[..., persona, :]  # [..., F] per document or per enumerated persona
        doc_mask = mask if mask is None or index is None else mask[index]
        doc_counts = counts if counts is None or index is None else counts.select(index)
        return MarkovChain(table, V, n, doc_len, mask=doc_mask, beta=beta, counts=doc_counts)

    if evidence == "global":
        if alpha is not None:
            raise InputError("alpha (uncertain persona weights) belongs to the mixture model; the global model uses the prior pi")
        h = pyro.sample("persona", dist.Categorical(personas.prior), infer={"enumerate": "parallel"})
        with pyro.plate("documents", num_docs, subsample_size=subsample_size) as index:
            index = index if subsample_size else None
            obs = tokens if tokens is None or index is None else tokens[index]
            return pyro.sample("tokens", emission(h, index), obs=obs)

    w = personas.prior if alpha is None else pyro.sample("w", dist.Dirichlet(alpha))  # [K]
    with pyro.plate("documents", num_docs, subsample_size=subsample_size) as index:
        index = index if subsample_size else None
        z = pyro.sample("persona", dist.Categorical(w), infer={"enumerate": "parallel"})  # [D] or [K, 1]
        obs = tokens if tokens is None or index is None else tokens[index]
        return pyro.sample("tokens", emission(z, index), obs=obs)


def simulate_corpus(
    personas: MarkovPersonas,
    num_docs: int,
    doc_len: int,
    seed: int = 0,
    evidence: str = "mixture",
    alpha: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Simulate a corpus by running :func:`persona_model` forward.

    Returns
    -------
    tokens : Tensor
        ``[D, T]`` int64 documents.
    persona : Tensor
        ``[D]`` int64 persona of each document.
    """
    _check_simulation(personas, num_docs, doc_len, evidence, alpha)
    seed = check_seed(seed, high=2**63 - 1)  # torch's range (the world offsets its seed by a few)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        trace = poutine.trace(persona_model).get_trace(
            personas, num_docs, doc_len, evidence=evidence, alpha=alpha
        )
    tokens = trace.nodes["tokens"]["value"]
    persona = trace.nodes["persona"]["value"].expand(num_docs).clone()
    return tokens, persona


def _check_simulation(personas: MarkovPersonas, num_docs, doc_len, evidence: str, alpha) -> None:
    """One-line errors before tracing (Pyro appends its trace tables to errors raised inside a trace)."""
    for name, value in (("num_docs", num_docs), ("doc_len", doc_len)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    if int(num_docs) * int(doc_len) > MAX_TOKENS:  # Python ints: NumPy scalars would overflow
        raise InputError(f"a corpus of {num_docs} x {doc_len} tokens is too large "
                         f"(limit {MAX_TOKENS:.0e} tokens)")
    if evidence not in EVIDENCE_MODELS:
        raise InputError(f"unknown evidence model {evidence!r}; choose one of {', '.join(EVIDENCE_MODELS)}")
    if alpha is None:
        return
    if evidence == "global":
        raise InputError("alpha (uncertain persona weights) belongs to the mixture model; the global model uses the prior pi")
    try:
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"alpha must be {personas.num_personas} positive numbers, got {alpha!r}") from None
    if alpha.shape != (personas.num_personas,) or not torch.isfinite(alpha).all() or (alpha <= 0).any():
        raise InputError(f"alpha must be {personas.num_personas} finite positive numbers, got {alpha.tolist()}")
