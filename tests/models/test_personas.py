import numpy as np
import pytest
import torch

from models.errors import InputError
from models.personas import (
    anchored_table_prior,
    load_personas,
    make_personas,
    random_personas,
    save_personas,
)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_random_personas_are_distributions_of_the_documented_shape(order):
    p = random_personas(4, 5, order=order, concentration=0.3, seed=1)
    assert p.trans.shape == (4,) + (5,) * (order + 1)
    assert p.order == order and p.num_features == 5 + 5**order * 5
    torch.testing.assert_close(p.trans.sum(-1), torch.ones(p.trans.shape[:-1], dtype=torch.float64))
    torch.testing.assert_close(p.init.sum(-1), torch.ones(4, dtype=torch.float64))
    assert p.log_table().shape == (4, p.num_features)


def test_random_personas_depend_on_the_seed_only():
    a, b, c = (random_personas(3, 4, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.trans, b.trans) and not torch.equal(a.trans, c.trans)


def test_save_load_round_trip(tmp_path):
    p = random_personas(3, 4, order=2, seed=0)
    save_personas(tmp_path / "p.npz", p)
    q = load_personas(tmp_path / "p.npz")
    for name in ("prior", "init", "trans"):
        assert torch.equal(getattr(p, name), getattr(q, name))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(trans=a["trans"] * 1.1), "sum to one"),
        (lambda a: a["init"].__setitem__((0, 0), np.nan), "NaN"),
        (lambda a: a["init"].__setitem__((0, 0), -0.1), "negative"),
        (lambda a: a.update(prior=np.ones(2) / 2), "prior has shape"),
        (lambda a: a.update(trans=a["trans"][:, :2]), "trans has shape"),
        (lambda a: a.update(init=a["init"].astype(np.int64)), "floating"),
    ],
)
def test_bad_tables_are_refused_in_one_line(change, message):
    p = random_personas(3, 4, seed=0)
    arrays = {"prior": p.prior.numpy().copy(), "init": p.init.numpy().copy(), "trans": p.trans.numpy().copy()}
    change(arrays)
    with pytest.raises(InputError, match=message) as err:
        make_personas(arrays["prior"], arrays["init"], arrays["trans"])
    assert "\n" not in str(err.value)


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_personas(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable"):
        load_personas(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", prior=np.ones(2) / 2)
    with pytest.raises(InputError, match="missing array"):
        load_personas(tmp_path / "partial.npz")


@pytest.mark.parametrize("kwargs", [dict(num_personas=0), dict(vocab_size=1), dict(order=-1), dict(vocab_size=10**4, order=3)])
def test_bad_sizes_are_refused_before_allocating(kwargs):
    args = dict(num_personas=2, vocab_size=4, order=1) | kwargs
    with pytest.raises(InputError):
        random_personas(**args)


def test_anchored_prior_is_centred_on_the_tables():
    p = random_personas(2, 3, seed=0)
    prior = anchored_table_prior(p, strength=100.0, floor=0.01)
    mean = prior.trans / prior.trans.sum(-1, keepdim=True)
    torch.testing.assert_close(mean, p.trans, atol=1e-3, rtol=0)
    assert prior.flat().shape == (2, 4, 3)
