"""The experiment commands of ``psm``: ``run``, ``demo`` and ``pretrain``.

    psm run CONFIG.toml --out DIR [--seed S] [--device cpu|cuda|auto] [--overwrite] [--quiet]
    psm run ciphers --out DIR          (a bare name runs a shipped config; see inference.experiment.kinds)
    psm demo [--out DIR] [--seed S] [--overwrite] [--quiet]
    psm pretrain [CONFIG.toml] --out DIR [--seed S] [--checkpoint-dir C --checkpoint-every N] [--resume] [--quiet]

The whole config is validated before any work (:func:`inference.experiment.config.load_config`).
``psm pretrain`` with no config regenerates the base checkpoint shipped for the default
world (``models/data/base_default``)::

    psm pretrain --out models/data/base_default --overwrite
"""

from __future__ import annotations

import argparse

from inference.cli.args import (
    add_device,
    add_out,
    add_quiet,
    add_seed,
    bounded_int,
    output_folder,
    path,
    say,
)
from models.limits import MAX_STEPS

DEMO_OUT = "runs/demo"
RUN_SEED_HELP = "seed of every random choice the command makes (default: the config's seed, which defaults to 0)"


def add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=path, metavar="CONFIG.toml",
                        help="experiment description (TOML), or the name of a shipped one: ciphers, elicitation, narrow_to_broad, incontext, novelists, hf")
    add_out(parser)
    add_seed(parser, RUN_SEED_HELP, default=None)
    add_device(parser)
    add_quiet(parser)


def add_demo(parser: argparse.ArgumentParser) -> None:
    add_out(parser, default=DEMO_OUT)
    add_seed(parser, RUN_SEED_HELP, default=None)
    add_quiet(parser)


def add_pretrain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=path, nargs="?", metavar="CONFIG.toml",
                        help="experiment whose [world] and [base] to use (default: the demo's)")
    add_out(parser, what="checkpoint folder")
    parser.add_argument("--checkpoint-dir", type=path, default=None, metavar="DIR",
                        help="save the training state into DIR (with --checkpoint-every) to resume a long run")
    parser.add_argument("--checkpoint-every", type=bounded_int(1, MAX_STEPS), default=None, metavar="N",
                        help="save the training state every N steps (and after the last)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest state in --checkpoint-dir (a fresh run if none)")
    add_seed(parser, RUN_SEED_HELP, default=None)
    add_quiet(parser)


def _config(args: argparse.Namespace, default):
    import dataclasses

    from inference.experiment.config import load_config

    config = default() if getattr(args, "config", None) is None else load_config(args.config)
    return config if args.seed is None else dataclasses.replace(config, seed=args.seed)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the experiment described by a TOML file (any kind of :mod:`inference.experiment.kinds`)."""
    from inference.experiment.kinds import load_experiment

    module, config = load_experiment(args.config, args.seed, args.device)  # the whole config, before any work
    out = output_folder(args)
    say(module.run_and_write(config, out, overwrite=args.overwrite, progress=not args.quiet))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the default experiment (shipped base checkpoint, two arms)."""
    from inference.experiment import runner
    from inference.experiment.config import demo_config

    config = _config(args, demo_config)
    out = output_folder(args)
    say(runner.run_and_write(config, out, overwrite=args.overwrite, progress=not args.quiet))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pre-train the base model of a world; write the checkpoint, the world and the base's scores."""
    import dataclasses
    import json

    from inference.experiment.config import demo_config
    from inference.experiment.world import make_world, measure_base, pretrain_base
    from inference.storage.outputs import atomic_output_dir, write_json_atomic
    from models.lm_checkpoint import save_checkpoint

    config = _config(args, demo_config)
    out = output_folder(args)
    world = make_world(config.world)
    model = pretrain_base(config, world, progress=not args.quiet, checkpoint_dir=args.checkpoint_dir,
                          checkpoint_every=args.checkpoint_every, resume=args.resume)
    scores = measure_base(model, world).summary
    with atomic_output_dir(out, args.overwrite) as tmp:
        save_checkpoint(model, tmp)
        (tmp / "world.json").write_text(json.dumps(dataclasses.asdict(config.world), indent=2) + "\n")
        write_json_atomic(tmp / "base.json", {"base": dataclasses.asdict(config.base), "seed": config.seed, **scores})
    say(f"pre-trained a {scores['num_parameters']:,}-parameter base for {config.base.steps} steps (seed "
        f"{config.seed}): held-out NLL {scores['heldout_nll']:.4f} vs Bayes-optimal {scores['bayes_optimal_nll']:.4f} "
        f"nats/token; wrote {out}/model.safetensors, config.json, world.json, base.json")
    return 0
