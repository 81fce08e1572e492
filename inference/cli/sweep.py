"""``psm sweep``: the exhaustiveness measure over a grid of seeds, methods, learning rates, steps and sizes.

    psm sweep SWEEP.toml --out DIR [--executor auto|ray|local] [--address ADDR] [--resume] [--overwrite] [--quiet]
    psm sweep default --out DIR          # the shipped sweep (about 30 minutes on 2 cores)

See :mod:`inference.experiment.sweep` for the file format and :mod:`inference.experiment.sweep_output`
for what it writes.
"""

from __future__ import annotations

import argparse

from inference.cli.args import add_out, add_quiet, path, say

#: shipped sweeps that ``psm sweep NAME`` accepts instead of a path
SHIPPED = ("default", "smoke")


def add_sweep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP.toml",
                        help=f"the sweep file, or the name of a shipped one ({', '.join(SHIPPED)})")
    add_out(parser)
    parser.add_argument("--executor", choices=("auto", "ray", "local"), default="auto",
                        help="run points as Ray tasks (ray), one after another in this process (local), or "
                             "Ray when it is installed (auto, the default)")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="join an existing Ray cluster (e.g. 'auto' or 'ray://host:10001') instead of starting one")
    parser.add_argument("--resume", action="store_true",
                        help="continue a sweep killed midway in DIR, skipping its finished points")
    add_quiet(parser)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep; write sweep.csv, sweep_table.md and figures."""
    from importlib import resources

    from inference.experiment.sweep import load_sweep
    from inference.experiment.sweep_output import run_sweep
    from models.errors import InputError

    if args.resume and args.overwrite:
        raise InputError("--resume continues the sweep in DIR and --overwrite deletes it: choose one")
    if args.sweep in SHIPPED:
        source = resources.files("inference.experiment") / "configs" / f"sweep_{args.sweep}.toml"
        with resources.as_file(source) as shipped:
            config = load_sweep(shipped)
    else:
        config = load_sweep(path(args.sweep))
    result = run_sweep(config, args.out, executor=args.executor, address=args.address, resume=args.resume,
                       overwrite=args.overwrite, progress=not args.quiet)
    say(f"swept {result['points']} points ({result['ran']} run now by {result['executor']}, {result['skipped']} "
        f"finished before) in {result['seconds']:.1f} s; {result['rows']} rows, {result['failed_rows']} failed; "
        f"wrote {args.out}/sweep.csv, sweep_table.md, sweep_E_vs_kl.png, sweep_E_vs_size.png")
    return 0
