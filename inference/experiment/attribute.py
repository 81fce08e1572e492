"""Attributing any text (``psm attribute``): the posterior over known authors and the out-of-support score.

    found = attribute_text(text, manifest=None, chunk_words=500, level=0.05, seed=0)
    found["authors"], found["posterior"], found["best"], found["out_of_support_p"], found["flagged"]

The candidate authors are those of a JSONL manifest (``file``, ``author``; the bundled
five novelists by default; lines of unknown author are not candidates). Their books are
chunked and split by chapter (:func:`models.corpora.chunks.chunk_books`); the models are
fitted on the training chapters (:func:`inference.comparison.author_models.fit_author_models`)
and the held-out chapters calibrate the out-of-support score.

The text is cut into chunks of ``chunk_words`` words (a shorter rest of at least 50 words
is a chunk of its own). With the negative-binomial word-rate model:

* ``posterior``: ``P(author | text)`` with a uniform prior, the chunks' predictive
  log-likelihoods summed (chunks independent given the author's rates);
* per chunk: its own posterior, best author and p-value;
* ``out_of_support_p``: each chunk's log Bayes factor of the text's best author against a
  new author (:func:`inference.comparison.author_models.support_scores`), under the
  word-rate model and under the character n-gram model, is ranked among the same statistic
  of that author's held-out chunks (cut to the chunk's length when it is shorter): per
  chunk, two conformal p-values joined by the Cauchy combination (``chunks``); for the
  whole text, the mean of its full-length chunks' statistics is compared with the held-out
  chunks' (:func:`inference.comparison.authorship_scores.text_p_value`: a t-test whose
  variance allows for the correlation of chunks within a chapter, per model, the two
  joined), so that a long text gains power with its length. The word
  rates alone flag few chunks of an author outside the set (README "Findings"), the
  n-grams more. ``flagged`` is ``p <= level`` (default 0.05): the text is unlike every
  candidate, so its author is probably none of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inference.comparison.author_models import (
    SUPPORT_METHODS,
    AuthorModels,
    author_log_probs,
    fit_author_models,
    score_chunks,
    support_scores,
)
from inference.comparison.authorship_scores import (
    cauchy_combination,
    support_p_values,
    text_p_value,
)
from inference.runtime import single_thread
from models.corpora.chunks import chunk_books, chunk_text
from models.corpora.texts import bundled_manifest, known_authors, read_manifest
from models.errors import InputError

#: the default flagging level of the out-of-support p-value
LEVEL = 0.05


def attribute_chunks(models: AuthorModels, chunks: list[list[str]], calibration: list[list[str]],
                     calibration_authors: np.ndarray, level: float = LEVEL,
                     calibration_groups: np.ndarray | None = None) -> dict[str, Any]:
    """Posterior, best author and out-of-support p-value of a text's ``chunks`` (module docstring);
    ``calibration_groups`` ``[m]``: the chapter of each calibration chunk (for the whole-text test)."""
    if not chunks:
        raise InputError("the text has no words to attribute")
    calibration_authors = np.asarray(calibration_authors)
    scores = score_chunks(models, chunks, ("negbin",))["negbin"]  # [n, K]
    statistic = support_scores(models, chunks, SUPPORT_METHODS)  # method -> [n, K]
    total = author_log_probs(scores.sum(0, keepdims=True))[0]  # [K]
    per_chunk = author_log_probs(scores)  # [n, K]
    best, own_best = int(total.argmax()), per_chunk.argmax(-1)  # the text's best author, each chunk's own
    lengths = np.array([len(c) for c in chunks])
    own_p = np.empty((len(chunks), len(SUPPORT_METHODS)))  # [n, M] mid-rank, against each chunk's best author
    main = int(np.bincount(lengths).argmax())  # the full chunk length: the whole-text test uses those chunks
    for n in np.unique(lengths):  # calibration chunks cut to each chunk length (at most two lengths)
        ref = support_scores(models, [c[:n] for c in calibration], SUPPORT_METHODS)  # method -> [m, K]
        rows = lengths == n
        for j, method in enumerate(SUPPORT_METHODS):
            own_p[rows, j] = support_p_values(statistic[method][rows], own_best[rows], ref[method],
                                              calibration_authors, mid=True)
        if n == main:
            p = text_p_value({m: statistic[m][rows] for m in SUPPORT_METHODS}, best, ref, calibration_authors,
                             calibration_groups)
    chunk_p = cauchy_combination(own_p, axis=1)  # [n] the methods combined
    rows = [{"chunk": i, "words": int(lengths[i]), "posterior": np.exp(per_chunk[i]).tolist(),
             "best": models.authors[int(own_best[i])], "out_of_support_p": float(chunk_p[i]),
             "out_of_support_p_by_method": dict(zip(SUPPORT_METHODS, own_p[i].tolist(), strict=True)),
             "flagged": bool(chunk_p[i] <= level)} for i in range(len(chunks))]
    return {"authors": list(models.authors), "posterior": np.exp(total).tolist(), "best": models.authors[best],
            "out_of_support_p": float(p), "flagged": bool(p <= level), "chunks": rows}


@single_thread
def attribute_text(
    text: str,
    *,
    manifest=None,
    chunk_words: int = 500,
    level: float = LEVEL,
    num_words: int = 150,
    heldout_fraction: float = 0.2,
    num_chains: int = 2,
    num_samples: int = 200,
    warmup_steps: int = 300,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit the candidates of ``manifest`` (default: the bundled novelists) and attribute ``text``.

    Returns
    -------
    dict
        ``authors``, ``posterior`` (same order), ``best``, ``out_of_support_p``, ``flagged``,
        ``chunks`` (one row per chunk: ``chunk``, ``words``, ``posterior``, ``best``,
        ``out_of_support_p``, ``flagged``) and ``settings`` (what was used).
    """
    if isinstance(chunk_words, bool) or not isinstance(chunk_words, int) or chunk_words < 10:
        raise InputError(f"--chunk-words must be an integer >= 10, got {chunk_words!r}")
    if not (isinstance(level, float) and 0 < level < 1):
        raise InputError(f"--level must lie in (0, 1), got {level!r}")
    chunks = chunk_text(text, chunk_words)
    if not chunks:
        raise InputError("the text has no words to attribute")
    books = read_manifest(manifest or bundled_manifest())
    names = known_authors(books)
    if len(names) < 2:
        raise InputError(f"the manifest needs at least two known authors, got {len(names)}")
    split = chunk_books([b for b in books if b.author is not None], chunk_words=chunk_words,
                        heldout_fraction=heldout_fraction, seed=seed)
    author = np.array([names.index(a) for a in split.authors])
    train = ~split.heldout
    words = split.words
    models = fit_author_models([words[i] for i in np.flatnonzero(train)], author[train], names, num_words=num_words,
                               likelihoods=("negbin",), num_chains=num_chains, num_samples=num_samples,
                               warmup_steps=warmup_steps, seed=seed, progress=progress)
    for a, name in enumerate(names):
        if not (split.heldout & (author == a)).any():
            raise InputError(f"author {name!r} has no held-out chapter to calibrate on (too little text)")
    held = np.flatnonzero(split.heldout)
    found = attribute_chunks(models, chunks, [words[i] for i in held], author[held], level,
                             split.book[held] * 10_000 + split.chapter[held])
    fit = models.fits["negbin"]
    found["settings"] = {
        "manifest": str(manifest or bundled_manifest()), "chunk_words": chunk_words, "level": level,
        "num_words": len(models.vocabulary), "model": "negative-binomial word rates (NUTS)", "seed": seed,
        "training_chunks": int(train.sum()), "calibration_chunks": int(split.heldout.sum()),
        "r_hat_max": _finite(fit.diagnostics["r_hat_max"]), "ess_min": _finite(fit.diagnostics["ess_min"]),
        "divergences": fit.diagnostics["divergences"],
    }
    return found


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
