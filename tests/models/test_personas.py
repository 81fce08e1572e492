import pickle
import zipfile

import numpy as np
import pytest
import torch

from models.errors import InputError
from models.personas import (
    MarkovPersonas,
    anchored_table_prior,
    load_npz,
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


def _tensors():
    p = random_personas(3, 4, seed=0)
    return {"prior": p.prior.clone(), "init": p.init.clone(), "trans": p.trans.clone()}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(prior=a["prior"] * 7), "prior rows must sum to one"),  # once gave log p(D) = +1.95
        (lambda a: a.update(trans=a["trans"] * 1.1), "trans rows must sum to one"),
        (lambda a: a["init"].__setitem__((0, 0), float("nan")), "init has NaN"),
        (lambda a: a["trans"].__setitem__((0, 0, 0), float("inf")), "trans has NaN or infinite"),
        (lambda a: a["init"].__setitem__((0, 0), -0.1), "init has negative"),
        (lambda a: a.update(prior=torch.ones(2, dtype=torch.float64) / 2), "prior has shape"),
        (lambda a: a.update(trans=a["trans"][:, :2]), "trans has shape"),
        (lambda a: a.update(init=a["init"][0]), "init must be"),
        (lambda a: a.update(init=a["init"].long()), "floating"),
        (lambda a: a.update(init=a["init"].numpy()), "torch.Tensor"),
        (lambda a: a.update(prior=a["prior"].float()), "one dtype"),
    ],
)
def test_personas_built_directly_are_validated_in_one_line(change, message):
    arrays = _tensors()
    change(arrays)
    with pytest.raises(InputError, match=message) as err:
        MarkovPersonas(arrays["prior"], arrays["init"], arrays["trans"])
    assert "\n" not in str(err.value)


def test_derived_personas_stay_valid_without_a_second_check():
    p = random_personas(4, 3, order=2, seed=1).with_prior(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    q = p.subset([3, 1])
    torch.testing.assert_close(q.prior, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    assert torch.equal(q.trans, p.trans[[3, 1]])
    assert p.to(torch.float32).trans.dtype == torch.float32
    with pytest.raises(InputError, match="prior probability 0"):
        p.with_prior(torch.tensor([0.0, 0.0, 0.5, 0.5], dtype=torch.float64)).subset([0, 1])
    with pytest.raises(InputError, match="non-empty"):
        p.subset([])
    with pytest.raises(InputError, match="sum to one"):
        p.with_prior(torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize("order", [0, 1, 2])
def test_log_table_columns_are_those_of_the_full_table(order):
    p = random_personas(3, 4, order=order, seed=2)
    columns = torch.tensor([p.num_features - 1, 0, 5, 3, 4, 2])  # unsorted, both sides of the first-token row
    assert torch.equal(p.log_table(columns), p.log_table()[:, columns])


@pytest.mark.parametrize("content, fragment", [
    (b"tokens,mask\n1,0\n", "it is not an .npz archive"),
    (b"", "the file is empty, not an .npz archive"),
    (pickle.dumps({"prior": [1.0]}), "it is not an .npz archive"),
    (b"\x93NUMPY\x01\x00", "it is a single .npy array, not an .npz archive"),
])
def test_files_that_are_not_npz_archives_are_named_plainly(tmp_path, content, fragment):
    path = tmp_path / "personas.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match=fragment) as err:
        load_personas(path)
    assert "allow_pickle" not in str(err.value) and "\n" not in str(err.value)


def test_object_arrays_are_refused_without_pickle_advice(tmp_path):
    np.savez(tmp_path / "p.npz", prior=np.array([{"a": 1}], dtype=object), init=np.ones((1, 2)), trans=np.ones((1, 2)))
    with pytest.raises(InputError, match="'prior' holds Python objects") as err:
        load_personas(tmp_path / "p.npz")
    assert "allow_pickle" not in str(err.value)


def test_array_sizes_are_checked_from_the_header_before_reading(tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z, z.open("trans.npy", "w") as f:  # a header that promises 10^12 entries
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    with pytest.raises(InputError, match=r"'trans' of shape \(1000000, 1000000\) has 1000000000000 entries"):
        load_npz(path, ("trans",), max_entries=10**6)
    np.savez(tmp_path / "small.npz", trans=np.ones((3, 4)))
    assert load_npz(tmp_path / "small.npz", ("trans",), max_entries=12)["trans"].shape == (3, 4)
    with pytest.raises(InputError, match="limit"):
        load_npz(tmp_path / "small.npz", ("trans",), max_entries=11)
