"""mchad.schema.validate_config: every bad value is one ConfigError line naming the key and the fix."""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from mchad.config import CONFIG_DIR, compose, options
from mchad.errors import ConfigError
from mchad.methods.mchad import MCHAD
from mchad.schema import TARGET_NODES, check_arguments, validate_config

GROUPS = {path.name for path in CONFIG_DIR.iterdir() if path.is_dir()}


@cache
def composed(groups: tuple[str, ...]) -> DictConfig:
    return compose(list(groups))


def fast_compose(overrides: list[str]) -> DictConfig:
    """``compose(overrides)``, with one real composition per set of group choices (``experiment=...``,
    ``trainer=gpu``): the value overrides (``seed=abc``) are applied to a copy as Hydra's last step
    of composing applies them (``OmegaConf.update``; ``+key`` adds, ``~key`` deletes): ~30 ms
    instead of a real compose's ~200 ms of CPU (more on a busy machine), for ~150 cases.
    :func:`test_fast_compose_is_compose` checks that both give the same config.
    """
    is_group = [o.partition("=")[0].lstrip("+~") in GROUPS for o in overrides]
    cfg = copy.deepcopy(composed(tuple(o for o, g in zip(overrides, is_group) if g)))
    values = OverridesParser.create().parse_overrides([o for o, g in zip(overrides, is_group) if not g])
    for override in values:
        key = override.key_or_group
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            with open_dict(node):
                del node[leaf]
        else:
            adds = override.is_add() or override.is_force_add()
            OmegaConf.update(cfg, key, override.value(), merge=True, force_add=adds)
    return cfg


QUICK = "experiment=quickstart"
ENERGY = "experiment=cifar10-energy"
CAC = "experiment=cifar10-cac"
GMCHAD = "experiment=cifar10-gmchad"
II = "experiment=cifar10-ii"

