"""Training-loop cost and base-model quality (run by hand; not part of the tests).

Two parts:

``speed``    steps/second of :func:`inference.finetune.pretrain` and
             :func:`inference.finetune.finetune` against a bare PyTorch loop of the
             same model on the same batches (AdamW, nothing else): median over
             repeats and the ratio (target <= 1.2). Fine-tuning methods other than
             ``full`` are timed for information.
``quality``  pre-trains the base on the default-ish world (bigram personas) and
             reports its held-out NLL per token against the Bayes-optimal NLL of
             the true persona mixture (``inference.exact.mixture_predictive`` with
             the prior weights), the tagged NLL against each persona's own NLL,
             and the wall time.

Examples::

    python benchmarks/bench_training.py --part speed --threads 1
    python benchmarks/bench_training.py --part quality --steps 2000 --lr 6e-3 --docs 100000 --save runs/base
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from inference.finetuning.training import finetune, pretrain
from models.counts import make_evidence
from models.lm_checkpoint import save_checkpoint
from models.mixture import simulate_corpus
from models.personas import random_personas
from models.predictive import mixture_predictive
from models.transformer import (
    PersonaLM,
    TransformerConfig,
    make_inputs,
    next_token_logprobs,
    num_parameters,
)


def world(args):
    personas = random_personas(args.personas, args.vocab, order=1, concentration=args.concentration, seed=args.seed)
    tokens, persona = simulate_corpus(personas, args.docs, args.doc_len, seed=args.seed + 1)
    return personas, tokens, persona


def config_for(args, personas) -> TransformerConfig:
    return TransformerConfig(personas.vocab_size, personas.num_personas, args.doc_len + 1,
                             n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)


def bare_loop(config: TransformerConfig, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float, seed: int) -> float:
    """The reference: the same model, the same batches, AdamW, nothing else. Returns seconds."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = PersonaLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99))
    for idx, targets in batches:
        _, loss = model(idx, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def pretrain_batches(config, tokens, persona, steps, batch_size, p_tag, seed):
    """The batches pretrain draws (same generator calls), precomputed for the bare loop."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        rows = torch.randint(tokens.shape[0], (batch_size,), generator=generator)
        coin = torch.rand(batch_size, generator=generator) < p_tag
        out.append(make_inputs(tokens[rows], torch.where(coin, persona[rows], -1), config))
    return out


def speed(args) -> None:
    personas, tokens, persona = world(args)
    config = config_for(args, personas)
    steps, B = args.bench_steps, args.batch_size
    batches = pretrain_batches(config, tokens, persona, steps, B, 0.5, args.seed)
    times = {"bare (pretrain batches)": [], "pretrain": []}
    for _ in range(args.repeats):  # interleaved, so that load changes hit both
        times["bare (pretrain batches)"].append(bare_loop(config, batches, 6e-3, args.seed))
        start = time.perf_counter()
        pretrain(config, tokens, persona, steps=steps, batch_size=B, seed=args.seed)
        times["pretrain"].append(time.perf_counter() - start)

    torch.manual_seed(0)
    base = PersonaLM(config)
    evidence = make_evidence(tokens[: args.evidence_docs].numpy())
    fb = min(args.finetune_batch, evidence.num_docs)
    generator = torch.Generator().manual_seed(args.seed)
    idx_all, targets_all = make_inputs(evidence.tokens, None, config)
    ft_batches = []
    for _ in range(steps):
        rows = torch.randperm(evidence.num_docs, generator=generator)[:fb] if fb < evidence.num_docs else torch.arange(fb)
        ft_batches.append((idx_all[rows], targets_all[rows]))
    methods = ["full", "last_layer", "lora", "k_params"]
    times.update({"bare (finetune batches)": []} | {f"finetune {m}": [] for m in methods})
    for _ in range(args.repeats):
        times["bare (finetune batches)"].append(bare_loop(config, ft_batches, 1e-3, args.seed))
        for method in methods:
            start = time.perf_counter()
            finetune(base, evidence, method=method, steps=steps, batch_size=fb, k=1000, seed=args.seed)
            times[f"finetune {method}"].append(time.perf_counter() - start)

    print(f"threads={torch.get_num_threads()}  model: {num_parameters(base):,} parameters "
          f"({config.n_layer} layers, width {config.n_embd})  steps per repeat={steps}  repeats={args.repeats}")
    print(f"pretrain batches {B} x {args.doc_len + 1} positions; finetune batches {fb} x {args.doc_len}")
    print(f"{'loop':28s} {'median s':>9s} {'steps/s':>8s} {'ratio':>6s}")
    for name, values in times.items():
        med = statistics.median(values)
        ref = "bare (pretrain batches)" if name == "pretrain" else "bare (finetune batches)"
        ratio = "" if name.startswith("bare") else f"{med / statistics.median(times[ref]):6.3f}"
        print(f"{name:28s} {med:9.3f} {steps / med:8.2f} {ratio:>6s}")


def quality(args) -> None:
    personas, tokens, persona = world(args)
    held, held_persona = simulate_corpus(personas, args.heldout, args.doc_len, seed=args.seed + 2)
    config = config_for(args, personas)
    V = personas.vocab_size
    table = personas.log_table()
    bayes_lp = mixture_predictive(table, personas.prior.log(), held, V, 1)  # [n, T, V]
    bayes = -bayes_lp.gather(-1, held[..., None]).mean().item()
    own = torch.stack([mixture_predictive(table[h : h + 1], torch.zeros(1), held, V, 1) for h in range(len(table))])
    own_nll = -own[held_persona, torch.arange(len(held))].gather(-1, held[..., None]).mean().item()
    start = time.perf_counter()
    model, history = pretrain(config, tokens, persona, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              warmup=args.warmup, min_lr_ratio=args.min_lr_ratio, weight_decay=args.weight_decay,
                              p_tag=args.p_tag, seed=args.seed, progress=args.progress)
    seconds = time.perf_counter() - start
    token_nll = -next_token_logprobs(model, held).gather(-1, held[..., None]).squeeze(-1)  # [n, T]
    nll = token_nll.mean().item()
    bayes_token = -bayes_lp.gather(-1, held[..., None]).squeeze(-1)  # [n, T]
    train = tokens[: args.heldout]
    train_nll = -next_token_logprobs(model, train).gather(-1, train[..., None]).mean().item()
    train_bayes = -mixture_predictive(table, personas.prior.log(), train, V, 1).gather(-1, train[..., None]).mean().item()
    tagged = torch.cat([next_token_logprobs(model, held[held_persona == h], tag=h).gather(-1, held[held_persona == h][..., None])
                        for h in range(len(table))])
    tagged_nll = -tagged.mean().item()
    print(f"world: {personas.num_personas} bigram personas, V={V}, concentration={args.concentration}, "
          f"corpus {args.docs} x {args.doc_len}, held-out {args.heldout} docs, seed {args.seed}")
    print(f"model: {num_parameters(model):,} parameters, {args.n_layer} layers, width {args.n_embd}; "
          f"steps={args.steps} batch={args.batch_size} lr={args.lr} warmup={args.warmup} "
          f"min_lr_ratio={args.min_lr_ratio} wd={args.weight_decay} p_tag={args.p_tag} threads={torch.get_num_threads()}")
    print(f"untagged held-out NLL {nll:.4f}  Bayes-optimal {bayes:.4f}  gap {nll - bayes:+.4f} nats/token")
    print(f"untagged training-set NLL {train_nll:.4f}  Bayes-optimal {train_bayes:.4f}  gap {train_nll - train_bayes:+.4f}")
    T = held.shape[1]
    spans = [(0, 1), (1, 4), (4, 16), (16, T)]
    print("gap by position: " + "  ".join(
        f"[{a},{b}) {(token_nll[:, a:b] - bayes_token[:, a:b]).mean().item():+.4f}" for a, b in spans))
    print(f"tagged   held-out NLL {tagged_nll:.4f}  true persona {own_nll:.4f}  gap {tagged_nll - own_nll:+.4f} nats/token")
    if args.save:
        save_checkpoint(model, args.save)
        print(f"saved the model to {args.save}")
    print(f"final train loss (last 50 steps) {history.losses[-50:].mean():.4f}; wall time {seconds:.1f} s "
          f"({args.steps / seconds:.2f} steps/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["speed", "quality", "all"], default="all")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--personas", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=24)
    parser.add_argument("--concentration", type=float, default=0.2)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--doc-len", type=int, default=48)
    parser.add_argument("--heldout", type=int, default=2000)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=96)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=6e-3)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--p-tag", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--save", default=None, help="write the pre-trained model to this checkpoint folder")
    parser.add_argument("--bench-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--evidence-docs", type=int, default=64)
    parser.add_argument("--finetune-batch", type=int, default=64)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part in ("speed", "all"):
        speed(args)
    if args.part in ("quality", "all"):
        quality(args)


if __name__ == "__main__":
    main()
