"""Five novelists and any text: attribution, calibration and the out-of-support test (``psm run``, kind ``novelists``).

For a manifest of books (the bundled five novelists by default) the experiment

1. cuts every book of a known author into chunks of ``chunk_words`` words, split train /
   held-out by whole chapters (:func:`models.corpora.chunks.chunk_books`); the held-out
   chapters of each book alternate between a *calibration* and a *test* half;
2. fits every method on the training chunks (:mod:`inference.comparison.author_models`:
   word rates with both likelihoods, character n-grams, Delta, cosine Delta, logistic
   regression) and attributes every held-out chunk: accuracy and confusion matrix;
3. calibration: the Deltas' temperatures are fitted on the calibration half, the
   reliability of every method's top-label probability is measured on the test half;
4. out of support: the p-value of each test chunk (:func:`support_p_values`, negative
   binomial word rates and n-grams, against the calibration half; and ``combined``, the two
   joined by the Cauchy combination, which ``psm attribute`` flags with) gives the
   **false-flag rate** at ``support.level``; then the models are refitted without one author
   (``heldout_author``) and every chunk of that author is scored: the **detection rate**
   per chunk, and per chapter and per book by the whole-text test (:func:`text_p_value`),
   whose false-flag rate is measured on the known authors' whole test chapters;
5. books of unknown author in the manifest are attributed;
6. the persona-selection test on real text (:mod:`inference.experiment.novelists_lm`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.comparison.author_models import (
    ALL_METHODS,
    SUPPORT_METHODS,
    AuthorModels,
    author_log_probs,
    fit_author_models,
    fit_temperatures,
    score_chunks,
    support_scores,
)
from inference.comparison.authorship_scores import (
    accuracy,
    calibration_bins,
    cauchy_combination,
    confusion_matrix,
    support_p_values,
    text_p_value,
)
from inference.experiment.novelists_config import NovelistsConfig, validate
from inference.runtime import single_thread
from models.corpora.chunks import Chunks, chunk_books, chunk_text, trim_to_chapters
from models.corpora.texts import Book, bundled_manifest, known_authors, read_manifest
from models.errors import InputError

#: the name of the two statistics' p-values combined (what ``psm attribute`` flags with)
COMBINED = "combined"


@dataclass(frozen=True)
class NovelistsData:
    """Chunks of the known authors' books and the split.

    Attributes
    ----------
    authors : list of str
        ``[K]`` the known authors, in manifest order.
    chunks : Chunks
        Every chunk of their books.
    author : np.ndarray
        ``[D]`` author index of each chunk.
    calibration, test : np.ndarray
        ``[D]`` bool: held-out chunks of the calibration and of the test half.
    unknown : list of Book
        Books of unknown author (attributed, never trained on).
    heldout_author : int
        The author left out of training for the detection test.
    """

    authors: list[str]
    chunks: Chunks
    author: np.ndarray
    calibration: np.ndarray
    test: np.ndarray
    unknown: list[Book]
    heldout_author: int

    @property
    def train(self) -> np.ndarray:
        return ~self.chunks.heldout

    def words(self, mask: np.ndarray) -> list[list[str]]:
        return [self.chunks.words[i] for i in np.flatnonzero(mask)]


def novelists_data(config: NovelistsConfig) -> NovelistsData:
    """Read the manifest, chunk and split (module docstring)."""
    d = config.data
    books = read_manifest(d.manifest or bundled_manifest())
    authors = known_authors(books)
    if len(authors) < 3:
        raise InputError(f"the manifest needs at least three known authors (one is left out), got {len(authors)}")
    name = d.heldout_author or authors[-1]
    if name not in authors:
        raise InputError(f"data.heldout_author {name!r} is not an author of the manifest ({', '.join(authors)})")
    tuned = config.lm.finetune_author
    if config.lm.enabled and tuned and (tuned not in authors or tuned == name):
        raise InputError(f"lm.finetune_author {tuned!r} must be a known author other than the left-out {name!r}: "
                         f"one of {', '.join(a for a in authors if a != name)}")
    known = [b for b in books if b.author is not None]
    if d.max_words_per_book:
        known = [dataclasses.replace(b, text=trim_to_chapters(b.text, d.max_words_per_book)) for b in known]
    chunks = chunk_books(known, chunk_words=d.chunk_words, heldout_fraction=d.heldout_fraction, seed=config.seed)
    author = np.array([authors.index(a) for a in chunks.authors], dtype=np.int64)
    calibration = np.zeros(len(author), dtype=bool)
    for b in range(len(known)):  # alternate the held-out chapters of each book
        chapters = np.unique(chunks.chapter[(chunks.book == b) & chunks.heldout])
        for c in chapters[::2]:
            calibration |= (chunks.book == b) & (chunks.chapter == c)
    test = chunks.heldout & ~calibration
    for a, who in enumerate(authors):
        if not (calibration & (author == a)).any():
            raise InputError(f"author {who!r} has no held-out chunk to calibrate on (too little text)")
    return NovelistsData(authors, chunks, author, calibration, test,
                         [b for b in books if b.author is None], authors.index(name))


@dataclass
class NovelistsResult:
    """What :func:`run_novelists` found (``write_novelists`` writes it)."""

    config: NovelistsConfig
    data: NovelistsData
    summary: dict[str, Any] = field(default_factory=dict)
    models: AuthorModels | None = None
    log_probs: dict[str, np.ndarray] = field(default_factory=dict)  # method -> [held-out, K]
    confusion: dict[str, np.ndarray] = field(default_factory=dict)
    calibration: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    p_values: dict[str, np.ndarray] = field(default_factory=dict)  # group -> p-values
    lm: dict[str, Any] = field(default_factory=dict)


def _fit(config: NovelistsConfig, words: list[list[str]], authors: np.ndarray, names: list[str],
         likelihoods: tuple[str, ...], progress: bool) -> AuthorModels:
    w = config.wordrates
    return fit_author_models(words, authors, names, num_words=config.data.num_words, likelihoods=likelihoods,
                             num_chains=w.num_chains, num_samples=w.num_samples, warmup_steps=w.warmup_steps,
                             ngram_order=config.ngram.order, ngram_strength=config.ngram.strength,
                             seed=config.seed, progress=progress)


@single_thread
def run_novelists(config: NovelistsConfig, progress: bool = False) -> NovelistsResult:
    """Run the experiment of the module docstring."""
    config = validate(config)
    timing: dict[str, float] = {}
    start = time.perf_counter()
    data = novelists_data(config)
    result = NovelistsResult(config, data)
    K, level = len(data.authors), config.support.level
    models = _fit(config, data.words(data.train), data.author[data.train], data.authors,
                  tuple(config.wordrates.likelihoods), progress)
    models = fit_temperatures(models, data.words(data.calibration), data.author[data.calibration])
    result.models = models
    timing["fit"] = time.perf_counter() - start
    held = data.chunks.heldout
    scores = score_chunks(models, data.words(held))
    truth, in_test = data.author[held], data.test[held]
    summary: dict[str, Any] = {"accuracy": {}, "support": {}}
    for method in models.methods:
        lp = author_log_probs(scores[method], method)
        result.log_probs[method] = lp
        result.confusion[method] = confusion_matrix(lp, truth, K)
        summary["accuracy"][method] = accuracy(lp, truth)
        top = np.exp(lp[in_test].max(-1))
        result.calibration[method] = calibration_bins(top, lp[in_test].argmax(-1) == truth[in_test], num_bins=5)
    in_cal = data.calibration[held]
    support = support_scores(models, data.words(held), SUPPORT_METHODS)
    best = result.log_probs["negbin"].argmax(-1)
    p = {method: support_p_values(support[method][in_test], best[in_test], support[method][in_cal], truth[in_cal])
         for method in SUPPORT_METHODS}
    mid = [support_p_values(support[m][in_test], best[in_test], support[m][in_cal], truth[in_cal], mid=True)
           for m in SUPPORT_METHODS]
    p[COMBINED] = cauchy_combination(np.stack(mid, axis=1), axis=1)  # [n] what psm attribute uses
    for method, values in p.items():
        result.p_values[f"{method}: known authors, test chunks"] = values
        summary["support"][method] = {"false_flag_rate": float((values <= level).mean()), "test_chunks": len(values)}
    timing["score"] = time.perf_counter() - start - timing["fit"]
    summary["support_left_out"] = _left_out(config, data, result, progress)
    timing["left_out"] = time.perf_counter() - start - timing["fit"] - timing["score"]
    summary["unknown_books"] = [_attribute_book(models, book, config, data) for book in data.unknown]
    if config.lm.enabled:
        from inference.experiment.novelists_lm import run_lm

        result.lm = run_lm(config, data, progress=progress)
        timing["lm"] = result.lm["seconds"]
    timing["total"] = time.perf_counter() - start
    summary.update(_describe(config, data, models), timing_seconds=timing)
    result.summary = summary
    return result


def _left_out(config: NovelistsConfig, data: NovelistsData, result: NovelistsResult, progress: bool) -> dict:
    """Refit without ``heldout_author``: false flags on the others' test chunks, detection of the left-out author."""
    h, level = data.heldout_author, config.support.level
    names = [a for i, a in enumerate(data.authors) if i != h]
    remap = np.array([i - (i > h) if i != h else -1 for i in range(len(data.authors))])
    others = data.author != h
    models = _fit(config, data.words(data.train & others), remap[data.author[data.train & others]], names,
                  ("negbin",), progress)
    cal, test, outsider = data.calibration & others, data.test & others, data.author == h
    out: dict[str, Any] = {"author": data.authors[h], "level": level}
    scores = {name: support_scores(models, data.words(mask), SUPPORT_METHODS)
              for name, mask in (("cal", cal), ("test", test), ("out", outsider))}
    loglik = {name: score_chunks(models, data.words(mask), ("negbin",))["negbin"]  # [n, K]
              for name, mask in (("test", test), ("out", outsider))}
    lp = {name: author_log_probs(x) for name, x in loglik.items()}
    best_test, best_out = lp["test"].argmax(-1), lp["out"].argmax(-1)
    cal_authors = remap[data.author[cal]]
    p_test, p_out = {}, {}  # per chunk
    for m in SUPPORT_METHODS:
        p_test[m] = support_p_values(scores["test"][m], best_test, scores["cal"][m], cal_authors)
        p_out[m] = support_p_values(scores["out"][m], best_out, scores["cal"][m], cal_authors)
    for p, name, best in ((p_test, "test", best_test), (p_out, "out", best_out)):
        mid = [support_p_values(scores[name][m], best, scores["cal"][m], cal_authors, mid=True) for m in SUPPORT_METHODS]
        p[COMBINED] = cauchy_combination(np.stack(mid, axis=1), axis=1)
    chapter = data.chunks.book * 10_000 + data.chunks.chapter
    groups = {"test_chapters": ("test", chapter[test]), "chapters": ("out", chapter[outsider]),
              "books": ("out", data.chunks.book[outsider])}  # whole texts: known authors' and the outsider's
    for method in p_out:
        result.p_values[f"{method}: left-out author {data.authors[h]}"] = p_out[method]
        statistics = SUPPORT_METHODS if method == COMBINED else (method,)
        text_p = {key: _text_p_values(scores[side], statistics, loglik[side], group, scores["cal"], cal_authors,
                                      chapter[cal]) for key, (side, group) in groups.items()}
        out[method] = {
            "false_flag_rate": float((p_test[method] <= level).mean()), "test_chunks": len(p_test[method]),
            "detection_rate": float((p_out[method] <= level).mean()), "left_out_chunks": len(p_out[method]),
            "chapter_false_flag_rate": float((text_p["test_chapters"] <= level).mean()),
            "test_chapters": len(text_p["test_chapters"]),
            "chapter_detection_rate": float((text_p["chapters"] <= level).mean()),
            "left_out_chapters": len(text_p["chapters"]),
            "book_detection_rate": float((text_p["books"] <= level).mean()), "left_out_books": len(text_p["books"]),
        }
    lp_out = lp["out"]
    p_out = p_out[COMBINED]
    out["nearest_author"] = dict(zip(names, np.bincount(best_out, minlength=len(names)).tolist(), strict=True))
    out["confident_without_flag"] = float(((np.exp(lp_out.max(-1)) > 0.99) & (p_out > level)).mean())
    return out


