"""Stylometry baselines on word-count features: Burrows' Delta, cosine Delta, regularised logistic regression.

Every method reads the same features as the word-rate models: the relative frequencies
``counts / length`` of the listed words (:class:`models.corpora.features.WordCounts`), and
returns ``[N, K]`` log-probabilities over the ``K`` authors, so all methods share one
evaluation (accuracy, calibration, log-odds).

* **Delta** (Burrows 2002). Each word's frequency is z-scored with the mean and standard
  deviation over the training documents; an author is the mean z-vector of their training
  documents. Burrows' Delta is the mean absolute difference between a document's z-vector
  and an author's; cosine Delta (Smith & Aldridge 2011; Evert et al. 2017) is ``1 - cos``
  between them. Distances become probabilities by ``softmax(-Delta / T)`` with one
  temperature ``T`` per method, fitted by maximum leave-one-out likelihood on the training
  documents (:func:`fit_temperature`), never on the documents attributed.
* **Logistic regression** (scikit-learn): multinomial, L2-regularised with ``C = 1`` on the
  z-scored frequencies (the library's default strength; not tuned).

:func:`loo_log_probs` refits a method without each training document in turn (exact
leave-one-out); :func:`bootstrap_log_probs` refits on bootstrap resamples of the training
documents (the intervals reported for the baselines).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from models.errors import InputError

METHODS = ("delta", "cosine_delta", "logistic")
#: L2 strength of the logistic regression (scikit-learn's default)
LOGISTIC_C = 1.0


def _check(rates: np.ndarray, authors: np.ndarray, num_authors: int) -> tuple[np.ndarray, np.ndarray]:
    rates, authors = np.asarray(rates, dtype=np.float64), np.asarray(authors, dtype=np.int64)
    if rates.ndim != 2 or authors.shape != rates.shape[:1]:
        raise InputError(f"rates must be [D, W] and authors [D], got {rates.shape} and {authors.shape}")
    missing = sorted(set(range(num_authors)) - set(authors.tolist()))
    if missing:
        raise InputError(f"every author needs a training document; author(s) {missing} have none")
    return rates, authors


def zscore(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``train`` and ``others`` z-scored with ``train``'s mean and standard deviation per word."""
    mean, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)  # a constant word carries no information
    return [(x - mean) / sd for x in (train, *others)]


def delta_distances(train: np.ndarray, authors: np.ndarray, test: np.ndarray, num_authors: int,
                    kind: str = "delta") -> np.ndarray:
    """``[N, K]`` Burrows' Delta (``kind="delta"``) or cosine Delta of ``test`` documents to each author.

    Parameters
    ----------
    train, test : array
        ``[D, W]``, ``[N, W]`` relative frequencies.
    authors : array
        ``[D]`` author index of each training document.
    """
    train, authors = _check(train, authors, num_authors)
    z_train, z_test = zscore(train, np.asarray(test, dtype=np.float64))
    centroids = np.stack([z_train[authors == a].mean(0) for a in range(num_authors)])  # [K, W]
    if kind == "delta":
        return np.abs(z_test[:, None, :] - centroids[None]).mean(-1)  # [N, K]
    if kind == "cosine_delta":
        norms = np.linalg.norm(z_test, axis=-1)[:, None] * np.linalg.norm(centroids, axis=-1)[None]  # [N, K]
        return 1 - (z_test @ centroids.T) / np.where(norms > 0, norms, 1.0)
    raise InputError(f"unknown Delta {kind!r}; choose delta or cosine_delta")


def fit_temperature(distances: np.ndarray, authors: np.ndarray) -> float:
    """The ``T`` maximising ``sum_d log softmax(-distances_d / T)[author_d]`` (leave-one-out distances)."""
    distances, authors = np.asarray(distances), np.asarray(authors)

    def nll(log_t: float) -> float:
        lp = log_softmax(-distances / np.exp(log_t), axis=-1)
        return -float(lp[np.arange(len(authors)), authors].sum())

    found = minimize_scalar(nll, bounds=(-12.0, 6.0), method="bounded")
    return float(np.exp(found.x))


