"""Bayesian persona attribution of a trained model (DESIGN.md §3.4).

Completions ``y_d`` sampled from a fine-tuned model on held-out prompts
``c_d`` are data; which persona mixture explains them?

    w ~ Dirichlet(alpha)                    [K]
    for d in documents:
        z_d ~ Categorical(w_h(c_d))          (enumerated in parallel)
        y_d | c_d, z_d  with log-likelihood doc_loglik[d, z_d]   (pyro.factor)

with the in-context update of DESIGN.md §1, ``w_h(c_d) ∝ w_h p(c_d | h)``
(``prompt_loglik [D, K] = log p(c_d | h)``; without it ``w_h(c) = w_h``, right
only for empty or uninformative prompts). So ``w`` is the same object as the
projection weights ``w*``: the persona prior the model behaves as if it had.

The likelihood of each completion under each persona is the matrix
``doc_loglik [D, K] = log p(y_d | c_d, h)``: from persona tables through
:mod:`models.counts` (``R_true``), or from component next-token log-probs with
:func:`doc_loglik_from_logprobs` (the tagged base LM, ``R_self``). ``w`` is
sampled with NUTS by :func:`inference.conditioning.mcmc.run_mcmc`,
on the hand-written potential :func:`attribution_potential` (the density of the
model with the personas summed out, a test checks it); the InferenceData (posterior
``w``, marginal per-completion log-likelihood, posterior predictive check,
observed data) is built by :func:`attribution_to_arviz`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from inference.conditioning.potentials import WeightsPotential
from models.errors import InputError


def doc_loglik_from_logprobs(components: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
    """Log-likelihood of every completion under every component: ``[n, K]``.

    Parameters
    ----------
    components : Tensor
        ``[K, n, T, V]`` next-token log-probabilities of each component on ``tokens``.
    tokens : Tensor
        ``[n, T]`` prompt followed by completion.
    mask : Tensor
        ``[n, T]`` bool, the completion tokens (the ones scored).

    Returns
    -------
    Tensor
        ``[n, K]`` float64 ``sum_t mask_t log comp_h(x_t | x_<t)``.
    """
    if components.dim() != 4:
        raise InputError(f"components must be [K, n, T, V], got shape {tuple(components.shape)}")
    K, n, T, V = components.shape
    tokens, mask = torch.as_tensor(tokens), torch.as_tensor(mask)
    if tokens.shape != (n, T) or mask.shape != (n, T) or mask.dtype != torch.bool:
        raise InputError(f"tokens and mask must be [n, T] = {(n, T)} (mask bool), got {tuple(tokens.shape)}, {tuple(mask.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= V):
        raise InputError(f"tokens must lie in [0, {V})")
    picked = components.to(torch.float64).gather(-1, tokens.long().expand(K, n, T)[..., None]).squeeze(-1)  # [K, n, T]
    picked = torch.where(mask, picked, torch.zeros_like(picked))  # never 0 * -inf
    return picked.sum(-1).T.contiguous()  # [n, K]


def attribution_model(doc_loglik: Tensor, alpha: Tensor, marginalise: bool = False,
                      prompt_loglik: Tensor | None = None) -> Tensor:
    """Pyro model of persona attribution (module docstring).

    Sites: ``w`` [K] (Dirichlet), ``persona`` (enumerated, plate ``documents`` at
    dim -1; shape ``[D]`` or ``[K, 1]`` when enumerated), ``completions`` (a
    ``pyro.factor`` adding ``doc_loglik[d, z_d]``). Run NUTS with
    ``max_plate_nesting=1``; Pyro's enumeration sums ``z`` out.

    With ``marginalise=True`` the sum over ``z`` is written by hand
    (``completions`` adds ``logsumexp_h(log w_h + doc_loglik[d, h])``, no
    ``persona`` site): the same density of ``w``, about 1.5x faster under NUTS.

    Parameters
    ----------
    doc_loglik : Tensor
        ``[D, K]`` ``log p(y_d | c_d, h)``.
    alpha : Tensor
        ``[K]`` Dirichlet concentration.
    marginalise : bool
        Sum out the personas by hand instead of by enumeration.
    prompt_loglik : Tensor, optional
        ``[D, K]`` ``log p(c_d | h)``: the prompt updates the persona weights in context.

    Returns
    -------
    Tensor
        ``w``.
    """
    D, K = doc_loglik.shape
    w = pyro.sample("w", dist.Dirichlet(alpha))  # [K] (or batched [..., 1, K] by infer_discrete)
    # log w_h + log p(c_d | h): each completion's persona weights after its prompt
    logits = w.log() if prompt_loglik is None else w.log() + prompt_loglik  # [K] or [..., D, K]
    with pyro.plate("documents", D, dim=-1):
        if marginalise:
            logits = logits.unsqueeze(-2) if prompt_loglik is None else logits  # [..., 1 or D, K]
            in_context = torch.logsumexp(logits, -1)  # [..., D]: 0 without a prompt
            pyro.factor("completions", torch.logsumexp(logits + doc_loglik, -1) - in_context)  # [D]
            return w
        z = pyro.sample("persona", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})  # [D] or [K, 1]
        pyro.factor("completions", Vindex(doc_loglik)[..., z])  # picks doc_loglik[d, z_d]: [D] or [K, D]
    return w


@dataclass(frozen=True)
class Attribution:
    """Posterior over the persona mixture that explains a model's completions.

    Attributes
    ----------
    weights_mean : Tensor
        ``[K]`` ``E[w | completions]``.
    weights_mcse : Tensor
        ``[K]`` Monte Carlo standard error of ``weights_mean`` (ArviZ).
    samples : Tensor
        ``[chains, draws, K]`` NUTS draws of ``w``.
    r_hat_max, ess_min : float
        Worst rank-normalised R-hat and bulk ESS over the ``K`` weights (ArviZ).
    divergences : int
        NUTS divergent transitions after warm-up.
    idata : Any
        ArviZ ``InferenceData`` (:func:`attribution_to_arviz`).
    """

    weights_mean: Tensor
    weights_mcse: Tensor
    samples: Tensor
    r_hat_max: float
    ess_min: float
    divergences: int
    idata: Any


def attribute(
    doc_loglik: Tensor,
    alpha: float | Tensor = 1.0,
    *,
    num_chains: int = 4,
    num_samples: int = 500,
    warmup: int = 500,
    seed: int = 0,
    progress: bool = False,
    marginalise: bool = True,
    components: Tensor | None = None,
    tokens: Tensor | None = None,
    mask: Tensor | None = None,
    prompt_loglik: Tensor | None = None,
) -> Attribution:
    """Infer the persona weights ``w`` that explain a model's completions, with NUTS.

    Parameters
    ----------
    doc_loglik : Tensor
        ``[D, K]`` log-likelihood of each completion under each persona.
    alpha : float or Tensor
        Dirichlet concentration (scalar or ``[K]``).
    num_chains, num_samples, warmup : int
        NUTS chains (run one after another), kept draws and warm-up steps per chain.
    seed : int
        Seed of the chains (:func:`inference.mcmc.run_mcmc`) and of the posterior predictive.
    progress : bool
        Show Pyro's progress bar.
    marginalise : bool
        Leave the per-completion personas out of the model (default). NUTS always runs on
        the hand-written potential (:func:`attribution_potential`); ``False`` keeps the
        ``persona`` site so that each completion's persona is also drawn given each draw
        of ``w`` (``infer_discrete``, one trace per draw: slow), stored as ``persona`` in
        the posterior group.
    components, tokens, mask : Tensor, optional
        ``[K, D, T, V]``, ``[D, T]``, ``[D, T]``: when given, the posterior predictive
        check replicates the completion *tokens* (each drawn given its observed
        prefix); otherwise it replicates each completion's best-fitting persona
        (see :func:`attribution_to_arviz`).
    prompt_loglik : Tensor, optional
        ``[D, K]`` ``log p(c_d | h)`` of each prompt: the in-context update of the
        persona weights (module docstring). Leave it out for empty prompts.

    Returns
    -------
    Attribution
    """
    from inference.diagnostics import convergence, mcse_mean

    doc_loglik, alpha = _check_inputs(doc_loglik, alpha)
    if prompt_loglik is not None:
        prompt_loglik = torch.as_tensor(prompt_loglik, dtype=torch.float64)
        if prompt_loglik.shape != doc_loglik.shape or torch.isnan(prompt_loglik).any():
            raise InputError(f"prompt_loglik must be [D, K] = {tuple(doc_loglik.shape)} without NaN, "
                             f"got {tuple(prompt_loglik.shape)}")
    if min(num_chains, num_samples) < 1 or warmup < 0:
        raise InputError(f"need num_chains, num_samples >= 1 and warmup >= 0, got {num_chains}, {num_samples}, {warmup}")
    if components is not None:
        if tokens is None or mask is None:
            raise InputError("the token posterior predictive check needs components, tokens and mask together")
        if components.dim() != 4 or components.shape[:2] != doc_loglik.T.shape or \
                tuple(torch.as_tensor(tokens).shape) != tuple(components.shape[1:3]) or \
                tuple(torch.as_tensor(mask).shape) != tuple(components.shape[1:3]):
            raise InputError(f"components must be [K, D, T, V] = {tuple(doc_loglik.T.shape)} + [T, V] with tokens "
                             f"and mask [D, T], got {tuple(components.shape)}")
    pyro.clear_param_store()
    result = _run_nuts(doc_loglik, alpha, marginalise, prompt_loglik, num_chains, num_samples, warmup, seed,
                       progress)
    samples = result.samples["w"].to(torch.float64)  # [chains, draws, K]
    idata = attribution_to_arviz(samples, doc_loglik, alpha=alpha, divergences=result.diverging, seed=seed,
                                 persona=result.discrete.get("persona"), components=components, tokens=tokens,
                                 mask=mask, prompt_loglik=prompt_loglik)
    diag = convergence(idata, var_names=["w"])
    mcse = torch.as_tensor(mcse_mean(idata, "w"), dtype=torch.float64)
    return Attribution(samples.mean((0, 1)), mcse, samples, diag["r_hat_max"], diag["ess_min"],
                       int(result.diverging.sum()), idata)


def attribution_potential(doc_loglik: Tensor, alpha: Tensor, marginalise: bool = False,
                          prompt_loglik: Tensor | None = None) -> WeightsPotential:
    """The hand-marginalised NUTS potential of :func:`attribution_model` (same arguments)."""
    return WeightsPotential(doc_loglik, alpha, prompt_loglik)


#: NUTS (inference.conditioning.mcmc) uses this potential for the attribution model, not Pyro's trace of it
attribution_model.marginal_potential = attribution_potential


def _run_nuts(doc_loglik: Tensor, alpha: Tensor, marginalise: bool, prompt_loglik: Tensor | None,
              num_chains: int, num_samples: int, warmup: int, seed: int, progress: bool):
    """NUTS through :func:`inference.conditioning.mcmc.run_mcmc` (prior-draw starts).

    The gradients are of a ``[D, K]`` matrix: latency-bound, so ``run_mcmc`` samples with
    one torch thread (``PSM_THREADS`` overrides) and restores the caller's setting
    (:func:`inference.runtime.torch_threads`).
    """
    from inference.conditioning.mcmc import run_mcmc

    return run_mcmc(attribution_model, (doc_loglik, alpha, marginalise, prompt_loglik), {}, seed=seed,
                    progress=progress, num_chains=num_chains, num_samples=num_samples, warmup_steps=warmup)


def _check_inputs(doc_loglik: Tensor, alpha: float | Tensor) -> tuple[Tensor, Tensor]:
    doc_loglik = torch.as_tensor(doc_loglik)
    if doc_loglik.dim() != 2 or doc_loglik.shape[0] < 1 or doc_loglik.shape[1] < 1:
        raise InputError(f"doc_loglik must be a non-empty [documents, personas] matrix, got shape {tuple(doc_loglik.shape)}")
    if not torch.is_floating_point(doc_loglik) or torch.isnan(doc_loglik).any() or (doc_loglik == float("inf")).any():
        raise InputError("doc_loglik must hold finite (or -inf) log-likelihoods")
    if torch.isinf(doc_loglik).all(-1).any():
        raise InputError("some completion has zero probability under every persona")
    doc_loglik = doc_loglik.to(torch.float64)
    K = doc_loglik.shape[1]
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    if alpha.dim() == 0:
        alpha = alpha.expand(K).clone()
    if alpha.shape != (K,) or not torch.isfinite(alpha).all() or (alpha <= 0).any():
        raise InputError(f"alpha must be a positive number or {K} positive numbers, got {alpha.tolist()}")
    return doc_loglik, alpha


#: completion tokens replicated in the attribution's posterior predictive check
PPC_TOKENS = 2000
#: draws (over all chains) replicated in the posterior predictive check
PPC_DRAWS = 100


def attribution_to_arviz(
    samples: Tensor,
    doc_loglik: Tensor,
    *,
    alpha: Tensor,
    divergences: Tensor | None = None,
    seed: int = 0,
    persona: Tensor | None = None,
    components: Tensor | None = None,
    tokens: Tensor | None = None,
    mask: Tensor | None = None,
    prompt_loglik: Tensor | None = None,
):
    """``InferenceData`` of a persona attribution (arrays computed here, built by :mod:`inference.diagnostics`).

    ==================== ============================== ==========================================
    group                variable                        meaning
    ==================== ============================== ==========================================
    posterior            ``w`` [persona_index]           mixture weights explaining the completions
    posterior            ``persona`` [completion]        each completion's persona given the draw
                                                         (only when ``persona`` is given)
    log_likelihood       ``completions`` [completion]    ``log sum_h w_h(c_d) p(y_d | c_d, h)``,
                                                         marginal over the completion's persona
    posterior_predictive ``tokens`` [completion_token]   with ``components``: every scored completion
                                                         token replicated given its observed prefix,
                                                         by a fresh persona ``z ~ w(c_d)`` per completion
                                                         (first 2,000 tokens, 100 draws)
                         ``best_persona`` [completion]   without: a fresh persona per completion
    observed_data        ``tokens`` / ``best_persona``   the completion tokens / each completion's
                                                         best-fitting persona ``argmax_h doc_loglik``
    sample_stats         ``lp``, ``diverging``           log joint density of ``w``; divergences
    ==================== ============================== ==========================================

    The token check asks whether the token frequencies of the model's completions
    are what a re-weighting of the personas would write (a novel behaviour shows
    up as observed frequencies outside the replicated ones).
    """
    from inference import diagnostics

    chains, draws, K = samples.shape
    # persona weights of each completion after its prompt: log w_h + log p(c_d | h), normalised
    logits = samples.log()[..., None, :] + (0.0 if prompt_loglik is None else prompt_loglik)  # [c, s, D or 1, K]
    logits = logits - torch.logsumexp(logits, -1, keepdim=True)
    marginal = torch.logsumexp(logits + doc_loglik, -1)  # [c, s, D]
    prior = torch.distributions.Dirichlet(alpha.to(samples.dtype)).log_prob(samples)  # [c, s]
    stats = {"lp": (prior + marginal.sum(-1)).numpy()}
    if divergences is not None:
        stats["diverging"] = np.asarray(divergences, dtype=bool)
    thin = np.arange(0, draws, max(1, draws * chains // PPC_DRAWS))
    gen = torch.Generator().manual_seed(seed)
    D = doc_loglik.shape[0]
    probs = logits[:, thin].exp().expand(chains, len(thin), D, K).reshape(-1, K)  # [c * s' * D, K]
    fresh = torch.multinomial(probs, 1, generator=gen).reshape(chains, len(thin), D)  # a fresh persona per completion
    if components is not None:
        doc, pos = mask.nonzero(as_tuple=True)
        doc, pos = doc[:PPC_TOKENS], pos[:PPC_TOKENS]  # [N]
        comp_logits = components[fresh[..., doc], doc, pos]  # [c, s', N, V]
        probs = torch.softmax(comp_logits.to(torch.float64), -1).reshape(-1, comp_logits.shape[-1])
        replicated = torch.multinomial(probs, 1, generator=gen).reshape(chains, len(thin), len(doc))
        name, dim, observed = "tokens", "completion_token", tokens[doc, pos].numpy()
    else:
        name, dim = "best_persona", "completion"
        observed, replicated = doc_loglik.argmax(-1).numpy(), fresh
    post = {"w": samples.numpy()}
    if persona is not None:
        post["persona"] = np.asarray(persona)
    return diagnostics.inference_data(
        posterior=post, log_likelihood={"completions": marginal.numpy()}, sample_stats=stats,
        observed_data={name: observed}, posterior_predictive={name: replicated.numpy()}, predictive_draws=thin,
        dims={"w": ["persona_index"], "persona": ["completion"], "completions": ["completion"], name: [dim]},
        attrs={"model": "attribution", "alpha": alpha.tolist()},
    )
