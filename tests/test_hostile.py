"""Hostile input: property-based tests (hypothesis) of the public API and of the ``psm`` command line.

Every malformed input must end in a clear error:

* the API raises :class:`models.errors.InputError` with a one-line message (any other
  exception fails the test);
* ``psm`` (run in-process through :func:`inference.cli.main`) exits with code 2 and prints
  exactly one stderr line ``psm: error: ...``, no traceback, nothing on stdout, and leaves
  the folder around ``--out`` exactly as it was. Exit code 1 ("internal error", an
  unhandled exception) is a failure.

Inputs an example builds may also be valid; then the call must succeed and return what it
documents. The generators: arrays of every dtype and shape with out-of-range tokens, NaN
and infinities, empty and all-masked evidence, non-normalised and misshaped tables, huge,
negative and non-numeric sizes, unknown or mistyped config keys, and ``.npz``, ``.nc``,
checkpoint (``config.json``, ``model.safetensors``, ``.pt``) and TOML files that are
truncated at a random offset, have random bytes overwritten, or are random bytes.

Commands that would run for minutes on valid input (``psm run``, ``demo``, ``pretrain``,
``sbc``) get a stub in place of the expensive step: it loads what the command loads (the
base checkpoint) and then refuses with an :class:`InputError`, so the examples exercise
argument parsing, config and checkpoint loading and the output-folder guarantees only.

Hypothesis is derandomised (no example database, fixed seed), so the suite cannot flake.
``CASES`` counts the examples tried per target; the last test prints the table and checks
that every target ran (``pytest tests/test_hostile.py -s`` shows it).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import inference.conditioning.sbc
import inference.experiment.runner
import inference.experiment.world
from inference.cli import main
from inference.conditioning.condition import Posterior, condition
from inference.diagnostics import load_netcdf, save_netcdf
from inference.experiment.config import config_from_dict, load_config
from models.counts import Evidence, load_evidence, make_evidence, save_evidence
from models.errors import InputError
from models.lm_checkpoint import load_checkpoint, load_state_dict_file, save_checkpoint
from models.mixture import simulate_corpus
from models.personas import (
    MarkovPersonas,
    anchored_table_prior,
    load_personas,
    make_personas,
    random_personas,
    save_personas,
)
from models.transformer import PersonaLM, TransformerConfig

#: examples tried, per target ("api:..." or "cli:..."), and how many of them were refused
CASES: Counter = Counter()
REFUSED: Counter = Counter()

HOSTILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)



def hostile(max_examples: int) -> settings:
    """The shared settings with a number of examples sized to keep the module near a minute on 2 cores."""
    return settings(HOSTILE, max_examples=max_examples)


K, V, ORDER, D, T = 3, 4, 1, 5, 6

TINY_TOML = """\
seed = 1
[world]
num_personas = 3
vocab_size = 6
corpus_docs = 400
doc_len = 12
heldout_contexts = 16
[base]
n_layer = 1
n_head = 2
n_embd = 16
steps = 30
batch_size = 32
checkpoint = "ckpt"
[finetune]
steps = 6
snapshots = [0, 3, 6]
scratch_steps = 10
prequential_blocks = 2
prequential_steps = 3
[compare]
betas = [0.0, 0.5, 1.0, 2.0]
bootstrap = 20
attribution_completions = 8
attribution_prompt_len = 4
attribution_samples = 30
attribution_warmup = 30
attribution_chains = 2
elpd_docs = 8
[[arms]]
name = "in_support"
persona = 1
num_docs = 8
doc_len = 12
[[arms]]
name = "novel"
persona = "novel"
num_docs = 8
doc_len = 12
prompt_len = 3
"""
#: the transformer of TINY_TOML's world (V=6, K=3, doc_len 12 -> block_size 14)
TINY_MODEL = TransformerConfig(vocab_size=6, num_personas=3, block_size=14, n_layer=1, n_head=2, n_embd=16)


# ---------------------------------------------------------------- helpers


def expect_refused_or_ok(target: str, call, refusal: type[Exception] = InputError):
    """Run ``call()``; a ``refusal`` (:class:`InputError`; the ArviZ boundary raises ``ValueError``)
    must have a one-line message. Returns the result or None."""
    CASES[target] += 1
    try:
        return call()
    except refusal as exc:
        message = str(exc)
        assert message and "\n" not in message, f"InputError message is not one line: {message!r}"
        REFUSED[target] += 1
        return None


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def run_cli(target: str, argv: list, outroot: Path, expected: tuple[str, ...] = ()) -> int:
    """Run ``psm argv`` in-process and check the exit-code, stderr and output-folder contract."""
    CASES[target] += 1
    before = snapshot(outroot)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in argv])
    out, err = stdout.getvalue(), stderr.getvalue()
    assert code in (0, 2), f"exit code {code} for {argv}: {err}"
    assert "Traceback" not in err, err
    if code == 2:
        REFUSED[target] += 1
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("psm: error: "), f"stderr is not one error line: {err!r}"
        assert out == "", out
        assert snapshot(outroot) == before, f"{argv} refused but changed {outroot}"
    else:
        assert out.count("\n") >= 1
        folder = Path(argv[argv.index("--out") + 1])
        for name in expected:
            assert (folder / name).is_file(), f"{name} missing after success"
        assert not [p for p in outroot.rglob("*") if ".tmp-" in p.name], "temporary files left behind"
    return code


def out_folder(draw, root: Path, hostile: bool | None = None) -> Path:
    """``--out``: new, an existing empty folder, or nested under missing parents (all valid);
    a file, a path inside a file, or a folder holding an earlier run (hostile: refused without
    ``--overwrite``). ``hostile=None`` draws either kind."""
    outroot = root / "outroot"
    outroot.mkdir()
    valid, bad = ["new", "existing-empty", "nested"], ["file", "inside-file", "earlier-run"]
    kind = draw(st.sampled_from(valid if hostile is False else bad if hostile else valid + bad))
    out = outroot / "out"
    if kind == "existing-empty":
        out.mkdir()
    elif kind == "earlier-run":
        out.mkdir()
        (out / "summary.json").write_text("an earlier run")
    elif kind == "nested":
        out = outroot / "a" / "b" / "out"
    elif kind in ("file", "inside-file"):
        out.write_text("a file")
        out = out if kind == "file" else out / "sub"
    return out


def corrupted(original: bytes) -> st.SearchStrategy[bytes]:
    """Truncated at a random offset, a few bytes overwritten, bytes inserted, or random bytes."""
    n = len(original)

    def overwrite(changes):
        data = bytearray(original)
        for i, byte in changes:
            data[i] = byte
        return bytes(data)

    def flip(change):
        i, bit = change
        data = bytearray(original)
        data[i] ^= 1 << bit
        return bytes(data)

    return st.one_of(
        st.integers(0, n - 1).map(lambda i: original[:i]),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=4).map(overwrite),
        st.tuples(st.integers(0, n - 1), st.integers(0, 7)).map(flip),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=16)).map(lambda a: original[: a[0]] + a[1] + original[a[0]:]),
        st.binary(max_size=300),
    )


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy, weight: int = 3) -> st.SearchStrategy:
    """``valid`` in about ``weight`` examples out of ``weight + 1``, else ``hostile``."""
    return st.one_of(*([valid] * weight), hostile)


@st.composite
def one_hostile(draw, fields: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]], valid_share: int = 3) -> dict:
    """Keyword arguments with at most one field hostile (``fields``: name -> (valid, hostile)).

    About ``valid_share`` examples in ``len(fields) + valid_share`` are entirely valid, so the success
    path is exercised as well as each refusal on its own (hypothesis's own choices are far from
    uniform: independent draws rarely make a whole valid call).
    """
    bad = draw(st.sampled_from([None] * valid_share + sorted(fields)))
    kwargs = {name: draw(hostile if name == bad else valid) for name, (valid, hostile) in fields.items()}
    return {"hostile_field": bad, **kwargs}


HOSTILE_INTS = st.one_of(
    st.integers(-3, 8),
    st.sampled_from([2**31, 2**32, 2**40, 2**63, 2**64, 10**30, -(2**63)]),
)
HOSTILE_NUMBER_TEXT = st.one_of(
    HOSTILE_INTS.map(str),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e400", "-1e400", "1e-400", "0.5", "1.5", "-0.0", "1e-300",
                     "", " ", "x", "3x", "0x10", "1_000", "١", "None"]),
)

# ---------------------------------------------------------------- arrays


def token_arrays(max_side: int = 5) -> st.SearchStrategy[np.ndarray]:
    """Arrays of every kind: mostly integer tokens near [0, V), sometimes extreme, float, bool or text."""
    int_dtypes = st.sampled_from([np.int64, np.int32, np.int8, np.uint8, np.uint64])
    ints = int_dtypes.flatmap(lambda dt: hnp.arrays(
        dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side),
        elements=st.one_of(st.integers(max(-2, int(np.iinfo(dt).min)), V + 1),
                           st.integers(int(np.iinfo(dt).min), int(np.iinfo(dt).max)))))
    floats = hnp.arrays(st.sampled_from([np.float64, np.float16]), hnp.array_shapes(min_dims=1, max_dims=2, max_side=max_side),
                        elements=st.floats(allow_nan=True, allow_infinity=True, width=16))
    other = hnp.arrays(st.sampled_from([np.bool_, np.complex64, np.dtype("<U2")]),
                       hnp.array_shapes(min_dims=1, max_dims=2, max_side=max_side))
    return st.one_of(ints, ints, ints, floats, other)


@st.composite
def evidence_arrays(draw, max_side: int = 5):
    """(tokens, mask) with mask None, matching, misshaped, all-false, or of another dtype."""
    valid_tokens = hnp.arrays(np.int64, st.tuples(st.integers(1, max_side), st.integers(1, max_side)),
                              elements=st.integers(0, V - 1))
    tokens = draw(st.one_of(valid_tokens, valid_tokens, token_arrays(max_side)))
    kind = draw(st.sampled_from(["none", "ones", "random", "zeros", "int01", "int2", "float", "misshaped"]))
    shape = tokens.shape
    if kind == "none":
        mask = None
    elif kind == "ones":
        mask = np.ones(shape, bool)
    elif kind == "random":
        mask = draw(hnp.arrays(np.bool_, shape))
    elif kind == "zeros":
        mask = np.zeros(shape, bool)
    elif kind == "int01":
        mask = draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 1)))
    elif kind == "int2":
        mask = np.full(shape, 2)
    elif kind == "float":
        mask = np.ones(shape, np.float64)
    else:
        mask = np.ones(tuple(s + 1 for s in shape) or (2,), bool)
    return tokens, mask


@st.composite
def persona_arrays(draw, sizes: tuple[int, int, int] | None = None):
    """A dict of persona arrays, valid or with one corruption (and an ``order`` entry of any kind)."""
    if sizes is None:
        k, v = draw(mostly(st.integers(1, 3), st.just(0))), draw(mostly(st.integers(2, 4), st.integers(0, 1)))
        n = draw(st.integers(0, 2))
    else:
        k, v, n = sizes
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    conc = draw(st.sampled_from([1e-3, 0.5, 1e3]))
    prior = rng.dirichlet(np.ones(k)) if k else np.zeros(0)
    if v:
        init = rng.dirichlet(np.full(v, conc), size=k)
        trans = rng.dirichlet(np.full(v, conc), size=(k,) + (v,) * n)
        init, trans = (np.nan_to_num(a / a.sum(-1, keepdims=True), nan=1.0 / v) for a in (init, trans))
    else:
        init, trans = np.zeros((k, 0)), np.zeros((k,) + (0,) * (n + 1))
    arrays = {"prior": prior, "init": init, "trans": trans}
    corruption = draw(st.sampled_from(
        ["none"] * 12 + ["nan", "inf", "negative", "scale", "zero-row", "drop-axis", "add-axis", "int", "bool",
         "complex", "float16", "text", "transpose", "empty", "missing"]))
    name = draw(st.sampled_from(sorted(arrays)))
    a = arrays[name].copy()
    flat = a.reshape(-1)
    where = draw(st.integers(0, max(0, flat.size - 1)))
    if corruption in ("nan", "inf", "negative") and flat.size:
        flat[where] = {"nan": np.nan, "inf": np.inf, "negative": -0.25}[corruption]
    elif corruption == "scale":
        a = a * draw(st.sampled_from([0.0, 0.5, 1.5, 1e300]))
    elif corruption == "zero-row" and a.size:
        a.reshape(-1, a.shape[-1])[0] = 0.0  # a view: the first row (the whole prior) becomes zeros
    elif corruption == "drop-axis" and a.ndim:
        a = a[..., 0] if a.shape[-1] else np.zeros(a.shape[:-1])
    elif corruption == "add-axis":
        a = a[..., None]
    elif corruption == "int":
        a = a.astype(np.int64)
    elif corruption == "bool":
        a = a.astype(bool)
    elif corruption == "complex":
        a = a.astype(np.complex128)
    elif corruption == "float16":
        a = a.astype(np.float16)
    elif corruption == "text":
        a = a.astype("<U4")
    elif corruption == "transpose":
        a = a.T
    elif corruption == "empty":
        a = np.zeros((0,) * max(1, a.ndim))
    arrays[name] = a
    if corruption == "missing":
        del arrays[name]
    order = draw(st.sampled_from(["absent"] * 3 + ["right"] * 3 + ["wrong", "float", "text", "vector", "nan"]))
    if order != "absent":
        arrays["order"] = {"right": np.int64(n), "wrong": np.int64(n + 1), "float": np.float64(n), "text": np.array("one"),
                           "vector": np.array([n, n]), "nan": np.float64(np.nan)}[order]
    return arrays


def check_personas(personas: MarkovPersonas) -> None:
    """What a MarkovPersonas promises: float64 distributions of the documented shapes."""
    Kp, Vp = personas.init.shape
    assert personas.prior.shape == (Kp,) and personas.trans.shape == (Kp,) + (Vp,) * (personas.order + 1)
    for table in (personas.prior, personas.init, personas.trans):
        assert table.dtype == torch.float64 and torch.isfinite(table).all() and (table >= 0).all()
        assert torch.allclose(table.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-6)


# ---------------------------------------------------------------- shared valid inputs


class World(tuple):
    """(personas, evidence) with a short repr (hypothesis prints its arguments when a test fails)."""

    def __repr__(self) -> str:
        return f"World(K={K}, V={V}, order={ORDER}, D={D}, T={T})"


@pytest.fixture(scope="module")
def world():
    personas = random_personas(K, V, ORDER, concentration=0.7, seed=3)
    tokens, _ = simulate_corpus(personas, D, T, seed=4)
    return World((personas, make_evidence(tokens.numpy())))


@pytest.fixture(scope="module")
def files(tmp_path_factory, world):
    """Valid files to corrupt: personas and evidence .npz, an InferenceData .nc, a checkpoint, a .pt."""
    root = tmp_path_factory.mktemp("valid")
    personas, evidence = world
    save_personas(root / "personas.npz", personas)
    save_evidence(root / "evidence.npz", evidence)
    save_netcdf(condition(personas, evidence, "mixture").to_arviz(), root / "posterior.nc")
    torch.manual_seed(0)
    model = PersonaLM(TINY_MODEL)
    save_checkpoint(model, root / "ckpt")
    torch.save(model.state_dict(), root / "weights.pt")
    names = ("personas.npz", "evidence.npz", "posterior.nc", "weights.pt", "ckpt/config.json", "ckpt/model.safetensors")
    return ValidFiles({name: (root / name).read_bytes() for name in names})


class ValidFiles(dict):
    """File name -> bytes, with a short repr (hypothesis prints its arguments when a test fails)."""

    def __repr__(self) -> str:
        return f"ValidFiles({', '.join(self)})"


# ---------------------------------------------------------------- the API: arrays


@hostile(500)
@given(evidence_arrays(), st.one_of(st.none(), st.integers(-1, 6)))
def test_make_evidence_refuses_or_builds_valid_evidence(arrays, vocab_size):
    tokens, mask = arrays
    evidence = expect_refused_or_ok("api:make_evidence", lambda: make_evidence(tokens, mask, vocab_size))
    if evidence is not None:
        assert evidence.tokens.dtype == torch.long and evidence.tokens.dim() == 2
        assert evidence.mask.dtype == torch.bool and evidence.mask.shape == evidence.tokens.shape
        assert evidence.num_tokens >= 1 and int(evidence.tokens.min()) >= 0
        assert vocab_size is None or int(evidence.tokens.max()) < vocab_size
        assert torch.equal(evidence.tokens, torch.as_tensor(tokens.astype(np.int64)))


@hostile(300)
@given(persona_arrays())
def test_persona_tables_are_refused_or_valid(arrays):
    if {"prior", "init", "trans"} <= set(arrays):
        personas = expect_refused_or_ok("api:make_personas",
                                        lambda: make_personas(arrays["prior"], arrays["init"], arrays["trans"]))
        if personas is not None:
            check_personas(personas)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "personas.npz"
        np.savez(path, **arrays)
        personas = expect_refused_or_ok("api:load_personas", lambda: load_personas(path))
        if personas is not None:
            check_personas(personas)
            assert "order" not in arrays or int(arrays["order"]) == personas.order


HOSTILE_SIZE = st.one_of(HOSTILE_INTS, st.sampled_from([2.0, 2.5, "3", None, True, np.int64(2), float("nan")]))
HOSTILE_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.sampled_from([1e-300, 1e300, 0.5, "0.5", None, True, np.float32(0.5)]))
SMALL = st.one_of(st.integers(1, 4), st.sampled_from([np.int64(2), np.int32(3)]))


@hostile(250)
@given(one_hostile({
    "num_personas": (SMALL, HOSTILE_SIZE),
    "vocab_size": (SMALL.map(lambda v: v + 1), HOSTILE_SIZE),
    "order": (st.integers(0, 2), HOSTILE_SIZE),
    "concentration": (st.sampled_from([1e-3, 0.5, 1e3, 1e-300, np.float32(0.5)]), HOSTILE_FLOAT),
    "seed": (st.integers(0, 2**32 - 1), HOSTILE_SIZE),
    "prior": (st.sampled_from([None, "uniform"]), st.sampled_from(["short", "nan"])),
}))
def test_random_personas_refuses_or_draws_valid_tables(args):
    num_personas, vocab_size, order, concentration, seed, prior = (
        args[k] for k in ("num_personas", "vocab_size", "order", "concentration", "seed", "prior"))

    def call():
        p = None
        if prior is not None and type(num_personas) is int and 0 < num_personas < 100:
            p = {"uniform": np.full(num_personas, 1 / num_personas), "short": np.ones(max(1, num_personas - 1)),
                 "nan": np.full(num_personas, np.nan)}[prior]
        return random_personas(num_personas, vocab_size, order, concentration, seed=seed, prior=p)

    personas = expect_refused_or_ok("api:random_personas", call)
    assert personas is not None or args["hostile_field"] is not None, "valid arguments refused"
    if personas is not None:
        check_personas(personas)
        assert (personas.num_personas, personas.vocab_size, personas.order) == (num_personas, vocab_size, order)


@hostile(250)
@given(one_hostile({
    "num_docs": (SMALL, HOSTILE_SIZE),
    "doc_len": (SMALL, HOSTILE_SIZE),
    "seed": (st.integers(0, 2**63 - 1), HOSTILE_SIZE),
    "evidence": (st.sampled_from(["mixture", "global"]), st.sampled_from(["documents", ""])),
    "alpha": (st.sampled_from([None, "ok"]), st.sampled_from(["short", "zero", "nan", "text", "scalar"])),
}))
def test_simulate_corpus_refuses_or_simulates(world, args):
    personas = world[0]
    num_docs, doc_len, seed, evidence, alpha = (args[k] for k in ("num_docs", "doc_len", "seed", "evidence", "alpha"))
    if alpha == "ok" and evidence == "global":
        alpha = None  # alpha belongs to the mixture model: that combination is a refusal, not a valid call
    a = None if alpha is None else {"ok": torch.ones(K), "short": torch.ones(K - 1), "zero": torch.zeros(K),
                                    "nan": torch.full((K,), math.nan), "text": "one", "scalar": 1.0}[alpha]
    result = expect_refused_or_ok("api:simulate_corpus",
                                  lambda: simulate_corpus(personas, num_docs, doc_len, seed=seed, evidence=evidence, alpha=a))
    assert result is not None or args["hostile_field"] is not None, "valid arguments refused"
    if result is not None:
        tokens, persona = result
        assert tokens.shape == (num_docs, doc_len) and tokens.dtype == torch.long
        assert int(tokens.min()) >= 0 and int(tokens.max()) < V
        assert persona.shape == (num_docs,) and 0 <= int(persona.min()) and int(persona.max()) < K


def _tiny_engine(method: str) -> dict:
    return {"svi": dict(num_steps=2, num_samples=4), "mcmc": dict(num_samples=4, warmup_steps=2, num_chains=1)}.get(method, {})


VALID_EVIDENCE = st.tuples(
    hnp.arrays(np.int64, st.tuples(st.integers(1, 5), st.integers(1, 6)), elements=st.integers(0, V - 1)),
    st.sampled_from([None, "ones", "first-off"]))


@hostile(300)
@given(one_hostile({
    "arrays": (VALID_EVIDENCE, evidence_arrays()),
    "direct": (st.booleans(), st.booleans()),
    "model": (st.sampled_from(["global", "mixture"]), st.sampled_from(["Global", "", None])),
    "method": (st.sampled_from(["exact", "exact", "svi", "mcmc"]), st.sampled_from(["nuts", "", None])),
    "beta": (st.one_of(st.sampled_from([0.0, 1.0, 100.0, 1e290]), st.floats(0, 10)),
             st.sampled_from([-1.0, math.nan, math.inf, -math.inf, "1", None, [1.0, 2.0], 1e308])),
    "alpha": (st.sampled_from([1.0, 0.5, [1.0, 1.0, 2.0]]), st.sampled_from([0.0, -1.0, math.nan, [1.0, 2.0], "a"])),
    "seed": (st.integers(0, 2**32 - 1), HOSTILE_SIZE),
    "strength": (st.sampled_from([None, 5.0]), st.sampled_from([-1.0, math.nan, "5"])),
    "zero_tables": (st.just(False), st.just(True)),
    "extra_option": (st.none(), st.sampled_from(["bogus", "num_steps"])),
}, valid_share=4))
def test_condition_refuses_or_returns_a_normalised_posterior(world, args):
    personas = world[0]
    arrays, direct, model, method, beta, alpha, seed, strength, zero_tables, extra_option = (args[k] for k in (
        "arrays", "direct", "model", "method", "beta", "alpha", "seed", "strength", "zero_tables", "extra_option"))
    if args["hostile_field"] is None:  # the valid combinations of model, method and table prior
        strength = 5.0 if model == "global" and method != "exact" else None if model == "mixture" and method == "exact" else strength
    if isinstance(arrays[1], str):
        mask = np.ones(arrays[0].shape, bool)
        mask[:, 0] = arrays[1] == "ones" or arrays[0].shape[1] == 1
        arrays = (arrays[0], mask)
    if zero_tables:  # every persona forbids token 0 after token 0 and as a first token: impossible evidence
        init, trans = personas.init.clone(), personas.trans.clone()
        init[:, 0], trans[:, 0, 0] = 0.0, 0.0
        personas = make_personas(personas.prior, init / init.sum(-1, keepdim=True), trans / trans.sum(-1, keepdim=True))
    tokens, mask = arrays

    def call():
        if direct:  # bypass make_evidence: condition() must check what it is given itself
            t = torch.as_tensor(tokens.astype(np.int64)) if tokens.dtype.kind in "iu" else torch.zeros(tokens.shape)
            m = torch.ones(t.shape, dtype=torch.bool) if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool))
            evidence = Evidence(t, m)
        else:
            evidence = make_evidence(tokens, mask)
        table_prior = None if strength is None else anchored_table_prior(personas, strength)
        options = _tiny_engine(method)
        if extra_option:
            options[extra_option] = 3
        return condition(personas, evidence, model, method, beta, alpha=alpha, table_prior=table_prior, seed=seed,
                         **options)

    posterior = expect_refused_or_ok("api:condition", call)
    assert posterior is not None or args["hostile_field"] is not None, "valid arguments refused"
    if posterior is not None:
        assert isinstance(posterior, Posterior) and posterior.weights.shape == (K,)
        assert torch.isfinite(posterior.weights).all() and abs(float(posterior.weights.sum()) - 1) < 1e-6
        assert torch.isfinite(posterior.weight_samples).all()
        assert not torch.isnan(posterior.doc_log_likelihood()).any()
        if posterior.log_evidence is not None:
            assert math.isfinite(posterior.log_evidence)


@hostile(250)
@given(contexts=st.one_of(hnp.arrays(np.int64, st.tuples(st.integers(0, 4), st.integers(0, 7)), elements=st.integers(0, V - 1)),
                          token_arrays(6), st.sampled_from([[[0, 1]], [0, 1], "ab", None, [[0.5]]])),
       as_tensor=st.booleans(), model=st.sampled_from(["global", "mixture"]))
def test_predictive_refuses_or_returns_distributions(world, contexts, as_tensor, model):
    personas, evidence = world
    posterior = condition(personas, evidence, model)

    def call():
        c = contexts
        if as_tensor and isinstance(c, np.ndarray) and c.dtype.kind in "iufb" and c.dtype != np.uint64:
            c = torch.as_tensor(c)
        return posterior.predictive(c)

    logp = expect_refused_or_ok("api:predictive", call)
    if logp is not None:
        n, t = np.shape(contexts)
        assert logp.shape == (n, t, V) and not torch.isnan(logp).any()
        assert torch.allclose(logp.logsumexp(-1), torch.zeros(n, t, dtype=logp.dtype), atol=1e-9)


# ---------------------------------------------------------------- the API: configs


CONFIG_KEYS = {
    "": ["seed", "arms", "world", "base", "finetune", "compare", "bogus"],
    "world": ["num_personas", "vocab_size", "order", "concentration", "corpus_docs", "doc_len", "heldout_contexts",
              "seed", "vocabulary"],
    "base": ["n_layer", "n_head", "n_embd", "steps", "batch_size", "lr", "p_tag", "checkpoint", "layers"],
    "finetune": ["method", "steps", "lr", "batch_size", "snapshots", "rank", "k", "scratch_steps",
                 "prequential_blocks", "prequential_steps", "lora"],
    "compare": ["betas", "bootstrap", "attribution_completions", "attribution_prompt_len", "attribution_samples",
                "attribution_warmup", "attribution_chains", "elpd_docs", "beta"],
    "arms": ["name", "persona", "num_docs", "doc_len", "prompt_len", "concentration", "weight"],
}
HOSTILE_VALUES = st.one_of(
    st.integers(0, 8), st.integers(0, 8), HOSTILE_INTS, st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
    st.sampled_from(["", "novel", "full", "lora", "x y", "../../etc", "default", "ckpt"]),
    st.lists(st.one_of(st.integers(-2, 8), st.floats(allow_nan=True)), max_size=4),
    st.just({}), st.just({"a": 1}), st.just([{}]), st.just(10**400),
)


@hostile(500)
@given(st.data())
def test_config_from_dict_refuses_or_validates(data):
    import tomllib

    raw = tomllib.loads(TINY_TOML)
    for _ in range(data.draw(st.integers(1, 3))):
        section = data.draw(st.sampled_from(sorted(CONFIG_KEYS)))
        key = data.draw(st.sampled_from(CONFIG_KEYS[section]))
        value = data.draw(HOSTILE_VALUES)
        if section == "":
            raw[key] = value
        elif section == "arms":
            if isinstance(raw.get("arms"), list) and raw["arms"] and isinstance(raw["arms"][0], dict):
                raw["arms"][0][key] = value
        elif isinstance(raw.get(section), dict):
            raw[section][key] = value
    if data.draw(st.booleans()):
        raw = data.draw(st.sampled_from([raw, [raw], "seed = 1", 5, None]))
    config = expect_refused_or_ok("api:config_from_dict", lambda: config_from_dict(raw))
    if config is not None:
        assert 0 <= config.seed < 2**32 and config.world.num_personas >= 1 and config.arms
        assert all(math.isfinite(b) and b >= 0 for b in config.compare.betas)


def toml_edits() -> st.SearchStrategy[str]:
    """TINY_TOML with one value replaced by a hostile literal, a line dropped or an unknown key added."""
    lines = TINY_TOML.splitlines()
    literals = st.sampled_from(["-1", "0", "1.5", "nan", "inf", "-inf", "1e400", "99999999999999999999", "4294967296",
                                '"x"', '""', "[]", "{}", "true", "[1, [2]]", '"novel"', "2024-01-01", "'''a'''"])

    def replace(args):
        i, literal = args
        out = list(lines)
        if "=" in out[i]:
            out[i] = out[i].split("=")[0] + "= " + literal
        return "\n".join(out) + "\n"

    return st.one_of(
        st.tuples(st.integers(0, len(lines) - 1), literals).map(replace),
        st.integers(0, len(lines) - 1).map(lambda i: "\n".join(lines[:i] + lines[i + 1:]) + "\n"),
        st.tuples(st.integers(0, len(lines)), st.sampled_from(["bogus = 1", "[extra]", "[[arms]]", "seed = 2"])).map(
            lambda a: "\n".join(lines[: a[0]] + [a[1]] + lines[a[0]:]) + "\n"),
    )


@hostile(400)
@given(st.one_of(corrupted(TINY_TOML.encode()), toml_edits().map(str.encode)))
def test_load_config_refuses_corrupt_toml(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiment.toml"
        path.write_bytes(data)
        expect_refused_or_ok("api:load_config", lambda: load_config(path))


# ---------------------------------------------------------------- the API: corrupt files


@hostile(300)
@given(which=st.sampled_from(["personas.npz", "evidence.npz"]), data=st.data())
def test_corrupt_npz_is_refused_or_loads_valid(files, which, data):
    blob = data.draw(corrupted(files[which]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / which
        path.write_bytes(blob)
        if which == "personas.npz":
            personas = expect_refused_or_ok("api:load_personas(corrupt)", lambda: load_personas(path))
            if personas is not None:
                check_personas(personas)
        else:
            evidence = expect_refused_or_ok("api:load_evidence(corrupt)", lambda: load_evidence(path, V))
            if evidence is not None:
                assert int(evidence.tokens.max()) < V and evidence.num_tokens >= 1


# h5netcdf's File.__del__ trips over a half-built File after a failed open ("Exception ignored in
# File.close ... no attribute '_writable'"): a library bug, printed, not raised; load_netcdf itself
# raises a one-line ValueError, which is what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@hostile(60)
@given(data=st.data())
def test_corrupt_netcdf_is_refused_or_loads(files, data):
    blob = data.draw(corrupted(files["posterior.nc"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "posterior.nc"
        path.write_bytes(blob)
        expect_refused_or_ok("api:load_netcdf", lambda: load_netcdf(path), ValueError)


def config_json_edits(original: bytes) -> st.SearchStrategy[bytes]:
    """config.json with one field replaced by a hostile JSON value, or removed, or an unknown field added."""
    meta = json.loads(original)
    fields = ["format", "format_version", "config"] + [f"config.{k}" for k in meta["config"]] + ["config.extra"]
    values = st.sampled_from([-1, 0, 1, 2.5, 10**12, 2**70, None, "x", [], {}, True, 1e308, "psm-persona-lm"])

    def edit(args):
        field, value, delete = args
        m = json.loads(original)
        target, key = (m["config"], field.split(".")[1]) if field.startswith("config.") else (m, field)
        if delete:
            target.pop(key, None)
        else:
            target[key] = value
        return json.dumps(m).encode()

    return st.tuples(st.sampled_from(fields), values, st.booleans()).map(edit)


@hostile(300)
@given(which=st.sampled_from(["ckpt/config.json", "ckpt/model.safetensors", "weights.pt"]), data=st.data())
def test_corrupt_checkpoint_is_refused_or_loads(files, which, data):
    original = files[which]
    strategy = corrupted(original)
    if which == "ckpt/config.json":
        strategy = st.one_of(strategy, config_json_edits(original))
    blob = data.draw(strategy)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ckpt").mkdir()
        for name in ("ckpt/config.json", "ckpt/model.safetensors"):
            (root / name).write_bytes(blob if name == which else files[name])
        if which == "weights.pt":
            (root / which).write_bytes(blob)
            state = expect_refused_or_ok("api:load_state_dict_file", lambda: load_state_dict_file(root / which))
            assert state is None or isinstance(state, dict)
        else:
            model = expect_refused_or_ok("api:load_checkpoint", lambda: load_checkpoint(root / "ckpt"))
            assert model is None or isinstance(model, PersonaLM)


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


# ---------------------------------------------------------------- regressions the properties found


def _npz_with_unknown_compression(files, tmp: Path) -> Path:
    """A zip member whose compression method is 99: zipfile raises NotImplementedError."""
    data = bytearray(files["personas.npz"])
    at = data.index(b"PK\x01\x02") + 10  # the first central-directory entry's compression method
    data[at:at + 2] = (99).to_bytes(2, "little")
    path = tmp / "odd.npz"
    path.write_bytes(bytes(data))
    return path


def _personas_npz(tmp: Path, **order) -> Path:
    p = random_personas(2, 3, 1, seed=0)
    path = tmp / "personas.npz"
    np.savez(path, prior=p.prior.numpy(), init=p.init.numpy(), trans=p.trans.numpy(), **order)
    return path


def _corrupt_pt(files, tmp: Path) -> Path:
    """A .pt whose pickle fetches a memo entry that was never stored (torch.load raised KeyError)."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(io.BytesIO(files["weights.pt"])) as src, zipfile.ZipFile(tmp / "w.pt", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                pos = next(pos for op, _, pos in pickletools.genops(data) if op.name == "BINGET")
                data = data[: pos + 1] + bytes([250]) + data[pos + 2:]  # BINGET 250: no such memo key
            dst.writestr(item, data)
    return tmp / "w.pt"


