"""What a real LM costs: GPT-2-small-sized runs of ``psm run`` kind ``hf`` (run by hand; not part of the tests).

Nothing is downloaded: the network is a randomly initialised ``GPT2LMHeadModel`` of GPT-2 small's
sizes (12 layers, width 768, 12 heads, 1,024 positions, vocabulary 50,257: 124M parameters), so the
costs are GPT-2's and the numbers it computes are not. Parts:

``train``    per fine-tuning method: median seconds per step (batch of ``--batch`` documents of
             ``--tokens`` tokens), trainable parameters, the process's peak RSS after the method ran;
``eval``     seconds to read ``--contexts`` held-out contexts of ``--tokens`` tokens, unprompted and
             after a persona prompt, over the full vocabulary (``next_token_logprobs``), and to build
             the coarsened ``R_self`` (``--personas`` prompts, ``--max-vocab`` kept tokens);
``compare``  seconds and peak RSS of the projection, the decomposition (fit and bootstrap) and the
             in-context ``gamma`` on ``[K, n, T, max_vocab + 1]`` tensors of those sizes;
``run``      a whole ``psm run`` kind ``hf`` at GPT-2-small size on the test fixture's novelists
             (a byte-level BPE tokenizer fitted on that text, the model's vocabulary still 50,257),
             with small step counts; prints the summary's stage times.

Absolute times on the shared 2-core development machines are noisy (other jobs run beside);
each part prints medians. Examples::

    PSM_THREADS=2 python benchmarks/bench_hf.py --part train --steps 4
    PSM_THREADS=2 python benchmarks/bench_hf.py --part eval --part compare
    PSM_THREADS=2 python benchmarks/bench_hf.py --part run --out runs/bench_hf
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from inference.runtime import torch_threads  # noqa: E402
from models.counts import make_evidence  # noqa: E402
from models.hf_lm import HFCausalLM  # noqa: E402

GPT2_SMALL = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpt2_small(seed: int = 0) -> HFCausalLM:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    network = GPT2LMHeadModel(GPT2Config(**GPT2_SMALL))
    prompts = [[464, 1708, 373, 3194, 416, 3899, 9325, 13, 198]] * 5  # "The following was written by ...\n": 9 ids
    return HFCausalLM(network, prompts, 50256, persona_names=[f"persona {h}" for h in range(5)], max_positions=1024)


def part_train(args) -> None:
    from inference.finetuning.lm_training import finetune_lm

    lm = gpt2_small()
    n = sum(p.numel() for p in lm.network.parameters())
    print(f"GPT-2 small (random init): {n:,} parameters; batch {args.batch} x {args.tokens} tokens; "
          f"{torch.get_num_threads()} torch threads; RSS after building {rss_mib():,.0f} MiB")
    tokens = torch.randint(0, 50257, (args.batch, args.tokens), generator=torch.Generator().manual_seed(1))
    evidence = make_evidence(tokens.numpy())
    for method in args.methods:
        start, cpu = time.perf_counter(), time.process_time()
        result = finetune_lm(lm, evidence, method=method, steps=args.steps, lr=1e-4, batch_size=args.batch,
                             snapshot_steps=[args.steps], rank=8, k=1000, seed=0)
        cpu_per_step = (time.process_time() - cpu) / args.steps  # includes the copy and the final merge
        print(f"  {method:10s} {result.trainable_params:>12,} trainable  {result.cost['seconds_per_step']:7.2f} s/step "
              f"wall (median of {args.steps})  {cpu_per_step:7.2f} CPU-s/step  peak RSS "
              f"{result.cost['peak_memory_bytes'] / 2**20:7,.0f} MiB  call {time.perf_counter() - start:6.1f} s",
              flush=True)


def part_eval(args) -> tuple[HFCausalLM, torch.Tensor]:
    from inference.comparison.self_reachable import comparison_vocabulary
    from models.base_model import persona_components

    lm = gpt2_small()
    contexts = torch.randint(0, 50257, (args.contexts, args.tokens), generator=torch.Generator().manual_seed(2))
    times, cpus = [], []
    for persona in (None, 0, None, 0):
        start, cpu = time.perf_counter(), time.process_time()
        lm.next_token_logprobs(contexts, persona)
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    print(f"read {args.contexts} x {args.tokens} tokens, full vocabulary: unprompted {statistics.median(times[0::2]):.2f} s "
          f"({statistics.median(cpus[0::2]):.2f} CPU-s), prompted {statistics.median(times[1::2]):.2f} s "
          f"({statistics.median(cpus[1::2]):.2f} CPU-s); RSS {rss_mib():,.0f} MiB", flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    vocabulary = comparison_vocabulary(lm, contexts, args.max_vocab)
    mid, mid_cpu = time.perf_counter(), time.process_time()
    components = persona_components(lm, contexts, vocabulary=vocabulary)
    print(f"kept vocabulary ({vocabulary.keep.numel()} + rest) {mid - start:.1f} s ({mid_cpu - cpu:.1f} CPU-s); "
          f"R_self components {tuple(components.shape)} {time.perf_counter() - mid:.1f} s "
          f"({time.process_time() - mid_cpu:.1f} CPU-s); RSS {rss_mib():,.0f} MiB", flush=True)
    return lm, contexts


def part_compare(args) -> None:
    from inference.comparison import mechanisms, projection
    from inference.comparison.decomposition import decomposition_interval, fit
    from inference.comparison.tilt import Tilt

    K, n, T, W = 5, args.contexts, args.tokens, args.max_vocab + 1
    g = torch.Generator().manual_seed(3)
    components = (torch.randn(K, n, T, W, generator=g, dtype=torch.float64) * 2).log_softmax(-1)
    contexts = torch.randint(0, W - 1, (n, T), generator=g)
    q0 = torch.logsumexp(components - torch.log(torch.tensor(float(K))), 0)
    q_s = (q0 + 0.3 * torch.randn(n, T, W, generator=g, dtype=torch.float64)).log_softmax(-1)
    print(f"comparisons on [K, n, T, W] = {(K, n, T, W)} float64 ({components.numel() * 8 / 2**20:,.0f} MiB each)")
    steps = []
    start, cpu = time.perf_counter(), time.process_time()
    floor = projection.project(q0, components, contexts)
    steps.append(("projection of q0", time.perf_counter() - start))
    proj = projection.project(q_s, components, contexts, init=floor.weights)
    steps.append(("projection of q_s", time.perf_counter() - start - sum(t for _, t in steps)))
    tilt = Tilt(q_s, q0, components, contexts, floor.weights)
    dec = fit(tilt, init=proj.weights, restarts=1)
    steps.append(("decomposition fit", time.perf_counter() - start - sum(t for _, t in steps)))
    decomposition_interval(tilt, dec, num_boot=200)
    steps.append(("bootstrap (200, q* held)", time.perf_counter() - start - sum(t for _, t in steps)))
    mechanisms.in_context_strength(q_s, components, contexts, init=proj.weights)
    steps.append(("in-context gamma", time.perf_counter() - start - sum(t for _, t in steps)))
    for name, seconds in steps:
        print(f"  {name:26s} {seconds:7.1f} s")
    print(f"  all: {time.process_time() - cpu:.1f} CPU-s; E = {dec.exhaustiveness:.3f}, identity gap "
          f"{dec.identity_gap:.1e}; peak RSS {rss_mib():,.0f} MiB")


def part_run(args) -> None:
    from inference.cli import main
    from tests.tiny_hf import EVIDENCE, HELDOUT, PROMPTS, train_tokenizer

    folder = Path(args.out) / "gpt2_small_random"
    if not (folder / "config.json").is_file():
        gpt2_small().network.save_pretrained(folder)
        train_tokenizer(vocab_size=4096).save_pretrained(folder)
    config = Path(args.out) / "hf.toml"
    config.write_text(f'''kind = "hf"
seed = 0
device = "{args.device}"
[model]
path = "{folder}"
personas = "{PROMPTS}"
[data]
evidence = "{EVIDENCE}"
heldout = "{HELDOUT}"
evidence_persona = "Charles Dickens"
chunk_tokens = {args.tokens}
evidence_docs = 16
fresh_docs = 4
heldout_contexts = {args.contexts}
heldout_tokens = {args.tokens}
[finetune]
method = "lora"
steps = {args.steps}
lr = 1e-4
batch_size = {args.batch}
snapshots = [0, {args.steps // 2}, {args.steps}]
prequential_blocks = 2
prequential_steps = 2
[compare]
max_vocab = {args.max_vocab}
attribution_completions = 8
attribution_prompt_tokens = 16
attribution_tokens = 16
''')
    out = Path(args.out) / "run"
    start = time.perf_counter()
    code = main(["run", str(config), "--out", str(out), "--overwrite", "--quiet"])
    print(f"psm run kind hf: exit {code} in {time.perf_counter() - start:.0f} s; peak RSS {rss_mib():,.0f} MiB")
    if code == 0:
        summary = json.loads((out / "summary.json").read_text())
        print(json.dumps({"stages": summary["timing"]["stages"], "training": summary["training"]}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=["train", "eval", "compare", "run"])
    parser.add_argument("--methods", nargs="+", default=["full", "lora", "last_layer", "k_params"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--contexts", type=int, default=32)
    parser.add_argument("--max-vocab", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/bench_hf")
    args = parser.parse_args()
    with torch_threads():
        for part in args.part or ["train", "eval", "compare"]:
            print(f"== {part} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)
            {"train": part_train, "eval": part_eval, "compare": part_compare, "run": part_run}[part](args)


if __name__ == "__main__":
    main()
