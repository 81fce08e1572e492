"""``psm federalist`` and ``psm attribute``: authorship of real text.

    psm federalist --out DIR [--papers FILE] [--likelihood both|negbin|poisson] [--words mw70|mfw]
                   [--num-words N] [--num-chains C] [--num-samples S] [--warmup W] [--bootstrap B] [--seed S]
    psm attribute --text FILE --out DIR [--authors MANIFEST] [--chunk-words N] [--level A] [--num-words N]
                  [--num-chains C] [--num-samples S] [--warmup W] [--seed S]

``psm federalist`` attributes the disputed and joint Federalist papers with the word-rate
models and the baselines (:mod:`inference.experiment.federalist`) and writes ``table.csv``,
``summary.json``, figures and InferenceData. ``psm attribute`` fits the candidate authors of a
JSONL manifest (default: the bundled five novelists) and writes ``attribution.json`` for one
text: ``authors``, ``posterior``, ``best``, ``out_of_support_p``, ``flagged``, one row per chunk
(``chunks``) and the ``settings`` used (:mod:`inference.experiment.attribute`).
"""

from __future__ import annotations

import argparse

from inference.cli.args import (
    add_out,
    add_quiet,
    add_seed,
    bounded_int,
    files,
    output_folder,
    path,
    say,
)
from models.limits import MAX_CHAINS, MAX_DRAWS, MAX_STEPS


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _nuts_flags(parser: argparse.ArgumentParser, chains: int, samples: int, warmup: int) -> None:
    group = parser.add_argument_group("NUTS over the word rates")
    group.add_argument("--num-chains", type=bounded_int(1, MAX_CHAINS), default=chains, metavar="C",
                       help=f"chains, run one after another (default {chains})")
    group.add_argument("--num-samples", type=bounded_int(1, MAX_DRAWS), default=samples, metavar="S",
                       help=f"kept draws per chain (default {samples})")
    group.add_argument("--warmup", type=bounded_int(0, MAX_STEPS), default=warmup, metavar="W",
                       help=f"adaptation steps per chain (default {warmup})")


# ---------------------------------------------------------------- psm federalist


def add_federalist(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--papers", type=path, default=None, metavar="FILE",
                        help="papers.jsonl (number, title, author, text; .gz read too); default: the bundled copy")
    parser.add_argument("--likelihood", choices=("both", "negbin", "poisson"), default="both",
                        help="word-rate likelihood(s) (default both)")
    parser.add_argument("--words", choices=("mw70", "mfw"), default="mw70",
                        help="word list: Mosteller & Wallace's 70 function words (default) or the most "
                             "frequent words of the known papers")
    parser.add_argument("--num-words", type=bounded_int(2, 10_000), default=70, metavar="N",
                        help="size of the most-frequent-words list (with --words mfw; default 70)")
    parser.add_argument("--bootstrap", type=bounded_int(2, 100_000), default=200, metavar="B",
                        help="bootstrap refits of the baselines for their intervals (default 200)")
    _nuts_flags(parser, 4, 400, 400)
    add_seed(parser)
    add_out(parser)
    add_quiet(parser)


def cmd_federalist(args: argparse.Namespace) -> int:
    """Attribute the disputed Federalist papers; write table.csv, summary.json, figures, InferenceData."""
    from inference.experiment.federalist import FederalistConfig, check_config

    likelihoods = ("negbin", "poisson") if args.likelihood == "both" else (args.likelihood,)
    config = check_config(FederalistConfig(
        seed=args.seed, papers=str(args.papers or ""), words=args.words, num_words=args.num_words,
        likelihoods=likelihoods, num_chains=args.num_chains, num_samples=args.num_samples,
        warmup_steps=args.warmup, bootstrap=args.bootstrap))
    out = output_folder(args)

    from inference.experiment.federalist import run_federalist
    from inference.experiment.federalist_report import headline, write_federalist

    result = run_federalist(config, progress=not args.quiet)
    names = write_federalist(result, out, args.overwrite)
    say(f"federalist ({', '.join(likelihoods)}; {args.num_chains} chains x {args.num_samples} draws, seed {args.seed}, "
        f"{result.summary['timing_seconds']['total']:.0f} s): {headline(result)}; wrote {files(out, names[:2])} "
        f"and {len(names) - 2} more files")
    return 0


# ---------------------------------------------------------------- psm attribute


def add_attribute(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", type=path, required=True, metavar="FILE", help="the text to attribute (UTF-8)")
    parser.add_argument("--authors", type=path, default=None, metavar="MANIFEST",
                        help="JSONL manifest of the candidates' texts (file, author; paths relative to it); "
                             "default: the bundled five novelists")
    parser.add_argument("--chunk-words", type=bounded_int(10, 1_000_000), default=500, metavar="N",
                        help="words per chunk, of the text and of the candidates' books (default 500)")
    parser.add_argument("--level", type=_probability, default=0.05, metavar="A",
                        help="flag the text as by none of the candidates when out_of_support_p <= A (default 0.05)")
    parser.add_argument("--num-words", type=bounded_int(2, 10_000), default=150, metavar="N",
                        help="most frequent words of the candidates' training chunks used as features (default 150)")
    _nuts_flags(parser, 2, 200, 300)
    add_seed(parser)
    add_out(parser)
    add_quiet(parser)


def cmd_attribute(args: argparse.Namespace) -> int:
    """Attribute one text to the candidates of a manifest; write attribution.json."""
    from models.corpora.texts import read_text

    text = read_text(args.text)  # a bad text fails before any fitting
    out = output_folder(args)

    from inference.experiment.attribute import attribute_text
    from inference.storage.outputs import atomic_output_dir, write_json_atomic

    found = attribute_text(text, manifest=args.authors, chunk_words=args.chunk_words, level=args.level,
                           num_words=args.num_words, num_chains=args.num_chains, num_samples=args.num_samples,
                           warmup_steps=args.warmup, seed=args.seed, progress=not args.quiet)
    with atomic_output_dir(out, args.overwrite) as tmp:
        write_json_atomic(tmp / "attribution.json", {"text": str(args.text), **found})
    best = found["authors"].index(found["best"])
    verdict = "FLAGGED: probably none of these authors" if found["flagged"] else "within the candidates"
    say(f"{args.text}: best {found['best']} (P = {found['posterior'][best]:.3f}), out-of-support p = "
        f"{found['out_of_support_p']:.3g} ({verdict}, level {args.level:g}), {len(found['chunks'])} chunk(s), "
        f"seed {args.seed}; wrote {files(out, ['attribution.json'])}")
    return 0
