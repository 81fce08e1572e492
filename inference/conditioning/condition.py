"""``condition()``: the front door to conditioning, and the :class:`Posterior` it returns.

    posterior = condition(personas, evidence, model="mixture", method="mcmc", beta=1.0)
    posterior.weights              # [K] P(h = k | D) (global) or E[w_k | D] (mixture)
    posterior.predictive(contexts) # [n, T, V] next-token log-probabilities
    posterior.to_arviz()           # InferenceData

Methods by evidence model:

============  ==========================  ====================================
model         known persona tables        uncertain tables (``table_prior``)
============  ==========================  ====================================
``global``    exact                       exact, svi, mcmc
``mixture``   exact, svi, mcmc            svi, mcmc
============  ==========================  ====================================
"""

from __future__ import annotations

import time
from typing import Any

import pyro
import torch
from torch import Tensor

from inference.conditioning import exact
from inference.conditioning.posterior import Posterior
from models.counts import Evidence, TransitionCounts, count_transitions, total_counts
from models.errors import InputError
from models.limits import EVIDENCE_MODELS, EXACT_DRAWS, check_seed
from models.mixture import persona_model
from models.personas import MarkovPersonas, TablePrior

METHODS = ("exact", "svi", "mcmc")
#: largest ``beta * evidence tokens``: a token's finite log-probability is >= -745 (the smallest
#: float64), so tempered log-likelihoods (and the ELBO and potential built on them) stay finite
MAX_BETA_TOKENS = 1e300


def condition(
    personas: MarkovPersonas,
    evidence: Evidence,
    model: str = "global",
    method: str = "exact",
    beta: float = 1.0,
    *,
    alpha: float | Tensor = 1.0,
    table_prior: TablePrior | None = None,
    seed: int = 0,
    progress: bool = False,
    **options: Any,
) -> Posterior:
    """Condition a persona model on evidence.

    Parameters
    ----------
    personas : MarkovPersonas
        Persona prior and tables.
    evidence : Evidence
        Documents and their evidence mask.
    model : {"global", "mixture"}
        One persona for all the evidence, or one per document with ``w ~ Dirichlet(alpha)``.
    method : {"exact", "svi", "mcmc"}
        Enumeration, stochastic variational inference, or NUTS.
    beta : float
        Evidence strength (tempering exponent), ``>= 0``.
    alpha : float or Tensor
        Dirichlet concentration of the mixture weights (scalar or ``[K]``).
    table_prior : TablePrior, optional
        Makes the persona tables uncertain (Dirichlet rows).
    seed : int
        Seed of every random choice.
    progress : bool
        Show progress bars.
    **options
        Passed to the engine: :func:`inference.svi.run_svi` or :func:`inference.mcmc.run_mcmc`.

    Returns
    -------
    Posterior
    """
    beta, seed, alpha_vec = _check_request(personas, evidence, model, method, beta, alpha, table_prior, seed, options)
    pyro.clear_param_store()
    start = time.perf_counter()
    common = dict(model=model, method=method, beta=beta, personas=personas, evidence=evidence, alpha=alpha_vec,
                  table_prior=table_prior)
    if model == "global" and method == "exact":  # summed counts only: no per-document pass
        posterior = _global_exact(common, seed)
    else:
        counts = _document_counts(personas, evidence, model, beta, table_prior)
        if method == "exact":
            posterior = _mixture_exact(common, counts, seed)
        else:
            posterior = _condition_sampled(common, counts, seed, progress, options)
    posterior.seconds = time.perf_counter() - start
    return posterior


def _check_request(personas: MarkovPersonas, evidence: Evidence, model: str, method: str, beta: float,
                   alpha: float | Tensor, table_prior: TablePrior | None, seed: int, options: dict[str, Any]
                   ) -> tuple[float, int, Tensor | None]:
    """One-line errors for every bad argument of :func:`condition`; returns (beta, seed, alpha vector)."""
    _check_choice("model", model, EVIDENCE_MODELS)
    _check_choice("method", method, METHODS)
    beta = _check_beta(beta)
    seed = check_seed(seed)
    _check_evidence(personas, evidence)
    if beta * evidence.num_tokens > MAX_BETA_TOKENS:
        raise InputError(f"beta = {beta:g} is too large for {evidence.num_tokens} evidence tokens: beta * tokens "
                         f"must stay below {MAX_BETA_TOKENS:.0e} for tempered log-likelihoods to fit in float64")
    alpha_vec = _check_alpha(alpha, personas) if model == "mixture" else None
    if model == "global" and method != "exact" and table_prior is None:
        raise InputError(
            "the global model with known persona tables has no continuous latent to sample: "
            "use method 'exact', or make the tables uncertain (table_prior / --table-strength)"
        )
    if model == "mixture" and method == "exact" and table_prior is not None:
        raise InputError("exact conditioning of the mixture model needs known persona tables; use method 'svi' or 'mcmc'")
    if model == "mixture" and method != "exact" and personas.num_personas == 1:
        if table_prior is None:
            raise InputError("with one persona the mixture weights are certain (w = [1]) and there is nothing to "
                             "sample: use method 'exact'")
        raise InputError("with one persona the mixture model is the global model (w = [1]): use model 'global' "
                         "with the same table prior (psm: --model global-tables)")
    if options and method == "exact":
        raise InputError(f"method 'exact' takes no engine options, got {', '.join(sorted(options))}")
    return beta, seed, alpha_vec


