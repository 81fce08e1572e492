"""The ``psm`` command line: outputs, reproducibility, and one-line errors that leave no files.

Commands run in-process through :func:`inference.cli.main` (fast); one test runs
the installed ``psm`` console script in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inference.cli import main
from inference.conditioning.condition import condition
from inference.diagnostics import load_netcdf
from models.counts import make_evidence
from models.personas import load_personas

K, V, ORDER, D, T = 3, 4, 1, 6, 8
SUMMARY_KEYS = {"method", "beta", "model", "weights", "log_evidence", "diagnostics", "seconds", "seed", "table_strength"}


@dataclass(frozen=True)
class World:
    root: Path
    personas: Path
    corpus: Path


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def simulate_argv(out, seed=0, **sizes) -> list:
    s = dict(num_personas=K, vocab_size=V, order=ORDER, num_docs=D, doc_len=T) | sizes
    return ["simulate", "--num-personas", s["num_personas"], "--vocab-size", s["vocab_size"], "--order", s["order"],
            "--num-docs", s["num_docs"], "--doc-len", s["doc_len"], "--seed", seed, "--out", out]


def condition_argv(world: World, out, *extra, personas=None, evidence=None, model="global", method="exact",
                   beta="1", seed="0") -> list:
    argv = ["condition", "--personas", personas or world.personas, "--evidence", evidence or world.corpus,
            "--model", model, "--method", method, "--beta", beta, "--seed", seed, "--out", out, "--quiet"]
    return argv + list(extra)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("world")
    assert main([str(a) for a in simulate_argv(root)]) == 0
    return World(root, root / "personas.npz", root / "corpus.npz")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- simulate


@pytest.mark.parametrize("order", [0, 1, 2])
def test_simulate_writes_documented_arrays(tmp_path, capsys, order):
    out = tmp_path / "sim"
    code, stdout, err = run(simulate_argv(out, order=order), capsys)
    assert code == 0, err
    assert str(out / "personas.npz") in stdout and str(out / "corpus.npz") in stdout
    assert sorted(p.name for p in out.iterdir()) == ["corpus.npz", "personas.npz"]
    with np.load(out / "personas.npz") as p:
        assert p["prior"].shape == (K,) and p["init"].shape == (K, V)
        assert p["trans"].shape == (K,) + (V,) * (order + 1) and int(p["order"]) == order
        np.testing.assert_allclose(p["trans"].sum(-1), 1.0, atol=1e-12)
    assert load_personas(out / "personas.npz").order == order
    with np.load(out / "corpus.npz") as c:
        tokens, persona, mask = c["tokens"], c["persona"], c["mask"]
    assert tokens.shape == (D, T) and tokens.dtype == np.int64 and 0 <= tokens.min() and tokens.max() < V
    assert persona.shape == (D,) and persona.dtype == np.int64 and 0 <= persona.min() and persona.max() < K
    assert mask.shape == (D, T) and mask.dtype == bool and mask.all()


def test_simulate_same_seed_same_files_other_seed_differs(tmp_path, capsys):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert run(simulate_argv(tmp_path / name, seed=seed, num_docs=20), capsys)[0] == 0
    load = lambda name: {f: dict(np.load(tmp_path / name / f)) for f in ("personas.npz", "corpus.npz")}  # noqa: E731
    a, b, c = load("a"), load("b"), load("c")
    for f in a:
        for key in a[f]:
            np.testing.assert_array_equal(a[f][key], b[f][key])
    assert not np.array_equal(a["corpus.npz"]["tokens"], c["corpus.npz"]["tokens"])
    assert not np.array_equal(a["personas.npz"]["trans"], c["personas.npz"]["trans"])


# ---------------------------------------------------------------- condition (exact)


@pytest.mark.parametrize("model", ["global", "mixture"])
def test_condition_exact_writes_summary_and_netcdf(world, tmp_path, capsys, model):
    out = tmp_path / "post"
    code, stdout, err = run(condition_argv(world, out, model=model), capsys)
    assert code == 0, err
    assert str(out / "posterior.json") in stdout and str(out / "posterior.nc") in stdout
    assert sorted(p.name for p in out.iterdir()) == ["posterior.json", "posterior.nc"]
    summary = read_json(out / "posterior.json")
    assert set(summary) == SUMMARY_KEYS
    assert (summary["model"], summary["method"], summary["beta"]) == (model, "exact", 1.0)
    weights = np.array(summary["weights"])
    assert weights.shape == (K,) and (weights >= 0).all() and abs(weights.sum() - 1) < 1e-9
    assert isinstance(summary["log_evidence"], float) and np.isfinite(summary["log_evidence"])
    assert summary["seconds"] >= 0 and isinstance(summary["diagnostics"], dict)
    idata = load_netcdf(out / "posterior.nc")
    for group in ("posterior", "log_likelihood", "posterior_predictive", "observed_data", "sample_stats"):
        assert group in idata.groups()
    assert idata.log_likelihood["documents"].shape[-1] == D


@pytest.mark.parametrize("model, extra, api_options", [
    ("global", ["--beta", "0.3"], dict(beta=0.3)),
    ("mixture", ["--alpha", "2.5", "--beta", "0.7"], dict(alpha=2.5, beta=0.7)),
    ("global", ["--table-strength", "20"], dict(table_strength=20.0)),
])
def test_condition_passes_options_and_mask_to_the_api(world, tmp_path, capsys, model, extra, api_options):
    """The weights on disk are those of condition() with the same beta, alpha, tables and mask."""
    with np.load(world.corpus) as c:
        tokens = c["tokens"]
    mask = np.ones_like(tokens, dtype=bool)
    mask[:, : T // 2] = False  # completion-only evidence
    evidence_path = tmp_path / "evidence.npz"
    np.savez(evidence_path, tokens=tokens, mask=mask)
    out = tmp_path / "post"
    argv = condition_argv(world, out, *extra, evidence=evidence_path, model=model)
    code, _, err = run(argv, capsys)
    assert code == 0, err
    personas = load_personas(world.personas)
    strength = api_options.pop("table_strength", None)
    table_prior = None
    if strength is not None:
        from models.personas import anchored_table_prior

        table_prior = anchored_table_prior(personas, strength)
    api_options.setdefault("beta", 1.0)
    expected = condition(personas, make_evidence(tokens, mask, V), model, "exact", table_prior=table_prior,
                         seed=0, **api_options)
    np.testing.assert_allclose(read_json(out / "posterior.json")["weights"], expected.weights.numpy(), rtol=1e-12)
    # and the options matter: the unmasked, untempered posterior is different
    plain = condition(personas, make_evidence(tokens, None, V), model, "exact", seed=0)
    assert not np.allclose(expected.weights.numpy(), plain.weights.numpy(), atol=1e-6)


def test_condition_beta_zero_returns_the_prior(world, tmp_path, capsys):
    out = tmp_path / "post"
    assert run(condition_argv(world, out, beta="0"), capsys)[0] == 0
    prior = load_personas(world.personas).prior.numpy()
    np.testing.assert_allclose(read_json(out / "posterior.json")["weights"], prior, rtol=1e-12)


@pytest.mark.parametrize("model", ["global", "mixture"])
def test_condition_same_seed_identical_results(world, tmp_path, capsys, model):
    for name in ("a", "b"):
        assert run(condition_argv(world, tmp_path / name, model=model, seed="3"), capsys)[0] == 0
    a, b = (read_json(tmp_path / n / "posterior.json") for n in ("a", "b"))
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    ia, ib = (load_netcdf(tmp_path / n / "posterior.nc") for n in ("a", "b"))
    assert ia.groups() == ib.groups()
    for group in ia.groups():  # values identical; only the 'created_at' attribute records wall time
        assert ia[group].equals(ib[group]), group


def test_existing_out_is_refused_unless_overwrite_which_replaces_it_whole(world, tmp_path, capsys):
    out = tmp_path / "post"
    out.mkdir()
    (out / "notes.txt").write_text("an earlier run")
    (out / "posterior.json").write_text("old")
    code, stdout, err = run(condition_argv(world, out), capsys)
    assert code == 2 and stdout == "" and "not empty" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "posterior.json"]
    assert run(condition_argv(world, out, "--overwrite"), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["posterior.json", "posterior.nc"]  # nothing stale left
    assert set(read_json(out / "posterior.json")) == SUMMARY_KEYS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post"]  # no temporary folder left behind


def test_an_empty_existing_out_is_used(world, tmp_path, capsys):
    out = tmp_path / "post"
    out.mkdir()
    assert run(condition_argv(world, out), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["posterior.json", "posterior.nc"]


def test_condition_defaults_are_global_exact_beta_1_seed_0_and_recorded(world, tmp_path, capsys):
    out = tmp_path / "post"
    code, stdout, _ = run(["condition", "--personas", world.personas, "--evidence", world.corpus, "--out", out,
                           "--quiet"], capsys)
    assert code == 0
    assert "global model" in stdout and "by exact" in stdout and "beta=1," in stdout and "seed 0" in stdout
    summary = read_json(out / "posterior.json")
    assert (summary["model"], summary["method"], summary["beta"], summary["seed"]) == ("global", "exact", 1.0, 0)


def test_global_tables_is_global_with_anchored_tables(world, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(condition_argv(world, a, model="global-tables"), capsys)[0] == 0
    assert run(condition_argv(world, b, "--table-strength", "50"), capsys)[0] == 0
    sa, sb = read_json(a / "posterior.json"), read_json(b / "posterior.json")
    assert sa["weights"] == sb["weights"] and sa["table_strength"] == sb["table_strength"] == 50.0


def test_out_with_missing_parents_is_created(world, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "post"
    assert run(condition_argv(world, out), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["posterior.json", "posterior.nc"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["post"]


# ---------------------------------------------------------------- bad input: exit 2, one line, no files


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _npz(tmp: Path, name: str, **arrays) -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def _personas_with(w: World, tmp: Path, **changes) -> Path:
    arrays = _arrays(w.personas) | changes
    return _npz(tmp, "bad_personas.npz", **{k: v for k, v in arrays.items() if v is not None})


def _evidence(tmp: Path, **arrays) -> Path:
    return _npz(tmp, "bad_evidence.npz", **arrays)


def _tokens(w: World) -> np.ndarray:
    return _arrays(w.corpus)["tokens"]


def _truncated(w: World, tmp: Path) -> Path:
    data = w.personas.read_bytes()
    path = tmp / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    return path


def _garbage(tmp: Path) -> Path:
    path = tmp / "garbage.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    return path


def _nan_personas(w: World, tmp: Path) -> Path:
    trans = _arrays(w.personas)["trans"].copy()
    trans[0, 0, 0] = np.nan
    return _personas_with(w, tmp, trans=trans)


def _unnormalised_personas(w: World, tmp: Path) -> Path:
    return _personas_with(w, tmp, init=_arrays(w.personas)["init"] * 1.5)


def _zero_probability_personas(w: World, tmp: Path) -> Path:
    """Every persona forbids the first evidence token."""
    init = _arrays(w.personas)["init"].copy()
    first = _tokens(w)[0, 0]
    init[:, first] = 0.0
    init /= init.sum(-1, keepdims=True)
    return _personas_with(w, tmp, init=init)


def _pickled_evidence(tmp: Path) -> Path:
    path = tmp / "pickled.npz"
    np.savez(path, tokens=np.array([[1, 2], "x"], dtype=object))
    return path


def _many_docs_evidence(w: World, tmp: Path) -> Path:
    return _evidence(tmp, tokens=np.random.default_rng(0).integers(0, V, (3000, T)))


def _without(argv: list, flag: str) -> list:
    i = argv.index(flag)
    return argv[:i] + argv[i + 2 :]


def _file_in(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.write_text("not a folder")
    return path


BAD_CONDITION = [
    # missing and malformed files
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=t / "nope.npz"), id="personas-missing"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=t / "nope.npz"), id="evidence-missing"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=t), id="personas-is-a-folder"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=_truncated(w, t)), id="personas-truncated"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_garbage(t)), id="evidence-corrupt"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_pickled_evidence(t)), id="evidence-pickled"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=w.personas), id="evidence-without-tokens"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=w.corpus), id="personas-without-tables"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=_personas_with(w, t, trans=None)),
                 id="personas-missing-trans"),
    # tokens and masks
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=_tokens(w) + V - _tokens(w).max())),
                 id="token-equals-V"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=_tokens(w) - 1 - _tokens(w).min())),
                 id="token-negative"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=_tokens(w).ravel())),
                 id="tokens-1d"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=_tokens(w).astype(float))),
                 id="tokens-float"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=np.zeros((0, T), np.int64))),
                 id="evidence-empty"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=_tokens(w),
                                                                         mask=np.ones((D, T - 1), bool))),
                 id="mask-shape-mismatch"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=_tokens(w),
                                                                         mask=np.zeros((D, T), bool))),
                 id="mask-all-false"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=_tokens(w),
                                                                         mask=np.full((D, T), 2))),
                 id="mask-not-boolean"),
    # persona tables
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=_nan_personas(w, t)), id="personas-nan"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=_unnormalised_personas(w, t)),
                 id="personas-not-normalised"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=_personas_with(w, t, prior=np.array([0.5, 0.5]))),
                 id="prior-wrong-shape"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=_personas_with(w, t, trans=np.full((K, V, V - 1), 1 / 3))),
                 id="trans-shape-mismatch"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=_personas_with(w, t, order=np.int64(2))),
                 id="order-disagrees"),
    pytest.param(lambda w, t, o: condition_argv(w, o, personas=_zero_probability_personas(w, t)),
                 id="evidence-impossible"),
    # numbers and combinations
    pytest.param(lambda w, t, o: condition_argv(w, o, beta="-1"), id="beta-negative"),
    pytest.param(lambda w, t, o: condition_argv(w, o, beta="nan"), id="beta-nan"),
    pytest.param(lambda w, t, o: condition_argv(w, o, beta="inf"), id="beta-inf"),
    pytest.param(lambda w, t, o: condition_argv(w, o, beta="lots"), id="beta-not-a-number"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--alpha", "0", model="mixture"), id="alpha-zero"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--alpha", "2"), id="alpha-with-global"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--table-strength", "-1"), id="table-strength-negative"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--table-strength", "5", model="mixture"),
                 id="mixture-exact-uncertain-tables"),
    pytest.param(lambda w, t, o: condition_argv(w, o, method="svi"), id="global-svi-known-tables"),
    pytest.param(lambda w, t, o: condition_argv(w, o, method="mcmc"), id="global-mcmc-known-tables"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--num-samples", "10"), id="engine-option-with-exact"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--num-chains", "2", model="mixture", method="svi"),
                 id="mcmc-option-with-svi"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--num-steps", "0", model="mixture", method="svi"),
                 id="num-steps-zero"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--num-samples", "10000000", "--num-chains", "64",
                                                model="mixture", method="mcmc"), id="draws-huge"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--subsample-size", "100", model="mixture", method="svi"),
                 id="subsample-larger-than-evidence"),
    pytest.param(lambda w, t, o: condition_argv(w, o, evidence=_many_docs_evidence(w, t), model="mixture"),
                 id="exact-mixture-too-many-states"),
    pytest.param(lambda w, t, o: condition_argv(w, o, model="neural"), id="model-unknown"),
    pytest.param(lambda w, t, o: condition_argv(w, o, method="vi"), id="method-unknown"),
    pytest.param(lambda w, t, o: condition_argv(w, o, seed="-1"), id="seed-negative"),
    pytest.param(lambda w, t, o: condition_argv(w, o, seed=str(2**40)), id="seed-huge"),
    pytest.param(lambda w, t, o: _without(condition_argv(w, o), "--out"), id="out-missing"),
    pytest.param(lambda w, t, o: condition_argv(w, o, "--bogus"), id="unknown-flag"),
    # bad --out
    pytest.param(lambda w, t, o: condition_argv(w, _file_in(o.parent, "taken")), id="out-is-a-file"),
    pytest.param(lambda w, t, o: condition_argv(w, _file_in(o.parent, "taken") / "post"), id="out-inside-a-file"),
]

BAD_SIMULATE = [
    pytest.param(lambda w, t, o: simulate_argv(o, num_personas=0), id="K-zero"),
    pytest.param(lambda w, t, o: simulate_argv(o, num_personas=-3), id="K-negative"),
    pytest.param(lambda w, t, o: simulate_argv(o, vocab_size=1), id="V-one"),
    pytest.param(lambda w, t, o: simulate_argv(o, order=-1), id="order-negative"),
    pytest.param(lambda w, t, o: simulate_argv(o, num_docs=0), id="D-zero"),
    pytest.param(lambda w, t, o: simulate_argv(o, doc_len=-1), id="T-negative"),
    pytest.param(lambda w, t, o: simulate_argv(o, num_personas="3.5"), id="K-not-an-integer"),
    pytest.param(lambda w, t, o: simulate_argv(o, num_personas=10**12), id="K-huge"),
    pytest.param(lambda w, t, o: simulate_argv(o, vocab_size=1000, order=3), id="table-huge"),
    pytest.param(lambda w, t, o: simulate_argv(o, order=10**9), id="order-huge"),
    pytest.param(lambda w, t, o: simulate_argv(o, num_docs=10**6, doc_len=10**6), id="corpus-huge"),
    pytest.param(lambda w, t, o: simulate_argv(o) + ["--concentration", "0"], id="concentration-zero"),
    pytest.param(lambda w, t, o: simulate_argv(o) + ["--concentration", "nan"], id="concentration-nan"),
    pytest.param(lambda w, t, o: simulate_argv(_file_in(o.parent, "taken")), id="out-is-a-file"),
    pytest.param(lambda w, t, o: ["simulate"], id="no-arguments"),
    pytest.param(lambda w, t, o: [], id="no-command"),
    pytest.param(lambda w, t, o: ["fly", "--out", o], id="unknown-command"),
]


def _check_refused(world: World, tmp_path: Path, capsys, build, out_exists: bool) -> str:
    inputs, outroot = tmp_path / "inputs", tmp_path / "outroot"
    inputs.mkdir(), outroot.mkdir()
    out = outroot / "out"
    if out_exists:
        out.mkdir()
        (out / "keep.txt").write_text("unrelated")
    argv = build(world, inputs, out)
    before = snapshot(outroot)
    code, stdout, err = run(argv, capsys)
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("psm: error: "), err
    assert "Traceback" not in err and stdout == ""
    assert snapshot(outroot) == before  # nothing written, nothing left behind
    return lines[0]


@pytest.mark.parametrize("out_exists", [False, True], ids=["new-out", "existing-out"])
@pytest.mark.parametrize("build", BAD_CONDITION)
def test_condition_refuses_bad_input(world, tmp_path, capsys, build, out_exists):
    _check_refused(world, tmp_path, capsys, build, out_exists)


@pytest.mark.parametrize("out_exists", [False, True], ids=["new-out", "existing-out"])
@pytest.mark.parametrize("build", BAD_SIMULATE)
def test_simulate_refuses_bad_input(world, tmp_path, capsys, build, out_exists):
    _check_refused(world, tmp_path, capsys, build, out_exists)


def test_error_messages_name_the_problem(world, tmp_path, capsys):
    line = _check_refused(world, tmp_path, capsys, lambda w, t, o: condition_argv(w, o, beta="nan"), False)
    assert "--beta" in line
    shutil.rmtree(tmp_path / "inputs"), shutil.rmtree(tmp_path / "outroot")
    line = _check_refused(world, tmp_path, capsys,
                          lambda w, t, o: condition_argv(w, o, evidence=_evidence(t, tokens=_tokens(w) + V)), False)
    assert "[0, 4)" in line and "bad_evidence.npz" in line
    shutil.rmtree(tmp_path / "inputs"), shutil.rmtree(tmp_path / "outroot")
    line = _check_refused(world, tmp_path, capsys,
                          lambda w, t, o: condition_argv(w, o, personas=_nan_personas(w, t)), False)
    assert "NaN" in line and "bad_personas.npz" in line


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0 and "simulate" in capsys.readouterr().out
    assert main(["condition", "--help"]) == 0 and "--table-strength" in capsys.readouterr().out


def test_unwritable_out_is_refused_before_any_work(world, tmp_path, capsys, monkeypatch):
    """A parent folder that cannot be written (simulated: root may write anywhere) is found first."""
    import errno

    import inference.conditioning.condition
    from inference.storage import outputs as outputs_module

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def never(*args, **kwargs):
        raise AssertionError("conditioning ran before --out was checked")

    monkeypatch.setattr(outputs_module.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(inference.conditioning.condition, "condition", never)
    code, stdout, err = run(condition_argv(world, tmp_path / "post"), capsys)
    assert code == 2 and stdout == "" and err.splitlines() == [err.strip()] and "Read-only" in err
    assert list(tmp_path.iterdir()) == []


def test_empty_out_is_refused(world, capsys):
    code, stdout, err = run(condition_argv(world, ""), capsys)
    assert code == 2 and stdout == "" and "empty" in err


def test_failure_while_writing_leaves_out_unchanged(world, tmp_path, capsys, monkeypatch):
    """A crash after posterior.json was written to the temporary folder commits nothing."""
    import inference.diagnostics

    def broken(idata, path):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(inference.diagnostics, "save_netcdf", broken)
    out = tmp_path / "post"
    out.mkdir()
    (out / "posterior.json").write_text("previous run")
    code, _, err = run(condition_argv(world, out, "--overwrite"), capsys)
    assert code == 1
    assert err.splitlines() == [err.strip()] and err.startswith("psm: internal error: RuntimeError: disk on fire")
    assert [p.name for p in tmp_path.iterdir()] == ["post"]
    assert [p.name for p in out.iterdir()] == ["posterior.json"]
    assert (out / "posterior.json").read_text() == "previous run"

    monkeypatch.setenv("PSM_DEBUG", "1")
    code, _, err = run(condition_argv(world, out, "--overwrite"), capsys)
    assert code == 1 and "Traceback" in err and err.splitlines()[-1].startswith("psm: internal error:")


# ---------------------------------------------------------------- SVI and MCMC


@pytest.mark.parametrize("model, extra", [
    ("mixture", []),
    ("global", ["--table-strength", "20"]),
])
def test_condition_svi(world, tmp_path, capsys, model, extra):
    out = tmp_path / "post"
    argv = condition_argv(world, out, *extra, "--num-steps", "30", "--num-samples", "20", model=model, method="svi")
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    summary = read_json(out / "posterior.json")
    assert set(summary) == SUMMARY_KEYS and summary["method"] == "svi" and summary["log_evidence"] is None
    assert abs(sum(summary["weights"]) - 1) < 1e-6 and len(summary["weights"]) == K
    diag = summary["diagnostics"]
    assert np.isfinite(diag["final_elbo"]) and 1 <= diag["steps"] <= 30
    assert load_netcdf(out / "posterior.nc").posterior.sizes["draw"] == 20


def test_condition_mcmc(world, tmp_path, capsys):
    out = tmp_path / "post"
    argv = condition_argv(world, out, "--num-chains", "2", "--num-samples", "20", "--warmup", "20",
                          model="mixture", method="mcmc")
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    summary = read_json(out / "posterior.json")
    assert set(summary) == SUMMARY_KEYS and summary["method"] == "mcmc" and summary["log_evidence"] is None
    assert abs(sum(summary["weights"]) - 1) < 1e-6
    diag = summary["diagnostics"]
    assert {"r_hat_max", "ess_min", "divergences"} <= set(diag)
    assert isinstance(diag["divergences"], int) and diag["ess_min"] > 0
    posterior = load_netcdf(out / "posterior.nc").posterior
    assert (posterior.sizes["chain"], posterior.sizes["draw"]) == (2, 20)


# ---------------------------------------------------------------- the console script


def test_console_script_runs(tmp_path):
    script = shutil.which("psm", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "inference.cli"]
    out = tmp_path / "sim"
    result = subprocess.run(command + [str(a) for a in simulate_argv(out, seed=1)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(out / "corpus.npz") in result.stdout
    with np.load(out / "corpus.npz") as c:
        assert c["tokens"].shape == (D, T)
