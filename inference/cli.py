"""``psm``: the command line of the persona-selection toolkit.

    psm simulate  --num-personas K --vocab-size V --order N --num-docs D --doc-len T --seed S --out DIR
    psm condition --personas P.npz --evidence E.npz --model global|mixture --method exact|svi|mcmc
                  --beta B --seed S --out DIR
    psm run CONFIG.toml --out DIR        psm demo [--out DIR]        psm pretrain [CONFIG.toml] --out DIR
    (the last three live in :mod:`inference.cli_experiments`)

Every command parses and validates its arguments, calls the API
(:mod:`models`, :func:`inference.condition.condition`,
:mod:`inference.diagnostics`) and writes its files through
:func:`inference.outputs.atomic_output_dir`, so a failed run leaves nothing
half-written. It ends with one line on stdout saying what it did and where
the files went.

Exit codes: 0 success; 2 bad input (``psm: error: <one line>`` on stderr:
unusable arguments, missing or malformed files, values out of range, an
unwritable ``--out``); 1 an unexpected failure (``psm: internal error: ...``;
set ``PSM_DEBUG=1`` for the traceback); 130 interrupted.

Adding a command: write ``add_<name>(parser)`` (its arguments) and
``cmd_<name>(args) -> int`` (its work), and append ``Command("<name>", help,
add_<name>, cmd_<name>)`` to :data:`COMMANDS`. Heavy imports (torch, Pyro,
ArviZ) belong inside ``cmd_<name>`` so that ``psm --help`` and usage errors
stay fast.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference import cli_experiments
from inference.outputs import atomic_output_dir, check_output_dir, write_json_atomic
from models.errors import InputError
from models.personas import MAX_TABLE_ENTRIES

#: largest simulated corpus, in tokens (``num_docs * doc_len``)
MAX_CORPUS_TOKENS = 50_000_000
#: largest number of posterior draws over all chains (SVI or MCMC)
MAX_DRAWS = 10_000_000
#: most SVI steps or MCMC warm-up steps
MAX_STEPS = 10_000_000
#: most MCMC chains
MAX_CHAINS = 64
#: seeds are 32-bit (NumPy's legacy seeding, used by ``pyro.set_rng_seed``, needs that)
MAX_SEED = 2**32 - 1

#: engine option of each ``condition`` flag, and the methods that take it
ENGINE_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "num_steps": ("num_steps", ("svi",)),
    "lr": ("lr", ("svi",)),
    "guide": ("guide", ("svi",)),
    "subsample_size": ("subsample_size", ("svi",)),
    "num_samples": ("num_samples", ("svi", "mcmc")),
    "num_chains": ("num_chains", ("mcmc",)),
    "warmup": ("warmup_steps", ("mcmc",)),
    "checkpoint_dir": ("checkpoint_dir", ("svi", "mcmc")),
    "checkpoint_every": ("checkpoint_every", ("svi", "mcmc")),
    "resume": ("resume", ("svi", "mcmc")),
}


class UsageError(Exception):
    """An argument argparse could not accept (reported like :class:`InputError`)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: raises :class:`UsageError` instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f" (see '{self.prog} --help')"
        raise UsageError(message + hint)


