"""Latent sites, guides and option checks shared by SVI and MCMC (the recovery of discrete
sites against its closed form is in test_svi.py, next to the worlds it uses)."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from inference.latents import (
    GUIDES,
    DirichletGuide,
    check_int,
    check_positive,
    check_unknown_options,
    draw_guide,
    latent_sites,
    make_guide,
)
from models.counts import count_transitions, make_evidence
from models.errors import InputError
from models.mixture import persona_model, simulate_corpus
from models.personas import anchored_table_prior, random_personas


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
