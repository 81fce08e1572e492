"""Latent sites, guides, discrete recovery and option checks shared by SVI and MCMC."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.conditioning.latents import (
    GUIDES,
    DirichletGuide,
    check_int,
    check_positive,
    check_unknown_options,
    draw_guide,
    latent_sites,
    make_guide,
    recover_discrete,
)
from models.counts import count_transitions, make_evidence
from models.errors import InputError
from models.mixture import persona_model, simulate_corpus
from models.personas import anchored_table_prior, random_personas
from tests.inference.conditioning.worlds import K, global_world, mixture_world


def model_and_args(evidence_model: str, tables: bool = False):
    personas = random_personas(3, 4, order=1, seed=0)
    tokens, _ = simulate_corpus(personas, 5, 6, seed=1)
    ev = make_evidence(tokens)
    kwargs = dict(tokens=ev.tokens, mask=ev.mask, counts=count_transitions(ev, 4, 1), evidence=evidence_model)
    if evidence_model == "mixture":
        kwargs["alpha"] = torch.ones(3, dtype=torch.float64)
    if tables:
        kwargs["table_prior"] = anchored_table_prior(personas, 10.0)
    return (personas, 5, 6), kwargs


def test_latent_sites_sort_continuous_from_discrete():
    args, kwargs = model_and_args("mixture")
    sites = latent_sites(persona_model, args, kwargs)
    assert list(sites.continuous) == ["w"]
    assert sites.discrete == {"persona": (5,)}  # one persona per document
    args, kwargs = model_and_args("global", tables=True)
    sites = latent_sites(persona_model, args, kwargs)
    assert set(sites.continuous) == {"init", "trans"} and sites.discrete == {"persona": ()}


def test_a_model_without_continuous_latents_is_refused():
    args, kwargs = model_and_args("global")  # known tables, one discrete persona: nothing for SVI or NUTS
    with pytest.raises(InputError, match="no continuous latent"):
        latent_sites(persona_model, args, kwargs)


@pytest.mark.parametrize("name", [g for g in GUIDES if g != "auto"])
def test_every_guide_draws_every_continuous_site_with_its_shape(name):
    args, kwargs = model_and_args("global", tables=True)
    sites = latent_sites(persona_model, args, kwargs)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = make_guide(name, persona_model, sites)
    draws = draw_guide(guide, args, kwargs, list(sites.continuous), num_samples=3)
    for site, node in sites.continuous.items():
        assert draws[site].shape == (3, *node["value"].shape)
        torch.testing.assert_close(draws[site].sum(-1), torch.ones_like(draws[site].sum(-1)))  # simplex rows


def test_the_dirichlet_guide_starts_at_the_prior_and_refuses_other_families():
    args, kwargs = model_and_args("mixture")
    sites = latent_sites(persona_model, args, kwargs)
    pyro.clear_param_store()
    DirichletGuide(sites.continuous)(*args, **kwargs)
    torch.testing.assert_close(pyro.param("w_concentration"), kwargs["alpha"])

    def normal_model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    normal_sites = latent_sites(normal_model, (), {})
    with pytest.raises(InputError, match="dirichlet guide needs Dirichlet latents"):
        DirichletGuide(normal_sites.continuous)
    with pytest.raises(InputError, match="unknown SVI guide"):
        make_guide("laplace", normal_model, normal_sites)


def test_option_checks_give_one_line_errors():
    assert check_int("n", 3, 1) == 3
    assert check_positive("lr", "0.5") == 0.5 and check_positive("tol", 0, allow_zero=True) == 0.0
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(InputError, match="n must be an integer >= 1"):
            check_int("n", bad, 1)
    for bad in (0, -1, float("nan"), float("inf"), "x", None):
        with pytest.raises(InputError, match="lr must be"):
            check_positive("lr", bad)

    def engine(*, seed=0, progress=False, num_steps=1, lr=0.1):
        pass

    check_unknown_options("SVI", {}, engine)
    with pytest.raises(InputError, match="unknown SVI option.*valid options: num_steps, lr$") as info:
        check_unknown_options("SVI", {"steps": 3}, engine)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("model", ["mixture", "global-tables"])
def test_recovered_personas_follow_their_exact_conditional(model):
    """``infer_discrete`` (batched over draws for ``w``, one call per draw for tables) draws
    ``z | continuous, D`` with the closed-form probabilities; 4 binomial standard errors."""
    num = 3000
    if model == "mixture":
        personas, evidence, _, args, kwargs = mixture_world(0)
        w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
        samples = {"w": w.expand(num, K)}
        L = kwargs["counts"].loglik(personas.log_table()[:, None, :])  # [K, D]
        probs = torch.softmax(w.log()[:, None] + L, 0).T  # [D, K]
    else:
        personas, evidence, prior = global_world()
        counts = count_transitions(evidence, 3, 0)
        args = (personas, 4, 8)
        kwargs = dict(tokens=evidence.tokens, mask=evidence.mask, counts=counts, evidence="global", table_prior=prior)
        init, trans = prior.init / prior.init.sum(-1, keepdim=True), prior.trans / prior.trans.sum(-1, keepdim=True)
        num = 600  # one call per draw here
        samples = {"init": init.expand(num, *init.shape), "trans": trans.expand(num, *trans.shape)}
        log_table = torch.cat([init.log(), trans.log().flatten(-2)], -1)  # [K, F]
        probs = torch.softmax(personas.prior.log() + counts.loglik(log_table[:, None, :]).sum(-1), 0)[None]  # [1, K]
    sites = latent_sites(persona_model, args, kwargs)
    torch.manual_seed(0)
    z = recover_discrete(persona_model, args, kwargs, samples, sites)["persona"]  # [num, D] or [num]
    z = z.reshape(num, -1)
    freq = torch.nn.functional.one_hot(z, probs.shape[-1]).double().mean(0)  # [D, K]
    se = (probs * (1 - probs) / num).sqrt()
    assert torch.all((freq - probs).abs() <= 4 * se + 1e-12), (freq, probs)


@pytest.mark.parametrize("evidence_model", ["global", "mixture"])
def test_a_discrete_site_with_one_value_is_recovered_without_infer_discrete(evidence_model, recwarn):
    """One persona: the persona site is certain (Pyro's enumeration would drop its size-1 dimension)."""
    personas = random_personas(1, 4, order=1, seed=0)
    tokens, _ = simulate_corpus(personas, 5, 6, seed=1)
    ev = make_evidence(tokens)
    kwargs = dict(tokens=ev.tokens, mask=ev.mask, counts=count_transitions(ev, 4, 1), evidence=evidence_model,
                  table_prior=anchored_table_prior(personas, 10.0))
    args = (personas, 5, 6)
    sites = latent_sites(persona_model, args, kwargs)
    assert set(sites.certain) == {"persona"} and int(sites.certain["persona"]) == 0
    prior = kwargs["table_prior"]
    samples = {"init": prior.init.expand(3, *prior.init.shape), "trans": prior.trans.expand(3, *prior.trans.shape)}
    z = recover_discrete(persona_model, args, kwargs, samples, sites)["persona"]
    assert z.dtype == torch.long and torch.equal(z, torch.zeros(3, *sites.discrete["persona"], dtype=torch.long))
    assert [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)] == []
