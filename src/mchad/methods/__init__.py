"""OOD methods (head, loss terms, prediction, scores) and their registry.

Every ``config/method/<name>.yaml`` holds ``name`` (the ``method`` column of
results.csv), ``_target_`` (a :class:`~mchad.methods.method.Method` subclass) and
its constructor arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from mchad.config import options
from mchad.errors import ConfigError
from mchad.methods.method import Method

METHODS = tuple(options("method"))
"""Names of the method configs in ``config/method/`` (a new yaml there is a new method)."""


def build_method(cfg: DictConfig | Mapping[str, Any]) -> tuple[str, Method]:
    """Instantiate the method of a ``method`` config node; returns ``(name, method)``."""
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name = node.pop("name", None)
    if not name:
        raise ConfigError(f"method config {node} has no name: set method.name (one of {', '.join(METHODS)})")
    if "_target_" not in node:
        raise ConfigError(
            f"method.name={name} has no _target_: set method._target_ to a Method class, e.g. mchad.methods.mchad.MCHAD"
        )
    try:
        method = hydra.utils.instantiate(node)
    except InstantiationException as error:
        # Hydra wraps the constructor's exceptions; a ConfigError already says what to fix
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise
    if not isinstance(method, Method):
        raise ConfigError(f"method._target_={node['_target_']} is not a Method: point it at a class in mchad.methods")
    return name, method


def check_outliers(name: str, method: Method, data: DictConfig | Mapping[str, Any]) -> None:
    """Training ``method`` needs outliers in ``data`` (the ``data`` config node) when it has an outlier term."""
    if method.uses_outliers and not data.get("outliers"):
        raise ConfigError(
            f"method '{name}' has an outlier term (weight_oe>0) but no training outliers: choose them with "
            "outliers=tinyimages300k (or outliers=imagefolder paths.outliers=DIR), or set method.weight_oe=0"
        )
