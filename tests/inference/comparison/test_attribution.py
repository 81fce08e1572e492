import matplotlib

matplotlib.use("Agg")

import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from pyro.infer.mcmc.util import initialize_model  # noqa: E402

from inference import diagnostics  # noqa: E402
from inference.comparison.attribution import (  # noqa: E402
    attribute,
    attribution_model,
    attribution_potential,
    doc_loglik_from_logprobs,
)
from inference.conditioning.exact import mixture_posterior  # noqa: E402
from inference.conditioning.mcmc import marginal_potential_of  # noqa: E402
from models.counts import count_transitions, make_evidence  # noqa: E402
from models.errors import InputError  # noqa: E402
from models.mixture import simulate_corpus  # noqa: E402
from models.personas import random_personas  # noqa: E402
from models.predictive import persona_logprobs  # noqa: E402


@pytest.fixture(scope="module")
def completions():
    """Completions written by persona 1 alone (of 4 bigram personas over 6 tokens): 4-token prompt, 8 scored."""
    personas = random_personas(4, 6, order=1, seed=0)
    tokens, _ = simulate_corpus(personas.subset([1]), 30, 12, seed=1)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, :4] = False
    components = persona_logprobs(personas, tokens)  # [K, D, T, V]
    return personas, tokens, mask, components, doc_loglik_from_logprobs(components, tokens, mask)


def test_doc_loglik_from_logprobs_equals_the_count_loglik(completions):
    personas, tokens, mask, components, doc_loglik = completions
    counts = count_transitions(make_evidence(tokens.numpy(), mask.numpy()), 6, 1)
    want = counts.loglik(personas.log_table()[:, None, :]).T  # [D, K], sufficient statistics
    torch.testing.assert_close(doc_loglik, want, rtol=0, atol=1e-10)
    zero = components.clone()
    zero[0, :, 0] = -torch.inf  # an impossible but unscored position must not give NaN
    assert torch.isfinite(doc_loglik_from_logprobs(zero, tokens, mask)).all()


def test_enumerated_and_hand_marginalised_models_have_one_density(completions):
    *_, doc_loglik = completions
    alpha = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    _, enum_fn, transforms, _ = initialize_model(attribution_model, (doc_loglik, alpha, False), max_plate_nesting=1)
    _, marg_fn, _, _ = initialize_model(attribution_model, (doc_loglik, alpha, True), max_plate_nesting=1)
    hand = attribution_potential(doc_loglik, alpha)
    assert set(hand.transforms) == set(transforms) == {"w"}
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        u = {"w": torch.randn(3, generator=gen, dtype=torch.float64)}
        w = transforms["w"].inv(u["w"])
        jac = transforms["w"].inv.log_abs_det_jacobian(u["w"], w)
        by_hand = (torch.distributions.Dirichlet(alpha).log_prob(w) + jac
                   + torch.logsumexp(w.log() + doc_loglik, -1).sum())
        torch.testing.assert_close(-enum_fn(u), by_hand, rtol=1e-10, atol=1e-8)
        torch.testing.assert_close(-marg_fn(u), by_hand, rtol=1e-10, atol=1e-8)
        torch.testing.assert_close(-hand(u), by_hand, rtol=1e-10, atol=1e-8)  # what NUTS runs on


def test_nuts_runs_on_the_hand_written_potential(completions):
    assert marginal_potential_of(attribution_model) is attribution_potential


