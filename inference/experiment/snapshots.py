"""Every comparison of DESIGN.md §3 at every fine-tuning snapshot, and the mechanisms at the last one.

:func:`compare_snapshots` measures, for each snapshot ``q_s`` on the held-out contexts: the change
from the base, the KL to the conditioned predictive on a grid of ``beta`` (and ``beta*``), the
projection onto ``R_true`` and ``R_self``, and the exhaustiveness decomposition against both with
its bootstrap interval. :func:`final_mechanisms` splits the last snapshot's decomposition by who
wrote the context and by position, and measures forgetting and the in-context updating strength.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm

from inference.comparison import kl as compare
from inference.comparison import mechanisms, projection
from inference.comparison.decomposition import Decomposition, decomposition_interval, fit
from inference.comparison.tilt import Tilt
from inference.experiment.config import CompareConfig
from inference.experiment.world import Base, World, child_seed
from models.predictive import mixture_logprobs

#: the two reachable sets: name -> attributes of :class:`~inference.experiment.world.Base`
REACHABLE = {"true": ("components_true", "floor_true"), "self": ("components_self", "floor_self")}


@dataclass
class SnapshotComparisons:
    """The per-snapshot numbers of one arm (lists over snapshots) and the fitted objects behind them."""

    steps: list[int]
    kl_to_base: list[float] = field(default_factory=list)
    kl_by_beta: list[list[float]] = field(default_factory=list)
    beta_star: list[float] = field(default_factory=list)
    projections: dict[str, list[projection.Projection]] = field(default_factory=lambda: {"true": [], "self": []})
    decompositions: dict[str, list[Decomposition]] = field(default_factory=lambda: {"true": [], "self": []})
    intervals: dict[str, list[list[float]]] = field(default_factory=lambda: {"true": [], "self": []})

    def summary(self) -> dict[str, Any]:
        """The per-snapshot fields of the arm's entry in ``summary.json``."""
        out: dict[str, Any] = {"kl_to_base": self.kl_to_base, "beta_star": self.beta_star}
        for key in REACHABLE:
            projs, decs = self.projections[key], self.decompositions[key]
            out[f"projection_weights_{key}"] = [p.weights.tolist() for p in projs]
            out[f"residual_{key}"] = [p.residual for p in projs]
            out[f"exhaustiveness_{key}"] = [d.exhaustiveness for d in decs]
            out[f"exhaustiveness_ci_{key}"] = self.intervals[key]
            out[f"decomposition_{key}"] = {
                "total": [d.total for d in decs], "reweighting": [d.reweighting for d in decs],
                "other": [d.other for d in decs], "theta": [d.theta for d in decs],
                "weights": [d.weights.tolist() for d in decs], "reason": [d.reason for d in decs],
            }
        return out


def compare_snapshots(q: dict[int, Tensor], base: Base, world: World, conditioned: dict[float, Tensor],
                      c: CompareConfig, seed: int, arm_name: str, progress: bool = False) -> SnapshotComparisons:
    """Measure every snapshot ``q[s]`` (``[n, T, V]`` on the held-out contexts); see the module docstring.

    Each projection starts from the previous snapshot's (the base's ``w*(0)`` first), and each
    decomposition from its snapshot's projection weights.
    """
    out = SnapshotComparisons(steps=sorted(q))
    betas = sorted(conditioned)
    for s in tqdm(out.steps, desc=f"comparisons ({arm_name})", disable=not progress):
        out.kl_to_base.append(compare.mean_kl(q[s], base.q0))
        kls = compare.kl_by_beta(q[s], conditioned)
        out.kl_by_beta.append([kls[b] for b in betas])
        out.beta_star.append(compare.beta_star(betas, out.kl_by_beta[-1]))
        for key, (components, floor) in REACHABLE.items():
            components, floor = getattr(base, components), getattr(base, floor)
            previous = out.projections[key][-1].weights if out.projections[key] else floor.weights
            proj = projection.project(q[s], components, world.heldout, init=previous)
            tilt = Tilt(q[s], base.q0, components, world.heldout, floor.weights)
            dec = fit(tilt, init=proj.weights, restarts=c.decomposition_restarts)
            interval = decomposition_interval(tilt, dec, num_boot=c.bootstrap, refit=c.bootstrap_refit,
                                              seed=child_seed(seed, "boot", arm_name, key, s))
            out.projections[key].append(proj)
            out.decompositions[key].append(dec)
            out.intervals[key].append(list(interval))
    return out


def final_mechanisms(q_final: Tensor, base: Base, world: World, comparisons: SnapshotComparisons,
                     evidence_persona: int | None) -> dict[str, Any]:
    """The mechanisms behind the last snapshot's change (:mod:`inference.comparison.mechanisms`).

    Returns
    -------
    dict
        ``decomposition_by_context`` (``{"true": groups, "self": groups}``), ``forgetting`` and
        ``in_context_gamma`` (``{"true": {...}, "self": {...}}``).
    """
    bayes = mixture_logprobs(base.components_true, world.heldout, world.personas.prior.log())
    out: dict[str, Any] = {
        "decomposition_by_context": {},
        "forgetting": mechanisms.forgetting(base.q0, q_final, world.heldout, world.writer, evidence_persona, bayes),
        "in_context_gamma": {},
    }
    for key, (components, _) in REACHABLE.items():
        out["decomposition_by_context"][key] = mechanisms.split_by_context(
            comparisons.decompositions[key][-1], world.writer, evidence_persona)
        strength = mechanisms.in_context_strength(q_final, getattr(base, components), world.heldout,
                                                  init=comparisons.projections[key][-1].weights)
        out["in_context_gamma"][key] = {"gamma": strength.gamma, "kl": strength.kl, "kl_at_gamma_1": strength.kl_at_one,
                                        "weights": strength.weights.tolist()}
    return out
