"""The Federalist Papers after Mosteller & Wallace (``psm federalist``, ``notebooks/07_federalist.ipynb``).

For the 12 disputed papers (Nos. 49–58, 62, 63) and the 3 joint ones (18–20):

1. the word-rate models (:mod:`models.wordrates`; Poisson and negative binomial) are
   conditioned on all 85 papers at once with NUTS over the rates: the known papers of
   Hamilton, Madison and Jay with their authors, each disputed paper with its author
   (Hamilton or Madison, even odds) summed out exactly, each joint paper as a mixture
   with its own Madison share;
2. each disputed paper gets ``P(Madison)`` and the log-odds ``log P(Madison) - log P(Hamilton)``
   (natural log), with the 5-95% range of the per-draw log-odds;
3. the baselines of :mod:`inference.comparison.stylometry` (logistic regression, Burrows'
   and cosine Delta) see the same word frequencies, are trained on the known papers and
   choose between Hamilton and Madison (bootstrap intervals);
4. every method's leave-one-out attribution of the 70 known papers gives its accuracy
   (three authors) and a calibration curve of ``P(Madison)`` on the 65 Hamilton and
   Madison papers (PSIS-LOO for the word-rate models, refits for the baselines).

Features: the cleaned text (:func:`models.corpora.federalist.clean_text`), words by
:func:`models.corpora.tokens.word_tokens`, counts of Mosteller & Wallace's 70 function
words (``words = "mw70"``) or of the ``num_words`` most frequent words of the known papers
(``words = "mfw"``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inference.comparison import stylometry
from inference.comparison.authorship_scores import accuracy
from inference.conditioning.wordrates import (
    WordRateFit,
    author_posterior,
    fit_word_rates,
    loo_author_logprobs,
)
from inference.runtime import single_thread
from models.corpora.features import WordCounts, count_words, most_frequent_words
from models.corpora.federalist import (
    AUTHORS,
    DISPUTED,
    HAMILTON,
    JOINT,
    MADISON,
    MW_FUNCTION_WORDS,
    Paper,
    clean_text,
    load_papers,
)
from models.corpora.tokens import word_tokens
from models.errors import InputError
from models.limits import MAX_CHAINS, MAX_DRAWS, MAX_SEED
from models.wordrates import LIKELIHOODS, WordRateData, make_data

H, M = AUTHORS.index(HAMILTON), AUTHORS.index(MADISON)
WORD_LISTS = ("mw70", "mfw")
#: log-odds for Madison of the negative-binomial study, as quoted in issue #12 (M&W 1964; No. 58 not quoted).
#: PROVENANCE.md of the Federalist data could not verify them against the book: they are context, not a target.
MW_PUBLISHED_NEGBIN = {49: 8, 50: 9, 51: 13, 52: 10, 53: 10, 54: 9, 55: 4, 56: 5, 57: 10, 62: 10, 63: 11}
#: the two Poisson values quoted in issue #12
MW_PUBLISHED_POISSON = {51: 33, 55: 7}
#: the method name of the quoted published values in ``table.csv``
PUBLISHED = "mw1964_negbin_quoted"


@dataclass(frozen=True)
class FederalistConfig:
    """Settings of ``psm federalist`` (all optional; these are the full run's)."""

    seed: int = 0
    papers: str = ""  # papers.jsonl (or .gz); "" = the bundled copy
    words: str = "mw70"
    num_words: int = 70  # for words = "mfw"
    likelihoods: tuple[str, ...] = ("negbin", "poisson")
    num_chains: int = 4
    num_samples: int = 400
    warmup_steps: int = 400
    bootstrap: int = 200
    level: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def smoke_config(seed: int = 0) -> FederalistConfig:
    """Tiny sizes (tests, ``PSM_SMOKE=1``): seconds, not a result."""
    return FederalistConfig(seed=seed, num_chains=2, num_samples=20, warmup_steps=20, bootstrap=5)


def default_config(seed: int = 0) -> FederalistConfig:
    """The full run, or :func:`smoke_config` when the environment has ``PSM_SMOKE=1``."""
    return smoke_config(seed) if os.environ.get("PSM_SMOKE") == "1" else FederalistConfig(seed=seed)


def check_config(config: FederalistConfig) -> FederalistConfig:
    """One-line errors naming the bad setting."""
    if not 0 <= config.seed <= MAX_SEED:
        raise InputError(f"seed must lie in [0, {MAX_SEED}], got {config.seed}")
    if config.words not in WORD_LISTS:
        raise InputError(f"words must be one of {', '.join(WORD_LISTS)}, got {config.words!r}")
    if not config.likelihoods or any(x not in LIKELIHOODS for x in config.likelihoods) \
            or len(set(config.likelihoods)) != len(config.likelihoods):
        raise InputError(f"likelihoods must be distinct values of {', '.join(LIKELIHOODS)}, got {list(config.likelihoods)}")
    for key, low in (("num_words", 2), ("num_chains", 1), ("num_samples", 1), ("warmup_steps", 0), ("bootstrap", 2)):
        value = getattr(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{key} must be an integer >= {low}, got {value!r}")
    if config.num_chains > MAX_CHAINS or config.num_chains * config.num_samples > MAX_DRAWS:
        raise InputError(f"num_chains x num_samples is too many (limits {MAX_CHAINS} chains, {MAX_DRAWS:.0e} draws)")
    if not 0 < config.level < 1:
        raise InputError(f"level must lie in (0, 1), got {config.level}")
    return config


@dataclass(frozen=True)
class FederalistData:
    """The papers as a word-rate problem.

    Attributes
    ----------
    papers : list of Paper
    counts : WordCounts
        ``[85, W]`` counts of the word list in the cleaned papers.
    data : WordRateData
        Authors coded 0 (Hamilton), 1 (Madison), 2 (Jay), -1 disputed (candidates Hamilton and
        Madison), -2 joint (Madison's share, then Hamilton).
    """

    papers: list[Paper]
    counts: WordCounts
    data: WordRateData

    def numbers(self, index) -> list[int]:
        return [self.papers[int(i)].number for i in index]


def federalist_data(config: FederalistConfig) -> FederalistData:
    """Load, clean, tokenise and count the papers (module docstring)."""
    papers = load_papers(config.papers or None)
    labels = {p.author for p in papers}
    for label in (HAMILTON, MADISON):
        if label not in labels:
            raise InputError(f"the papers must include {label}'s known papers to attribute the disputed ones")
    docs = [word_tokens(clean_text(p.text)) for p in papers]
    code = {**{a: i for i, a in enumerate(AUTHORS)}, DISPUTED: -1, JOINT: -2}
    author = [code[p.author] for p in papers]
    known_docs = [d for d, a in zip(docs, author, strict=True) if a >= 0]
    vocabulary = MW_FUNCTION_WORDS if config.words == "mw70" else most_frequent_words(known_docs, config.num_words)
    counts = count_words(docs, vocabulary)
    candidates = torch.zeros(len(papers), len(AUTHORS), dtype=torch.bool)
    candidates[:, [H, M]] = True
    pair = torch.tensor([[M, H]] * len(papers))
    data = make_data(counts.lengths, author, counts.counts, num_authors=len(AUTHORS), candidates=candidates, pair=pair)
    return FederalistData(papers, counts, data)


@dataclass
class FederalistResult:
    """What :func:`run_federalist` found (``write_federalist`` writes it)."""

    config: FederalistConfig
    data: FederalistData
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    fits: dict[str, WordRateFit] = field(default_factory=dict)
    loo: dict[str, np.ndarray] = field(default_factory=dict)  # method -> [Dk, K] leave-one-out log-probabilities


@single_thread
def run_federalist(config: FederalistConfig, progress: bool = False) -> FederalistResult:
    """Attribute the disputed and joint papers with every method (module docstring)."""
    config = check_config(config)
    start = time.perf_counter()
    fed = federalist_data(config)
    result = FederalistResult(config, fed)
    data = fed.data
    known, disputed, joint = data.group(0), data.group(-1), data.group(-2)
    authors = data.author[known].numpy()
    timing = {}
    for likelihood in config.likelihoods:
        fit = fit_word_rates(data, likelihood, num_chains=config.num_chains, num_samples=config.num_samples,
                             warmup_steps=config.warmup_steps, seed=config.seed, progress=progress)
        result.fits[likelihood] = fit
        timing[likelihood] = fit.seconds
        post = author_posterior(fit, data)
        lo, band = post.log_odds(M, H), post.log_odds_interval(M, H, config.level)
        for i, d in enumerate(disputed.tolist()):
            result.rows.append(_row(fed, d, likelihood, float(lo[i]), band[i].tolist(), "log_odds"))
        shares = fit.samples["share"].reshape(-1, len(joint))  # [S, Dj]
        q = torch.quantile(shares, torch.tensor([(1 - config.level) / 2, (1 + config.level) / 2]).double(), dim=0)
        for j, d in enumerate(joint.tolist()):
            result.rows.append(_row(fed, d, likelihood, None, q[:, j].tolist(), "madison_share",
                                    share=float(shares[:, j].mean())))
        result.loo[likelihood] = loo_author_logprobs(fit, data)[0].numpy()
    base_start = time.perf_counter()
    rates = fed.counts.rates
    for method in stylometry.METHODS:
        loo, temperature = stylometry.loo_log_probs(method, rates[known], authors, len(AUTHORS), seed=config.seed)
        result.loo[method] = loo
        test = rates[np.concatenate([disputed.numpy(), joint.numpy()])]
        point = stylometry.restrict(stylometry.method_log_probs(method, rates[known], authors, test, len(AUTHORS),
                                                                temperature, config.seed), _HM)
        boot = stylometry.restrict(stylometry.bootstrap_log_probs(
            method, rates[known], authors, test, len(AUTHORS), temperature=temperature,
            num_resamples=config.bootstrap, seed=config.seed), _HM)  # [B, N, K]
        boot_lo = boot[..., M] - boot[..., H]
        band = np.quantile(boot_lo, [(1 - config.level) / 2, (1 + config.level) / 2], axis=0).T  # [N, 2]
        for i, d in enumerate(np.concatenate([disputed.numpy(), joint.numpy()]).tolist()):
            result.rows.append(_row(fed, d, method, float(point[i, M] - point[i, H]), band[i].tolist(), "log_odds"))
    timing["baselines"] = time.perf_counter() - base_start
    index = {p.number: d for d, p in enumerate(fed.papers)}
    for number, value in MW_PUBLISHED_NEGBIN.items():
        if number in index:
            result.rows.append(_row(fed, index[number], PUBLISHED, float(value), [np.nan, np.nan], "log_odds"))
    timing["total"] = time.perf_counter() - start
    result.summary = summarise(result, timing)
    return result


_HM = np.array([i in (H, M) for i in range(len(AUTHORS))])


def _row(fed: FederalistData, d: int, method: str, log_odds: float | None, band: list[float], interval_of: str,
         share: float | None = None) -> dict[str, Any]:
    paper = fed.papers[d]
    p = None if log_odds is None else float(1 / (1 + np.exp(-log_odds)))
    return {"paper": paper.number, "label": paper.author, "method": method, "p_madison": p, "log_odds": log_odds,
            "interval_low": band[0], "interval_high": band[1], "interval_of": interval_of, "madison_share": share}


def summarise(result: FederalistResult, timing: dict[str, float]) -> dict[str, Any]:
    """The JSON summary: settings, convergence, leave-one-out accuracy, the disputed verdicts, timings."""
    fed, config = result.data, result.config
    known = fed.data.group(0)
    authors = fed.data.author[known].numpy()
    hm = np.isin(authors, [H, M])
    loo = {}
    for method, lp in result.loo.items():
        binary = stylometry.restrict(lp[hm], _HM)
        loo[method] = {"accuracy_3_authors": accuracy(lp, authors), "accuracy_hamilton_madison": accuracy(binary, authors[hm]),
                       "num_papers": int(len(authors))}
    disputed = {}
    for row in result.rows:
        if row["interval_of"] == "log_odds" and row["label"] == DISPUTED and row["method"] != PUBLISHED:
            disputed.setdefault(row["method"], {})[row["paper"]] = row["log_odds"]
    verdict = {m: {"madison": sum(v > 0 for v in d.values()), "papers": len(d)} for m, d in disputed.items()}
    return {
        "config": config.to_dict(), "word_list": list(fed.counts.vocabulary), "num_words": len(fed.counts.vocabulary),
        "tokens": int(fed.counts.lengths.sum()),
        "diagnostics": {lik: {k: fit.diagnostics[k] for k in ("r_hat_max", "ess_min", "divergences", "acceptance_rate",
                                                                "step_size", "num_chains", "num_samples", "warmup_steps")}
                        for lik, fit in result.fits.items()},
        "loo": loo, "disputed_log_odds": disputed, "disputed_for_madison": verdict,
        "published_negbin_quoted": MW_PUBLISHED_NEGBIN, "published_poisson_quoted": MW_PUBLISHED_POISSON,
        "timing_seconds": timing,
    }
