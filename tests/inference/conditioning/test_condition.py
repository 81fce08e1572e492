import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from inference.conditioning.condition import condition
from models.counts import make_evidence, save_evidence
from models.errors import InputError
from models.mixture import simulate_corpus
from models.personas import anchored_table_prior, make_personas, random_personas, save_personas
from models.predictive import mixture_predictive


@pytest.mark.parametrize("model", ["global", "mixture"])
def test_exact_posterior_has_every_documented_part(tiny_world, model):
    personas, ev, _ = tiny_world
    post = condition(personas, ev, model=model, method="exact", beta=0.8, seed=1)
    assert post.weights.sum() == pytest.approx(1.0)
    assert post.log_evidence is not None and post.seconds > 0
    chains, draws = post.weight_samples.shape[:2]
    assert post.persona_samples.shape == ((chains, draws) if model == "global" else (chains, draws, ev.num_docs))
    assert post.doc_log_likelihood().shape == (chains, draws, ev.num_docs)
    pred = post.predictive(ev.tokens[:4])
    torch.testing.assert_close(pred.exp().sum(-1), torch.ones(4, ev.doc_len, dtype=torch.float64))
    expected = mixture_predictive(personas.log_table(), post.weights.log(), ev.tokens[:4], 4, 1)
    torch.testing.assert_close(pred, expected)
    summary = post.summary()
    assert set(summary) == {"method", "model", "beta", "weights", "log_evidence", "diagnostics", "seconds"}


def test_global_persona_draws_follow_the_posterior(tiny_world):
    personas, ev, _ = tiny_world
    post = condition(personas, ev.select(torch.arange(2)), model="global", beta=0.05, seed=0)
    freq = torch.bincount(post.persona_samples.flatten(), minlength=3).double() / post.persona_samples.numel()
    se = (post.weights * (1 - post.weights) / post.persona_samples.numel()).sqrt()
    assert ((freq - post.weights).abs() <= 4 * se + 1e-12).all()


def test_uncertain_tables_give_a_monte_carlo_predictive(tiny_world):
    personas, ev, _ = tiny_world
    post = condition(personas, ev, model="global", method="exact", table_prior=anchored_table_prior(personas, 30.0))
    assert post.table_samples is not None
    pred = post.predictive(ev.tokens[:2])
    torch.testing.assert_close(pred.exp().sum(-1), torch.ones(2, ev.doc_len, dtype=torch.float64))


def test_uncertain_tables_are_drawn_jointly_with_the_persona(tiny_world):
    """Row h_s of draw s comes from its posterior, the others from their prior, and the mean of
    P(h | tables_s, D) over the draws is the exact P(h | D) (within 4 Monte Carlo standard errors)."""
    personas, ev, _ = tiny_world
    prior = anchored_table_prior(personas, 5.0)
    post = condition(personas, ev.select(torch.arange(1)), model="global", method="exact", beta=0.1,
                     table_prior=prior, seed=3)
    assert post.weights.max() < 0.95  # the check needs an undecided posterior
    draws = post.weight_samples.flatten(0, 1)  # [S, K]
    se = draws.std(0) / draws.shape[0] ** 0.5
    assert ((draws.mean(0) - post.weights).abs() <= 4 * se + 1e-12).all()
    persona = post.persona_samples.flatten()  # [S]
    probs = post.table_samples.flatten(0, 1).exp()  # [S, K, F]
    prior_mean = prior.flat() / prior.flat().sum(-1, keepdim=True)  # [K, R, V]
    for k in range(personas.num_personas):  # a persona that did not write the evidence keeps its prior rows
        others = probs[persona != k, k]  # [n, F]
        se = others.std(0) / others.shape[0] ** 0.5
        assert ((others.mean(0) - prior_mean[k].flatten()).abs() <= 4 * se + 1e-12).all()


def test_beta_zero_returns_the_prior(tiny_world):
    personas, ev, _ = tiny_world
    torch.testing.assert_close(condition(personas, ev, beta=0.0).weights, personas.prior)
    alpha = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    mix = condition(personas, ev, model="mixture", beta=0.0, alpha=alpha)
    torch.testing.assert_close(mix.weights, alpha / alpha.sum())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model="local"), "global, mixture"),
        (dict(method="laplace"), "exact, svi, mcmc"),
        (dict(beta=-1.0), "beta"),
        (dict(beta=float("nan")), "beta"),
        (dict(beta=float("inf")), "beta"),
        (dict(beta="strong"), "beta"),
        (dict(model="mixture", alpha=-1.0), "alpha"),
        (dict(model="mixture", alpha=[1.0, 2.0]), "alpha"),
        (dict(model="global", method="svi"), "exact"),
        (dict(model="global", method="mcmc"), "table_prior"),
        (dict(method="exact", num_steps=10), "engine options"),
    ],
)
def test_combinations_that_make_no_sense_are_refused(tiny_world, kwargs, message):
    personas, ev, _ = tiny_world
    with pytest.raises(InputError, match=message) as err:
        condition(personas, ev, **kwargs)
    assert "\n" not in str(err.value)


