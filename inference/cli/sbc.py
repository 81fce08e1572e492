"""``psm sbc``: simulation-based calibration of a model and inference method.

    psm sbc --model M --method X --num-sims N --out DIR [--seed S] [--num-draws L] [--beta B] [--quiet]
"""

from __future__ import annotations

import argparse
from typing import Any

from inference.cli.args import (
    add_out,
    add_quiet,
    add_seed,
    bounded_int,
    nonnegative_float,
    output_folder,
    say,
)
from inference.conditioning.sbc_models import DEFAULT_DRAWS, MAX_DRAWS, MAX_SIMS, MODEL_HELP, MODELS
from models.errors import InputError
from models.limits import CONDITION_MODELS


def add_sbc(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``psm sbc``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "models (methods):\n" + "\n".join(
        f"  {m:14s} ({', '.join(MODELS[m])})\n  {'':14s} {MODEL_HELP[m]}" for m in MODELS
    ) + "\nwrites DIR/sbc.json (ranks, p_value per parameter, min_p_value) and DIR/sbc_ranks.png"
    parser.add_argument("--model", choices=CONDITION_MODELS, required=True,
                        help="the model, named as in 'psm condition' (listed below)")
    parser.add_argument("--method", choices=("exact", "svi", "mcmc"), required=True,
                        help="inference method (the model must offer it)")
    parser.add_argument("--num-sims", type=bounded_int(1, MAX_SIMS), required=True, metavar="N",
                        help="simulations (prior draw, simulated evidence, conditioning)")
    parser.add_argument("--num-draws", type=bounded_int(1, MAX_DRAWS), default=DEFAULT_DRAWS, metavar="L",
                        help=f"posterior draws per simulation; ranks lie in 0..L (default {DEFAULT_DRAWS})")
    add_seed(parser)
    add_out(parser)
    parser.add_argument("--beta", type=nonnegative_float, default=1.0, metavar="B",
                        help="exponent the method conditions with; simulations use 1, so other values give a "
                             "deliberately mis-calibrated posterior (default 1)")
    parser.add_argument("--guide", default=None, help="SVI guide (method svi; see inference.conditioning.svi)")
    parser.add_argument("--thin", type=bounded_int(1, 1000), default=None,
                        help="MCMC: keep every THIN-th of L * THIN draws (method mcmc; default 4)")
    add_quiet(parser)


def cmd_sbc(args: argparse.Namespace) -> int:
    """Run SBC; write sbc.json and the rank histograms sbc_ranks.png."""
    from inference.conditioning import sbc
    from inference.storage.outputs import atomic_output_dir, write_json_atomic

    sbc.check_model_method(args.model, args.method)
    options: dict[str, Any] = {}
    if args.guide is not None:
        if args.method != "svi":
            raise InputError(f"--guide applies to method svi, not {args.method}")
        options["guide"] = args.guide
    if args.thin is not None:
        if args.method != "mcmc":
            raise InputError(f"--thin applies to method mcmc, not {args.method}")
        options["thin"] = args.thin
    out = output_folder(args)
    result = sbc.simulation_based_calibration(args.model, args.method, args.num_sims, args.seed, args.num_draws,
                                              progress=not args.quiet, beta=args.beta, **options)
    fig = sbc.plot_ranks(result)
    names = ["sbc.json", "sbc_ranks.png"]
    with atomic_output_dir(out, args.overwrite) as tmp:
        write_json_atomic(tmp / names[0], result.to_json())
        fig.savefig(tmp / names[1], dpi=100)
    say(f"SBC of {args.model} by {args.method}: {args.num_sims} simulations x {args.num_draws} draws in "
        f"{result.seconds:.1f} s (seed {args.seed}), min p-value {result.min_p_value:.3g} over {len(result.ranks)} "
        f"parameter{'s' if len(result.ranks) > 1 else ''}; "
        f"wrote {', '.join(str(out / n) for n in names)}")
    return 0
