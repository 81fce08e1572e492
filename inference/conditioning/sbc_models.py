"""The models and limits of simulation-based calibration (:mod:`inference.conditioning.sbc`).

Kept apart from the engine, with no heavy import, so that ``psm sbc --help`` is fast.
"""

from __future__ import annotations

from models.limits import EXACT_DRAWS

#: methods of each SBC model
MODELS: dict[str, tuple[str, ...]] = {
    "mixture": ("exact", "svi", "mcmc"),
    "global": ("exact",),
    "global-tables": ("exact", "svi", "mcmc"),
}
MODEL_HELP = {
    "mixture": "persona mixture with weights w ~ Dirichlet(alpha) over known personas; parameters w[k]",
    "global": "one persona h ~ pi for all evidence, known tables; parameter h",
    "global-tables": "one persona h with uncertain (anchored Dirichlet) tables; parameters h and trans[hmap,0,v]",
}
#: documents x tokens simulated per model: small, with a posterior neither flat nor certain
WORLD_SIZES = {"mixture": (8, 6), "global": (2, 6), "global-tables": (4, 10)}
#: engine defaults of SBC runs (each overridable through ``**engine_options``)
ENGINE_DEFAULTS = {"svi": {"num_steps": 400}, "mcmc": {"num_chains": 1, "warmup_steps": 200}}
DEFAULT_DRAWS = 99
#: the exact methods hand out this many iid draws (``models.limits.EXACT_DRAWS``)
MAX_DRAWS = EXACT_DRAWS[0] * EXACT_DRAWS[1] - 1
MAX_SIMS = 1_000_000
