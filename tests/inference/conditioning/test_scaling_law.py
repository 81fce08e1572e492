import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

from inference.conditioning.condition import condition
from inference.conditioning.scaling_law import (
    LawPotential,
    fit_scaling_law,
    law_nll,
    scaling_law_model,
)
from models.counts import count_transitions, make_evidence
from models.errors import InputError
from models.personas import random_personas
from models.predictive import mixture_predictive

F64 = torch.float64


def test_the_law_is_exact_bayes_for_a_finite_persona_mixture_when_k_is_1():
    """Examples that all have probability P_m under persona m (one document, repeated): the law with the
    true prior and K = 1 is the exact posterior predictive of conditioning on n copies."""
    personas = random_personas(4, 5, order=1, concentration=0.7, seed=1, prior=torch.tensor([0.4, 0.3, 0.2, 0.1]))
    doc = torch.tensor([[1, 3, 0, 2, 2, 4]])
    log_p = count_transitions(make_evidence(doc.numpy()), 5, 1).loglik(personas.log_table()[:, None, :])[:, 0]  # [K]
    shots = [0, 1, 2, 3, 5, 8]
    law = law_nll(torch.tensor(shots, dtype=F64), personas.prior.log(), torch.tensor(1.0, dtype=F64), log_p)
    for i, n in enumerate(shots):
        log_w = personas.prior.log() if n == 0 else condition(
            personas, make_evidence(doc.expand(n, -1).numpy()), model="global", method="exact").weights.log()
        logp = mixture_predictive(personas.log_table(), log_w, doc, 5, 1)  # [1, T, V]
        exact = -float(logp.gather(-1, doc[..., None]).sum())
        assert float(law[i]) == pytest.approx(exact, rel=1e-10)


def test_the_hand_potential_equals_pyros():
    n = torch.tensor([0.0, 1, 2, 4], dtype=F64)
    log_p = torch.tensor([-5.0, -6.0, -4.0], dtype=F64)
    se = torch.full_like(n, 0.1)
    nll = torch.tensor([5.2, 4.6, 4.3, 4.1], dtype=F64)
    for offset in (True, False):
        kwargs = dict(nll=nll, offset=offset, k_scale=0.7, offset_scale=0.5, noise_scale=2.0)
        _, pyro_potential, _, _ = initialize_model(scaling_law_model, model_args=(n, log_p, se), model_kwargs=kwargs)
        hand = LawPotential(n, log_p, se, **kwargs)
        torch.manual_seed(0)
        for _ in range(3):
            z = hand.initial_params("uniform")
            assert float(hand(z)) == pytest.approx(float(pyro_potential(z)), rel=1e-12)


def test_the_fit_recovers_a_known_prior_and_efficiency():
    """A synthetic curve from the law (two personas, small noise): the posterior mean lies within 4
    posterior sds of the truth, and the data pin it down (the sds are well below the prior's)."""
    rho, K = torch.tensor([0.8, 0.2], dtype=F64), torch.tensor(1.5, dtype=F64)
    log_p = torch.tensor([-4.0, -3.0], dtype=F64)
    n = torch.tensor([0.0, 1, 2, 3, 4, 6, 8], dtype=F64)
    se = torch.full_like(n, 0.01)
    curve = law_nll(n, rho.log(), K, log_p) + se * torch.randn(len(n), generator=torch.Generator().manual_seed(0),
                                                                dtype=F64)
    fit = fit_scaling_law(n, curve, se, log_p, offset=False, num_chains=2, num_samples=100, warmup=100, seed=1)
    summary = fit.summary()
    assert summary["r_hat_max"] < 1.1
    for name, truth in (("K", float(K)), ("rho", rho.tolist())):
        mean, sd = torch.tensor(summary[name]["mean"]), torch.tensor(summary[name]["sd"])
        assert ((mean - torch.tensor(truth)).abs() <= 4 * sd).all(), name
        assert (sd < 0.15).all(), name  # Dirichlet(1, 1) has sd 0.29, LogNormal(0, 1) about 2
    mid, lo, hi = fit.band(n)
    assert ((lo <= curve.numpy() + 0.05) & (curve.numpy() - 0.05 <= hi)).all()
    assert set(fit.idata.groups()) >= {"posterior", "posterior_predictive", "observed_data", "log_likelihood"}
    assert 0 <= summary["ppc_coverage"] <= 1


@pytest.mark.parametrize("args, message", [
    (([0, 1], [1.0], [0.1, 0.1], [-1.0]), "one length"),
    (([0], [1.0], [0.1], [-1.0]), "one length >= 2"),
    (([0, 1], [1.0, float("nan")], [0.1, 0.1], [-1.0]), "nll"),
    (([0, 1], [1.0, 1.0], [0.1, -0.1], [-1.0]), ">= 0"),
    (([0, 1], [1.0, 1.0], [0.1, 0.1], [1.0]), "log_p"),
])
def test_bad_curves_are_one_line_errors(args, message):
    with pytest.raises(InputError, match=message) as err:
        fit_scaling_law(*args)
    assert "\n" not in str(err.value)
