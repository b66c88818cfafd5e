"""The Sweeper Hydra finds (``hydra/sweeper: mchad_optuna``): an Optuna study, ask-and-tell, trials as sweep jobs.

The helpers live in :mod:`._search`: Hydra's plugin scan executes every module of
``hydra_plugins`` whose name does not start with ``_`` in a way that dataclasses with
postponed annotations do not survive, and registers the plugin classes under the module
they were defined in, so this class is defined here and nothing else is.
"""

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.mchad_optuna_sweeper._search import (
    BEST_FILE,
    DB_FILE,
    REPORTED,
    SearchSpace,
    SweeperSettings,
    check_search_space,
    check_settings,
    objective_of,
    parse_search_space,
    run_dir_of,
    sampler,
    search_lock,
    write_best_params,
)
from mchad.errors import ConfigError, fail

__all__ = ["MchadOptunaSweeper", "check_search_space"]

log = logging.getLogger(__name__)


class MchadOptunaSweeper(Sweeper):
    """See the module's docstring; the settings are those of :class:`.config.MchadOptunaSweeperConf`."""

    def __init__(
        self,
        objective: str,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        seed: int | None,
        params: dict[str, Any] | None,
    ) -> None:
        values = dict(objective=objective, direction=direction, study_name=study_name, storage=storage,
                      n_trials=n_trials, n_jobs=n_jobs, sampler=sampler, seed=seed, params=params or {})  # fmt: skip
        self.values = {k: OmegaConf.to_container(v) if isinstance(v, DictConfig) else v for k, v in values.items()}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    @cached_property
    def settings(self) -> SweeperSettings:
        """The settings, typed and checked (ConfigError for the first bad one)."""
        return check_settings(self.values)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        try:
            import optuna
        except ImportError:
            fail("the hyperparameter search needs Optuna, which is not installed: pip install 'mchad[optuna]'")
        try:
            s = self.settings
            space = parse_search_space(s.params, arguments)
        except ConfigError as error:
            fail(str(error))
        sweep_dir = Path(self.config.hydra.sweep.dir).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # this sweeper logs each trial itself
        with search_lock(sweep_dir):
            study = self.load_study(optuna, sweep_dir)
            returns = self.run_trials(optuna, study, space)
            self.report(optuna, study, sweep_dir)
        return returns

    def storage_url(self, sweep_dir: Path) -> str:
        return self.settings.storage or f"sqlite:///{sweep_dir / DB_FILE}"

    def load_study(self, optuna: Any, sweep_dir: Path) -> Any:
        """The study, created or continued; trials a killed search left running are marked failed."""
        s = self.settings
        storage = self.storage_url(sweep_dir)
        if not s.storage:
            others = [n for n in optuna.get_all_study_names(storage) if n != s.study_name]
            if others:
                fail(
                    f"{sweep_dir / DB_FILE} holds the study {others[0]}, and this search is {s.study_name}: their "
                    f"trial directories would collide: continue it with hydra.sweeper.study_name={others[0]}, or "
                    "give this search another hydra.sweep.dir"
                )
        study = optuna.create_study(
            storage=storage, study_name=s.study_name, direction=s.direction, load_if_exists=True
        )
        if study.direction.name.lower() != s.direction:
            fail(
                f"the study {s.study_name} in {storage} was made to {study.direction.name.lower()} its objective: use "
                f"hydra.sweeper.direction={study.direction.name.lower()}, or start another study"
            )
        State = optuna.trial.TrialState
        for trial in study.get_trials(deepcopy=False, states=(State.RUNNING, State.WAITING)):
            log.warning(
                "trial %d was left running by a search that was stopped: marked failed, not counted", trial.number
            )
            study.tell(trial.number, state=State.FAIL, skip_if_finished=True)
        # a continued study must not replay its first draws: the seed moves on by the trials it holds
        study.sampler = sampler(s, None if s.seed is None else s.seed + len(study.trials))
        done = len(self.counted(optuna, study))
        log.info(
            "study %s in %s: %d of %d trials done, objective %s (%s)",
            s.study_name,
            storage,
            done,
            s.n_trials,
            s.objective,
            s.direction,
        )
        return study

    @staticmethod
    def counted(optuna: Any, study: Any) -> list[Any]:
        """The trials that count towards ``n_trials``: those whose job reported (complete or failed)."""
        State = optuna.trial.TrialState
        return [
            t
            for t in study.get_trials(deepcopy=False)
            if t.state == State.COMPLETE or (t.state.is_finished() and REPORTED in t.user_attrs)
        ]

    def run_trials(self, optuna: Any, study: Any, space: SearchSpace) -> list[Any]:
        """Ask, launch and tell in batches of ``n_jobs`` until the study holds ``n_trials`` counted trials."""
        s = self.settings
        State = optuna.trial.TrialState
        returns = []
        while (done := len(self.counted(optuna, study))) < s.n_trials:
            trials = [study.ask(space.distributions) for _ in range(min(s.n_jobs, s.n_trials - done))]
            batch = [space.overrides(trial.params) for trial in trials]
            for trial, overrides in zip(trials, batch, strict=True):
                trial.set_user_attr("overrides", overrides)
            try:
                self.validate_batch_is_legal(batch)
                jobs = self.launch(trials, batch)
            except BaseException:
                for trial in trials:
                    study.tell(trial, state=State.FAIL, skip_if_finished=True)
                raise
            for trial, overrides, job in zip(trials, batch, jobs, strict=True):
                value, validation, reason = objective_of(job, s.objective)
                trial.set_user_attr(REPORTED, run_dir_of(job))
                trial.set_user_attr("validation", validation)
                if value is None:
                    trial.set_user_attr("failure", reason)
                    study.tell(trial, state=State.FAIL)
                    log.warning("trial %d failed: %s", trial.number, reason)
                else:
                    study.tell(trial, value)
                    best = study.best_trial
                    log.info(
                        "trial %d: %s = %.6g with %s; best: trial %d, %.6g",
                        trial.number,
                        s.objective,
                        value,
                        " ".join(overrides[len(space.fixed) :]),
                        best.number,
                        best.value,
                    )
            returns.append(jobs)
        return returns

    def launch(self, trials: list[Any], batch: list[list[str]]) -> list[Any]:
        """Launch a batch, job number = trial number (one launch per trial if the numbers are not consecutive)."""
        first = trials[0].number
        if [t.number for t in trials] == list(range(first, first + len(trials))):
            return list(self.launcher.launch(batch, initial_job_idx=first))
        return [
            job
            for t, o in zip(trials, batch, strict=True)
            for job in self.launcher.launch([o], initial_job_idx=t.number)
        ]

    def report(self, optuna: Any, study: Any, sweep_dir: Path) -> None:
        """Write ``best_params.yaml`` and print where it is and the best value."""
        s = self.settings
        State = optuna.trial.TrialState
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == State.COMPLETE]
        failed = [t for t in trials if t.state == State.FAIL]
        counts = f"{len(trials)} trials: {len(complete)} complete, {len(failed)} failed"
        if not complete:
            print(f"hyperparameter search {s.study_name}: no trial completed ({counts}), so no best parameters")
            return
        best = study.best_trial
        path = sweep_dir / BEST_FILE
        write_best_params(path, best, self.config, s, self.storage_url(sweep_dir), counts)
        print(
            f"hyperparameter search {s.study_name}: best trial {best.number}, {s.objective} = {best.value:.6g} "
            f"({s.direction}; {counts})"
        )
        print(f"best parameters: {path}")