def _document_counts(personas: MarkovPersonas, evidence: Evidence, model: str, beta: float,
                     table_prior: TablePrior | None) -> TransitionCounts:
    """The per-document counting pass (mixture model, SVI and MCMC), with the mixture's validity check."""
    counts = count_transitions(evidence, personas.vocab_size, personas.order)
    if model == "mixture" and table_prior is None and beta > 0:  # svi/mcmc would meet NaN gradients
        possible = torch.isfinite(counts.loglik(personas.log_table()[:, None, :])).any(0)  # [D]
        if not possible.all():
            raise InputError(f"evidence document {int((~possible).nonzero()[0])} has zero probability under every "
                             "persona (a transition no persona allows)")
    return counts


def _global_exact(common: dict, seed: int) -> Posterior:
    """Enumeration of the global model over the summed counts: ``P(h | D)``, and iid draws."""
    personas, evidence, table_prior = common["personas"], common["evidence"], common["table_prior"]
    beta, (chains, draws), K = common["beta"], EXACT_DRAWS, personas.num_personas
    gen = torch.Generator().manual_seed(seed)
    totals = total_counts(evidence, personas.vocab_size, personas.order)  # [F]
    if table_prior is None:
        log_w, log_z = exact.global_posterior_of(personas, totals, beta)  # only the columns the evidence reaches
    else:
        log_w, log_z = exact.global_posterior_dirichlet(personas.prior.log(), table_prior, totals, beta)
    weights = log_w.exp()
    persona = torch.multinomial(weights, chains * draws, replacement=True, generator=gen).reshape(chains, draws)
    weight_samples, tables = weights.expand(chains, draws, K), None
    if table_prior is not None:  # joint draws: h ~ P(h | D), then row h from its posterior, the others from the prior
        updated = _sample_row_posteriors(exact.dirichlet_row_posterior(table_prior, totals, beta), chains * draws, gen)
        prior_rows = _sample_row_posteriors(table_prior.flat(), chains * draws, gen)  # [S, K, F]
        wrote = torch.nn.functional.one_hot(persona.flatten(), K).bool()[..., None]  # [S, K, 1]
        tables = torch.where(wrote, updated, prior_rows).reshape(chains, draws, K, -1)
        weight_samples = _global_weight_samples(personas, tables, totals, beta)
    return Posterior(**common, weights=weights, weight_samples=weight_samples,
                     persona_samples=persona, table_samples=tables, log_evidence=float(log_z),
                     diagnostics={"method": "enumeration"})


def _mixture_exact(common: dict, counts: TransitionCounts, seed: int) -> Posterior:
    """Enumeration of the mixture model's count states: ``E[w | D]``, and exact draws of ``w`` and ``z``."""
    personas, beta, (chains, draws) = common["personas"], common["beta"], EXACT_DRAWS
    K = personas.num_personas
    gen = torch.Generator().manual_seed(seed)
    doc_loglik = counts.loglik(personas.log_table()[:, None, :]).T  # [D, K]
    result = exact.mixture_posterior(doc_loglik, common["alpha"], beta)
    w = result.sample_weights(chains * draws, seed=seed).reshape(chains, draws, K)
    persona = _sample_assignments(w, doc_loglik, beta, gen)
    return Posterior(**common, weights=result.mean_weights, weight_samples=w, persona_samples=persona,
                     log_evidence=float(result.log_evidence), _counts=counts,
                     diagnostics={"method": "enumeration", "count_states": int(result.count_states.shape[0])})