def test_prompts_update_the_persona_weights_in_context(completions):
    """With prompts, P(z_d = h | w, c_d) ∝ w_h p(c_d | h): both models give log sum_h w_h(c_d) p(y_d | c_d, h)."""
    personas, tokens, mask, components, doc_loglik = completions
    prompt_loglik = doc_loglik_from_logprobs(components, tokens, ~mask)  # [D, K] log p(c_d | h)
    alpha = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    args = (doc_loglik, alpha)
    _, enum_fn, transforms, _ = initialize_model(attribution_model, args + (False, prompt_loglik), max_plate_nesting=1)
    _, marg_fn, _, _ = initialize_model(attribution_model, args + (True, prompt_loglik), max_plate_nesting=1)
    _, plain_fn, _, _ = initialize_model(attribution_model, args + (True,), max_plate_nesting=1)
    u = {"w": torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)}
    w = transforms["w"].inv(u["w"])
    jac = transforms["w"].inv.log_abs_det_jacobian(u["w"], w)
    joint = torch.logsumexp(w.log() + prompt_loglik + doc_loglik, -1) - torch.logsumexp(w.log() + prompt_loglik, -1)
    by_hand = torch.distributions.Dirichlet(alpha).log_prob(w) + jac + joint.sum()
    torch.testing.assert_close(-enum_fn(u), by_hand, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(-marg_fn(u), by_hand, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(-attribution_potential(*args, True, prompt_loglik)(u), by_hand, rtol=1e-10, atol=1e-8)
    assert not torch.isclose(-plain_fn(u), by_hand)  # the prompt matters here


def test_attribution_concentrates_on_the_writing_persona_and_matches_the_exact_posterior(completions):
    personas, tokens, mask, components, doc_loglik = completions
    # alpha = 3 keeps the small weights off the simplex's edge, where NUTS mixes slowly: R-hat
    # then stays below 1.01 with 4 x 250 draws (with alpha = 1 it needs about twice as many)
    result = attribute(doc_loglik, alpha=3.0, num_chains=4, num_samples=250, warmup=150, seed=0,
                       components=components, tokens=tokens, mask=mask)
    assert int(result.weights_mean.argmax()) == 1 and result.weights_mean[1] > 0.7
    assert result.r_hat_max < 1.01 and result.ess_min > 300
    assert result.samples.shape == (4, 250, 4)
    exact = mixture_posterior(doc_loglik, torch.full((4,), 3.0, dtype=torch.float64), beta=1.0).mean_weights
    z = (result.weights_mean - exact).abs() / result.weights_mcse
    assert (z < 4).all(), (result.weights_mean, exact, result.weights_mcse)
    assert (result.weights_mcse > 0).all() and (result.weights_mcse < 0.01).all()
    idata = result.idata
    assert set(idata.groups()) >= {"posterior", "log_likelihood", "posterior_predictive", "observed_data",
                                   "sample_stats"}
    assert idata.log_likelihood["completions"].shape == (4, 250, 30)
    assert idata.observed_data["tokens"].shape == (30 * 8,)
    assert idata.posterior_predictive["tokens"].shape[-1] == 30 * 8
    assert isinstance(diagnostics.plot_attribution_ppc(idata), Figure)
    assert isinstance(diagnostics.plot_rank(idata, ["w"]), Figure)
    assert isinstance(diagnostics.plot_trace(idata, ["w"]), Figure)


def test_enumerated_attribution_runs_and_draws_personas(completions):
    *_, doc_loglik = completions
    result = attribute(doc_loglik[:10], num_chains=2, num_samples=40, warmup=40, seed=1, marginalise=False)
    assert result.samples.shape == (2, 40, 4)
    assert result.idata.posterior["persona"].shape == (2, 40, 10)
    assert int(result.weights_mean.argmax()) == 1
    # fallback posterior predictive check: each completion's best-fitting persona
    assert (result.idata.observed_data["best_persona"].values == doc_loglik[:10].argmax(-1).numpy()).all()
    assert isinstance(diagnostics.plot_attribution_ppc(result.idata), Figure)


def test_attribution_rejects_bad_input(completions):
    *_, doc_loglik = completions
    pyro.clear_param_store()
    with pytest.raises(InputError):
        attribute(doc_loglik[0])
    with pytest.raises(InputError):
        attribute(doc_loglik, alpha=torch.tensor([1.0, 1.0]))
    with pytest.raises(InputError):
        attribute(torch.full((2, 3), -torch.inf, dtype=torch.float64))
    _, tokens, mask, components, _ = completions
    with pytest.raises(InputError):
        attribute(doc_loglik[:5], components=components, tokens=tokens, mask=mask)
    with pytest.raises(InputError):
        doc_loglik_from_logprobs(torch.zeros(2, 3, 4, 5), torch.zeros(3, 4, dtype=torch.long), torch.ones(3, 5).bool())
