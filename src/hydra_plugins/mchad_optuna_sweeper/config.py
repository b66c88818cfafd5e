"""The sweeper's settings, ``hydra.sweeper.*`` (registered as the Hydra config ``hydra/sweeper: mchad_optuna``)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class MchadOptunaSweeperConf:
    _target_: str = "hydra_plugins.mchad_optuna_sweeper.sweeper.MchadOptunaSweeper"
    # the sweeper builds the sampler itself, seeded for each (continued) study: Hydra must not build it first
    _recursive_: bool = False
    # what a trial is judged by: a metric the run logs on the VALIDATION sets (ends with /val), e.g.
    # Accuracy/val or <score>/AUROC/val (ID validation split vs held-out outliers or validation noise)
    objective: str = "Accuracy/val"
    direction: str = "maximize"  # or minimize
    # the Optuna study; one study per sweep directory
    study_name: str = "${name}"
    # null: sqlite:///<hydra.sweep.dir>/optuna.db, so that a killed search started again continues
    storage: str | None = None
    # trials the study holds when the search ends, counting those of earlier invocations (failed ones
    # included, interrupted ones not)
    n_trials: int = 20
    # trials asked for and launched together, through the configured launcher (hydra/launcher=joblib, ray_local, ...)
    n_jobs: int = 1
    # any Optuna sampler class and its keyword arguments, e.g. {_target_: optuna.samplers.RandomSampler} or
    # {_target_: optuna.samplers.TPESampler, n_startup_trials: 5, multivariate: true}
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    # seed of the sampler (null: random); a continued study seeds it with seed + its number of trials, so that it
    # does not replay its first trials' draws
    seed: int | None = None
    # the search space: {key: "interval(lo, hi)" | "tag(log, interval(lo, hi))" | "tag(int, interval(lo, hi))"
    # | "choice(a, b, ...)" | "range(start, stop[, step])"}; sweep overrides on the command line add to it
    params: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="mchad_optuna", node=MchadOptunaSweeperConf, provider="mchad")