def _condition_sampled(common: dict, counts: TransitionCounts, seed: int, progress: bool, options: dict
                       ) -> Posterior:
    """SVI or NUTS over the continuous latents, the discrete ones recovered per draw."""
    from inference.conditioning import mcmc, svi

    personas, evidence = common["personas"], common["evidence"]
    model_kwargs = dict(
        tokens=evidence.tokens, mask=evidence.mask, counts=counts, evidence=common["model"],
        beta=common["beta"], alpha=common["alpha"], table_prior=common["table_prior"],
    )
    args = (personas, evidence.num_docs, evidence.doc_len)
    engine = svi.run_svi if common["method"] == "svi" else mcmc.run_mcmc
    result = engine(persona_model, args, model_kwargs, seed=seed, progress=progress, **options)
    samples = result.samples  # [chains, draws, ...] continuous latents
    tables = None
    if common["table_prior"] is not None:
        tables = torch.cat([samples["init"].log(), samples["trans"].log().flatten(-2)], -1)  # [c, s, K, F]
    if common["model"] == "mixture":
        weight_samples = samples["w"]
    else:
        totals = counts.totals()  # [F], the same sums as total_counts
        weight_samples = _global_weight_samples(personas, tables, totals, common["beta"])
    return Posterior(**common, weights=weight_samples.mean((0, 1)), weight_samples=weight_samples,
                     persona_samples=result.discrete["persona"], table_samples=tables,
                     diagnostics=result.diagnostics, engine=result, _counts=counts,
                     diverging=getattr(result, "diverging", None))


def _global_weight_samples(personas: MarkovPersonas, tables: Tensor, totals: Tensor, beta: float) -> Tensor:
    """``P(h | tables, D)`` for every table draw ``[c, s, K, F]``: ``[c, s, K]``; its mean is ``P(h | D)``."""
    seen = totals.nonzero().squeeze(-1)
    loglik = (tables[..., seen] * totals[seen]).sum(-1)  # [c, s, K]
    return torch.softmax(personas.prior.log() + exact._temper(loglik, beta), -1)


def _sample_row_posteriors(conc: Tensor, num: int, gen: torch.Generator) -> Tensor:
    """``[num, K, F]`` log tables drawn row by row from Dirichlet ``conc`` [K, R, V]."""
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
        rows = torch.distributions.Dirichlet(conc).sample((num,))  # [num, K, R, V]
    return rows.clamp(min=torch.finfo(rows.dtype).tiny).log().flatten(-2)


def _sample_assignments(w: Tensor, doc_loglik: Tensor, beta: float, gen: torch.Generator) -> Tensor:
    """Draws of ``z_d | w, D`` for every draw of ``w``: ``[chains, draws, D]``."""
    logits = w.log()[..., None, :] + exact._temper(doc_loglik, beta)  # [c, s, D, K]
    probs = torch.softmax(logits, -1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=gen)
    return flat.reshape(probs.shape[:-1])


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _check_beta(beta: float) -> float:
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise InputError(f"beta must be a number, got {beta!r}") from None
    if not (beta >= 0 and beta < float("inf")):
        raise InputError(f"beta must be finite and >= 0, got {beta}")
    return beta


def _check_evidence(personas: MarkovPersonas, evidence: Evidence) -> None:
    """One-line errors for evidence that :func:`~models.counts.make_evidence` would have refused."""
    if not isinstance(personas, MarkovPersonas):
        raise InputError(f"personas must be MarkovPersonas (see models.personas), got {type(personas).__name__}")
    if not isinstance(evidence, Evidence):
        raise InputError(f"evidence must be Evidence (build it with models.counts.make_evidence), "
                         f"got {type(evidence).__name__}")
    tokens, mask = evidence.tokens, evidence.mask
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.long or tokens.dim() != 2:
        raise InputError("evidence tokens must be a [D, T] int64 tensor (build it with make_evidence)")
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != tokens.shape:
        raise InputError("evidence mask must be a boolean tensor of the shape of the tokens (build it with make_evidence)")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= personas.vocab_size):
        raise InputError(f"evidence tokens must lie in [0, {personas.vocab_size}), "
                         f"found {int(tokens.min())}..{int(tokens.max())}")
    if evidence.doc_len < 1 or evidence.num_tokens == 0:
        raise InputError("the evidence holds no scored token")


def _check_alpha(alpha: float | Tensor, personas: MarkovPersonas) -> Tensor:
    try:
        alpha = torch.as_tensor(alpha, dtype=personas.prior.dtype)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"alpha must be a positive number or {personas.num_personas} positive numbers, "
                         f"got {alpha!r}") from None
    K = personas.num_personas
    if alpha.dim() == 0:
        alpha = alpha.expand(K).clone()
    if alpha.shape != (K,) or not torch.isfinite(alpha).all() or (alpha <= 0).any():
        raise InputError(f"alpha must be a positive number or {K} positive numbers, got {alpha.tolist()}")
    return alpha