def test_mixture_exact_with_uncertain_tables_is_refused(tiny_world):
    personas, ev, _ = tiny_world
    with pytest.raises(InputError, match="svi"):
        condition(personas, ev, model="mixture", method="exact", table_prior=anchored_table_prior(personas))


def test_global_exact_counts_per_document_only_when_asked(tiny_world, monkeypatch):
    """The exact global posterior needs only the summed counts; ``Posterior.counts`` (the
    per-document pass) runs on first use, once, and equals the direct count."""
    from inference.conditioning import condition as condition_module
    from inference.conditioning import posterior as posterior_module
    from models.counts import count_transitions

    personas, ev, _ = tiny_world
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return count_transitions(*args, **kwargs)

    monkeypatch.setattr(condition_module, "count_transitions", counting)
    monkeypatch.setattr(posterior_module, "count_transitions", counting)
    for table_prior in (None, anchored_table_prior(personas, 30.0)):
        calls.clear()
        post = condition(personas, ev, table_prior=table_prior)
        assert calls == []
        ll = post.doc_log_likelihood()
        assert calls == [1] and ll.shape == (*post.weight_samples.shape[:2], ev.num_docs)
        post.to_arviz()
        assert calls == [1]  # cached
    expected = count_transitions(ev, personas.vocab_size, personas.order)
    for name in ("doc", "feature", "count"):
        assert torch.equal(getattr(post.counts, name), getattr(expected, name))


def test_the_mixture_validity_check_still_runs(tiny_world):
    personas, ev, _ = tiny_world
    init = personas.init.clone()
    init[:, 0], init[:, 1] = 0.0, init[:, 0] + init[:, 1]  # no persona starts a document with token 0
    blocked = make_personas(personas.prior, init, personas.trans)
    tokens = ev.tokens.clone()
    tokens[:, 0] = 1
    tokens[3, 0] = 0  # only document 3 starts with it
    with pytest.raises(InputError, match="evidence document 3 has zero probability under every persona"):
        condition(blocked, make_evidence(tokens.numpy()), model="mixture", method="svi", num_steps=2)
    with pytest.raises(InputError, match="zero probability under every persona"):
        condition(blocked, make_evidence(tokens.numpy()))  # global exact: from the summed counts


@pytest.fixture
def one_persona():
    personas = random_personas(1, 4, order=1, concentration=0.7, seed=3)
    tokens, _ = simulate_corpus(personas, 5, 8, seed=4)
    return personas, make_evidence(tokens.numpy())


def test_one_persona_mixture_is_exact_and_sampling_it_is_refused_in_one_line(one_persona, capfd):
    personas, ev = one_persona
    post = condition(personas, ev, model="mixture", method="exact")
    assert post.weights.tolist() == [1.0] and (post.persona_samples == 0).all()
    doc_ll = post.counts.loglik(personas.log_table()[:, None, :])  # [1, D]
    assert post.log_evidence == pytest.approx(float(doc_ll.sum()))
    for method, options in (("svi", dict(num_steps=5)), ("mcmc", dict(num_samples=5, warmup_steps=5))):
        with pytest.raises(InputError, match="w = \\[1\\].*use method 'exact'") as err:
            condition(personas, ev, model="mixture", method=method, **options)
        assert "\n" not in str(err.value)
        with pytest.raises(InputError, match="use model 'global'") as err:
            condition(personas, ev, model="mixture", method=method, table_prior=anchored_table_prior(personas), **options)
        assert "\n" not in str(err.value)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("method, options", [("svi", dict(num_steps=20, num_samples=10)),
                                             ("mcmc", dict(num_chains=1, num_samples=10, warmup_steps=10))])
def test_one_persona_global_tables_samples_without_pyro_warnings(one_persona, recwarn, method, options):
    personas, ev = one_persona
    post = condition(personas, ev, model="global", method=method, table_prior=anchored_table_prior(personas, 10.0),
                     **options)
    assert (post.persona_samples == 0).all() and post.persona_samples.shape == post.weight_samples.shape[:2]
    assert torch.equal(post.weights, torch.ones(1, dtype=post.weights.dtype))
    assert [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)] == []


def test_cli_one_persona_mixture_svi_exits_2_with_one_line_and_no_warning(one_persona, tmp_path):
    personas, ev = one_persona
    save_personas(tmp_path / "one.npz", personas)
    save_evidence(tmp_path / "ev.npz", ev)
    out = tmp_path / "out"
    script = shutil.which("psm", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "inference.cli"]
    argv = ["condition", "--personas", tmp_path / "one.npz", "--evidence", tmp_path / "ev.npz", "--model", "mixture",
            "--method", "svi", "--num-steps", "5", "--out", out, "--quiet"]
    result = subprocess.run(command + [str(a) for a in argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("psm: error: "), result.stderr
    assert "use method 'exact'" in result.stderr