@dataclass(frozen=True)
class Command:
    """A ``psm`` subcommand: its name, one-line help, argument builder and runner."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# ---------------------------------------------------------------- argument types


def _number(text: str, kind: type, low: float, high: float | None, what: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    finite = kind is int or math.isfinite(value)
    if not (finite and value >= low and (high is None or value <= high)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[low, high]``."""
    what = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        return _number(text, int, low, high, what)

    parse.__name__ = "integer"  # argparse names the type in some messages
    return parse


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (refuses NaN and infinities)."""
    return _number(text, float, 0.0, None, "a finite number >= 0")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text, float, 0.0, None, "a finite number > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def add_seed(parser: argparse.ArgumentParser) -> None:
    """``--seed S`` (required: every command is reproducible)."""
    parser.add_argument("--seed", type=bounded_int(0, MAX_SEED), required=True, help="seed of every random choice")


def add_out(parser: argparse.ArgumentParser) -> None:
    """``--out DIR``: created if missing; files already there that the command does not write are kept."""
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")


def say(message: str) -> None:
    """The one human line a command prints on stdout when it is done."""
    print(message, flush=True)


def _files(out: Path, names: list[str]) -> str:
    return ", ".join(str(out / name) for name in names)


# ---------------------------------------------------------------- psm simulate


def add_simulate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-personas", type=int, required=True, metavar="K", help="number of personas K >= 1")
    parser.add_argument("--vocab-size", type=int, required=True, metavar="V", help="vocabulary size V >= 2")
    parser.add_argument("--order", type=int, required=True, metavar="N", help="Markov order n >= 0 (0 = unigram)")
    parser.add_argument("--num-docs", type=int, required=True, metavar="D", help="documents to simulate")
    parser.add_argument("--doc-len", type=int, required=True, metavar="T", help="tokens per document")
    parser.add_argument("--concentration", type=positive_float, default=0.5, metavar="C",
                        help="Dirichlet concentration of every persona row (small = peaked personas; default 0.5)")
    add_seed(parser)
    add_out(parser)


def check_world_sizes(num_personas: int, vocab_size: int, order: int, num_docs: int, doc_len: int) -> None:
    """Refuse sizes that make no sense or would not fit in memory, before allocating anything.

    The table size ``K * V**(order + 1)`` is compared in log space, so a huge
    ``order`` is refused without computing a huge power.
    """
    for name, value, low in (("--num-personas", num_personas, 1), ("--vocab-size", vocab_size, 2),
                             ("--order", order, 0), ("--num-docs", num_docs, 1), ("--doc-len", doc_len, 1)):
        if value < low:
            raise InputError(f"{name} must be >= {low}, got {value}")
    log_entries = math.log(num_personas) + (order + 1) * math.log(vocab_size)
    if log_entries > math.log(MAX_TABLE_ENTRIES):
        raise InputError(
            f"{num_personas} personas of order {order} over {vocab_size} tokens need about "
            f"10^{log_entries / math.log(10):.1f} table entries (limit {MAX_TABLE_ENTRIES:.0e})"
        )
    if num_docs * doc_len > MAX_CORPUS_TOKENS:
        raise InputError(
            f"a corpus of {num_docs} x {doc_len} tokens is too large (limit {MAX_CORPUS_TOKENS:.0e} tokens)"
        )


def cmd_simulate(args: argparse.Namespace) -> int:
    """Draw random personas, simulate a corpus from them, write personas.npz and corpus.npz."""
    check_world_sizes(args.num_personas, args.vocab_size, args.order, args.num_docs, args.doc_len)
    out = check_output_dir(args.out)

    from models.counts import Evidence, save_evidence
    from models.mixture import simulate_corpus
    from models.personas import random_personas, save_personas

    personas = random_personas(args.num_personas, args.vocab_size, args.order, args.concentration, seed=args.seed)
    tokens, persona = simulate_corpus(personas, args.num_docs, args.doc_len, seed=args.seed)  # [D, T], [D]
    corpus = Evidence(tokens.long(), tokens.new_ones(tokens.shape, dtype=bool))
    names = ["personas.npz", "corpus.npz"]
    with atomic_output_dir(out) as tmp:
        save_personas(tmp / names[0], personas)
        save_evidence(tmp / names[1], corpus, persona=persona.long().numpy())
    say(f"simulated {args.num_docs} documents x {args.doc_len} tokens from {args.num_personas} personas "
        f"(V={args.vocab_size}, order {args.order}, seed {args.seed}); wrote {_files(out, names)}")
    return 0


# ---------------------------------------------------------------- psm condition


def add_condition(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--personas", type=Path, required=True, metavar="P.npz",
                        help="persona tables (as written by 'psm simulate')")
    parser.add_argument("--evidence", type=Path, required=True, metavar="E.npz",
                        help="evidence: 'tokens' [D, T] and an optional boolean 'mask' [D, T]")
    parser.add_argument("--model", choices=("global", "mixture"), required=True,
                        help="one persona for all the evidence, or one per document with w ~ Dirichlet(alpha)")
    parser.add_argument("--method", choices=("exact", "svi", "mcmc"), required=True, help="inference method")
    parser.add_argument("--beta", type=nonnegative_float, required=True, metavar="B",
                        help="evidence strength (tempering exponent), finite and >= 0")
    add_seed(parser)
    add_out(parser)
    parser.add_argument("--alpha", type=positive_float, default=None, metavar="A",
                        help="Dirichlet concentration of the mixture weights (mixture model only; default 1)")
    parser.add_argument("--table-strength", type=nonnegative_float, default=None, metavar="KAPPA",
                        help="make the persona tables uncertain: Dirichlet rows KAPPA * table + 0.1 anchored "
                             "on the given personas (needed for global with svi or mcmc)")
    engine = parser.add_argument_group("engine options (svi and mcmc; engine defaults when omitted)")
    engine.add_argument("--num-samples", type=bounded_int(1, MAX_DRAWS), default=None,
                        help="posterior draws (per chain)")
    engine.add_argument("--num-chains", type=bounded_int(1, MAX_CHAINS), default=None, help="MCMC chains")
    engine.add_argument("--warmup", type=bounded_int(0, MAX_STEPS), default=None, help="MCMC warm-up steps")
    engine.add_argument("--num-steps", type=bounded_int(1, MAX_STEPS), default=None, help="SVI steps")
    engine.add_argument("--lr", type=positive_float, default=None, help="SVI learning rate")
    engine.add_argument("--guide", default=None, help="SVI guide (see inference.svi)")
    engine.add_argument("--subsample-size", type=bounded_int(1), default=None, help="SVI minibatch of documents")
    engine.add_argument("--checkpoint-dir", type=Path, default=None, metavar="DIR",
                        help="write checkpoints into DIR (with --checkpoint-every)")
    engine.add_argument("--checkpoint-every", type=bounded_int(1, MAX_STEPS), default=None, metavar="N",
                        help="checkpoint every N SVI steps / every N finished MCMC chains (and at the end)")
    engine.add_argument("--resume", action="store_true", default=None,
                        help="continue from the newest checkpoint in --checkpoint-dir (a fresh run if none)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine keyword arguments set on the command line; refuses flags the method does not take."""
    options: dict[str, Any] = {}
    for flag, (option, methods) in ENGINE_OPTIONS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if args.method not in methods:
            raise InputError(f"--{flag.replace('_', '-')} applies to method {' or '.join(methods)}, "
                             f"not {args.method}")
        options[option] = value
    draws = options.get("num_samples", 1) * options.get("num_chains", 1)
    if draws > MAX_DRAWS:
        raise InputError(f"{draws} posterior draws over all chains is too many (limit {MAX_DRAWS:.0e})")
    return options


