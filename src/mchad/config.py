"""Config composition outside ``@hydra.main`` (tests, ``mchad-data prepare``, notebooks) and
the checks that turn bad names into one-line errors before Hydra prints a stack trace."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from mchad.errors import ConfigError, command

CONFIG_DIR = Path(__file__).resolve().parent / "conf"
"""The project's config tree; shipped inside the package, so an installed copy runs from any directory
(the repository's top-level ``config`` is a link to it)."""


def groups(config_dirs: Sequence[Path] = ()) -> list[str]:
    """The config groups (folders of yaml options, e.g. ``method``, ``model/optimizer``) of the project and
    ``config_dirs``; Hydra's own ``hydra/...`` groups are left to Hydra, whose plugins add options there."""
    found = set()
    for folder in (CONFIG_DIR, *config_dirs):
        for option in Path(folder).rglob("*.yaml"):
            group = option.parent.relative_to(folder).as_posix()
            if group != "." and group.split("/")[0] != "hydra":
                found.add(group)
    return sorted(found)


def options(group: str, config_dirs: Sequence[Path] = ()) -> list[str]:
    """The option names of a config group, e.g. ``options("experiment")``, here and in ``config_dirs``;
    files named ``_*.yaml`` are shared settings that options inherit (``data/_common.yaml``), not options."""
    folders = (CONFIG_DIR, *config_dirs)
    return sorted(
        {p.stem for folder in folders for p in (Path(folder) / group).glob("*.yaml") if not p.stem.startswith("_")}
    )


ALL_DETECTORS = "all"
"""``detectors=all``: every option of ``config/detectors`` (and of ``--config-dir``) that applies to the method."""


def expand_detectors(overrides: Sequence[str], config_dirs: Sequence[Path] = ()) -> list[str]:
    """``detectors=all`` as the list of every detector option, plus ``detectors_all=true``, which makes
    the run skip the detectors that do not apply to its method instead of refusing them.

    The list is read from the config folders here, at the command line, so that
    ``detectors.knn.detector.k=10`` beside ``detectors=all`` overrides a key Hydra composed.
    """
    expanded = []
    for override in overrides:
        if override.lstrip("+") == f"detectors={ALL_DETECTORS}":
            expanded += [f"detectors=[{','.join(options('detectors', config_dirs))}]", "detectors_all=true"]
        else:
            expanded.append(override)
    return expanded


def check_overrides(overrides: Sequence[str], config_dirs: Sequence[Path] = ()) -> None:
    """Raise a one-line :class:`ConfigError` for an override that names an unknown group option.

    Hydra would otherwise fail with a multi-line message. Handles ``group=a,b`` sweeps too.
    """
    known_groups = groups(config_dirs)
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in known_groups or value in ("", "null"):
            continue
        if value.startswith("[") and value.endswith("]"):  # several options of one group: detectors=[knn,vim]
            value = value[1:-1]
        choices = [c for c in value.removeprefix("choice(").removesuffix(")").split(",") if c.strip()]
        known = options(key, config_dirs) + ([ALL_DETECTORS] if key == "detectors" else [])
        for choice in (c.strip() for c in choices):
            if choice not in known:
                raise ConfigError(f"unknown {key} '{choice}': choose one of {', '.join(known)}")


def compose(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None, config_dirs: Sequence[Path] = ()
) -> DictConfig:
    """Compose the project config as ``mchad-train`` would, with the ``hydra:`` resolvers working.

    Args:
        overrides: command-line style overrides, e.g. ``["experiment=quickstart", "seed=3"]``.
        output_dir: the run directory (``hydra.runtime.output_dir``); defaults to Hydra's run dir.
        config_dirs: more config folders searched before the project's (``--config-dir``).

    Raises:
        ConfigError: one line for an unknown group option, key or malformed value.
    """
    overrides = expand_detectors(overrides, config_dirs)
    check_overrides(overrides, config_dirs)
    # the command line's own hydra.searchpath, if any, is among config_dirs already
    overrides = [o for o in overrides if not o.startswith("hydra.searchpath=")]
    searchpath = [f"hydra.searchpath=[{','.join(f'file://{Path(d).absolute()}' for d in config_dirs)}]"]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose(
                config_name="config",
                overrides=[*overrides, *(searchpath if config_dirs else [])],
                return_hydra_config=True,
            )
    except (HydraException, OmegaConfBaseException) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        hint = next((line for line in lines if line.startswith("To append")), "")
        raise ConfigError(
            f"{lines[0].rstrip('.')}: check the key's spelling ({hint or command('train') + ' --cfg job prints every key'})"
        ) from None
    with open_dict(cfg):
        cfg.hydra.runtime.cwd = str(Path.cwd())
        cfg.hydra.runtime.output_dir = str(output_dir or Path.cwd() / "outputs")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg
