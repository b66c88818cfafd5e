"""The hyperparameter search's parts: search spaces, checks, the study's lock, trial outcomes, best_params.yaml.

:class:`~hydra_plugins.mchad_optuna_sweeper.sweeper.MchadOptunaSweeper` runs the search:
an Optuna study driven by ask-and-tell, its trials launched as Hydra sweep jobs.

``python run.py -m hparams_search=<name> [experiment=<exp>]`` selects this sweeper
(``hydra/sweeper: mchad_optuna``) and a search space. The search, in rounds until the study
holds ``n_trials`` trials:

1. ask the study for ``n_jobs`` trials, each a point of the search space;
2. turn each into the overrides of a sweep job (the command line's fixed overrides + the
   trial's values) and launch them together through the configured Hydra launcher, job
   number = trial number, so job directories never collide between invocations;
3. tell the study each trial's objective, the validation metric the run returned
   (:class:`mchad.train.RunResults`, passed back by :func:`mchad.cli.sweep.run_sweep_job`),
   or FAIL when the job failed or returned none; the search goes on.

The study lives in ``<sweep dir>/optuna.db`` (SQLite): started again, the search loads it and
continues. Trials left running by a killed search are marked failed and do not count. At the
end ``<sweep dir>/best_params.yaml`` holds the best trial's overrides and the commands that
take them back. :func:`check_search_space` checks a search before Hydra starts
(:func:`mchad.cli.launch.preflight`): bad input is one ``error:`` line, exit status 2.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from mchad import rundir
from mchad.errors import ConfigError, command, fail
from mchad.files import atomic_write

DB_FILE = "optuna.db"
BEST_FILE = "best_params.yaml"
LOCK_FILE = ".search.lock"
SPACE_HELP = (
    "write interval(low, high), tag(log, interval(low, high)), tag(int, interval(low, high)), "
    "choice(a, b, ...) or range(start, stop[, step])"
)
REPORTED = "run_dir"
"""The user attribute a trial gets when its job has reported (complete or failed): trials without it
were interrupted by a killed search, and do not count towards ``n_trials``."""


# --------------------------------------------------------------------------------------------
# the search space


@dataclass
class SearchSpace:
    """Optuna distributions by parameter name, and the overrides every trial shares."""

    distributions: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # name -> the override's key as written (+key, group)
    specs: dict[str, str] = field(default_factory=dict)  # name -> the search space as written
    fixed: dict[str, str] = field(default_factory=dict)  # key -> override line

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The command-line overrides of a trial with ``params``."""
        chosen = [f"{self.keys[name]}={override_value(params[name])}" for name in self.distributions if name in params]
        return [*self.fixed.values(), *chosen]


def override_value(value: Any) -> str:
    """A value as a Hydra override writes it (a string that would parse as something else is quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][\w\-./]*", text) and text.lower() not in ("true", "false", "null", "nan", "inf"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def distribution(override: Any, where: str) -> Any:
    """The Optuna distribution of a sweep override (``interval``, ``choice``, ``range``); ConfigError if none fits."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        bad = [c for c in sweep.list if not (c is None or isinstance(c, (bool, int, float, str)))]
        if bad or sweep.tags:
            raise ConfigError(
                f"{where}: choice() takes single values (numbers, strings, true/false, null), no tags "
                f"or lists: {SPACE_HELP}"
            )
        return CategoricalDistribution(list(sweep.list))
    if isinstance(sweep, RangeSweep):
        if sweep.tags:
            raise ConfigError(
                f"{where}: range() takes no tags (for a log scale use tag(log, int, interval(low, high)))"
            )
        values = list(sweep.range())
        if not values:
            raise ConfigError(
                f"{where}: the range is empty (start {sweep.start}, stop {sweep.stop}, step {sweep.step}): "
                "range(start, stop) excludes stop, like Python's range"
            )
        low, high, step = min(values), max(values), abs(sweep.step)
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(int(low), int(high), step=int(step))
        return FloatDistribution(float(low), float(high), step=float(step))
    if isinstance(sweep, IntervalSweep):
        unknown = sorted(set(sweep.tags) - {"log", "int"})
        if unknown:
            raise ConfigError(f"{where}: unknown tag {unknown[0]}: interval() takes the tags log and int")
        low, high, log_scale = sweep.start, sweep.end, "log" in sweep.tags
        if not low < high:
            raise ConfigError(
                f"{where}: the interval's low end {low:g} is not below its high end {high:g}: write interval(low, high)"
            )
        if log_scale and low <= 0:
            raise ConfigError(f"{where}: a log-scale interval needs a low end > 0, not {low:g}")
        if "int" in sweep.tags:
            if not (float(low).is_integer() and float(high).is_integer()):
                raise ConfigError(
                    f"{where}: tag(int, interval(low, high)) needs whole numbers, not {low:g} and {high:g}"
                )
            return IntDistribution(int(low), int(high), log=log_scale)
        return FloatDistribution(float(low), float(high), log=log_scale)
    raise ConfigError(f"{where}: {type(sweep).__name__} is not a search space: {SPACE_HELP}")


