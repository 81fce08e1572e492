"""Checkpoints of SVI and MCMC: a run killed midway and resumed equals an uninterrupted run.

The kill tests run the engine in a subprocess, slowed by a sleep patched into
each SVI step / NUTS iteration (the numbers are untouched), kill it with
SIGKILL once the first checkpoint is on disk, resume in a second subprocess
and compare every output with an uninterrupted run computed here (one thread,
like the subprocesses): ``torch.equal``, not a tolerance.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from inference.cli import main
from inference.conditioning.mcmc import run_mcmc
from inference.conditioning.svi import run_svi
from inference.storage.checkpoints import open_checkpoints
from inference.storage.encoding import decode, encode, rng_state, set_rng_state
from models.errors import InputError
from models.mixture import persona_model

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import safetensors.torch, torch
    import pyro.infer, pyro.infer.mcmc
    from inference.conditioning.mcmc import run_mcmc
    from inference.conditioning.svi import run_svi
    from models.counts import count_transitions, make_evidence
    from models.mixture import persona_model, simulate_corpus
    from models.personas import random_personas

    K, V, D, T = 3, 4, 8, 6
    SVI_OPTIONS = dict(guide="normal", num_steps=40, subsample_size=4, num_samples=20, seed=3)
    MCMC_OPTIONS = dict(num_chains=3, num_samples=30, warmup_steps=30, seed=5)

    def world(seed=0):
        personas = random_personas(K, V, 1, concentration=0.5, seed=seed)
        tokens, _ = simulate_corpus(personas, D, T, seed=seed)
        evidence = make_evidence(tokens)
        kwargs = dict(tokens=evidence.tokens, mask=evidence.mask, counts=count_transitions(evidence, V, 1),
                      evidence="mixture", beta=1.0, alpha=torch.ones(K, dtype=torch.float64))
        return (personas, D, T), kwargs

    def run(kind, ckpt=None, resume=False, every=None, **changes):
        args, kwargs = world()
        opts = dict(checkpoint_dir=ckpt, checkpoint_every=every, resume=resume)
        if kind == "svi":
            result = run_svi(persona_model, args, kwargs, **{**SVI_OPTIONS, **changes}, **opts)
            tensors = {"losses": result.losses, **{f"param.{k}": v for k, v in result.params.items()}}
        else:
            result = run_mcmc(persona_model, args, kwargs, **{**MCMC_OPTIONS, **changes}, **opts)
            tensors = {"diverging": result.diverging}
        tensors.update({f"sample.{k}": v for k, v in result.samples.items()})
        tensors.update({f"discrete.{k}": v for k, v in result.discrete.items()})
        diagnostics = {k: v for k, v in result.diagnostics.items() if not k.endswith("seconds")}
        return tensors, diagnostics, result.resumed_from

    if __name__ == "__main__":
        torch.set_num_threads(1)
        kind, out, ckpt, slow, resume = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1"
        cls, name = (pyro.infer.SVI, "step") if kind == "svi" else (pyro.infer.mcmc.NUTS, "sample")
        original = getattr(cls, name)
        def slowed(self, *args, **kwargs):  # slows the run that gets killed; numerics unchanged
            time.sleep(slow)
            return original(self, *args, **kwargs)
        setattr(cls, name, slowed)
        tensors, diagnostics, resumed_from = run(kind, ckpt, resume, every=10 if kind == "svi" else 1)
        safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, out)
        print(json.dumps({"resumed_from": resumed_from, "diagnostics": diagnostics}))
    """
)
#: slow-down of the killed run (seconds per SVI step / NUTS iteration), steps (chains) in all
SLOW = {"svi": 0.05, "mcmc": 0.01}
TOTAL = {"svi": 40, "mcmc": 3}


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("script") / "job.py"
    path.write_text(_SCRIPT)
    namespace = {"__name__": "job"}
    exec(compile(_SCRIPT, str(path), "exec"), namespace)
    return path, namespace


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the subprocesses: bit-identical sums need the same thread count
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["svi", "mcmc"])
def test_run_killed_midway_and_resumed_matches_uninterrupted(script, tmp_path, kind):
    path, job = script
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def command(out, slow, resume):
        return [sys.executable, str(path), kind, str(tmp_path / out), str(ckpt), str(slow), resume]

    killed = subprocess.Popen(command("killed.st", SLOW[kind], "0"), env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(ckpt.glob(f"{kind}-*/state.json")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed.st").exists()
    done = max(int(p.parent.name.split("-")[1]) for p in ckpt.glob(f"{kind}-*/state.json"))
    assert 1 <= done < TOTAL[kind]  # killed midway

    resumed = subprocess.Popen(command("resumed.st", 0, "1"), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    expected, expected_diagnostics, _ = job["run"](kind)  # uninterrupted, no checkpoints, meanwhile
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["resumed_from"] == done
    got = safetensors.torch.load_file(str(tmp_path / "resumed.st"))
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got), [k for k in got if not torch.equal(got[k], expected[k])]
    assert report["diagnostics"] == json.loads(json.dumps(expected_diagnostics))
    if kind == "svi":
        assert len(got["losses"]) == TOTAL["svi"]
    else:
        assert got["sample.w"].shape[:2] == (3, 30)


@pytest.mark.parametrize("kind", ["svi", "mcmc"])
def test_resume_without_a_checkpoint_starts_fresh_and_a_finished_run_resumes_to_the_same(script, tmp_path, kind):
    _, job = script
    small = dict(num_steps=12) if kind == "svi" else dict(num_chains=2, num_samples=6, warmup_steps=6)
    expected, _, _ = job["run"](kind, **small)
    fresh, _, resumed_from = job["run"](kind, tmp_path, resume=True, every=5, **small)
    assert resumed_from is None
    again, _, resumed_from = job["run"](kind, tmp_path, resume=True, every=5, **small)
    assert resumed_from == (12 if kind == "svi" else 2)  # the final checkpoint: nothing left to run
    for got in (fresh, again):
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == (["svi-000000010", "svi-000000012"] if kind == "svi" else ["mcmc-000000002"])


@pytest.mark.parametrize("kind, change, words", [
    ("svi", dict(lr=0.01), "different run.*lr"),
    ("svi", dict(seed=4), "different run.*seed"),
    ("svi", "data", "different run.*data"),
    ("mcmc", dict(warmup_steps=7), "different run.*warmup_steps"),
    ("mcmc", "data", "different run.*data"),
])
def test_checkpoint_of_another_run_is_refused(script, tmp_path, kind, change, words):
    _, job = script
    args, kwargs = job["world"]()
    engine, small = (run_svi, dict(num_steps=5, num_samples=2)) if kind == "svi" else \
        (run_mcmc, dict(num_chains=1, num_samples=6, warmup_steps=6))
    opts = dict(checkpoint_dir=tmp_path, checkpoint_every=5, **small)
    engine(persona_model, args, kwargs, **opts)
    if change == "data":
        args, kwargs = job["world"](1)
        change = {}
    for resume in (True, False):  # resuming it, or overwriting it with a fresh run
        with pytest.raises(InputError, match=words) as info:
            engine(persona_model, args, kwargs, resume=resume, **{**opts, **change})
        assert "\n" not in str(info.value)
    assert len(list(tmp_path.iterdir())) == 1  # the other run's checkpoint is left alone


class _Exploit:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _corrupt_garbage(folder: Path, tmp_path: Path) -> None:
    (folder / "state.safetensors").write_bytes(b"garbage")


def _corrupt_pickle_with_matching_checksum(folder: Path, tmp_path: Path) -> None:
    import hashlib

    data = pickle.dumps({"params": _Exploit(tmp_path / "pwned")})
    (folder / "state.safetensors").write_bytes(data)
    meta = json.loads((folder / "state.json").read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "state.json").write_text(json.dumps(meta))


def _corrupt_json(folder: Path, tmp_path: Path) -> None:
    (folder / "state.json").write_text('{"format": "psm-inference-checkpoint", "state": ')


def _corrupt_tensor_refs(folder: Path, tmp_path: Path) -> None:
    meta = json.loads((folder / "state.json").read_text())
    meta["state"]["losses"] = {"$tensor": "nowhere"}
    (folder / "state.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("corrupt, words", [
    (_corrupt_garbage, "damaged checkpoint .checksum"),
    (_corrupt_pickle_with_matching_checksum, "not a readable safetensors file"),
    (_corrupt_json, "not a readable checkpoint"),
    (_corrupt_tensor_refs, "damaged checkpoint"),
])
def test_corrupt_checkpoint_is_refused_in_one_line(script, tmp_path, corrupt, words):
    _, job = script
    args, kwargs = job["world"]()
    ckpt = tmp_path / "ckpt"
    opts = dict(num_steps=5, num_samples=2, checkpoint_dir=ckpt, checkpoint_every=5)
    run_svi(persona_model, args, kwargs, **opts)
    corrupt(ckpt / "svi-000000005", tmp_path)
    with pytest.raises(InputError, match=words) as info:
        run_svi(persona_model, args, kwargs, resume=True, **opts)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()  # nothing was unpickled


@pytest.mark.parametrize("options, words", [
    (dict(checkpoint_dir="x"), "both"),
    (dict(checkpoint_every=5), "both"),
    (dict(resume=True), "both"),
    (dict(checkpoint_dir="x", checkpoint_every=0), "checkpoint_every"),
    (dict(checkpoint_dir="x", checkpoint_every=2.5), "checkpoint_every"),
    (dict(checkpoint_dir="x", checkpoint_every=5, resume="yes"), "resume"),
])
@pytest.mark.parametrize("engine", [run_svi, run_mcmc])
def test_bad_checkpoint_options_raise_input_error(script, tmp_path, engine, options, words):
    _, job = script
    args, kwargs = job["world"]()
    if "checkpoint_dir" in options:
        options = {**options, "checkpoint_dir": tmp_path / options["checkpoint_dir"]}
    with pytest.raises(InputError, match=words):
        engine(persona_model, args, kwargs, **options)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a folder"):
        engine(persona_model, args, kwargs, checkpoint_dir=tmp_path / "file", checkpoint_every=1)


def test_state_trees_and_rng_states_round_trip_exactly():
    state = {"optim": {"p.1": {"state": {0: {"step": 3, "exp_avg": torch.arange(3.0)}},
                               "param_groups": [{"betas": (0.9, 0.999), "lr": 0.1 / 3, "params": [0]}]}},
             "$odd": [float("nan"), float("inf"), None, True], "rng": rng_state()}
    tree, tensors = encode(state)
    back = decode(json.loads(json.dumps(tree)), safetensors.torch.load(safetensors.torch.save(tensors)))
    assert back["optim"]["p.1"]["param_groups"] == state["optim"]["p.1"]["param_groups"]
    assert list(back["optim"]["p.1"]["state"]) == [0] and back["optim"]["p.1"]["state"][0]["step"] == 3
    assert torch.equal(back["optim"]["p.1"]["state"][0]["exp_avg"], torch.arange(3.0))
    nan, inf, none, true = back["$odd"]
    assert nan != nan and inf == float("inf") and none is None and true is True
    import random

    import numpy as np

    draws = lambda: (torch.rand(3), random.random(), np.random.rand(), np.random.randn())  # noqa: E731
    set_rng_state(back["rng"])
    first = draws()
    set_rng_state(back["rng"])
    assert repr(draws()) == repr(first)
    with pytest.raises(InputError, match="RNG state"):
        set_rng_state({"torch": torch.zeros(3), "random": (3, (1,), None), "numpy": ("MT19937", [1], 0, 0, 0.0)})


def test_checkpoints_keep_only_the_newest(tmp_path):
    store = open_checkpoints(tmp_path, 1, False, kind="svi", run={"a": 1}, keep=2)
    for step in range(1, 5):
        store.save(step, {"x": torch.tensor([step])})
    assert store.steps() == [3, 4] and torch.equal(store.latest()[1]["x"], torch.tensor([4]))


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("world")
    argv = ["simulate", "--num-personas", 3, "--vocab-size", 4, "--order", 1, "--num-docs", 6, "--doc-len", 8,
            "--seed", 0, "--out", root]
    assert main([str(a) for a in argv]) == 0
    return root / "personas.npz", root / "corpus.npz"


def _condition(files, out, method, *extra) -> list[str]:
    personas, corpus = files
    argv = ["condition", "--personas", personas, "--evidence", corpus, "--model", "mixture", "--method", method,
            "--beta", 1, "--seed", 0, "--out", out, "--quiet", *extra]
    return [str(a) for a in argv]


@pytest.mark.parametrize("method, extra, done", [
    ("svi", ["--num-steps", "12", "--num-samples", "10"], "svi-000000012"),
    ("mcmc", ["--num-chains", "2", "--num-samples", "8", "--warmup", "8"], "mcmc-000000002"),
])
def test_cli_checkpoint_flags_write_and_resume(files, tmp_path, capsys, method, extra, done):
    ckpt = tmp_path / "ckpt"
    flags = ["--checkpoint-dir", str(ckpt), "--checkpoint-every", "5"]
    assert main(_condition(files, tmp_path / "plain", method, *extra)) == 0
    assert main(_condition(files, tmp_path / "first", method, *extra, *flags)) == 0
    assert (ckpt / done / "state.safetensors").is_file()
    assert main(_condition(files, tmp_path / "resumed", method, *extra, *flags, "--resume")) == 0
    capsys.readouterr()
    summaries = [json.loads((tmp_path / name / "posterior.json").read_text()) for name in ("plain", "first", "resumed")]
    for summary in summaries:
        summary.pop("seconds")
        summary["diagnostics"] = {k: v for k, v in summary["diagnostics"].items() if not k.endswith("seconds")}
    assert summaries[0] == summaries[1] == summaries[2]


@pytest.mark.parametrize("method, flags", [
    ("svi", ["--checkpoint-every", "0", "--checkpoint-dir", "D"]),
    ("svi", ["--checkpoint-every", "five", "--checkpoint-dir", "D"]),
    ("svi", ["--resume"]),
    ("mcmc", ["--checkpoint-dir", "D"]),
    ("exact", ["--checkpoint-dir", "D", "--checkpoint-every", "5"]),
    ("svi", ["--checkpoint-dir", "FILE", "--checkpoint-every", "5"]),
])
def test_cli_bad_checkpoint_flags_exit_2_in_one_line(files, tmp_path, capsys, method, flags):
    (tmp_path / "FILE").write_text("")
    flags = [str(tmp_path / f) if f in ("D", "FILE") else f for f in flags]
    code = main(_condition(files, tmp_path / "out", method, "--num-steps", "3", *flags) if method == "svi" else
                _condition(files, tmp_path / "out", method, *flags))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("psm: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "D").exists()