def cmd_condition(args: argparse.Namespace) -> int:
    """Condition personas on evidence; write posterior.json and posterior.nc."""
    if args.alpha is not None and args.model != "mixture":
        raise InputError("--alpha sets the Dirichlet concentration of the mixture model; the global model has none")
    options = engine_options(args)
    out = check_output_dir(args.out)

    from inference import diagnostics
    from inference.condition import condition
    from models.counts import load_evidence
    from models.personas import anchored_table_prior, load_personas

    personas = _naming_file(args.personas, load_personas)
    evidence = load_evidence(args.evidence, personas.vocab_size)
    if args.subsample_size is not None and args.subsample_size > evidence.num_docs:
        raise InputError(f"--subsample-size {args.subsample_size} exceeds the {evidence.num_docs} evidence documents")
    table_prior = None if args.table_strength is None else anchored_table_prior(personas, args.table_strength)
    alpha = 1.0 if args.alpha is None else args.alpha
    posterior = condition(personas, evidence, args.model, args.method, args.beta, alpha=alpha,
                          table_prior=table_prior, seed=args.seed, progress=not args.quiet, **options)
    idata = posterior.to_arviz()
    summary = posterior.summary()
    if args.method == "mcmc":  # R-hat, ESS and divergences from ArviZ where the engine left them out
        summary["diagnostics"] = {**diagnostics.convergence(idata), **summary["diagnostics"]}
    names = ["posterior.json", "posterior.nc"]
    with atomic_output_dir(out) as tmp:
        write_json_atomic(tmp / names[0], summary)
        diagnostics.save_netcdf(idata, tmp / names[1])
    say(f"conditioned the {args.model} model on {evidence.num_docs} documents ({evidence.num_tokens} evidence "
        f"tokens) by {args.method}, beta={args.beta:g}, seed {args.seed}, in {posterior.seconds:.2f} s; "
        f"wrote {_files(out, names)}")
    return 0


# ---------------------------------------------------------------- the parser and main

#: every subcommand, in the order ``psm --help`` lists them
COMMANDS: list[Command] = [
    Command("simulate", "draw random Markov personas and simulate a corpus from them", add_simulate, cmd_simulate),
    Command("condition", "condition personas on evidence (exact, SVI or MCMC)", add_condition, cmd_condition),
    Command("run", "run an experiment described by a TOML file", cli_experiments.add_run, cli_experiments.cmd_run),
    Command("demo", "run the default experiment (in-support and novel evidence)", cli_experiments.add_demo,
            cli_experiments.cmd_demo),
    Command("pretrain", "pre-train the base model of a world and save its checkpoint", cli_experiments.add_pretrain,
            cli_experiments.cmd_pretrain),
    Command("sbc", "simulation-based calibration of a model and inference method", cli_experiments.add_sbc,
            cli_experiments.cmd_sbc),
]


def build_parser() -> argparse.ArgumentParser:
    """The ``psm`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = _Parser(prog="psm", description="Persona selection: simulate persona worlds and condition on evidence.",
                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help, allow_abbrev=False)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def _naming_file(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)``, with ``path`` in the message of any :class:`InputError` it raises."""
    try:
        return load(path)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if str(path) in message else f"{path}: {message}") from None


def _one_line(exc: BaseException, limit: int | None = None) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    """Run ``psm`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except UsageError as exc:
        print(f"psm: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:  # InputError and the API's own ValueErrors: bad input
        if os.environ.get("PSM_DEBUG") == "1":
            traceback.print_exc()
        print(f"psm: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("psm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("PSM_DEBUG") == "1":
            traceback.print_exc()
            print(f"psm: internal error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"psm: internal error: {type(exc).__name__}: {_one_line(exc, 300)} "
                  "(set PSM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
