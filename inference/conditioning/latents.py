"""The latent sites of a Pyro model, the guides SVI fits to them, and the discrete sites recovered afterwards.

Shared by :mod:`inference.conditioning.svi` and :mod:`inference.conditioning.mcmc`:

* :func:`latent_sites` sorts a model's unobserved sites into continuous ones (what
  SVI and NUTS infer) and discrete ones (enumerated out, never seen by a guide);
* :func:`make_guide` builds the guide named in ``GUIDES`` (see :mod:`inference.conditioning.svi`),
  :class:`DirichletGuide` is the hand-written one, :func:`draw_guide` draws from a fitted guide;
* :func:`recover_discrete` draws the discrete sites given each draw of the continuous
  ones with ``infer_discrete`` (``poutine.condition`` inside it, DESIGN.md §6);
* ``check_*`` turn engine options into one-line :class:`~models.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import infer_discrete
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal, init_to_sample
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from tqdm.auto import tqdm

from models.errors import InputError

GUIDES = ("auto", "dirichlet", "delta", "normal", "mvn")
#: plates nested in the persona models (``documents`` or ``personas``, dim -1)
MAX_PLATE_NESTING = 1
#: draws per batched ``infer_discrete`` call (bounds memory: the model scores this many at once)
DISCRETE_CHUNK = 32


@dataclass(frozen=True)
class LatentSites:
    """The latent sample sites of a model, from one prototype run.

    Attributes
    ----------
    continuous : dict of str to dict
        Pyro trace nodes of the continuous latents, in model order.
    discrete : dict of str to tuple of int
        Discrete (enumerated) latents and the shape of one draw (its plate sizes).
    certain : dict of str to Tensor
        Discrete latents whose support has one value (e.g. a persona among one), and that value.
    """

    continuous: dict[str, dict]
    discrete: dict[str, tuple[int, ...]]
    certain: dict[str, Tensor] = field(default_factory=dict)


def latent_sites(model: Callable, args: tuple, kwargs: dict[str, Any]) -> LatentSites:
    """Run ``model`` once forward and sort its unobserved sample sites into continuous and discrete."""
    with torch.no_grad(), torch.random.fork_rng():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    continuous, discrete, certain = {}, {}, {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if site["infer"].get("is_auxiliary"):
            continue
        if site["infer"].get("enumerate") or site["fn"].support.is_discrete:
            frames = sorted(site["cond_indep_stack"], key=lambda f: f.dim)
            discrete[name] = tuple(f.size for f in frames if f.vectorized)
            if getattr(site["fn"], "has_enumerate_support", False):
                support = site["fn"].enumerate_support(expand=False)  # [n, 1, ...]
                if support.shape[0] == 1:
                    certain[name] = support.reshape(-1)[0]
        else:
            continuous[name] = site
    if not continuous:
        raise InputError("the model has no continuous latent site to infer (make the weights or tables uncertain)")
    return LatentSites(continuous, discrete, certain)


def make_guide(name: str, model: Callable, sites: LatentSites) -> Callable:
    """The guide ``name`` (see the module docstring) for ``model``, discrete sites hidden."""
    if name == "dirichlet":
        return DirichletGuide(sites.continuous)
    blocked = poutine.block(model, hide=list(sites.discrete))
    if name == "delta":
        return AutoDelta(blocked, init_loc_fn=init_to_sample)
    if name == "normal":
        return AutoNormal(blocked, init_loc_fn=init_to_sample)
    if name == "mvn":
        return AutoMultivariateNormal(blocked, init_loc_fn=init_to_sample)
    raise InputError(f"unknown SVI guide {name!r}; choose one of {', '.join(GUIDES)}")


class DirichletGuide:
    """A learnable Dirichlet, initialised at the prior, for every Dirichlet latent site.

    Parameter ``"{site}_concentration"`` has the site's full shape (batch and
    event): ``[K]`` for ``w``, ``[K, V]`` for ``init``, ``[K, C, V]`` for
    ``trans``, so every table row gets its own Dirichlet. The guide repeats the
    site's plates; it supports global latents only (not latents inside a
    subsampled plate).
    """

    def __init__(self, sites: dict[str, dict]):
        self.specs = {}
        for name, site in sites.items():
            fn = site["fn"]
            prior = _dirichlet_concentration(fn, name)
            init = prior.detach().expand(fn.batch_shape + fn.event_shape).clone()
            frames = sorted(site["cond_indep_stack"], key=lambda f: f.dim)
            self.specs[name] = (init, fn.event_dim - 1, [(f.name, f.size, f.dim) for f in frames if f.vectorized])

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        out, plates = {}, {}
        for name, (init, extra_event_dims, frames) in self.specs.items():
            conc = pyro.param(f"{name}_concentration", init, constraint=dist.constraints.positive)
            with contextlib.ExitStack() as stack:
                for plate_name, size, dim in frames:  # each plate made once, entered per site
                    if plate_name not in plates:
                        plates[plate_name] = pyro.plate(plate_name, size, dim=dim)
                    stack.enter_context(plates[plate_name])
                out[name] = pyro.sample(name, dist.Dirichlet(conc).to_event(extra_event_dims))
        return out


def _dirichlet_concentration(fn: Any, name: str) -> Tensor:
    base = fn
    while not isinstance(base, dist.Dirichlet):
        if not hasattr(base, "base_dist"):
            raise InputError(f"the dirichlet guide needs Dirichlet latents, but site {name!r} is {type(fn).__name__}; "
                             "use guide 'normal', 'mvn' or 'delta'")
        base = base.base_dist
    return base.concentration


def draw_guide(guide: Callable, args: tuple, kwargs: dict[str, Any], names: list[str], num_samples: int
               ) -> dict[str, Tensor]:
    """``num_samples`` draws of the sites ``names`` from a fitted guide: name -> ``[S, ...]``."""
    draws: dict[str, list[Tensor]] = {name: [] for name in names}
    with torch.no_grad():
        for _ in range(num_samples):  # one guide call per draw: cheap next to the model
            trace = poutine.trace(guide).get_trace(*args, **kwargs)
            for name in names:
                draws[name].append(trace.nodes[name]["value"].detach())
    return {name: torch.stack(values) for name, values in draws.items()}


def recover_discrete(
    model: Callable,
    args: tuple,
    kwargs: dict[str, Any],
    samples: dict[str, Tensor],
    sites: LatentSites,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Draw the discrete sites given each draw of the continuous ones, by ``infer_discrete``.

    When every continuous latent is global (in no plate, like ``w``), the draws are
    batched: ``DISCRETE_CHUNK`` draws at a time under an outer plate at dim
    ``-(MAX_PLATE_NESTING + 1)`` (the model must broadcast there, as for Pyro's
    vectorised ``Predictive``; ``persona_model`` with known tables does). Otherwise
    (e.g. table rows in the ``personas`` plate) one ``infer_discrete`` call per draw.

    Sites with a single possible value (:attr:`LatentSites.certain`) take it without
    ``infer_discrete`` (Pyro's enumeration drops a dimension of size one).

    Parameters
    ----------
    samples : dict of str to Tensor
        ``[N, ...]`` draws of the continuous latents.
    sites : LatentSites
        The model's latent sites (:func:`latent_sites`).

    Returns
    -------
    dict of str to Tensor
        ``[N, ...]`` int64 draws from ``p(discrete | continuous draw, data)`` (temperature 1).
    """
    if not sites.discrete:
        return {}
    num = len(next(iter(samples.values())))
    if sites.certain.keys() == sites.discrete.keys():  # nothing to infer
        return {name: sites.certain[name].long().expand(num, *shape).clone() for name, shape in sites.discrete.items()}
    batched = all(not site["cond_indep_stack"] for site in sites.continuous.values())
    step = DISCRETE_CHUNK if batched else 1
    out: dict[str, list[Tensor]] = {name: [] for name in sites.discrete}
    with torch.no_grad():
        for lo in tqdm(range(0, num, step), disable=not progress, desc="infer_discrete"):
            if batched:
                chunk = {k: v[lo : lo + step] for k, v in samples.items()}  # [n, ...]
                n = len(next(iter(chunk.values())))
                data = {k: v.reshape(n, *([1] * MAX_PLATE_NESTING), *v.shape[1:]) for k, v in chunk.items()}
                fn, first_dim = _over_draws(poutine.condition(model, data=data), n), -MAX_PLATE_NESTING - 2
            else:
                n, first_dim = 1, -MAX_PLATE_NESTING - 1
                fn = poutine.condition(model, data={k: v[lo] for k, v in samples.items()})
            sampler = infer_discrete(fn, first_available_dim=first_dim, temperature=1)
            trace = poutine.trace(sampler).get_trace(*args, **kwargs)
            for name, shape in sites.discrete.items():
                value = trace.nodes[name]["value"]
                out[name].append(value.reshape(n, *shape))
    return {name: torch.cat(values).long() for name, values in out.items()}


def _over_draws(model: Callable, num: int) -> Callable:
    """``model`` under an outer plate of ``num`` draws at dim ``-(MAX_PLATE_NESTING + 1)``."""

    def batched(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate("_draws", num, dim=-MAX_PLATE_NESTING - 1):
            return model(*args, **kwargs)

    return batched


def check_unknown_options(engine: str, unknown: dict[str, Any], fn: Callable) -> None:
    """Raise :class:`InputError` naming the valid keyword options of ``fn``."""
    if unknown:
        params = inspect.signature(fn).parameters.values()
        valid = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in ("seed", "progress")]
        raise InputError(f"unknown {engine} option(s) {', '.join(sorted(unknown))}; valid options: {', '.join(valid)}")


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low``, else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    """``value`` as a finite float ``> 0`` (or ``>= 0``), else :class:`InputError`."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{name} must be finite and {'>=' if allow_zero else '>'} 0, got {value}")
    return value
