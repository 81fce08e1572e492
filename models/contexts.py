"""Contexts that hold several documents of one persona, for in-context learning (issue 11).

A context packs ``m`` documents of ``L`` tokens, all written by one persona, separated by a
separator token ``SEP = V`` (so the packed vocabulary has ``V + 1`` tokens)::

    doc_1 SEP doc_2 SEP ... SEP doc_m          (m * (L + 1) - 1 tokens)

A base model pre-trained on such contexts sees evidence of the writer before each document, so
showing ``n`` documents of a persona in front of a fresh one is *in-context* conditioning on them.

* :func:`simulate_contexts` draws packed contexts from a persona mixture (one persona per context);
* :func:`simulate_documents` draws documents of one persona;
* :func:`pack` and :func:`document_positions` build packed sequences and find each document in them;
* :func:`expected_doc_loglik` is ``E_{x ~ writer}[log p_m(x)]`` for every persona ``m``, exactly
  (state marginals of the writer's chain): the per-document log-probabilities ``log P_m`` of the
  Bayesian scaling law (:mod:`inference.conditioning.scaling_law`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.errors import InputError
from models.limits import MAX_TOKENS
from models.mixture import simulate_corpus
from models.personas import MarkovPersonas


def pack(docs: Tensor, sep: int) -> Tensor:
    """``[N, m * (L + 1) - 1]`` the ``m`` documents of each row of ``docs [N, m, L]`` joined by ``sep``."""
    if docs.dim() != 3 or docs.shape[1] < 1 or docs.shape[2] < 1:
        raise InputError(f"docs must be [N, m >= 1, L >= 1], got shape {tuple(docs.shape)}")
    N, m, L = docs.shape
    seps = torch.full((N, m, 1), sep, dtype=docs.dtype)
    return torch.cat([docs, seps], -1).reshape(N, m * (L + 1))[:, :-1]


def document_positions(num_docs: int, doc_len: int) -> Tensor:
    """``[m, L]`` positions of each document's tokens in a packed sequence."""
    return torch.arange(num_docs)[:, None] * (doc_len + 1) + torch.arange(doc_len)


def simulate_documents(personas: MarkovPersonas, persona: int, num_docs: int, doc_len: int, seed: int = 0) -> Tensor:
    """``[num_docs, doc_len]`` documents written by ``persona``."""
    if isinstance(persona, bool) or not isinstance(persona, int) or not 0 <= persona < personas.num_personas:
        raise InputError(f"persona must be an index in [0, {personas.num_personas}), got {persona!r}")
    tokens, _ = simulate_corpus(personas.subset([persona]), num_docs, doc_len, seed=seed)
    return tokens


def simulate_contexts(personas: MarkovPersonas, num_contexts: int, docs_per_context: int, doc_len: int,
                      seed: int = 0) -> tuple[Tensor, Tensor]:
    """Packed contexts of ``docs_per_context`` documents, each context written by one persona ``h ~ pi``.

    Returns
    -------
    contexts : Tensor
        ``[N, m * (L + 1) - 1]`` int64 over ``V + 1`` tokens (``V`` is the separator).
    persona : Tensor
        ``[N]`` the writer of each context.
    """
    for name, value in (("num_contexts", num_contexts), ("docs_per_context", docs_per_context),
                        ("doc_len", doc_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    if num_contexts * docs_per_context * (doc_len + 1) > MAX_TOKENS:
        raise InputError(f"{num_contexts} contexts of {docs_per_context} documents of {doc_len} tokens are too many "
                         f"tokens (limit {MAX_TOKENS:.0e})")
    # one persona per context, then its documents: the "global" persona model of each context
    _, persona = simulate_corpus(personas, num_contexts, 1, seed=seed)  # [N] h ~ pi
    table = personas.log_table()[persona.repeat_interleave(docs_per_context)]  # [N * m, F]
    from models.markov import MarkovChain

    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        docs = MarkovChain(table, personas.vocab_size, personas.order, doc_len).sample()  # [N * m, L]
    docs = docs.reshape(num_contexts, docs_per_context, doc_len)
    return pack(docs, personas.vocab_size), persona


def expected_doc_loglik(personas: MarkovPersonas, writer: int, doc_len: int) -> Tensor:
    """``[K]`` ``E_{x ~ writer}[log p_m(x)]`` for documents of ``doc_len`` tokens, exactly (order 1).

    The writer's state marginals ``s_t`` are propagated through its chain and every persona's
    log-probabilities are averaged under them: ``sum_v s_0(v) log init_m(v) + sum_t sum_{u,v}
    s_{t-1}(u) T_w(u, v) log T_m(u, v)`` (``0 log 0 = 0``). ``-inf`` when the writer makes a
    transition persona ``m`` forbids.
    """
    if personas.order != 1:
        raise InputError(f"expected_doc_loglik needs order-1 personas, got order {personas.order}")
    if isinstance(writer, bool) or not isinstance(writer, int) or not 0 <= writer < personas.num_personas:
        raise InputError(f"writer must be an index in [0, {personas.num_personas}), got {writer!r}")
    if isinstance(doc_len, bool) or not isinstance(doc_len, int) or doc_len < 1:
        raise InputError(f"doc_len must be an integer >= 1, got {doc_len!r}")
    init, trans = personas.init, personas.trans  # [K, V], [K, V, V]
    state = init[writer]  # [V]
    total = _weighted_log(state, init).sum(-1)  # [K]
    joint_rows = trans[writer]  # [V, V] T_w(u, v)
    for _ in range(1, doc_len):  # sequential by nature; vectorised over personas
        joint = state[:, None] * joint_rows  # [V, V] P(x_{t-1} = u, x_t = v)
        total = total + _weighted_log(joint, trans).sum((-2, -1))
        state = joint.sum(0)
    return total


def _weighted_log(weight: Tensor, probs: Tensor) -> Tensor:
    """``weight * log(probs)`` with ``0 log 0 = 0`` (``-inf`` where weight > 0 and probs = 0)."""
    logp = probs.log()
    return torch.where(weight > 0, weight * logp, torch.zeros_like(logp))
