"""``psm``: the command line of the persona-selection toolkit.

    psm simulate  --num-personas K --vocab-size V --order N --num-docs D --doc-len T --out DIR
    psm condition --personas P.npz --evidence E.npz --out DIR [--model M] [--method X] [--beta B]
    psm run CONFIG.toml --out DIR        psm demo [--out DIR]        psm pretrain [CONFIG.toml] --out DIR
    psm sbc --model M --method X --num-sims N --out DIR      psm sweep SWEEP.toml --out DIR [--executor auto|ray|local]
    psm federalist --out DIR           psm attribute --text FILE [--authors MANIFEST] --out DIR

Every command takes ``--seed S`` (the seed of every random choice it makes, default 0),
``--out DIR`` (refused when it holds an earlier run, unless ``--overwrite``) and
``--quiet``. It parses and validates its arguments, calls the API and writes its files
through :func:`inference.storage.outputs.atomic_output_dir`, so a failed run leaves
nothing half-written; it ends with one line on stdout saying what it did (with the
settings it used) and where the files went.

Exit codes: 0 success; 2 bad input (``psm: error: <one line>`` on stderr: unusable
arguments, missing or malformed files, values out of range, an unusable ``--out``);
1 an unexpected failure (``psm: internal error: ...``; set ``PSM_DEBUG=1`` for the
traceback); 130 interrupted.

Adding a command: write ``add_<name>(parser)`` (its arguments) and ``cmd_<name>(args)
-> int`` (its work) in the module of its group, and append ``Command(...)`` to
:data:`COMMANDS`. Heavy imports (torch, Pyro, NumPy, ArviZ) belong inside
``cmd_<name>``, so that ``psm --help`` and usage errors stay fast.
"""

from __future__ import annotations

import os
import sys

from inference.cli import authorship, conditioning, experiments, sbc, sweep
from inference.cli.args import Command, Parser, UsageError

__all__ = ["COMMANDS", "build_parser", "main"]

#: every subcommand, in the order ``psm --help`` lists them
COMMANDS: list[Command] = [
    Command("simulate", "draw random Markov personas and simulate a corpus from them",
            conditioning.add_simulate, conditioning.cmd_simulate),
    Command("condition", "condition personas on evidence (exact, SVI or MCMC)",
            conditioning.add_condition, conditioning.cmd_condition),
    Command("run", "run an experiment described by a TOML file", experiments.add_run, experiments.cmd_run),
    Command("demo", "run the default experiment (in-support and novel evidence)",
            experiments.add_demo, experiments.cmd_demo),
    Command("pretrain", "pre-train the base model of a world and save its checkpoint",
            experiments.add_pretrain, experiments.cmd_pretrain),
    Command("sbc", "simulation-based calibration of a model and inference method", sbc.add_sbc, sbc.cmd_sbc),
    Command("sweep", "the exhaustiveness measure over a grid of seeds, methods and sizes (Ray optional)",
            sweep.add_sweep, sweep.cmd_sweep),
    Command("federalist", "attribute the disputed Federalist papers (word-rate models and baselines)",
            authorship.add_federalist, authorship.cmd_federalist),
    Command("attribute", "attribute a text to known authors, or flag it as by none of them",
            authorship.add_attribute, authorship.cmd_attribute),
]


def build_parser() -> Parser:
    """The ``psm`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = Parser(prog="psm", description="Persona selection: simulate persona worlds, condition on evidence, "
                                            "and compare fine-tuning with conditioning.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help, allow_abbrev=False)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


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
            __import__("traceback").print_exc()
        print(f"psm: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("psm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("PSM_DEBUG") == "1":
            __import__("traceback").print_exc()
            print(f"psm: internal error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"psm: internal error: {type(exc).__name__}: {_one_line(exc, 300)} "
                  "(set PSM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
