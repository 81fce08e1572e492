"""Word-rate authorship models in Pyro (after Mosteller & Wallace 1964): written once, they simulate and condition.

Authors are the personas. Author ``a`` uses word ``w`` at a rate ``r[a, w]`` per word of
text; a document of ``n`` words holds ``x[w]`` occurrences of it::

    mu[w]         ~ Normal(mu_loc, mu_scale)              the word's typical log rate
    spread[w]     ~ LogNormal(log spread_median, spread_scale)   how far authors differ on it
    log_rate[a,w] ~ Normal(mu[w], spread[w])              hierarchical: authors around the word
    dispersion[w] ~ HalfNormal(dispersion_scale)          (negative binomial only)
    for each document d of n_d words, written by author a_d:
        x[d, w] ~ Poisson(n_d r[a_d, w])                                  likelihood "poisson"
        x[d, w] ~ NegBinomial(mean n_d r[a_d, w], var mean + dispersion[w] mean^2)   "negbin"

The negative binomial is the gamma-Poisson: each document has its own rate, gamma
distributed around the author's with shape ``1 / dispersion[w]``; M&W found such
over-dispersion essential (their Poisson log-odds are much larger than their negative
binomial ones).

Three kinds of document (:class:`WordRateData`, ``author`` code):

* known (``a_d >= 0``): the author is observed (plate ``known``);
* unknown (``-1``): ``a_d ~ Categorical`` uniform over the document's ``candidates``,
  enumerated in parallel when conditioning (plate ``documents``; site ``author``);
* joint (``-2``): written by the two authors of ``pair[d]``, a share ``share[d] ~ Beta(1, 1)``
  of its words by the first: ``r_d = share r[pair0] + (1 - share) r[pair1]`` (plate ``joint``).

Sites: ``mu``, ``spread``, ``log_rate``, ``dispersion``, ``share``, ``author``, and the
observed ``known_counts``, ``counts``, ``joint_counts``. :func:`count_loglik` is the same
likelihood as a plain function of arrays (for predictive scoring; a test checks it
against the model's density).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from models.errors import InputError

LIKELIHOODS = ("poisson", "negbin")
KNOWN, UNKNOWN, JOINT = 0, -1, -2  # author codes: >= 0 known author, -1 unknown, -2 joint
#: smallest dispersion (the negative binomial tends to the Poisson as it goes to 0)
MIN_DISPERSION = 1e-8


@dataclass(frozen=True)
class WordRatePrior:
    """Hyper-parameters of :func:`word_rate_model` (fixed in advance, not fitted to the attribution).

    Attributes
    ----------
    mu_loc, mu_scale : float
        Normal prior of each word's typical log rate (``exp(-6)`` is about 2.5 per 1,000 words;
        the scale 3 covers ``the`` to the rarest listed words).
    spread_median, spread_scale : float
        Log-normal prior of the author spread of each word's log rates: typically 0.2 (rates
        differing by about 20% between authors), 95% between 0.05 and 0.87, more when the
        data say so (Hamilton's and Madison's log rates of *upon* differ by 2.9). A
        log-normal rather than a half-normal: it keeps the spread off zero, where a word
        on which the authors agree would otherwise open a funnel that NUTS cannot cross
        (measured: every draw divergent on the Federalist).
    dispersion_scale : float
        Half-normal scale of the over-dispersion ``1 / shape`` of the negative binomial.
    """

    mu_loc: float = -6.0
    mu_scale: float = 3.0
    spread_median: float = 0.2
    spread_scale: float = 0.75
    dispersion_scale: float = 1.0


@dataclass(frozen=True)
class WordRateData:
    """Documents of a word-rate model.

    Attributes
    ----------
    lengths : Tensor
        ``[D]`` float64 words in each document (the exposure).
    author : Tensor
        ``[D]`` int64: the author index ``>= 0``, ``-1`` unknown, ``-2`` joint.
    counts : Tensor or None
        ``[D, W]`` float64 counts of the listed words; None simulates.
    candidates : Tensor
        ``[D, K]`` bool, the authors an unknown document may have (uniform prior over them).
    pair : Tensor
        ``[D, 2]`` int64, the authors of a joint document (the share is the first's); ``-1`` elsewhere.
    num_words : int
        ``W``.
    """

    lengths: Tensor
    author: Tensor
    counts: Tensor | None
    candidates: Tensor
    pair: Tensor
    num_words: int

    @property
    def num_authors(self) -> int:
        return self.candidates.shape[1]

    def group(self, code: int) -> Tensor:
        """``[n]`` indices of the known (``code=0``), unknown (-1) or joint (-2) documents."""
        keep = self.author >= 0 if code == KNOWN else self.author == code
        return keep.nonzero().squeeze(-1)

    def without_counts(self) -> WordRateData:
        """The same documents with ``counts=None``: the model then simulates them."""
        return replace(self, counts=None)


def make_data(lengths, author, counts=None, *, num_authors: int, num_words: int | None = None,
              candidates=None, pair=None) -> WordRateData:
    """Validated :class:`WordRateData` (one-line :class:`InputError` naming the bad array).

    ``candidates`` defaults to every author for each unknown document; ``pair`` is needed
    only when a document is joint.
    """
    lengths = torch.as_tensor(lengths, dtype=torch.float64)
    author = torch.as_tensor(author, dtype=torch.int64)
    D = lengths.shape[0] if lengths.dim() == 1 else -1
    if D < 1 or author.shape != (D,):
        raise InputError(f"lengths and author must be [D] with D >= 1, got {tuple(lengths.shape)}, {tuple(author.shape)}")
    if (lengths <= 0).any() or not torch.isfinite(lengths).all():
        raise InputError("every document length must be a positive number of words")
    if isinstance(num_authors, bool) or not isinstance(num_authors, int) or num_authors < 1:
        raise InputError(f"num_authors must be an integer >= 1, got {num_authors!r}")
    if (author < JOINT).any() or (author >= num_authors).any():
        raise InputError(f"author codes must lie in [-2, {num_authors}), found {int(author.min())}..{int(author.max())}")
    if counts is not None:
        counts = torch.as_tensor(counts, dtype=torch.float64)
        if counts.dim() != 2 or counts.shape[0] != D or (counts < 0).any() or (counts != counts.round()).any():
            raise InputError(f"counts must be [D={D}, W] non-negative integers, got shape {tuple(counts.shape)}")
        if (counts.sum(-1) > lengths).any():
            raise InputError("a document has more counted words than its length")
        num_words = counts.shape[1] if num_words is None else num_words
        if counts.shape[1] != num_words:
            raise InputError(f"counts has {counts.shape[1]} words, expected {num_words}")
    if isinstance(num_words, bool) or not isinstance(num_words, int) or num_words < 1:
        raise InputError(f"num_words must be an integer >= 1, got {num_words!r}")
    candidates = torch.ones(D, num_authors, dtype=torch.bool) if candidates is None \
        else torch.as_tensor(candidates, dtype=torch.bool)
    if candidates.shape != (D, num_authors) or not candidates[author == UNKNOWN].any(-1).all():
        raise InputError(f"candidates must be [D={D}, K={num_authors}] bool with a candidate for every unknown document")
    pair = torch.full((D, 2), -1, dtype=torch.int64) if pair is None else torch.as_tensor(pair, dtype=torch.int64)
    joint = author == JOINT
    if pair.shape != (D, 2) or ((pair[joint] < 0) | (pair[joint] >= num_authors)).any() \
            or (pair[joint, 0] == pair[joint, 1]).any():
        raise InputError(f"pair must be [D={D}, 2] with two different authors in [0, {num_authors}) for each joint document")
    return WordRateData(lengths, author, counts, candidates, pair, num_words)


def count_logpmf(counts: Tensor, mean: Tensor, dispersion: Tensor | None) -> Tensor:
    """``log p(counts | mean)`` of every entry: Poisson, or negative binomial (no sum over words).

    Parameters
    ----------
    counts : Tensor
        ``[..., W]`` observed counts.
    mean : Tensor
        ``[..., W]`` expected counts ``n r`` (broadcast against ``counts``).
    dispersion : Tensor or None
        ``[W]`` over-dispersion ``1 / shape`` (negative binomial), None for the Poisson.
    """
    if dispersion is None:
        return counts * mean.log() - mean - torch.lgamma(counts + 1)
    shape = 1 / dispersion.clamp(min=MIN_DISPERSION)  # [W]
    log_total = torch.logaddexp(shape.log(), mean.log())  # log(shape + mean)
    return (torch.lgamma(counts + shape) - torch.lgamma(shape) - torch.lgamma(counts + 1)
            + shape * (shape.log() - log_total) + counts * (mean.log() - log_total))


def count_loglik(counts: Tensor, mean: Tensor, dispersion: Tensor | None) -> Tensor:
    """:func:`count_logpmf` summed over the last (word) axis: ``log p(x_d | mean_d)`` of each document."""
    return count_logpmf(counts, mean, dispersion).sum(-1)


def count_distribution(mean: Tensor, dispersion: Tensor | None) -> dist.Distribution:
    """The per-word count distribution with ``mean`` ``[..., W]`` (event dim 1)."""
    if dispersion is None:
        return dist.Poisson(mean).to_event(1)
    shape = 1 / dispersion.clamp(min=MIN_DISPERSION)
    return dist.GammaPoisson(shape, shape / mean).to_event(1)


def word_rate_model(data: WordRateData, likelihood: str = "negbin", prior: WordRatePrior | None = None) -> Tensor:
    """The word-rate model of the module docstring; simulates when ``data.counts`` is None.

    Returns
    -------
    Tensor
        ``[D, W]`` counts (observed or simulated) of every document.
    """
    if likelihood not in LIKELIHOODS:
        raise InputError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    prior = prior or WordRatePrior()
    K, W = data.num_authors, data.num_words
    f64 = dict(dtype=torch.float64)
    mu = pyro.sample("mu", dist.Normal(torch.full((W,), prior.mu_loc, **f64), prior.mu_scale).to_event(1))  # [W]
    spread = pyro.sample("spread", dist.LogNormal(torch.full((W,), math.log(prior.spread_median), **f64),
                                                  prior.spread_scale).to_event(1))  # [W]
    log_rate = pyro.sample("log_rate", dist.Normal(mu.unsqueeze(-2), spread.unsqueeze(-2)).expand(
        mu.shape[:-1] + (K, W)).to_event(2))  # [K, W]
    dispersion = None
    if likelihood == "negbin":
        dispersion = pyro.sample("dispersion", dist.HalfNormal(
            torch.full((W,), prior.dispersion_scale, **f64)).to_event(1))  # [W]
    rate = log_rate.exp()  # [K, W]
    out = torch.zeros(data.lengths.shape[0], W, **f64) if data.counts is None else data.counts.clone()

    known = data.group(KNOWN)
    if len(known):
        with pyro.plate("known", len(known)):
            mean = data.lengths[known, None] * rate[data.author[known]]  # [Dk, W]
            obs = None if data.counts is None else data.counts[known]
            out[known] = pyro.sample("known_counts", count_distribution(mean, dispersion), obs=obs)
    unknown = data.group(UNKNOWN)
    if len(unknown):
        logits = torch.where(data.candidates[unknown], 0.0, -math.inf).to(torch.float64)  # [Du, K]
        with pyro.plate("documents", len(unknown)):
            a = pyro.sample("author", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})  # [Du] or [K, 1]
            mean = data.lengths[unknown, None] * rate[a]  # [Du, W] or [K, Du, W]
            obs = None if data.counts is None else data.counts[unknown]
            out[unknown] = pyro.sample("counts", count_distribution(mean, dispersion), obs=obs)
    joint = data.group(JOINT)
    if len(joint):
        with pyro.plate("joint", len(joint)):
            share = pyro.sample("share", dist.Beta(torch.ones(len(joint), **f64), 1.0))  # [Dj]
            pair = data.pair[joint]  # [Dj, 2]
            mixed = share[:, None] * rate[pair[:, 0]] + (1 - share[:, None]) * rate[pair[:, 1]]  # [Dj, W]
            obs = None if data.counts is None else data.counts[joint]
            out[joint] = pyro.sample("joint_counts", count_distribution(data.lengths[joint, None] * mixed, dispersion),
                                     obs=obs)
    return out
