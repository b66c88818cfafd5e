"""build_method, the method configs in config/method/ and the method part of every experiment."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mchad.config import compose as compose_project
from mchad.errors import ConfigError
from mchad.methods import METHODS, build_method
from mchad.methods.method import Method

CONFIG = Path(__file__).resolve().parents[1] / "config"
DATASETS = {"cifar10": (10, 10), "cifar100": (100, 20), "svhn": (10, 10)}  # n_classes, epochs
BASES = {"gmchad": "mchad", "gcac": "cac", "gcenter": "center"}


@pytest.fixture(scope="module")
def method_config(tmp_path_factory):
    """``method_config(name, n_classes)``: the composed ``method`` node of config/method/<name>.yaml."""
    root = tmp_path_factory.mktemp("config")
    shutil.copytree(CONFIG / "method", root / "method")
    (root / "config.yaml").write_text("defaults:\n  - _self_\n  - method: mchad\ndata:\n  n_classes: 10\n")

    def compose_method(name: str, n_classes: int = 10):
        with initialize_config_dir(str(root), version_base="1.3"):
            return compose("config", overrides=[f"method={name}", f"data.n_classes={n_classes}"]).method

    return compose_method


def test_every_method_class_has_a_config():
    """METHODS is read from config/method/; a Method class of the package without a yaml is unreachable."""
    import mchad.methods

    for module in pkgutil.iter_modules(mchad.methods.__path__):
        importlib.import_module(f"mchad.methods.{module.name}")
    classes = {
        f"{c.__module__}.{c.__qualname__}"
        for c in all_subclasses(Method)
        if c.__module__.startswith("mchad.methods.") and not inspect.isabstract(c)
    }
    targets = {OmegaConf.load(CONFIG / "method" / f"{name}.yaml").get("_target_") for name in METHODS}
    assert classes <= targets | {None}, f"Method classes without a config/method yaml: {classes - targets}"


def all_subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in (direct, *all_subclasses(direct))}


@pytest.mark.parametrize("name", METHODS)
def test_method_configs_build(method_config, name):
    cfg = method_config(name)
    assert cfg.name == name
    built_name, method = build_method(cfg)
    assert built_name == name and isinstance(method, Method)
    assert method.n_classes == 10
    assert method.uses_outliers == (name.startswith("g") or name in ("oe", "energy"))


@pytest.mark.parametrize("name", BASES)
def test_g_variants_compose_their_base(method_config, name):
    g, base = method_config(name), method_config(BASES[name])
    assert g._target_ == base._target_
    assert g.weight_oe > 0 and base.weight_oe == 0


def test_build_method_accepts_plain_dicts_and_unwraps_config_errors():
    name, method = build_method(
        {"name": "softmax", "_target_": "mchad.methods.softmax.Softmax", "n_classes": 3, "n_embedding": 3}
    )
    assert name == "softmax" and method.score_names == ("msp", "maxlogit", "energy")
    with pytest.raises(ConfigError, match="n_embedding=16 must equal n_classes=10"):
        build_method({"name": "cac", "_target_": "mchad.methods.cac.CAC", "n_classes": 10, "n_embedding": 16})


@pytest.mark.parametrize(
    "node,match",
    [
        ({"_target_": "mchad.methods.softmax.Softmax", "n_classes": 3, "n_embedding": 3}, "no name"),
        ({"name": "x", "n_classes": 3}, "no _target_"),
        ({"name": "x", "_target_": "torch.nn.Identity"}, "is not a Method"),
    ],
)
def test_build_method_errors(node, match):
    with pytest.raises(ConfigError, match=match):
        build_method(node)


EXPERIMENTS = [(d, m) for d in DATASETS for m in METHODS]


@pytest.mark.parametrize("dataset,name", EXPERIMENTS, ids=[f"{d}-{m}" for d, m in EXPERIMENTS])
def test_experiment_method_settings(dataset, name):
    n_classes, epochs = DATASETS[dataset]
    cfg = compose_project([f"experiment={dataset}-{name}"])
    assert (cfg.name, cfg.data.name, cfg.method.name) == (f"{dataset}-{name}", dataset, name)
    assert cfg.data.n_classes == n_classes
    assert cfg.trainer.max_epochs == epochs
    _, method = build_method(cfg.method)
    outliers = cfg.data.outliers
    assert method.uses_outliers == (outliers is not None)
    if outliers is not None:
        assert OmegaConf.to_container(outliers, resolve=True) == {
            "name": "tinyimages300k",
            "root": None,
            "batch_size": 256,
        }
    if name in ("cac", "gcac", "softmax", "oe", "energy"):
        assert method.n_embedding == n_classes