# (overrides, the key the message must start with)
BAD = [
    # top level
    ([QUICK, "seed=abc"], "seed="),
    ([QUICK, "seed=-1"], "seed="),
    ([QUICK, "seed=1.5"], "seed="),
    ([QUICK, "seed=4294967296"], "seed="),
    ([QUICK, "threads=0"], "threads="),
    ([QUICK, "threads=abc"], "threads="),
    ([QUICK, "threads=2.5"], "threads="),
    ([QUICK, "name="], "name="),
    ([QUICK, "train=1"], "train="),
    ([QUICK, "test=yes"], "test="),
    ([QUICK, "test_checkpoint=last"], "test_checkpoint="),
    ([QUICK, "ckpt_path=5"], "ckpt_path="),
    ([QUICK, "paths.data_dir=5"], "paths.data_dir="),
    ([QUICK, "+unknown_key=1"], "unknown_key="),
    # model
    ([QUICK, "model.optimizer.lr=nan"], "model.optimizer.lr="),
    ([QUICK, "model.optimizer.lr=inf"], "model.optimizer.lr="),
    ([QUICK, "model.optimizer.lr=-1e-3"], "model.optimizer.lr="),
    ([QUICK, "model.optimizer.lr=0"], "model.optimizer.lr="),
    ([QUICK, "model.optimizer.lr=fast"], "model.optimizer.lr="),
    ([QUICK, "model.optimizer.weight_decay=-1e-5"], "model.optimizer.weight_decay="),
    ([QUICK, "model.optimizer.weight_decay=inf"], "model.optimizer.weight_decay="),
    ([QUICK, "model.compile=fast"], "model.compile="),
    ([QUICK, "model.compile=1"], "model.compile="),
    ([QUICK, "model.channels_last=0"], "model.channels_last="),
    ([QUICK, "+model.momentum=0.9"], "model.momentum="),
    ([QUICK, "model.backbone.drop_rate=1.0"], "model.backbone.drop_rate="),
    ([QUICK, "model.backbone.depth=abc"], "model.backbone.depth="),
    ([QUICK, "model.backbone._target_=mchad.nn.nope.Net"], "model.backbone._target_="),
    # data
    ([QUICK, "data.batch_size=0"], "data.batch_size="),
    ([QUICK, "data.batch_size=2.5"], "data.batch_size="),
    ([QUICK, "data.eval_batch_size=0"], "data.eval_batch_size="),
    ([QUICK, "data.batches_per_epoch=0"], "data.batches_per_epoch="),
    ([GMCHAD, "data.outliers.batch_size=0"], "data.outliers.batch_size="),
    ([GMCHAD, "data.outliers.batch_size=1.5"], "data.outliers.batch_size="),
    ([GMCHAD, "+data.outliers.weight=2"], "data.outliers.weight="),
    ([QUICK, "data.outliers={root: /tmp}"], "data.outliers.name"),
    ([QUICK, "data.val_size=0"], "data.val_size="),
    ([QUICK, "data.val_size=-0.1"], "data.val_size="),
    ([QUICK, "data.val_size=1.5"], "data.val_size="),
    ([QUICK, "data.val_size=abc"], "data.val_size="),
    ([QUICK, "data.val_size=1.0"], "data.val_size="),
    ([QUICK, "data.crop_padding=-1"], "data.crop_padding="),
    ([QUICK, "data.crop_padding=1.5"], "data.crop_padding="),
    ([QUICK, "data.flip=1"], "data.flip="),
    ([QUICK, "data.flip=yes"], "data.flip="),
    ([QUICK, "data.mean=[0.5,0.5]"], "data.mean="),
    ([QUICK, "data.mean=[0.5,0.5,0.5,0.5]"], "data.mean="),
    ([QUICK, "data.mean=[120,120,120]"], "data.mean"),
    ([QUICK, "data.std=[0.2,0.0,0.2]"], "data.std"),
    ([QUICK, "data.std=[0.2,-0.1,0.2]"], "data.std"),
    ([QUICK, "data.std=[0.2,nan,0.2]"], "data.std"),
    ([QUICK, "data.n_classes=0"], "data.n_classes="),
    ([QUICK, "data.n_classes=6.5"], "data.n_classes="),
    ([QUICK, "+data.shuffle=true"], "data.shuffle="),
    # testsets
    ([QUICK, "testsets.0.name="], "testsets[0].name="),
    ([QUICK, "testsets.1.group=1"], "testsets[1].group="),
    ([QUICK, "+testsets.0.weight=1"], "testsets[0].weight="),
    # trainer
    ([QUICK, "trainer.max_epochs=abc"], "trainer.max_epochs="),
    ([QUICK, "trainer.max_epochs=0"], "trainer.max_epochs="),
    ([QUICK, "trainer.max_epochs=2.5"], "trainer.max_epochs="),
    ([QUICK, "trainer.precision=fp16"], "trainer.precision="),
    ([QUICK, "trainer.precision=null"], "trainer.precision="),
    ([QUICK, "trainer.accelerator=tpu"], "trainer.accelerator="),
    ([QUICK, "trainer=gpu"], "trainer.accelerator="),
    (["trainer=ddp"], "trainer.accelerator="),
    ([QUICK, "trainer.devices=0"], "trainer.devices="),
    ([QUICK, "trainer.devices=abc"], "trainer.devices="),
    ([QUICK, "trainer.num_nodes=0"], "trainer.num_nodes="),
    ([QUICK, "trainer.limit_train_batches=1.5"], "trainer.limit_train_batches="),
    ([QUICK, "trainer.limit_val_batches=-1"], "trainer.limit_val_batches="),
    ([QUICK, "trainer.limit_test_batches=abc"], "trainer.limit_test_batches="),
    ([QUICK, "trainer.log_every_n_steps=0"], "trainer.log_every_n_steps="),
    ([QUICK, "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val="),
    ([QUICK, "trainer.gradient_clip_val=inf"], "trainer.gradient_clip_val="),
    ([QUICK, "trainer.deterministic=maybe"], "trainer.deterministic="),
    ([QUICK, "trainer.deterministic=1"], "trainer.deterministic="),
    ([QUICK, "trainer.benchmark=1"], "trainer.benchmark="),
    ([QUICK, "trainer.fast_dev_run=-1"], "trainer.fast_dev_run="),
    ([QUICK, "trainer.overfit_batches=2.5"], "trainer.overfit_batches="),
    ([QUICK, "+trainer.max_epoch=3"], "trainer.max_epoch="),
    # method
    ([QUICK, "method.n_embedding=2.5"], "method.n_embedding="),
    ([QUICK, "method.n_embedding=0"], "method.n_embedding="),
    ([QUICK, "method.n_embedding=abc"], "method.n_embedding="),
    ([QUICK, "method.margin=0"], "method.margin="),
    ([QUICK, "method.margin=-1"], "method.margin="),
    ([QUICK, "method.radius=-1"], "method.radius="),
    ([QUICK, "method.weight_ce=-1"], "method.weight_ce="),
    ([QUICK, "method.weight_center=inf"], "method.weight_center="),
    ([QUICK, "method.weight_oe=nan"], "method.weight_oe="),
    ([QUICK, "method.margin_form=other"], "method.margin_form="),
    ([QUICK, "method.n_classes=1"], "method.n_classes="),
    ([QUICK, "+method.momentum=0.9"], "method.momentum="),
    ([QUICK, "method._target_=mchad.methods.nope.Nope"], "method._target_="),
    ([QUICK, "method._target_=mchad.nn.wrn.WideResNet"], "method._target_="),
    ([CAC, "method.magnitude=0"], "method.magnitude="),
    ([CAC, "method.weight_tuplet=-0.5"], "method.weight_tuplet="),
    ([ENERGY, "method.margin_in=nan"], "method.margin_in="),
    ([ENERGY, "method.margin_out=-inf"], "method.margin_out="),
    ([ENERGY, "method.margin_in=0", "method.margin_out=-7"], "method.margin_in="),
    ([ENERGY, "method.weight_energy=-0.1"], "method.weight_energy="),
    ([II, "method.batch_norm=1"], "method.batch_norm="),
    ([II, "method.weight_separation=-100"], "method.weight_separation="),
    # loggers and callbacks
    ([QUICK, "logger.csv._target_=5"], "logger.csv._target_="),
]

GOOD = [
    [QUICK],
    [QUICK, "seed=0", "threads=2", "model.optimizer.lr=1", "model.optimizer.weight_decay=0"],
    [QUICK, "model.compile=reduce-overhead", "trainer.precision=bf16-mixed"],
    [QUICK, "model.compile=true", "trainer.precision=16", "trainer.deterministic=warn"],
    [QUICK, "data.val_size=100", "data.batches_per_epoch=10", "data.crop_padding=0", "data.flip=true"],
    [QUICK, "trainer.limit_train_batches=0.5", "trainer.limit_val_batches=0", "trainer.limit_test_batches=3"],
    [QUICK, "trainer.devices=auto", "trainer.gradient_clip_val=1", "trainer.fast_dev_run=2"],
    [QUICK, "method.radius=1", "method.margin_form=paper", "method.weight_oe=0"],
    [QUICK, "test_checkpoint=current", "ckpt_path=some/last.ckpt", "train=false"],
    [QUICK, "data.outliers={name: imagefolder, root: /tmp/outliers, batch_size: null}"],
    [QUICK, "debug=fdr"],
    [QUICK, "debug=limit"],
    [QUICK, "debug=overfit"],
    [QUICK, "logger=none", "callbacks=none", "testsets=none"],
    [QUICK, "testsets=openood"],
    [QUICK, "testsets=shared"],
    ["trainer=cpu"],
    ["trainer=cpu", "method=cac"],
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[" ".join(o[1:]) or o[0] for o, _ in BAD])
def test_bad_value_is_one_line_with_key_and_fix(overrides, key, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # trainer=gpu / ddp: refused without a GPU
    cfg = fast_compose(overrides)
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(key), text
    problem, _, fix = text.partition(": ")
    assert problem and len(fix.strip()) > 5, text


def test_enough_bad_cases():
    assert len(BAD) >= 45


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_validates(experiment):
    validate_config(composed((f"experiment={experiment}",)))


@pytest.mark.parametrize("overrides", GOOD, ids=[" ".join(o) for o in GOOD])
def test_legal_overrides_validate(overrides):
    validate_config(fast_compose(overrides))


def test_gpu_trainer_validates_when_a_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    validate_config(compose([QUICK, "trainer=gpu"]))


def test_no_gpu_message_says_to_use_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        ConfigError, match=r"^trainer\.accelerator='gpu' needs a GPU, but none is visible: use trainer=cpu"
    ):
        validate_config(compose([QUICK, "trainer=gpu"]))


def test_missing_threads_counts_as_null():
    cfg = fast_compose([QUICK])
    with open_dict(cfg):
        del cfg["threads"]
    validate_config(cfg)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ([QUICK, "seed=abc"], "seed='abc' is not an integer: use a whole number in [0, 4294967295], e.g. seed=1"),
        (
            [QUICK, "trainer.max_epochs=0"],
            "trainer.max_epochs=0 must be at least 1: train for one epoch or more (trainer.max_epochs=10)",
        ),
        ([QUICK, "method.n_embedding=2.5"], "method.n_embedding=2.5 is not an integer: "),
        ([QUICK, "data.flip=1"], "data.flip=1 is not a boolean: use data.flip=true or data.flip=false"),
        (
            [QUICK, "data.val_size=1.0"],
            "data.val_size=1.0 must be a fraction in (0, 1) or a whole count >= 1 (1.0 is neither: write 1 for one image)",
        ),
        (
            [QUICK, "+trainer.max_epoch=3"],
            "trainer.max_epoch=3 is not a known key: remove it or fix its spelling (known here: accelerator, strategy,",
        ),
        (
            [QUICK, "model.backbone.drop_rate=1.0"],
            "model.backbone.drop_rate=1.0 must be less than 1: use a dropout probability in [0, 1)",
        ),
        (
            [QUICK, "data.batch_size=0"],
            "data.batch_size=0 must be at least 1: use a whole number >= 1, e.g. data.batch_size=128",
        ),
    ],
)
def test_message_wording(overrides, expected):
    with pytest.raises(ConfigError) as caught:
        validate_config(fast_compose(overrides))
    assert str(caught.value).startswith(expected)