def parse_search_space(params: Any, arguments: Sequence[str]) -> SearchSpace:
    """The search space of ``hydra.sweeper.params`` and the command line's overrides.

    A sweep override on the command line (``model.optimizer.lr='interval(1e-4,1e-2)'``,
    ``seed=1,2,3``) adds a parameter or replaces the config's; a plain one
    (``method.margin=4``) is passed to every trial and takes the key out of the search.
    """
    parser = OverridesParser.create()
    space = SearchSpace()
    lines = []
    for key, spec in rundir.flatten(params or {}).items():  # {"method": {"margin": ...}} as method.margin
        if isinstance(spec, (list, tuple, ListConfig)):
            raise ConfigError(f"hydra.sweeper.params.{key}={spec} is a list: {SPACE_HELP}")
        lines.append(
            (f"{key}={spec if isinstance(spec, str) else override_value(spec)}", f"hydra.sweeper.params.{key}")
        )
    lines += [(line, "the command line") for line in arguments]
    for line, origin in lines:
        try:
            [override] = parser.parse_overrides([line])
        except HydraException as error:
            reason = " ".join(str(error).split(" See https://")[0].split())
            raise ConfigError(f"{origin}: {line} is not a valid search space ({reason}): {SPACE_HELP}") from None
        name, key = override.key_or_group, override.get_key_element()
        if override.is_sweep_override():
            space.distributions[name] = distribution(override, f"{origin}: {line}")
            space.keys[name], space.specs[name] = key, line.split("=", 1)[1]
        else:
            for table in (space.distributions, space.keys, space.specs):
                table.pop(name, None)
            space.fixed[key] = (
                override.input_line if override.is_delete() else f"{key}={override.get_value_element_as_str()}"
            )
    if not space.distributions:
        raise ConfigError(
            "the hyperparameter search has nothing to search: give hydra.sweeper.params (pick a search "
            "with hparams_search=<name>) or a sweep override, e.g. model.optimizer.lr='interval(1e-4,1e-2)'"
        )
    return space


# --------------------------------------------------------------------------------------------
# checks before Hydra starts


def validation_metric(objective: str) -> str:
    if not objective.endswith("/val"):
        fix = (
            "tune on a metric of the validation sets, e.g. Accuracy/val or distance/AUROC/val, never on the test "
            "sets, whose numbers the paper reports (docs/hparams.md)"
        )
        raise PydanticCustomError("objective", "is not a validation metric", {"fix": fix})
    return objective


class SamplerSettings(BaseModel):
    """``hydra.sweeper.sampler``: an Optuna sampler class and its keyword arguments (the seed comes from
    ``hydra.sweeper.seed``)."""

    model_config = ConfigDict(strict=True, extra="allow")
    target: str = Field(alias="_target_", description="name an Optuna sampler, e.g. {key}=optuna.samplers.TPESampler")


