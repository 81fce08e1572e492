"""``psm simulate`` and ``psm condition``: simulate a persona world, condition it on evidence.

    psm simulate  --num-personas K --vocab-size V --order N --num-docs D --doc-len T [--seed S] --out DIR
    psm condition --personas P.npz --evidence E.npz --out DIR
                  [--model global|global-tables|mixture] [--method exact|svi|mcmc] [--beta B] [--seed S]

``psm condition`` defaults to ``--model global --method exact --beta 1 --seed 0`` (the
persona-selection question with exact Bayes); the settings used are printed on its
closing line and recorded in ``posterior.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

from inference.cli.args import (
    add_out,
    add_quiet,
    add_seed,
    bounded_int,
    files,
    nonnegative_float,
    output_folder,
    path,
    positive_float,
    say,
)
from models.errors import InputError
from models.limits import (
    CONDITION_MODELS,
    MAX_CHAINS,
    MAX_DRAWS,
    MAX_STEPS,
    MAX_TOKENS,
    check_sizes,
)

#: anchoring strength of ``--model global-tables`` when ``--table-strength`` is not given
DEFAULT_TABLE_STRENGTH = 50.0

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
    """Refuse sizes that make no sense or would not fit in memory, before allocating anything."""
    for name, value, low in (("--num-docs", num_docs, 1), ("--doc-len", doc_len, 1)):
        if value < low:
            raise InputError(f"{name} must be >= {low}, got {value}")
    try:
        check_sizes(num_personas=num_personas, vocab_size=vocab_size, order=order)
    except InputError as exc:
        raise InputError("--" + str(exc).replace("_", "-")) from None
    if num_docs * doc_len > MAX_TOKENS:
        raise InputError(f"a corpus of {num_docs} x {doc_len} tokens is too large (limit {MAX_TOKENS:.0e} tokens)")


def cmd_simulate(args: argparse.Namespace) -> int:
    """Draw random personas, simulate a corpus from them, write personas.npz and corpus.npz."""
    check_world_sizes(args.num_personas, args.vocab_size, args.order, args.num_docs, args.doc_len)
    out = output_folder(args)

    from inference.storage.outputs import atomic_output_dir
    from models.counts import Evidence, save_evidence
    from models.mixture import simulate_corpus
    from models.personas import random_personas, save_personas

    personas = random_personas(args.num_personas, args.vocab_size, args.order, args.concentration, seed=args.seed)
    tokens, persona = simulate_corpus(personas, args.num_docs, args.doc_len, seed=args.seed)  # [D, T], [D]
    corpus = Evidence(tokens.long(), tokens.new_ones(tokens.shape, dtype=bool))
    names = ["personas.npz", "corpus.npz"]
    with atomic_output_dir(out, args.overwrite) as tmp:
        save_personas(tmp / names[0], personas)
        save_evidence(tmp / names[1], corpus, persona=persona.long().numpy())
    say(f"simulated {args.num_docs} documents x {args.doc_len} tokens from {args.num_personas} personas "
        f"(V={args.vocab_size}, order {args.order}, seed {args.seed}); wrote {files(out, names)}")
    return 0


# ---------------------------------------------------------------- psm condition


def add_condition(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--personas", type=path, required=True, metavar="P.npz",
                        help="persona tables (as written by 'psm simulate')")
    parser.add_argument("--evidence", type=path, required=True, metavar="E.npz",
                        help="evidence: 'tokens' [D, T] and an optional boolean 'mask' [D, T]")
    parser.add_argument("--model", choices=CONDITION_MODELS, default="global",
                        help="global: one persona wrote all the evidence (default); global-tables: the same with "
                             "uncertain persona tables; mixture: one persona per document, w ~ Dirichlet(alpha)")
    parser.add_argument("--method", choices=("exact", "svi", "mcmc"), default="exact",
                        help="inference method (default exact)")
    parser.add_argument("--beta", type=nonnegative_float, default=1.0, metavar="B",
                        help="evidence strength (tempering exponent), finite and >= 0 (default 1: exact Bayes)")
    add_seed(parser)
    add_out(parser)
    parser.add_argument("--alpha", type=positive_float, default=None, metavar="A",
                        help="Dirichlet concentration of the mixture weights (mixture model only; default 1)")
    parser.add_argument("--table-strength", type=nonnegative_float, default=None, metavar="KAPPA",
                        help="make the persona tables uncertain: Dirichlet rows KAPPA * table + 0.1 anchored on "
                             f"the given personas (default {DEFAULT_TABLE_STRENGTH:g} with --model global-tables)")
    engine = parser.add_argument_group("engine options (svi and mcmc; engine defaults when omitted)")
    engine.add_argument("--num-samples", type=bounded_int(1, MAX_DRAWS), default=None,
                        help="posterior draws (per chain)")
    engine.add_argument("--num-chains", type=bounded_int(1, MAX_CHAINS), default=None, help="MCMC chains")
    engine.add_argument("--warmup", type=bounded_int(0, MAX_STEPS), default=None, help="MCMC warm-up steps")
    engine.add_argument("--num-steps", type=bounded_int(1, MAX_STEPS), default=None, help="SVI steps")
    engine.add_argument("--lr", type=positive_float, default=None, help="SVI learning rate")
    engine.add_argument("--guide", default=None, help="SVI guide (see inference.conditioning.svi)")
    engine.add_argument("--subsample-size", type=bounded_int(1), default=None, help="SVI minibatch of documents")
    engine.add_argument("--checkpoint-dir", type=path, default=None, metavar="DIR",
                        help="write checkpoints into DIR (with --checkpoint-every)")
    engine.add_argument("--checkpoint-every", type=bounded_int(1, MAX_STEPS), default=None, metavar="N",
                        help="checkpoint every N SVI steps / every N finished MCMC chains (and at the end)")
    engine.add_argument("--resume", action="store_true", default=None,
                        help="continue from the newest checkpoint in --checkpoint-dir (a fresh run if none)")
    add_quiet(parser)


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


def _table_strength(args: argparse.Namespace) -> float | None:
    """The anchoring strength of uncertain tables, or None for known tables."""
    if args.model == "global-tables":
        return DEFAULT_TABLE_STRENGTH if args.table_strength is None else args.table_strength
    return args.table_strength


def cmd_condition(args: argparse.Namespace) -> int:
    """Condition personas on evidence; write posterior.json and posterior.nc."""
    if args.alpha is not None and args.model != "mixture":
        raise InputError("--alpha sets the Dirichlet concentration of the mixture model; the global model has none")
    options = engine_options(args)
    out = output_folder(args)

    from inference import diagnostics
    from inference.conditioning.condition import condition
    from inference.storage.outputs import atomic_output_dir, write_json_atomic
    from models.counts import load_evidence
    from models.personas import anchored_table_prior, load_personas

    personas = _naming_file(args.personas, load_personas)
    evidence = load_evidence(args.evidence, personas.vocab_size)
    if args.subsample_size is not None and args.subsample_size > evidence.num_docs:
        raise InputError(f"--subsample-size {args.subsample_size} exceeds the {evidence.num_docs} evidence documents")
    strength = _table_strength(args)
    table_prior = None if strength is None else anchored_table_prior(personas, strength)
    model = "mixture" if args.model == "mixture" else "global"
    alpha = 1.0 if args.alpha is None else args.alpha
    posterior = condition(personas, evidence, model, args.method, args.beta, alpha=alpha,
                          table_prior=table_prior, seed=args.seed, progress=not args.quiet, **options)
    idata = posterior.to_arviz(seed=args.seed)
    summary = {**posterior.summary(), "model": args.model, "seed": args.seed, "table_strength": strength}
    if args.method == "mcmc":  # divergences from ArviZ where the engine left them out
        summary["diagnostics"] = {**diagnostics.convergence(idata), **summary["diagnostics"]}
    names = ["posterior.json", "posterior.nc"]
    with atomic_output_dir(out, args.overwrite) as tmp:
        write_json_atomic(tmp / names[0], summary)
        diagnostics.save_netcdf(idata, tmp / names[1])
    say(f"conditioned the {args.model} model on {evidence.num_docs} documents ({evidence.num_tokens} evidence "
        f"tokens) by {args.method}, beta={args.beta:g}, seed {args.seed}, in {posterior.seconds:.2f} s; "
        f"wrote {files(out, names)}")
    return 0


def _naming_file(path, load) -> Any:
    """``load(path)``, with ``path`` in the message of any :class:`InputError` it raises."""
    try:
        return load(path)
    except InputError as exc:
        message = str(exc)
        raise InputError(message if str(path) in message else f"{path}: {message}") from None