def _impossible(world):
    personas, evidence = world
    init = personas.init.clone()
    init[:, int(evidence.tokens[0, 0])] = 0.0
    return make_personas(personas.prior, init / init.sum(-1, keepdim=True), personas.trans), evidence


REGRESSIONS = [  # (call(world, files, tmp), words the message must contain); each raised another type before
    pytest.param(lambda w, f, t: load_personas(_npz_with_unknown_compression(f, t)), "not a readable .npz",
                 id="npz-unknown-compression"),
    pytest.param(lambda w, f, t: load_personas(_personas_npz(t, order=np.array([1, 1]))), "'order' must be one integer",
                 id="order-vector"),
    pytest.param(lambda w, f, t: load_personas(_personas_npz(t, order=np.array("one"))), "'order' must be one integer",
                 id="order-text"),
    pytest.param(lambda w, f, t: load_state_dict_file(_corrupt_pt(f, t)), "not a readable torch file", id="pt-corrupt-pickle"),
    pytest.param(lambda w, f, t: make_evidence(np.array([[2**63 + 5, 1]], dtype=np.uint64)), "2**63", id="uint64-tokens"),
    pytest.param(lambda w, f, t: random_personas(2, 3, 1, "a"), "concentration", id="concentration-text"),
    pytest.param(lambda w, f, t: random_personas(2, 3, 1, 0.5, seed=-1), "seed", id="personas-seed-negative"),
    pytest.param(lambda w, f, t: random_personas(2, 3, 1, 0.5, seed=1.5), "seed", id="personas-seed-float"),
    pytest.param(lambda w, f, t: anchored_table_prior(w[0], "a"), "strength", id="anchored-strength-text"),
    pytest.param(lambda w, f, t: simulate_corpus(w[0], 2.5, 3), "num_docs", id="simulate-float-docs"),
    pytest.param(lambda w, f, t: simulate_corpus(w[0], 2**63, np.int64(2)), "too large", id="simulate-numpy-overflow"),
    pytest.param(lambda w, f, t: simulate_corpus(w[0], 2, 3, seed=2**70), "seed", id="simulate-seed-huge"),
    pytest.param(lambda w, f, t: simulate_corpus(w[0], 2, 3, alpha=torch.ones(K - 1)), "alpha", id="simulate-alpha-short"),
    pytest.param(lambda w, f, t: simulate_corpus(w[0], 2, 3, alpha=-torch.ones(K)), "alpha", id="simulate-alpha-negative"),
    pytest.param(lambda w, f, t: simulate_corpus(w[0], 2, 3, evidence="x"), "unknown evidence model",
                 id="simulate-evidence-unknown"),  # was an InputError with Pyro's trace tables appended (several lines)
    pytest.param(lambda w, f, t: condition(*w, seed=2**70), "seed", id="condition-seed-huge"),
    pytest.param(lambda w, f, t: condition(*w, seed=1.5), "seed", id="condition-seed-float"),
    pytest.param(lambda w, f, t: condition(*w, model="mixture", alpha="a"), "alpha", id="condition-alpha-text"),
    pytest.param(lambda w, f, t: condition(w[0], Evidence(torch.tensor([[-1, 2]]), torch.ones(1, 2, dtype=torch.bool))),
                 "[0, 4)", id="condition-negative-tokens"),
    pytest.param(lambda w, f, t: condition(w[0], make_evidence(np.array([[2**63 + 5, 1]], dtype=np.uint64))), "2**63",
                 id="condition-uint64-tokens"),
    pytest.param(lambda w, f, t: condition(*_impossible(w), model="mixture"), "zero probability",
                 id="mixture-exact-impossible"),
    pytest.param(lambda w, f, t: condition(*_impossible(w), model="mixture", method="svi", num_steps=2),
                 "zero probability", id="mixture-svi-impossible"),
    pytest.param(lambda w, f, t: condition(*w, beta=1e308), "too large", id="beta-overflow"),
    pytest.param(lambda w, f, t: condition(*w).predictive(torch.tensor([[0, 7]])), "[0, 4)", id="predictive-out-of-range"),
    pytest.param(lambda w, f, t: condition(*w).predictive(torch.tensor([[0.0, 1.0]])), "integer", id="predictive-float"),
    pytest.param(lambda w, f, t: condition(*w).predictive(np.zeros((1, 2), np.uint64) + 9), "[0, 4)", id="predictive-uint64"),
    pytest.param(lambda w, f, t: config_from_dict(5), "table of keys", id="config-not-a-table"),
    pytest.param(lambda w, f, t: config_from_dict({"seed": -1}), "seed", id="config-seed-negative"),
    pytest.param(lambda w, f, t: config_from_dict({"world": {"seed": 2**40}}), "world.seed", id="config-world-seed-huge"),
    pytest.param(lambda w, f, t: config_from_dict({"world": {"corpus_docs": 10**7}}), "tokens", id="config-corpus-huge"),
    pytest.param(lambda w, f, t: config_from_dict({"world": {"vocab_size": 10**6}}), "table entries", id="config-table-huge"),
    pytest.param(lambda w, f, t: config_from_dict({"base": {"n_embd": 2**14, "n_head": 1}}), "parameters",
                 id="config-transformer-huge"),
    pytest.param(lambda w, f, t: config_from_dict({"base": {"lr": 10**400}}), "base.lr", id="config-float-overflow"),
]


