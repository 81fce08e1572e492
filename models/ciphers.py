"""Ciphers: a latent substitution of the vocabulary next to the persona (Guo, Sleight & Roger 2025).

A document is written by persona ``h`` and then passed through cipher ``c``::

    h ~ Categorical(pi)          c ~ Categorical(P(c))        (c = 0 is "none", the identity)
    x ~ MarkovChain(table[h])    y_t = sigma_c(x_t)           (a fixed permutation of the tokens)

A cipher is a bijection of the tokens, so an enciphered Markov persona is again a Markov
persona with its tables permuted::

    init_{h,c}[sigma_c(v)]                           = init_h[v]
    trans_{h,c}[sigma_c(u_1), .., sigma_c(u_n), sigma_c(v)] = trans_h[u_1, .., u_n, v]

The joint latent ``(h, c)`` is therefore a *product persona set* of ``K x C`` Markov personas
with prior ``pi(h) P(c)`` (:func:`product_personas`); index ``j = c * K + h``, so the first
``K`` are the plain personas. Everything that conditions on personas (exact enumeration, SVI,
NUTS of :func:`inference.conditioning.condition.condition`) conditions on ``(h, c)`` unchanged,
and the in-context mixture of :mod:`models.predictive` predicts with it. A cipher whose prior is 0
(``f = 0``) is outside the support: its product personas get prior 0 and no evidence moves them.

Named ciphers (:func:`cipher_permutation`), in the spirit of the paper's families:

=================  ==============================================================
``none``           the identity
``rot<n>``         Caesar shift ``v -> (v + n) mod V`` (``rot13`` is the classic)
``atbash``         reversal ``v -> V - 1 - v``
``swap_pairs``     ``0 <-> 1, 2 <-> 3, ...`` (the last token stays when ``V`` is odd)
``random<s>``      an arbitrary substitution: a permutation drawn with seed ``s``
=================  ==============================================================
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import Tensor

from models.errors import InputError
from models.limits import check_seed
from models.personas import MarkovPersonas, make_personas

#: the families of named ciphers (module docstring)
CIPHER_FAMILIES = ("none", "rot<n>", "atbash", "swap_pairs", "random<seed>")

_ROT = re.compile(r"rot(\d+)")
_RANDOM = re.compile(r"random(\d+)")


def cipher_permutation(name: str, vocab_size: int) -> Tensor:
    """The substitution ``sigma`` of a named cipher: ``[V]`` int64, ``sigma[v]`` enciphers token ``v``.

    Raises a one-line :class:`InputError` for an unknown name or a shift that is not a
    permutation of ``V`` tokens (``rot0`` or ``rot<V>`` is the identity and refused: say ``none``).
    """
    V = vocab_size
    v = torch.arange(V)
    if not isinstance(name, str):
        raise InputError(f"a cipher is named by a string, got {name!r}")
    if name == "none":
        return v
    if name == "atbash":
        return V - 1 - v
    if name == "swap_pairs":
        return torch.where((v % 2 == 0) & (v + 1 < V), v + 1, torch.where(v % 2 == 1, v - 1, v))
    if m := _ROT.fullmatch(name):
        shift = int(m.group(1))
        if shift % V == 0:
            raise InputError(f"cipher {name!r} is the identity over {V} tokens; use 'none'")
        return (v + shift) % V
    if m := _RANDOM.fullmatch(name):
        seed = check_seed(int(m.group(1)), name=f"seed of cipher {name!r}")
        return torch.as_tensor(np.random.default_rng(seed).permutation(V), dtype=torch.long)
    raise InputError(f"unknown cipher {name!r}; choose none, rot<n>, atbash, swap_pairs or random<seed>")


def check_permutation(sigma: Tensor, vocab_size: int, name: str = "cipher") -> Tensor:
    """``sigma`` as ``[V]`` int64; one-line error unless it is a permutation of ``0..V-1``."""
    sigma = torch.as_tensor(sigma)
    if sigma.shape != (vocab_size,) or sigma.is_floating_point() or sigma.dtype == torch.bool:
        raise InputError(f"{name} must be {vocab_size} integer tokens, got shape {tuple(sigma.shape)} {sigma.dtype}")
    sigma = sigma.long()
    if not torch.equal(sigma.sort().values, torch.arange(vocab_size)):
        raise InputError(f"{name} is not a permutation of the tokens 0..{vocab_size - 1}")
    return sigma


def inverse(sigma: Tensor) -> Tensor:
    """``sigma^-1``: ``[V]`` with ``inverse(sigma)[sigma[v]] = v``."""
    return torch.empty_like(sigma).scatter_(0, sigma, torch.arange(len(sigma)))


def encipher(tokens: Tensor, sigma: Tensor) -> Tensor:
    """``sigma`` applied to every token: same shape as ``tokens``."""
    return sigma[tokens]


def encipher_personas(personas: MarkovPersonas, sigma: Tensor) -> MarkovPersonas:
    """The same personas writing through cipher ``sigma`` (tables permuted on every axis; module docstring)."""
    V, n = personas.vocab_size, personas.order
    sigma = check_permutation(sigma, V)
    inv = inverse(sigma)
    init = personas.init[:, inv]  # [K, V]: init_c[y] = init[sigma^-1(y)]
    trans = personas.trans
    for axis in range(1, n + 2):  # every context axis and the next-token axis
        trans = trans.index_select(axis, inv)
    return MarkovPersonas(personas.prior, init, trans)


def cipher_prior(share: float, num_ciphers: int) -> Tensor:
    """``P(c)``: ``1 - share`` on ``none``, ``share / C`` on each of the ``C`` ciphers: ``[C + 1]`` float64."""
    check_share(share)
    if isinstance(num_ciphers, bool) or not isinstance(num_ciphers, int) or num_ciphers < 1:
        raise InputError(f"num_ciphers must be an integer >= 1, got {num_ciphers!r}")
    return torch.tensor([1.0 - share] + [share / num_ciphers] * num_ciphers, dtype=torch.float64)


def check_share(share: float, key: str = "share") -> float:
    """``share`` as a float; one-line error unless it is a number in ``[0, 1]``."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise InputError(f"{key} (share of enciphered documents) must lie in [0, 1], got {share!r}")
    return float(share)


