"""Conditioning, training, comparing and showing: the persona-selection laboratory.

    from inference import condition
    posterior = condition(personas, evidence, model="global", method="exact", beta=1.0)
    posterior.weights, posterior.predictive(contexts), posterior.to_arviz(seed=0)

Subpackages, bottom up (an import never points up, see the README's layout):

=================  ==========================================================
``diagnostics``    the one module that calls ArviZ (arrays in, ArviZ out)
``runtime``        torch thread settings around sampling and training
``storage``        checkpoints and output folders that are never half-written
``conditioning``   ``condition()``, exact enumeration, SVI, NUTS, SBC
``finetuning``     pre-training, fine-tuning (four methods), baselines, code length
``comparison``     KL and ``beta*``, projection, attribution, ELPD
``experiment``     configs, worlds and arms, the runner, report and figures
``cli``            the ``psm`` command line
=================  ==========================================================

The names below are imported lazily (on first use): ``import inference`` loads
neither torch nor Pyro.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> module that defines it
_EXPORTS = {
    "condition": "inference.conditioning.condition",
    "Posterior": "inference.conditioning.posterior",
    "run_svi": "inference.conditioning.svi",
    "SVIResult": "inference.conditioning.svi",
    "run_mcmc": "inference.conditioning.mcmc",
    "MCMCResult": "inference.conditioning.mcmc",
    "simulation_based_calibration": "inference.conditioning.sbc",
    "pretrain": "inference.finetuning.training",
    "finetune": "inference.finetuning.training",
    "FinetuneResult": "inference.finetuning.training",
    "finetune_lm": "inference.finetuning.lm_training",
    "LMFinetuneResult": "inference.finetuning.lm_training",
    "prequential_code_length": "inference.finetuning.prequential",
    "train_from_scratch": "inference.finetuning.baselines",
    "ngram_table": "inference.finetuning.baselines",
    "kl": "inference.comparison.kl",
    "mean_kl": "inference.comparison.kl",
    "kl_by_beta": "inference.comparison.kl",
    "beta_star": "inference.comparison.kl",
    "project": "inference.comparison.projection",
    "Projection": "inference.comparison.projection",
    "decompose": "inference.comparison.decomposition",
    "Decomposition": "inference.comparison.decomposition",
    "decomposition_interval": "inference.comparison.decomposition",
    "attribute": "inference.comparison.attribution",
    "Attribution": "inference.comparison.attribution",
    "heldout_elpd": "inference.comparison.elpd",
    "ExperimentConfig": "inference.experiment.config",
    "load_config": "inference.experiment.config",
    "demo_config": "inference.experiment.config",
    "run_experiment": "inference.experiment.runner",
    "run_hf": "inference.experiment.hf_runner",
    "write_experiment": "inference.experiment.report",
    "load_sweep": "inference.experiment.sweep",
    "run_sweep": "inference.experiment.sweep_output",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load on first use
    from inference.comparison.attribution import Attribution, attribute  # noqa: F401
    from inference.comparison.decomposition import Decomposition, decompose, decomposition_interval  # noqa: F401
    from inference.comparison.elpd import heldout_elpd  # noqa: F401
    from inference.comparison.kl import beta_star, kl, kl_by_beta, mean_kl  # noqa: F401
    from inference.comparison.projection import Projection, project  # noqa: F401
    from inference.conditioning.condition import condition  # noqa: F401
    from inference.conditioning.mcmc import MCMCResult, run_mcmc  # noqa: F401
    from inference.conditioning.posterior import Posterior  # noqa: F401
    from inference.conditioning.sbc import simulation_based_calibration  # noqa: F401
    from inference.conditioning.svi import SVIResult, run_svi  # noqa: F401
    from inference.experiment.config import ExperimentConfig, demo_config, load_config  # noqa: F401
    from inference.experiment.hf_runner import run_hf  # noqa: F401
    from inference.experiment.report import write_experiment  # noqa: F401
    from inference.experiment.runner import run_experiment  # noqa: F401
    from inference.experiment.sweep import load_sweep  # noqa: F401
    from inference.experiment.sweep_output import run_sweep  # noqa: F401
    from inference.finetuning.baselines import ngram_table, train_from_scratch  # noqa: F401
    from inference.finetuning.lm_training import LMFinetuneResult, finetune_lm  # noqa: F401
    from inference.finetuning.prequential import prequential_code_length  # noqa: F401
    from inference.finetuning.training import FinetuneResult, finetune, pretrain  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
