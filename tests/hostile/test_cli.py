"""Hostile command lines: psm simulate, condition, run, demo, pretrain and sbc."""


from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import inference.conditioning.sbc
import inference.experiment.runner
import inference.experiment.world
from models.errors import InputError
from tests.hostile.common import (
    HOSTILE_NUMBER_TEXT,
    ORDER,
    TINY_TOML,
    K,
    V,
    check_counts,
    corrupted,
    evidence_arrays,
    hostile,
    one_hostile,
    out_folder,
    persona_arrays,
    run_cli,
    toml_edits,
)

# ---------------------------------------------------------------- the command line


ABSENT = st.just(None)  # the flag is left out
FLAG_TEXT = st.one_of(HOSTILE_NUMBER_TEXT, ABSENT)


@hostile(150)
@given(args=one_hostile({
    "--num-personas": (st.integers(1, 4).map(str), FLAG_TEXT),
    "--vocab-size": (st.integers(2, 5).map(str), FLAG_TEXT),
    "--order": (st.integers(0, 2).map(str), FLAG_TEXT),
    "--num-docs": (st.integers(1, 5).map(str), FLAG_TEXT),
    "--doc-len": (st.integers(1, 8).map(str), FLAG_TEXT),
    "--concentration": (st.sampled_from([None, "0.5", "1e-3", "1000"]), HOSTILE_NUMBER_TEXT),
    "--seed": (st.sampled_from(["0", "4294967295"]), FLAG_TEXT),
    "extra": (st.just([]), st.sampled_from([["--bogus"], ["--num-personas"], ["extra"], ["--out"], ["--seed", "1"]])),
    "out": (st.just(False), st.just(True)),
}), data=st.data())
def test_cli_simulate(args, data):
    argv = ["simulate"]
    for flag, value in args.items():
        if flag.startswith("--") and value is not None:
            argv += [flag, value]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        argv += ["--out", out_folder(data.draw, root, hostile=args["out"])] + args["extra"]
        code = run_cli("cli:simulate", argv, root / "outroot", expected=("personas.npz", "corpus.npz"))
    if args["hostile_field"] is None:  # (a few hostile texts are valid numbers to Python: "1_000", "-0.0", "١")
        assert code == 0, argv


def _input_file(draw, files: dict, kind: str, root: Path, name: str, hostile: bool) -> Path:
    """An input file for psm condition: valid, or hostile arrays, corrupt bytes, missing, a folder or the other file."""
    path = root / name
    choice = draw(st.sampled_from(["arrays", "arrays", "corrupt", "corrupt", "missing", "folder", "other"])) if hostile else "valid"
    if choice == "valid":
        path.write_bytes(files[f"{kind}.npz"])
    elif choice == "arrays":
        if kind == "personas":
            np.savez(path, **draw(persona_arrays(sizes=(K, V, ORDER)) if draw(st.booleans()) else persona_arrays()))
        else:
            tokens, mask = draw(evidence_arrays())
            np.savez(path, tokens=tokens, **({} if mask is None else {"mask": mask}))
    elif choice == "corrupt":
        path.write_bytes(draw(corrupted(files[f"{kind}.npz"])))
    elif choice == "folder":
        path.mkdir()
    elif choice == "other":
        path.write_bytes(files["evidence.npz" if kind == "personas" else "personas.npz"])
    return path


ENGINE_FLAGS = ["--alpha", "--table-strength", "--num-steps", "--num-samples", "--num-chains", "--warmup", "--lr",
                "--guide", "--subsample-size", "--bogus"]
FLAG_VALUES = st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "x", "", "2", "1e-300", "auto", "zzz"]),
                        HOSTILE_NUMBER_TEXT.filter(lambda s: not s.isdigit() or len(s) < 3))