class SweeperSettings(BaseModel):
    """``hydra.sweeper.*``, typed (:class:`.config.MchadOptunaSweeperConf` documents each)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    objective: Annotated[str, AfterValidator(validation_metric)]
    direction: Literal["maximize", "minimize"]
    study_name: str = Field(min_length=1, description="name the study, e.g. {key}=my-search")
    storage: str | None = None
    n_trials: int = Field(ge=1, examples=[20])
    n_jobs: int = Field(ge=1, examples=[4])
    sampler: SamplerSettings = Field(description="give {_target_: optuna.samplers.TPESampler, ...its arguments}")
    seed: int | None = Field(None, ge=0, examples=[0])
    params: dict[str, Any] = {}


def check_settings(settings: Any) -> SweeperSettings:
    """The sweeper's own settings (``hydra.sweeper.*``), typed; ConfigError for the first bad one.

    The sampler is built once, so that a class that is not an Optuna sampler, or arguments it
    refuses, stop the search before anything runs.
    """
    from mchad.schema import check

    if isinstance(settings, DictConfig):  # hydra.sweeper, with the keys that tell Hydra how to build the sweeper
        settings = {k: v for k, v in OmegaConf.to_container(settings, resolve=True).items() if not k.startswith("_")}
    checked = check(SweeperSettings, settings, ("hydra", "sweeper"))
    sampler(checked, seed=checked.seed)
    return checked


def sampler(settings: SweeperSettings, seed: int | None) -> Any:
    """The configured Optuna sampler, given ``seed`` when its class takes one."""
    from optuna.samplers import BaseSampler

    kwargs = settings.sampler.model_extra or {}
    key = f"hydra.sweeper.sampler._target_={settings.sampler.target}"
    example = "e.g. hydra.sweeper.sampler._target_=optuna.samplers.TPESampler"
    if "seed" in kwargs:
        raise ConfigError(
            f"hydra.sweeper.sampler.seed={kwargs['seed']} is set twice: seed the search with hydra.sweeper.seed"
        )
    module, _, name = settings.sampler.target.rpartition(".")
    try:  # not hydra.utils.get_class: it logs an ERROR line of its own before raising
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{key} cannot be imported: name an Optuna sampler class, {example}") from None
    if not (isinstance(cls, type) and issubclass(cls, BaseSampler)):
        raise ConfigError(f"{key} is not an Optuna sampler (optuna.samplers.BaseSampler): name one, {example}")
    seeded = {"seed": seed} if "seed" in inspect.signature(cls).parameters else {}
    try:
        return cls(**kwargs, **seeded)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"{key} refuses the arguments {kwargs} ({error}): give only arguments it takes, "
            "e.g. +hydra.sweeper.sampler.n_startup_trials=5 for the TPESampler"
        ) from None


def probes(dist: Any) -> list[Any]:
    """The values of a distribution that decide whether all of it is valid: its ends, or every choice."""
    return list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high]


def check_search_space(cfg: DictConfig, arguments: Sequence[str], config_dirs: Sequence[Path] = ()) -> None:
    """Check a search before Hydra starts (``cfg``: the composed config of the first job).

    Every parameter must name a key of the config (or a config group), and its ends or
    choices must pass the config's schema (:func:`mchad.schema.validate_config`), so that
    no trial fails on a value the search space allowed. Raises ConfigError (one line).
    """
    from mchad.config import check_overrides, groups
    from mchad.methods import build_method
    from mchad.schema import show, validate_config

    settings = check_settings(cfg.hydra.sweeper)
    subdir = str(OmegaConf.to_container(cfg.hydra.sweep, resolve=False).get("subdir"))
    if "job.num" not in subdir:
        raise ConfigError(
            f"hydra.sweep.subdir={subdir} does not hold the job number, so trials would share run directories: pick "
            "a search with hparams_search=<name> (which sets it), or hydra.sweep.subdir='trial_${hydra.job.num}'"
        )
    space = parse_search_space(settings.params, arguments)
    group_names = groups(config_dirs)
    for name, dist in space.distributions.items():
        spec = f"{space.keys[name]}={space.specs[name]}"
        if name.startswith("hydra.") or name.startswith("hydra/"):
            raise ConfigError(f"the search space {spec} searches Hydra's own settings: search the run's config only")
        if name in group_names:
            check_overrides([f"{name}={choice}" for choice in probes(dist)], config_dirs)
            continue
        missing = object()
        adds = space.keys[name].startswith("+")
        if not adds and OmegaConf.select(cfg, name, default=missing, throw_on_missing=False) is missing:
            raise ConfigError(
                f"the search space {spec} names {name}, which is not a key of this config (method "
                f"{OmegaConf.select(cfg, 'method.name')}): pick the search of the experiment's method, "
                f"hparams_search=<method>, or check the key's spelling ({command('train')} --cfg job prints every key)"
            )
        for value in probes(dist):
            probe = copy.deepcopy(cfg)
            with open_dict(probe):
                OmegaConf.update(probe, name, value, merge=False, force_add=True)
            reaches = f"the search space {spec} reaches {name}={show(value)}"
            try:
                validate_config(probe)
                _, method = build_method(probe.method)  # the constructor's own checks (CAC's n_embedding, ...)
            except ConfigError as error:
                raise ConfigError(f"{reaches}, which is refused: {error}") from None
            if method.uses_outliers and not OmegaConf.select(probe, "data.outliers"):
                raise ConfigError(
                    f"{reaches}, which trains with outliers, but data.outliers is null: pick an experiment with "
                    "training outliers (e.g. experiment=cifar10-gmchad), or keep the key out of the search"
                )


# --------------------------------------------------------------------------------------------
# the sweeper


@contextmanager
def search_lock(sweep_dir: Path) -> Iterator[None]:
    """One search at a time per sweep directory (an OS lock, freed when its process dies)."""
    busy = lambda holder: (
        f"the hyperparameter search in {sweep_dir} is running in process {holder}: wait for it to "
        "finish (or stop it), then start it again to continue the study; or give this search another hydra.sweep.dir"
    )
    with ExitStack() as stack:
        try:
            stack.enter_context(rundir.exclusive(sweep_dir / LOCK_FILE, busy))
        except ConfigError as error:  # only the lock's own refusal ends here; the search's errors pass through
            fail(str(error))
        yield


def objective_of(job: Any, objective: str) -> tuple[float | None, dict[str, float], str]:
    """A finished job's objective value, its validation metrics, and why there is no value (or "")."""
    try:
        returned = job.return_value
    except Exception as error:  # a launcher that reports the task's exception
        return None, {}, f"the job raised {type(error).__name__}: {error}"
    validation = returned.get("validation") if isinstance(returned, dict) else None
    if not validation:
        return None, {}, "the job failed or returned no validation metrics (see error.txt in its directory)"
    if objective not in validation:
        return None, validation, f"the run logged no {objective} (it logged {', '.join(sorted(validation))})"
    value = float(validation[objective])
    if not math.isfinite(value):
        return None, validation, f"{objective} is {value}"
    return value, validation, ""


