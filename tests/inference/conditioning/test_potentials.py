"""The hand-marginalised NUTS potentials: values and analytic gradients equal Pyro's (autograd); their
persona draws follow the conditional that Pyro's enumeration gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pyro import poutine
from pyro.distributions import Dirichlet
from pyro.distributions.transforms import StickBreakingTransform
from pyro.infer import TraceEnum_ELBO
from pyro.infer.mcmc.util import initialize_model

from inference.conditioning.gradients import MixtureTerm, StickBreaking, mixture_grad
from inference.conditioning.potentials import WeightsPotential, persona_potential
from models.mixture import persona_model
from models.personas import anchored_table_prior
from tests.inference.conditioning.worlds import mixture_world


def value_and_grad(fn, z: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
    """``fn(z)`` and its autograd gradient in every entry of ``z``."""
    z = {k: v.detach().clone().requires_grad_() for k, v in z.items()}
    value = fn(z)
    return value.item(), dict(zip(z, torch.autograd.grad(value, list(z.values())), strict=True))


@pytest.mark.parametrize(
    "extra",
    [dict(), dict(beta=0.5, table_prior="anchored"), dict(evidence="global", alpha=None, table_prior="anchored"),
     dict(alpha=None, table_prior="anchored"), dict(beta=0.0)],
    ids=["mixture", "mixture-tables-tempered", "global-tables", "mixture-tables-known-weights", "beta-0"],
)
def test_value_and_gradient_equal_pyros_enumerated_potential(extra):
    personas, _, _, args, kwargs = mixture_world(0)
    kwargs = dict(kwargs, **extra)
    if kwargs.get("table_prior") == "anchored":
        kwargs["table_prior"] = anchored_table_prior(personas, 20.0)
    hand = persona_potential(*args, **kwargs)
    params, pyro_potential, transforms, _ = initialize_model(persona_model, args, kwargs, max_plate_nesting=1)
    assert set(hand.transforms) == set(transforms) == set(params)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        z = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}
        (mine, my_grads), (theirs, their_grads) = value_and_grad(hand, z), value_and_grad(pyro_potential, z)
        assert mine == pytest.approx(theirs, rel=1e-9)  # Pyro's is off by a constant 7e-8 with uncertain tables
        for name, g in my_grads.items():
            h = their_grads[name]
            assert g.dtype == h.dtype and torch.allclose(g, h, rtol=1e-9, atol=1e-9), (name, g, h)


def test_stick_breaking_equals_pyros_transform_and_its_gradient_autograds():
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    stick = StickBreaking(6)
    log_y, log_det, saved = stick.forward(x.numpy())
    transform = StickBreakingTransform()
    y = transform(x)
    assert np.allclose(np.exp(log_y), y.numpy(), rtol=1e-12)
    assert log_det == pytest.approx(float(transform.log_abs_det_jacobian(x, y).sum()), rel=1e-12)
    g = torch.rand(3, 6, dtype=torch.float64)
    x.requires_grad_()
    y = transform(x)
    target = (g * y.log()).sum() + transform.log_abs_det_jacobian(x, y).sum()
    (expected,) = torch.autograd.grad(target, [x])
    assert np.allclose(stick.grad(saved, g.numpy()), expected.numpy(), rtol=1e-10, atol=1e-12)


def test_mixture_term_fast_path_and_log_space_path_agree():
    gen = np.random.default_rng(0)
    loglik = gen.normal(-50, 20, size=(30, 4))  # [D, K]
    loglik[3, 1] = -np.inf  # a persona that cannot write document 3
    term = MixtureTerm(loglik)
    log_w = np.log(gen.dirichlet(np.ones(4)))
    value, grad = term(log_w)
    reference, resp = mixture_grad(log_w + loglik, -1)
    assert value == pytest.approx(reference, rel=1e-13) and np.allclose(grad, resp.sum(0), rtol=1e-12)
    assert grad.sum() == pytest.approx(30)  # one unit of responsibility per document
    # a weight near exp(-800) underflows the fast path: the log-space path takes over
    log_w = np.array([-800.0, -0.1, -2.0, -3.0])
    loglik = np.zeros((2, 4))
    loglik[:, 0] = 1000.0  # only persona 0 can write these documents
    loglik[:, 1:] = -np.inf
    value, grad = MixtureTerm(loglik)(log_w)
    assert value == pytest.approx(2 * (1000.0 - 800.0)) and np.allclose(grad, [2, 0, 0, 0])


@pytest.mark.parametrize("with_prompt", [False, True])
def test_weights_potential_equals_the_density_it_marginalises(with_prompt):
    gen = torch.Generator().manual_seed(2)
    doc_loglik = torch.randn(12, 3, dtype=torch.float64, generator=gen) * 5 - 20  # [D, K]
    prompt = torch.randn(12, 3, dtype=torch.float64, generator=gen) * 3 - 10 if with_prompt else None
    alpha = torch.tensor([0.7, 1.0, 2.5], dtype=torch.float64)
    hand = WeightsPotential(doc_loglik, alpha, prompt)

    def reference(z):  # -log p(w, docs) on the unconstrained scale, by autograd
        transform = StickBreakingTransform()
        w = transform(z["w"])
        logits = w.log() + (0 if prompt is None else prompt)  # [D, K]
        log_lik = torch.logsumexp(logits + doc_loglik, -1) - (0 if prompt is None else torch.logsumexp(logits, -1))
        return -(Dirichlet(alpha).log_prob(w) + transform.log_abs_det_jacobian(z["w"], w) + log_lik.sum())

    z = {"w": torch.randn(2, dtype=torch.float64, generator=gen)}
    (mine, g), (theirs, h) = value_and_grad(hand, z), value_and_grad(reference, z)
    assert mine == pytest.approx(theirs, rel=1e-10) and torch.allclose(g["w"], h["w"], rtol=1e-9)


@pytest.mark.parametrize(
    "extra", [dict(), dict(beta=0.5, table_prior="anchored"), dict(evidence="global", alpha=None, table_prior="anchored")],
    ids=["mixture", "mixture-tables-tempered", "global-tables"],
)
def test_persona_draws_follow_the_conditional_enumeration_gives(extra):
    personas, _, _, args, kwargs = mixture_world(0)
    kwargs = dict(kwargs, **extra)
    if kwargs.get("table_prior") == "anchored":
        kwargs["table_prior"] = anchored_table_prior(personas, 20.0)
    hand = persona_potential(*args, **kwargs)
    torch.manual_seed(0)
    draw = {name: Dirichlet(conc).sample() for name, conc in hand.concentrations.items()}  # one draw of the latents
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    exact = elbo.compute_marginals(poutine.condition(persona_model, data=draw), lambda *a, **k: None, *args,
                                   **kwargs)["persona"].probs  # [D, K] or [K]
    logits = torch.from_numpy(hand.persona_logits({k: v[None].numpy() for k, v in draw.items()})[0])
    assert torch.allclose(logits.softmax(-1), exact, atol=1e-10)
    n = 4000
    personas_drawn = hand.sample_personas({k: v.expand(n, *v.shape) for k, v in draw.items()})  # [n, D] or [n]
    assert personas_drawn.shape == (n, *exact.shape[:-1]) and personas_drawn.dtype == torch.int64
    freq = torch.nn.functional.one_hot(personas_drawn, exact.shape[-1]).double().mean(0)  # [D, K] or [K]
    assert torch.all((freq - exact).abs() <= 4 * (exact * (1 - exact) / n).sqrt() + 1e-12), (freq, exact)