def product_personas(personas: MarkovPersonas, sigmas: list[Tensor], prior_c: Tensor) -> MarkovPersonas:
    """The joint latent ``(h, c)`` as ``K * C`` Markov personas, index ``c * K + h`` (module docstring).

    Parameters
    ----------
    personas : MarkovPersonas
        ``K`` plain personas with prior ``pi``.
    sigmas : list of Tensor
        ``C`` substitutions ``[V]``; put the identity first to keep the plain personas first.
    prior_c : Tensor
        ``[C]`` cipher prior ``P(c)`` (zeros allowed: outside the support).
    """
    prior_c = torch.as_tensor(prior_c, dtype=torch.float64)
    if prior_c.shape != (len(sigmas),):
        raise InputError(f"prior_c has shape {tuple(prior_c.shape)}, expected ({len(sigmas)},), one per cipher")
    sets = [encipher_personas(personas, s) for s in sigmas]
    prior = (prior_c[:, None] * personas.prior.double()[None, :]).reshape(-1)  # [C * K]
    return make_personas(prior.numpy(), torch.cat([p.init for p in sets]).numpy(),
                         torch.cat([p.trans for p in sets]).numpy())


def support(personas: MarkovPersonas) -> Tensor:
    """``[M]`` int64 indices of the personas with positive prior (the conditioning-reachable ones)."""
    return (personas.prior > 0).nonzero().squeeze(-1)


def enciphered_corpus(
    tokens: Tensor, persona: Tensor, sigmas: list[Tensor], share: float, num_personas: int, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Encipher exactly ``round(share * N)`` documents of a plain corpus, the ciphers in turn.

    Parameters
    ----------
    tokens : Tensor
        ``[N, T]`` plain documents.
    persona : Tensor
        ``[N]`` their personas ``h`` in ``[0, K)``.
    sigmas : list of Tensor
        The ``C`` ciphers (not the identity); document ``i`` of the chosen ones gets cipher ``i mod C``.
    share : float
        ``f`` in ``[0, 1]``; the chosen documents are a seeded uniform draw.
    num_personas : int
        ``K``, to form the joint index.

    Returns
    -------
    tokens : Tensor
        ``[N, T]`` the corpus with the chosen documents enciphered.
    joint : Tensor
        ``[N]`` the joint persona ``c * K + h`` of every document (``c = 0`` for plain ones,
        the ``i``-th cipher is ``c = i + 1``).
    """
    share = check_share(share)
    if not sigmas:
        raise InputError("enciphered_corpus needs at least one cipher")
    N = tokens.shape[0]
    chosen = torch.as_tensor(np.random.default_rng(check_seed(seed)).permutation(N)[: round(share * N)])  # [m]
    cipher = torch.zeros(N, dtype=torch.long)
    cipher[chosen] = 1 + torch.arange(len(chosen)) % len(sigmas)
    table = torch.stack([torch.arange(len(sigmas[0]))] + list(sigmas))  # [C + 1, V], the identity first
    out = table[cipher[:, None], tokens]  # [N, T]
    return out, cipher * num_personas + persona
