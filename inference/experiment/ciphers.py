"""``kind = "ciphers"``: do fine-tuned models reason in a cipher that pre-training rarely showed?

Guo, Sleight & Roger (2025) fine-tune LLMs on enciphered text: the models learn to translate it,
reason in it poorly, and how well they do tracks how common the cipher is in pre-training; more
fine-tuning data helps only slowly. The persona-selection reading: a cipher common in
pre-training is a persona the base already has (fine-tuning *selects* it), a rare one has to be
*taught*. This experiment puts that on a world where the Bayesian answer is exact.

The generative model has a latent cipher next to the persona (:mod:`models.ciphers`): a
document is written by rule persona ``h`` (:mod:`models.rules`: a Markov persona that also
writes ``g(x_{t-lag})``, a long-range rule) and passed through cipher ``c``, with
``P(c) = 1 - f`` for none and ``f / C`` for each of ``C`` ciphers. The pair ``(h, c)`` is itself a
Markov persona, so conditioning enumerates it exactly (``f = 0``: the ciphers are outside the
support). For every share ``f`` in ``[ciphers] shares`` and every seed (:mod:`inference.experiment.cipher_world`):

1. a corpus with exactly ``round(f N)`` enciphered documents, and a base pre-trained on it;
2. two arms (:mod:`inference.experiment.cipher_arm`) on the same documents of the evidence persona:
   ``cipher`` (written in the evidence cipher) and ``plain`` (the control);
3. per arm: evidence tokens fine-tuning needs to reach a target held-out NLL, and what exact
   conditioning needs; ``E_true``, ``E_self`` (DESIGN.md §3.3) with intervals and ``beta*``;
   description length; the rule probe in cipher and in plain text.

``summary.json`` holds every cell (one per share, seed and arm) and the table over seeds
(mean, min and max); ``report.md``, ``ciphers.png`` (each quantity against ``f``, log scale,
ranges over seeds) and ``nll_curves.png`` show them (:mod:`inference.experiment.cipher_report`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from inference.experiment.cipher_arm import ARMS, evidence_documents, run_cipher_arm
from inference.experiment.cipher_world import (
    make_cipher_world,
    measure_cipher_base,
    pretrain_cipher_base,
)
from inference.experiment.ciphers_config import CiphersExperiment, ciphers_from_dict
from inference.runtime import single_thread

__all__ = ["load", "run_and_write", "run_ciphers"]


@single_thread
def run_ciphers(config: CiphersExperiment, progress: bool = True) -> dict[str, Any]:
    """Run every cell ``(f, seed, arm)``; returns the summary (written by :func:`run_and_write`)."""
    from inference.experiment.cipher_report import aggregate

    start, cpu = time.perf_counter(), time.process_time()
    world = make_cipher_world(config)
    cells, seconds = [], []
    grid = [(seed, share) for seed in config.seeds for share in config.ciphers.shares]
    for seed, share in tqdm(grid, desc="ciphers (seed, f)", disable=not progress):
        clock = [(time.perf_counter(), time.process_time())]
        documents = evidence_documents(world, seed)
        model = pretrain_cipher_base(world, share, seed, progress=False)
        base, reachable = measure_cipher_base(model, world, share)
        clock.append((time.perf_counter(), time.process_time()))
        for arm in ARMS:
            result = run_cipher_arm(world, base, reachable, arm, documents, seed, progress=False)
            cells.append({"share": share, "seed": seed, **result, "base": base.summary})
            clock.append((time.perf_counter(), time.process_time()))
        stages = ("pretrain", *ARMS)
        seconds.append({"share": share, "seed": seed,
                        **{stage: clock[i + 1][0] - clock[i][0] for i, stage in enumerate(stages)},
                        **{f"{stage}_cpu": clock[i + 1][1] - clock[i][1] for i, stage in enumerate(stages)}})
    return {
        "kind": "ciphers",
        "config": config.to_dict(),
        "num_parameters": cells[0]["base"]["num_parameters"],
        "cells": cells,
        "table": aggregate(cells),
        "timing": {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                   "per_cell": seconds},
    }


# ----------------------------------------------------------------------------- the kind protocol


def load(raw: dict[str, Any], folder: Path) -> CiphersExperiment:
    """``kind = "ciphers"`` (:mod:`inference.experiment.kinds`): validate a parsed config."""
    return ciphers_from_dict(raw)


def run_and_write(config: CiphersExperiment, out, *, overwrite: bool = False, progress: bool = True) -> str:
    """Run the experiment, write ``summary.json``, ``cells.csv``, ``table.csv``, ``report.md`` and the
    figures into ``out``, and return the closing lines of ``psm run``."""
    from inference.experiment.cipher_report import closing_lines, write_ciphers

    summary = run_ciphers(config, progress=progress)
    names = write_ciphers(summary, out, overwrite=overwrite)
    return closing_lines(summary, out, names)
