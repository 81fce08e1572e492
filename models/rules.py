"""Persona families with a long-range rule inside the sequence, and documents that follow a rule.

**Rule personas** (:func:`rule_personas`): a Markov persona that also "closes what it opened
``lag`` tokens earlier". With probability ``rho`` the next token is a fixed function ``g`` of
the token ``lag`` positions back, otherwise it follows the persona's own bigram ``B_h``::

    p(x_t = v | x_<t, h) = rho * 1[v = g(x_{t-lag})] + (1 - rho) * B_h[x_{t-1}, v]

(positions before the start read as the first token, as for every Markov persona in
:mod:`models.personas`, so ``x_{t-lag}`` is ``x_0`` while ``t <= lag``). ``g(v) = (v + shift) mod V``
is shared by every persona: a skill of the whole world, like a bracket that closes the one
opened earlier (``shift = 0`` is plain copying). The persona is exactly a Markov persona of
order ``lag`` (its table has ``V**(lag + 1)`` rows' entries), so exact conditioning, the
in-context mixture and ciphers (:mod:`models.ciphers`) apply unchanged. Under a cipher ``sigma``
the rule becomes the conjugate ``sigma g sigma^-1`` (:func:`conjugate_rule`): to apply it in
cipher a model must compose the rule with the cipher ("reasoning in cipher"). A Caesar shift
commutes with ``g`` (``rot<n>`` leaves the rule unchanged); ``atbash`` turns it into ``v - shift``;
an arbitrary substitution into an arbitrary permutation.

**Periodic documents** (:func:`periodic_documents`): the first ``period`` tokens come from a
persona, then every token repeats the one ``period`` positions back, deterministically. No
Markov persona of lower order has this rule: it is a capability outside the persona support
(the elicitation experiment's "teaching" evidence).
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.errors import InputError
from models.limits import check_sizes
from models.mixture import simulate_corpus
from models.personas import MarkovPersonas, make_personas, random_personas


def rule_map(vocab_size: int, shift: int) -> Tensor:
    """``g``: ``[V]`` int64, ``g[v] = (v + shift) mod V``."""
    if isinstance(shift, bool) or not isinstance(shift, int):
        raise InputError(f"rule shift must be an integer, got {shift!r}")
    return (torch.arange(vocab_size) + shift) % vocab_size


def conjugate_rule(rule: Tensor, sigma: Tensor) -> Tensor:
    """The rule as it reads in cipher ``sigma``: ``sigma g sigma^-1`` (``[V]`` int64)."""
    inv = torch.empty_like(sigma).scatter_(0, sigma, torch.arange(len(sigma)))
    return sigma[rule[inv]]


def rule_personas(
    num_personas: int,
    vocab_size: int,
    *,
    lag: int,
    rule_prob: float,
    shift: int = 1,
    concentration: float = 0.3,
    seed: int = 0,
    prior: Tensor | None = None,
) -> tuple[MarkovPersonas, Tensor]:
    """``K`` rule personas (module docstring) as Markov personas of order ``lag``.

    Parameters
    ----------
    num_personas, vocab_size : int
        ``K >= 1`` and ``V >= 2``.
    lag : int
        How far back the rule reads, ``>= 1``.
    rule_prob : float
        ``rho`` in ``[0, 1]``: how often the rule writes the next token.
    shift : int
        ``g(v) = (v + shift) mod V``.
    concentration, seed, prior
        Of the bigram rows and first-token distributions, as in :func:`~models.personas.random_personas`.

    Returns
    -------
    personas : MarkovPersonas
        Order ``lag``; ``trans`` has shape ``[K] + [V] * (lag + 1)``.
    bigram : Tensor
        ``[K, V, V]`` each persona's own bigram ``B_h`` (what it writes when the rule is silent).
    """
    if isinstance(lag, bool) or not isinstance(lag, int) or lag < 1:
        raise InputError(f"lag must be an integer >= 1, got {lag!r}")
    if isinstance(rule_prob, bool) or not isinstance(rule_prob, (int, float)) or not 0 <= rule_prob <= 1:
        raise InputError(f"rule_prob must be a probability in [0, 1], got {rule_prob!r}")
    check_sizes(num_personas=num_personas, vocab_size=vocab_size, order=lag)
    plain = random_personas(num_personas, vocab_size, 1, concentration, seed=seed, prior=prior)
    K, V = num_personas, vocab_size
    bigram = plain.trans  # [K, V, V]
    rule = torch.nn.functional.one_hot(rule_map(V, shift), V).double()  # [V (x_{t-lag}), V (next)]
    ones = [1] * (lag - 1)
    trans = (rule_prob * rule.reshape(1, V, *ones, V)
             + (1 - rule_prob) * bigram.reshape(K, *ones, V, V)).expand(K, *[V] * (lag + 1))
    # [K, V (x_{t-lag}), ..., V (x_{t-1}), V (next)]; the axes in between do not matter
    return make_personas(plain.prior.numpy(), plain.init.numpy(), trans.numpy()), bigram


def rule_targets(tokens: Tensor, lag: int, rule: Tensor) -> Tensor:
    """Where the rule points at every position: ``[n, T]`` int64, ``g(x_{max(t - lag, 0)})`` (``-1`` at ``t = 0``)."""
    T = tokens.shape[1]
    source = (torch.arange(T) - lag).clamp(min=0)  # [T]
    targets = rule[tokens[:, source]]  # [n, T]
    targets[:, 0] = -1
    return targets


def bigram_probs(bigram: Tensor, tokens: Tensor, targets: Tensor) -> Tensor:
    """``B[x_{t-1}, target_t]`` at every position ``t >= 1``: ``[n, T]`` float64 (0 at ``t = 0``).

    ``bigram`` is one persona's ``[V, V]`` table (enciphered with the text when the text is).
    """
    prev = torch.cat([tokens[:, :1], tokens[:, :-1]], 1)  # [n, T] x_{t-1}
    out = bigram[prev, targets.clamp(min=0)]  # [n, T]
    out[:, 0] = 0.0
    return out


def periodic_documents(writer: MarkovPersonas, num_docs: int, doc_len: int, period: int, seed: int = 0) -> Tensor:
    """``[n, T]`` documents whose first ``period`` tokens come from ``writer`` and repeat from there on.

    ``x_t = x_{t - period}`` for ``t >= period``: a deterministic rule no Markov persona of order
    below ``period`` has (module docstring).
    """
    if isinstance(period, bool) or not isinstance(period, int) or not 1 <= period < doc_len:
        raise InputError(f"period must be an integer in [1, doc_len={doc_len}), got {period!r}")
    tokens, _ = simulate_corpus(writer, num_docs, doc_len, seed=seed)
    return tokens[:, torch.arange(doc_len) % period]