def _text_p_values(scores: dict, statistics: tuple[str, ...], loglik: np.ndarray, group: np.ndarray,
                   calibration: dict, calibration_authors: np.ndarray, calibration_chapters: np.ndarray) -> np.ndarray:
    """The whole-text p-value (:func:`text_p_value`) of each ``group`` of chunks (a chapter, a book), against
    the group's most probable author (its chunks' log-likelihoods ``[n, K]`` summed)."""
    out = []
    for g in np.unique(group):
        rows = group == g
        best = int(loglik[rows].sum(0).argmax())
        out.append(text_p_value({m: scores[m][rows] for m in statistics}, best, calibration, calibration_authors,
                                calibration_chapters))
    return np.array(out)


def _attribute_book(models: AuthorModels, book: Book, config: NovelistsConfig, data: NovelistsData) -> dict:
    """Posterior and out-of-support p-value of a whole book of unknown author (chunks combined)."""
    from inference.experiment.attribute import attribute_chunks

    held = data.chunks.heldout
    found = attribute_chunks(models, chunk_text(book.text, config.data.chunk_words), data.words(held),
                             data.author[held], config.support.level,
                             data.chunks.book[held] * 10_000 + data.chunks.chapter[held])
    return {"file": book.name, **{k: found[k] for k in ("authors", "posterior", "best", "out_of_support_p", "flagged")}}


def _describe(config: NovelistsConfig, data: NovelistsData, models: AuthorModels) -> dict[str, Any]:
    chunks = data.chunks
    fits = {lik: {k: fit.diagnostics[k] for k in ("r_hat_max", "ess_min", "divergences", "num_chains", "num_samples")}
            | {"seconds": fit.seconds} for lik, fit in models.fits.items()}
    return {
        "config": config.to_dict(), "authors": data.authors, "methods": [m for m in ALL_METHODS if m in models.methods],
        "chunks": {"total": len(chunks.words), "train": int(data.train.sum()), "calibration": int(data.calibration.sum()),
                   "test": int(data.test.sum()), "books": len(chunks.books)},
        "word_list": list(models.vocabulary), "wordrate_diagnostics": fits, "delta_temperatures": models.temperatures,
    }


def manifest_path(config: NovelistsConfig) -> Path:
    return Path(config.data.manifest) if config.data.manifest else bundled_manifest()
