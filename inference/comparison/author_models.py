"""Author models fitted on chunks of known authors, and the scores of new chunks under them.

    models = fit_author_models(train_words, train_authors, names, seed=0)
    scores = score_chunks(models, chunk_words)          # method -> [N, K] log-likelihoods or log-probabilities
    posterior = author_log_probs(scores["negbin"])      # [N, K], uniform prior over the known authors

One fit holds every attribution method on the same training chunks:

* the word-rate models (:mod:`models.wordrates`), NUTS over the rates
  (:func:`inference.conditioning.wordrates.fit_word_rates`) on the counts of the
  ``num_words`` most frequent words of the training chunks; a new chunk is scored by its
  posterior predictive ``log p(x | author)``;
* the character n-gram personas (:mod:`models.ngrams`), exact conjugate posterior and
  Dirichlet-multinomial predictive;
* Burrows' Delta, cosine Delta and the logistic regression of
  :mod:`inference.comparison.stylometry` on the same word frequencies (the Deltas'
  temperatures are set later by :func:`fit_temperatures` on chunks not used in training).

:data:`LIKELIHOOD_METHODS` return log-likelihoods ``[N, K]`` (the posterior with a uniform
prior is their softmax); the baselines return log-probabilities directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.special import log_softmax

from inference.comparison import stylometry
from inference.conditioning.wordrates import (
    WordRateFit,
    fit_word_rates,
    new_author_loglik,
    predictive_loglik,
)
from models import ngrams
from models.corpora.features import count_words, most_frequent_words
from models.errors import InputError

#: methods whose scores are log-likelihoods of the chunk under each author
LIKELIHOOD_METHODS = ("negbin", "poisson", "ngram")
#: the methods whose out-of-support statistic :func:`support_scores` gives (their p-values are combined)
SUPPORT_METHODS = ("negbin", "ngram")
#: every attribution method, in report order
ALL_METHODS = ("negbin", "poisson", "ngram", "logistic", "delta", "cosine_delta")


@dataclass(frozen=True)
class AuthorModels:
    """Every attribution method fitted on the same training chunks.

    Attributes
    ----------
    authors : list of str
        ``[K]`` author names (the index order of every ``[N, K]`` array).
    vocabulary : tuple of str
        The word list of the word-count features.
    fits : dict of str to WordRateFit
        One NUTS fit per likelihood.
    ngram : torch.Tensor
        ``[K, F]`` posterior Dirichlet concentration of the character n-gram rows.
    ngram_prior : torch.Tensor
        ``[F]`` their prior concentration (a new author's rows).
    ngram_order : int
    train_rates : np.ndarray
        ``[D, W]`` relative word frequencies of the training chunks (the baselines refit nothing).
    train_authors : np.ndarray
        ``[D]`` their authors.
    temperatures : dict of str to float
        Softmax temperature of each Delta (:func:`fit_temperatures`; 1 until set).
    """

    authors: list[str]
    vocabulary: tuple[str, ...]
    fits: dict[str, WordRateFit]
    ngram: torch.Tensor
    ngram_prior: torch.Tensor
    ngram_order: int
    train_rates: np.ndarray
    train_authors: np.ndarray
    temperatures: dict[str, float] = field(default_factory=lambda: {"delta": 1.0, "cosine_delta": 1.0})

    @property
    def methods(self) -> tuple[str, ...]:
        return (*self.fits, "ngram", *stylometry.METHODS)


def fit_author_models(
    chunks: list[list[str]],
    authors: np.ndarray,
    names: list[str],
    *,
    num_words: int = 150,
    likelihoods: tuple[str, ...] = ("negbin", "poisson"),
    num_chains: int = 2,
    num_samples: int = 200,
    warmup_steps: int = 300,
    ngram_order: int = ngrams.ORDER,
    ngram_strength: float = ngrams.STRENGTH,
    seed: int = 0,
    progress: bool = False,
) -> AuthorModels:
    """Fit every method on training ``chunks`` (lists of words) written by ``authors`` (``[D]`` indices into ``names``)."""
    authors = np.asarray(authors, dtype=np.int64)
    K = len(names)
    if K < 2:
        raise InputError(f"attribution needs at least two known authors, got {K}: {names}")
    missing = [names[a] for a in range(K) if not (authors == a).any()]
    if missing:
        raise InputError(f"author {missing[0]!r} has no training chunk (too little text?)")
    from models.wordrates import make_data

    vocabulary = most_frequent_words(chunks, num_words)
    counts = count_words(chunks, vocabulary)
    data = make_data(counts.lengths, authors, counts.counts, num_authors=K)
    fits = {lik: fit_word_rates(data, lik, num_chains=num_chains, num_samples=num_samples,
                                warmup_steps=warmup_steps, seed=seed, progress=progress) for lik in likelihoods}
    char = ngrams.char_counts([" ".join(c) for c in chunks], ngram_order)
    per_author = ngrams.author_counts(char, torch.as_tensor(authors), K)  # [K, F]
    prior = ngrams.prior_concentration(per_author, ngram_strength)  # [F]
    return AuthorModels(list(names), vocabulary, fits, prior + per_author, prior, ngram_order, counts.rates, authors)


def score_chunks(models: AuthorModels, chunks: list[list[str]], methods: tuple[str, ...] | None = None
                 ) -> dict[str, np.ndarray]:
    """``method -> [N, K]`` scores of new chunks: log-likelihoods (:data:`LIKELIHOOD_METHODS`) or log-probabilities."""
    if not chunks or min(len(c) for c in chunks) == 0:
        raise InputError("nothing to score: every chunk needs at least one word")
    methods = models.methods if methods is None else methods
    counts = count_words(chunks, models.vocabulary)
    out: dict[str, np.ndarray] = {}
    K = len(models.authors)
    for method in methods:
        if method in models.fits:
            out[method] = predictive_loglik(models.fits[method], counts.counts, counts.lengths).numpy()
        elif method == "ngram":
            char = ngrams.char_counts([" ".join(c) for c in chunks], models.ngram_order)
            out[method] = ngrams.predictive_loglik(models.ngram, char).T.numpy()
        elif method in stylometry.METHODS:
            out[method] = stylometry.method_log_probs(method, models.train_rates, models.train_authors, counts.rates,
                                                      K, models.temperatures.get(method))
        else:
            raise InputError(f"unknown method {method!r}; fitted: {', '.join(models.methods)}")
    return out


def support_scores(models: AuthorModels, chunks: list[list[str]], methods: tuple[str, ...] = SUPPORT_METHODS
                   ) -> dict[str, np.ndarray]:
    """``method -> [N, K]`` the out-of-support statistic: ``log p(x | author k) - log p(x | a new author)``.

    A new author is the model's own prediction for someone outside the set: word rates drawn
    from the population (:func:`inference.conditioning.wordrates.new_author_loglik`), n-gram
    rows from the prior (:func:`models.ngrams.prior_concentration`). The log Bayes factor of a
    known author against "someone else" separates a misfit of the text from text that is
    hard to predict for everyone (a raw log-likelihood mixes the two).
    """
    scores = score_chunks(models, chunks, methods)
    counts = count_words(chunks, models.vocabulary)
    out = {}
    for method in methods:
        if method in models.fits:
            new = new_author_loglik(models.fits[method], counts.counts, counts.lengths).numpy()
        elif method == "ngram":
            char = ngrams.char_counts([" ".join(c) for c in chunks], models.ngram_order)
            new = ngrams.predictive_loglik(models.ngram_prior[None], char)[0].numpy()
        else:
            raise InputError(f"method {method!r} has no out-of-support score (use negbin, poisson or ngram)")
        out[method] = scores[method] - new[:, None]
    return out


def author_log_probs(scores: np.ndarray, method: str = "negbin") -> np.ndarray:
    """``[N, K]`` author posterior (uniform prior) of one method's scores."""
    return log_softmax(scores, axis=-1) if method in LIKELIHOOD_METHODS or method in ("negbin", "poisson") else scores


def fit_temperatures(models: AuthorModels, chunks: list[list[str]], authors: np.ndarray) -> AuthorModels:
    """The Deltas' softmax temperatures, fitted by maximum likelihood on chunks held out of training."""
    counts = count_words(chunks, models.vocabulary)
    found = {}
    for kind in ("delta", "cosine_delta"):
        distances = stylometry.delta_distances(models.train_rates, models.train_authors, counts.rates,
                                               len(models.authors), kind)
        found[kind] = stylometry.fit_temperature(distances, np.asarray(authors))
    return replace(models, temperatures=found)
