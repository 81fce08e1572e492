"""Valid inputs the hostile tests start from (a tiny world; files to corrupt)."""

import pytest
import torch

from inference.conditioning.condition import condition
from inference.diagnostics import save_netcdf
from models.counts import make_evidence, save_evidence
from models.lm_checkpoint import save_checkpoint
from models.mixture import simulate_corpus
from models.personas import random_personas, save_personas
from models.transformer import PersonaLM
from tests.hostile.common import (
    ORDER,
    TINY_MODEL,
    D,
    K,
    T,
    V,
    ValidFiles,
    World,
)


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