@hostile(250)
@given(args=one_hostile({
    "personas": (st.just(False), st.just(True)),
    "evidence": (st.just(False), st.just(True)),
    "--model": (st.sampled_from(["global", "mixture"]), st.sampled_from(["neural", "Global", ""])),
    "--method": (st.sampled_from(["exact", "exact", "svi", "mcmc"]), st.sampled_from(["vi", "nuts", ""])),
    "--beta": (st.sampled_from(["1", "0", "100", "0.5", "1e-3"]), HOSTILE_NUMBER_TEXT),
    "--seed": (st.sampled_from(["0", "7", "4294967295"]), HOSTILE_NUMBER_TEXT),
    "extra": (st.just([]), st.lists(st.tuples(st.sampled_from(ENGINE_FLAGS), FLAG_VALUES), min_size=1, max_size=2)),
    "out": (st.just(False), st.just(True)),
}, valid_share=4), data=st.data())
def test_cli_condition(files, args, data):
    draw = data.draw
    model, method = args["--model"], args["--method"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = root / "inputs"
        inputs.mkdir()
        personas = _input_file(draw, files, "personas", inputs, "personas.npz", args["personas"])
        evidence = _input_file(draw, files, "evidence", inputs, "evidence.npz", args["evidence"])
        out = out_folder(draw, root, hostile=args["out"])
        argv = ["condition", "--personas", personas, "--evidence", evidence, "--model", model, "--method", method,
                "--beta", args["--beta"], "--seed", args["--seed"], "--out", out, "--quiet"]
        argv += {"svi": ["--num-steps", "2", "--num-samples", "3"],
                 "mcmc": ["--num-samples", "3", "--warmup", "2", "--num-chains", "1"]}.get(method, [])
        if args["hostile_field"] is None and model == "global" and method in ("svi", "mcmc"):
            argv += ["--table-strength", "5"]  # the valid way to sample the global model
        for flag, value in args["extra"]:
            argv += [flag, value]
        code = run_cli("cli:condition", argv, root / "outroot", expected=("posterior.json", "posterior.nc"))
    if args["hostile_field"] is None:
        assert code == 0, argv


def _stub_run_experiment(config, progress=True, base_model=None):
    """Stands in for the minutes-long experiment: load the world and the base checkpoint, then refuse."""
    world = inference.experiment.world.make_world(config.world)
    if config.base.checkpoint:
        inference.experiment.world.load_base(config, world)
    raise InputError("stub: the experiment was accepted (the test stops here)")


def _stub_pretrain_base(config, world, progress=False, **checkpoints):
    raise InputError("stub: pre-training was accepted (the test stops here)")


@hostile(150)
@given(data=st.data())
def test_cli_run_demo_pretrain(files, data):
    draw = data.draw
    command = draw(st.sampled_from(["run", "run", "run", "pretrain", "pretrain", "demo"]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = root / "inputs"
        (inputs / "ckpt").mkdir(parents=True)
        toml = draw(st.one_of(st.just(TINY_TOML.encode()), corrupted(TINY_TOML.encode()), toml_edits().map(str.encode)))
        config = inputs / "experiment.toml"
        config.write_bytes(toml)
        which = draw(st.sampled_from(["ckpt/config.json", "ckpt/model.safetensors", None]))
        for name in ("ckpt/config.json", "ckpt/model.safetensors"):
            blob = files[name] if name != which else draw(corrupted(files[name]))
            (inputs / name).write_bytes(blob)
        config_arg = draw(st.sampled_from(["file", "file", "missing", "folder"]))
        config_path = {"file": config, "missing": inputs / "nope.toml", "folder": inputs}[config_arg]
        out = out_folder(draw, root)
        argv = [command] + ([config_path] if command != "demo" else []) + ["--out", out, "--quiet"]
        if draw(st.booleans()):
            argv += ["--seed", draw(st.one_of(st.just("3"), HOSTILE_NUMBER_TEXT))]
        with mock.patch.object(inference.experiment.runner, "run_experiment", _stub_run_experiment), \
                mock.patch.object(inference.experiment.world, "pretrain_base", _stub_pretrain_base):
            code = run_cli(f"cli:{command}", argv, root / "outroot")
        assert code == 2  # every path ends in a refusal or the stub


def _stub_sbc(*args, **kwargs):
    raise InputError("stub: the SBC run was accepted (the test stops here)")


@hostile(100)
@given(data=st.data())
def test_cli_sbc(data):
    draw = data.draw
    argv = ["sbc"]
    options = {"--model": st.sampled_from(["mixture", "global", "global-tables", "neural", ""]),
               "--method": st.sampled_from(["exact", "svi", "mcmc", "nuts"]),
               "--num-sims": st.one_of(st.just("2"), HOSTILE_NUMBER_TEXT),
               "--num-draws": st.one_of(st.just("9"), HOSTILE_NUMBER_TEXT),
               "--seed": st.one_of(st.just("0"), HOSTILE_NUMBER_TEXT),
               "--beta": HOSTILE_NUMBER_TEXT, "--guide": st.sampled_from(["auto", "dirichlet", "zzz"]),
               "--thin": HOSTILE_NUMBER_TEXT}
    for flag, values in options.items():
        if draw(st.integers(0, 3)) or flag in ("--model", "--method", "--num-sims", "--seed"):
            if draw(st.integers(0, 9)):
                argv += [flag, draw(values)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        argv += ["--out", out_folder(draw, root), "--quiet"]
        with mock.patch.object(inference.conditioning.sbc, "simulation_based_calibration", _stub_sbc):
            code = run_cli("cli:sbc", argv, root / "outroot")
        assert code == 2


TARGETS = {"cli:simulate": 120, "cli:condition": 200, "cli:run": 40, "cli:pretrain": 20, "cli:demo": 10, "cli:sbc": 80}


def test_cases_tried_are_counted(request):
    """Every target of this module ran at least its number of examples (about 80% of max_examples)."""
    check_counts(TARGETS, globals(), request)