def test_first_problem_is_reported():
    with pytest.raises(ConfigError, match=r"^seed="):
        validate_config(fast_compose([QUICK, "seed=-1", "trainer.max_epochs=0", "method.margin=0"]))


def test_validation_leaves_the_config_alone():
    cfg = fast_compose([QUICK])
    before = str(cfg)
    validate_config(cfg)
    assert str(cfg) == before


@pytest.mark.parametrize("overrides", [o for o, _ in BAD[::25]] + GOOD[1::8], ids=lambda o: " ".join(o))
def test_fast_compose_is_compose(overrides):
    def plain(cfg):
        return OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"})

    assert plain(fast_compose(overrides)) == plain(compose(overrides))


class FreeMethod(MCHAD):
    """A method the schema has never heard of: its signature alone gives the checks."""

    def __init__(self, n_classes: int, n_embedding: int, weight_new: float = 1.0, steps: int = 3, warm: bool = False):
        super().__init__(n_classes, n_embedding)


@pytest.mark.parametrize(
    "arguments,key",
    [
        ({"steps": 2.5}, "method.steps=2.5 is not an integer"),
        ({"warm": "yes"}, "method.warm='yes' is not a boolean: use method.warm=true or method.warm=false"),
        ({"weight_new": -1.0}, "method.weight_new=-1.0 must be at least 0"),
        ({"weight_new": float("inf")}, "method.weight_new=inf is not a finite number"),
        ({"n_embedding": 0}, "method.n_embedding=0 must be at least 1"),
        ({"margin": 4.0}, "method.margin=4.0 is not a known key"),
    ],
)
def test_a_new_method_is_checked_by_its_signature(arguments, key):
    node = {"name": "free", "_target_": f"{__name__}.FreeMethod", "n_classes": 10, "n_embedding": 16, **arguments}
    base, keys, _ = TARGET_NODES[("method",)]
    with pytest.raises(ConfigError) as caught:
        check_arguments(node, ("method",), base, keys)
    assert str(caught.value).startswith(key), caught.value


def test_a_new_method_with_good_arguments_passes():
    node = {
        "name": "free",
        "_target_": f"{__name__}.FreeMethod",
        "n_classes": 10,
        "n_embedding": 16,
        "weight_new": 0,
        "steps": 2,
        "warm": True,
    }
    check_arguments(node, ("method",), *TARGET_NODES[("method",)])