def logistic_log_probs(train: np.ndarray, authors: np.ndarray, test: np.ndarray, num_authors: int,
                       seed: int = 0) -> np.ndarray:
    """``[N, K]`` log-probabilities of a multinomial L2 logistic regression on z-scored frequencies."""
    from sklearn.linear_model import LogisticRegression

    train, authors = _check(train, authors, num_authors)
    z_train, z_test = zscore(train, np.asarray(test, dtype=np.float64))
    model = LogisticRegression(C=LOGISTIC_C, max_iter=5000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on separable data
        model.fit(z_train, authors)
    out = np.full((len(z_test), num_authors), -np.inf)
    out[:, model.classes_] = model.predict_log_proba(z_test)
    return out


def method_log_probs(method: str, train: np.ndarray, authors: np.ndarray, test: np.ndarray, num_authors: int,
                     temperature: float | None = None, seed: int = 0) -> np.ndarray:
    """``[N, K]`` log-probabilities of ``method`` (a Delta needs its ``temperature``)."""
    if method == "logistic":
        return logistic_log_probs(train, authors, test, num_authors, seed)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if temperature is None:
        raise InputError(f"{method} needs a temperature (fit_temperature)")
    return log_softmax(-delta_distances(train, authors, test, num_authors, method) / temperature, axis=-1)


def loo_distances(rates: np.ndarray, authors: np.ndarray, num_authors: int, kind: str) -> np.ndarray:
    """``[D, K]`` each training document's Delta to the authors, fitted without it."""
    rates, authors = _check(rates, authors, num_authors)
    rows = [delta_distances(np.delete(rates, d, 0), np.delete(authors, d), rates[d : d + 1], num_authors, kind)[0]
            for d in range(len(rates))]  # one refit per document: D is small (the training documents)
    return np.stack(rows)


def loo_log_probs(method: str, rates: np.ndarray, authors: np.ndarray, num_authors: int,
                  seed: int = 0) -> tuple[np.ndarray, float | None]:
    """Exact leave-one-out ``[D, K]`` log-probabilities of every training document, and the Delta temperature.

    For a Delta the temperature is fitted on these leave-one-out distances
    (:func:`fit_temperature`) and returned; for the logistic regression it is None.
    """
    rates, authors = _check(rates, authors, num_authors)
    if method in ("delta", "cosine_delta"):
        distances = loo_distances(rates, authors, num_authors, method)
        temperature = fit_temperature(distances, authors)
        return log_softmax(-distances / temperature, axis=-1), temperature
    rows = [logistic_log_probs(np.delete(rates, d, 0), np.delete(authors, d), rates[d : d + 1], num_authors, seed)[0]
            for d in range(len(rates))]
    return np.stack(rows), None


def bootstrap_log_probs(method: str, train: np.ndarray, authors: np.ndarray, test: np.ndarray, num_authors: int,
                        *, temperature: float | None = None, num_resamples: int = 200,
                        seed: int = 0) -> np.ndarray:
    """``[B, N, K]`` log-probabilities of ``method`` refitted on ``B`` bootstrap resamples of the training
    documents (stratified by author, so every author keeps documents)."""
    train, authors = _check(train, authors, num_authors)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(authors == a) for a in range(num_authors)]
    out = []
    for _ in range(num_resamples):  # refits: the baselines are cheap
        rows = np.concatenate([rng.choice(g, len(g)) for g in groups])
        out.append(method_log_probs(method, train[rows], authors[rows], test, num_authors, temperature, seed))
    return np.stack(out)


def restrict(log_probs: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``log_probs [..., K]`` renormalised over the ``candidates`` ``[K]`` bool (``-inf`` elsewhere)."""
    masked = np.where(np.asarray(candidates, dtype=bool), log_probs, -np.inf)
    return log_softmax(masked, axis=-1)
