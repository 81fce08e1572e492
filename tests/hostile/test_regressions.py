"""Inputs the properties once found that raised the wrong kind of error; each now a one-line InputError."""


from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.conditioning.condition import condition
from inference.experiment.config import config_from_dict
from models.counts import Evidence, make_evidence
from models.errors import InputError
from models.lm_checkpoint import load_state_dict_file
from models.mixture import simulate_corpus
from models.personas import (
    anchored_table_prior,
    load_personas,
    make_personas,
    random_personas,
)
from tests.hostile.common import K

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
