"""The experiment commands of ``psm``: ``run``, ``demo``, ``pretrain`` and ``sbc``.

    psm run CONFIG.toml --out DIR [--seed S] [--quiet]
    psm demo [--out DIR] [--seed S] [--quiet]
    psm pretrain [CONFIG.toml] --out DIR [--seed S] [--checkpoint-dir C --checkpoint-every N] [--resume] [--quiet]
    psm sbc --model M --method X --num-sims N --seed S --out DIR [--num-draws L] [--beta B] [--quiet]

``psm pretrain`` with no config regenerates the base checkpoint shipped for
the default world (``models/data/base_default``)::

    psm pretrain --out models/data/base_default

They are registered in :data:`inference.cli.COMMANDS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from inference.outputs import atomic_output_dir, check_output_dir, write_json_atomic
from models.errors import InputError

DEMO_OUT = Path("runs/demo")


def _add_common(parser: argparse.ArgumentParser) -> None:
    from inference.cli import MAX_SEED, bounded_int

    parser.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=None,
                        help="seed of evidence, training and inference (default: the config's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, metavar="CONFIG.toml", help="experiment description (TOML)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    _add_common(parser)


def add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEMO_OUT, metavar="DIR", help=f"output folder (default {DEMO_OUT})")
    _add_common(parser)


def add_pretrain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, nargs="?", metavar="CONFIG.toml",
                        help="experiment whose [world] and [base] to use (default: the demo's)")
    from inference.cli import MAX_STEPS, bounded_int

    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoint folder")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, metavar="DIR",
                        help="save the training state into DIR (with --checkpoint-every) to resume a long run")
    parser.add_argument("--checkpoint-every", type=bounded_int(1, MAX_STEPS), default=None, metavar="N",
                        help="save the training state every N steps (and after the last)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest state in --checkpoint-dir (a fresh run if none)")
    _add_common(parser)


def _config(args: argparse.Namespace, default):
    from inference.config import load_config

    config = default() if getattr(args, "config", None) is None else load_config(args.config)
    return config if args.seed is None else dataclasses.replace(config, seed=args.seed)


def _experiment(config, out: Path, quiet: bool) -> int:
    from inference.cli import say
    from inference.experiment import run_experiment
    from inference.report import write_experiment

    out = check_output_dir(out)
    summary, arms, _ = run_experiment(config, progress=not quiet)
    names = write_experiment(summary, arms, out)
    lines = [f"ran {len(arms)} arm(s) ({', '.join(a.summary['arm'] for a in arms)}) with seed {config.seed} "
             f"in {summary['timing']['seconds']:.1f} s; wrote {len(names)} files to {out}/:"]
    lines += [f"  {out / 'summary.json'}  (every number)", f"  {out / 'report.md'}  (findings and figures)"]
    for arm in summary["arms"]:
        lines.append(f"  arm {arm['arm']}: E_true={_short(arm['exhaustiveness_true'][-1])}, "
                     f"E_self={_short(arm['exhaustiveness_self'][-1])}, beta*={_short(arm['beta_star'][-1])}")
    say("\n".join(lines))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the experiment described by a TOML file."""
    config = _config(args, None)
    return _experiment(config, args.out, args.quiet)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the default experiment (shipped base checkpoint, two arms)."""
    from inference.config import demo_config

    return _experiment(_config(args, demo_config), args.out, args.quiet)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pre-train the base model of a world; write the checkpoint, the world and the base's scores."""
    from inference.cli import say
    from inference.config import demo_config
    from inference.experiment import make_world, measure_base, pretrain_base
    from models.lm_checkpoint import save_checkpoint

    config = _config(args, demo_config)
    out = check_output_dir(args.out)
    world = make_world(config.world)
    model = pretrain_base(config, world, progress=not args.quiet, checkpoint_dir=args.checkpoint_dir,
                          checkpoint_every=args.checkpoint_every, resume=args.resume)
    scores = measure_base(model, world).summary
    with atomic_output_dir(out) as tmp:
        save_checkpoint(model, tmp)
        (tmp / "world.json").write_text(json.dumps(dataclasses.asdict(config.world), indent=2) + "\n")
        write_json_atomic(tmp / "base.json", {"base": dataclasses.asdict(config.base), "seed": config.seed, **scores})
    say(f"pre-trained a {scores['num_parameters']:,}-parameter base for {config.base.steps} steps: held-out NLL "
        f"{scores['heldout_nll']:.4f} vs Bayes-optimal {scores['bayes_optimal_nll']:.4f} nats/token; wrote "
        f"{out}/model.safetensors, config.json, world.json, base.json")
    return 0


def _short(x) -> str:
    return "undefined" if x is None or x != x else f"{x:.3g}"


# ---------------------------------------------------------------- psm sbc


def add_sbc(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``psm sbc``."""
    from inference.cli import add_out, add_seed, bounded_int, nonnegative_float
    from inference.sbc import DEFAULT_DRAWS, MAX_DRAWS, MAX_SIMS, MODEL_HELP, MODELS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "models (methods):\n" + "\n".join(
        f"  {m:14s} ({', '.join(MODELS[m])})\n  {'':14s} {MODEL_HELP[m]}" for m in MODELS
    ) + "\nwrites DIR/sbc.json (ranks, p_value per parameter, min_p_value) and DIR/sbc_ranks.png"
    parser.add_argument("--model", choices=tuple(MODELS), required=True, help="SBC model (listed below)")
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
    parser.add_argument("--guide", default=None, help="SVI guide (method svi; see inference.svi)")
    parser.add_argument("--thin", type=bounded_int(1, 1000), default=None,
                        help="MCMC: keep every THIN-th of L * THIN draws (method mcmc; default 4)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_sbc(args: argparse.Namespace) -> int:
    """Run SBC; write sbc.json and the rank histograms sbc_ranks.png."""
    from inference import sbc
    from inference.cli import say

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
    out = check_output_dir(args.out)
    result = sbc.simulation_based_calibration(args.model, args.method, args.num_sims, args.seed, args.num_draws,
                                          progress=not args.quiet, beta=args.beta, **options)
    fig = sbc.plot_ranks(result)
    names = ["sbc.json", "sbc_ranks.png"]
    try:
        with atomic_output_dir(out) as tmp:
            write_json_atomic(tmp / names[0], result.to_json())
            fig.savefig(tmp / names[1], dpi=100)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    say(f"SBC of {args.model} by {args.method}: {args.num_sims} simulations x {args.num_draws} draws in "
        f"{result.seconds:.1f} s, min p-value {result.min_p_value:.3g} over {len(result.ranks)} "
        f"parameter{'s' if len(result.ranks) > 1 else ''}; "
        f"wrote {', '.join(str(out / n) for n in names)}")
    return 0
