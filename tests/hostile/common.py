"""Shared strategies, helpers and counters of the hostile-input tests (see ``tests/hostile/__init__.py``)."""


from __future__ import annotations

import contextlib
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from inference.cli import main
from models.errors import InputError
from models.personas import (
    MarkovPersonas,
)
from models.transformer import TransformerConfig

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


class ValidFiles(dict):
    """File name -> bytes, with a short repr (hypothesis prints its arguments when a test fails)."""

    def __repr__(self) -> str:
        return f"ValidFiles({', '.join(self)})"




def check_counts(targets: dict[str, int], module_globals: dict, request) -> None:
    """Every target ran at least its number of examples (when the whole module ran); prints the table."""
    here = {item.originalname for item in request.session.items if item.module is request.module}
    if not {name for name in module_globals if name.startswith("test_")} <= here:
        pytest.skip("only part of the module ran")
    width = max(map(len, targets))
    print("\nhostile cases tried (refused):")
    for target in sorted(targets):
        print(f"  {target:<{width}}  {CASES[target]:5d}  ({REFUSED[target]})")
    low = {t: CASES[t] for t, n in targets.items() if CASES[t] < n}
    assert not low, f"targets tried fewer times than expected: {low}"


HOSTILE_SIZE = st.one_of(HOSTILE_INTS, st.sampled_from([2.0, 2.5, "3", None, True, np.int64(2), float("nan")]))
HOSTILE_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.sampled_from([1e-300, 1e300, 0.5, "0.5", None, True, np.float32(0.5)]))
SMALL = st.one_of(st.integers(1, 4), st.sampled_from([np.int64(2), np.int32(3)]))


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