@pytest.mark.parametrize("call, words", REGRESSIONS)
def test_regressions_found_by_the_properties(world, files, tmp_path, call, words):
    """Each of these raised something other than a one-line InputError before it was fixed."""
    with pytest.raises(InputError) as info:
        call(world, files, tmp_path)
    message = str(info.value)
    assert words in message and "\n" not in message, message


def test_predictive_of_empty_contexts_is_empty(world):
    """No contexts, or contexts of no tokens, give an empty result (an IndexError before)."""
    posterior = condition(*world)
    assert posterior.predictive(torch.zeros(0, 3, dtype=torch.long)).shape == (0, 3, V)
    assert posterior.predictive(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, V)


# ---------------------------------------------------------------- the count


TARGETS = {  # about 80% of each test's max_examples (hypothesis may stop early on a small search space)
    "api:make_evidence": 400, "api:make_personas": 150, "api:load_personas": 240, "api:random_personas": 200,
    "api:simulate_corpus": 200, "api:condition": 240, "api:predictive": 200, "api:config_from_dict": 400,
    "api:load_config": 320, "api:load_personas(corrupt)": 80, "api:load_evidence(corrupt)": 80,
    "api:load_netcdf": 48, "api:load_checkpoint": 120, "api:load_state_dict_file": 40,
    "cli:simulate": 120, "cli:condition": 200, "cli:run": 40, "cli:pretrain": 20, "cli:demo": 10, "cli:sbc": 80,
}


def test_cases_tried_are_counted(request):
    """Every target above ran at least its number of examples (when the whole module ran)."""
    here = {item.originalname for item in request.session.items if item.module is request.module}
    if not {name for name in globals() if name.startswith("test_")} <= here:
        pytest.skip("only part of the module ran")
    width = max(map(len, TARGETS))
    print("\nhostile cases tried (refused):")
    for target in sorted(CASES):
        print(f"  {target:<{width}}  {CASES[target]:5d}  ({REFUSED[target]})")
    print(f"  {'total':<{width}}  {sum(CASES.values()):5d}  ({sum(REFUSED.values())})")
    low = {t: CASES[t] for t, n in TARGETS.items() if CASES[t] < n}
    assert not low, f"targets tried fewer times than expected: {low}"