def run_dir_of(job: Any) -> str:
    """A launched job's run directory (``hydra.runtime.output_dir``), or "" if the launcher did not say."""
    return str(OmegaConf.select(job.hydra_cfg, "hydra.runtime.output_dir", default="") or "") if job.hydra_cfg else ""


def write_best_params(path: Path, best: Any, config: DictConfig, settings: Any, storage: str, counts: str) -> None:
    """``best_params.yaml``: the best trial's overrides, and as comments the commands that run them again."""
    overrides = list(best.user_attrs.get("overrides") or [f"{k}={override_value(v)}" for k, v in best.params.items()])
    base = [o for o in overrides if not o.startswith("hparams_search=")]
    experiment = OmegaConf.select(config, "hydra.runtime.choices.experiment")
    if experiment and not any(o.startswith("experiment=") for o in base):
        base.insert(0, f"experiment={experiment}")
    exact = " ".join(shlex.quote(o) for o in overrides)
    tuned = " ".join(shlex.quote(o) for o in base)
    train = command("train")
    header = [
        f"Best trial of the hyperparameter search {settings.study_name} ({storage}, {counts}):",
        f"trial {best.number}, {settings.objective} = {best.value!r} ({settings.direction}), on validation sets only.",
        "",
        "Run the best trial again, exactly as it ran (a single run, tested on the test sets once):",
        f"  {train} {exact}",
        "The experiment with the tuned values (the search config's own settings, e.g. shorter training, left out):",
        f"  {train} {tuned}",
        "Over seeds, for the tables:",
        f"  {train} -m {tuned} seed=1,2,3,4,5,6",
    ]
    data = {
        "study_name": str(settings.study_name),
        "storage": storage,
        "objective": str(settings.objective),
        "direction": str(settings.direction),
        "value": best.value,
        "trial": best.number,
        "run_dir": best.user_attrs.get(REPORTED) or None,
        "params": dict(best.params),
        "overrides": overrides,
    }
    text = "".join(f"# {line}".rstrip() + "\n" for line in header) + OmegaConf.to_yaml(OmegaConf.create(data))
    atomic_write(path, text)
