"""The typed schema of a run config: every value, with its type and range, checked before any data is loaded.

``validate_config(cfg)`` takes the composed run config (``mchad.config.compose``, or what
Hydra hands ``run.py``), resolves its interpolations and validates it with pydantic v2, in
*strict* mode: an integer field refuses ``2.5``, ``2.0`` and ``"2"`` (no silent truncation),
a bool field refuses ``1`` and ``"yes"``; a float field takes ints, and refuses nan and inf
unless the field says otherwise. The first problem becomes one :class:`~mchad.errors.ConfigError`
line ``<key>=<bad value> <what is wrong>: <how to fix>``.

How the schema is built:

* Fixed parts of the config are pydantic models, one per node: :class:`RunConfig` (top
  level), :class:`ModelConfig`, :class:`DataConfig` (with :class:`Outliers`),
  :class:`TestSet` (each ``testsets`` entry) and :class:`TrainerConfig`. Ranges are
  ``Field`` constraints on small named types (``PositiveInt``, ``Finite`` ...). Values that
  may take several forms (``data.val_size``: a fraction or a count; ``trainer.devices``;
  ``trainer.limit_*_batches`` ...) are :func:`rule` types: a strict union that fails with
  ONE description instead of one error per union member. Choices that live in heavy
  modules (``trainer.precision`` from Lightning) are :func:`choice` types, looked up at first use.
* Nodes that are constructor arguments of a ``_target_`` class, ``method``,
  ``model.backbone``, ``model.optimizer`` and ``model.scheduler``, are validated against the class's ``__init__`` signature: its
  annotations give the types (:func:`arguments_schema` turns the signature into a model),
  :data:`ARGUMENT_RULES` adds the ranges by parameter name, and :data:`ARGUMENT_ORDER` the
  few relations between two arguments. A new method gets its type checks for free, and its
  ranges by naming its parameters like the others (``weight_*``, ``margin``, ...).
* :data:`FIXES` maps key patterns to the "how to fix" half of the message;
  :data:`PROBLEMS` turns pydantic's error types into the "what is wrong" half.

The nodes are checked in the order of :func:`validate_config` (top level, ``paths``,
``model``, ``data``, ``testsets``, ``trainer``, then ``method``, then ``model.backbone``,
whose ``n_outputs`` follows ``method.n_embedding``), so a value copied by an
interpolation is reported under the key the user set. Checks that need more than one
node or the data itself (an outlier set for a method with an outlier term, CAC's
``n_embedding == n_classes``, WideResNet's ``depth = 6n + 4``, data set names) stay with
the code that builds the run.
"""

import importlib
import inspect
import typing
from collections.abc import Callable
from fnmatch import fnmatch
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from mchad.errors import ConfigError

# --------------------------------------------------------------------------------------------
# value types


def rule(description: str, tp: Any) -> Any:
    """A value of type ``tp`` (checked strictly); anything else fails with one error, "must be <description>"."""
    adapter = TypeAdapter(tp)

    def check(value: Any) -> Any:
        try:
            return adapter.validate_python(value, strict=True)
        except ValidationError:
            raise PydanticCustomError("rule", "must be {rule}", {"rule": description}) from None

    return Annotated[Any, PlainValidator(check)]


def choice(values: Callable[[], tuple], *common: Any) -> Any:
    """One of ``values()``, equal in value AND type (``1`` is not ``true``).

    ``values`` is called at the first value that is not one of ``common``: the choices live
    in modules that take seconds to import (Lightning), which a default config need not pay for.
    """
    allowed = cache(values)

    def among(value: Any, choices: tuple) -> bool:
        return any(type(value) is type(c) and value == c for c in choices)

    def check(value: Any) -> Any:
        if among(value, common) or among(value, allowed()):
            return value
        choices = dict.fromkeys(c if isinstance(c, str) else show(c) for c in allowed())
        raise PydanticCustomError("choice", "must be one of {choices}", {"choices": ", ".join(choices)})

    return Annotated[Any, PlainValidator(check)]


def literal_values(tp: Any) -> tuple:
    """The values of a ``Literal`` type, or of a Union of them (Lightning's precision types)."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return tuple(v for arg in typing.get_args(tp) for v in literal_values(arg))


def lightning_precisions() -> tuple:
    """``trainer.precision``: this project's ``auto`` and every value Lightning's Trainer accepts."""
    from lightning_fabric.connector import _PRECISION_INPUT

    return ("auto", *literal_values(_PRECISION_INPUT))


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes that ``model.compile`` accepts besides true and false."""

STEP_COUNT_ARGUMENTS = ("T_max", "total_steps", "total_iters")
"""A learning-rate schedule's length argument; left out of ``model.scheduler``, the training loop
passes the run's number of optimizer steps (:func:`mchad.module.build_scheduler`)."""


def compile_settings() -> tuple:
    """``model.compile``: false, true, or one of :data:`COMPILE_MODES`."""
    return (False, True, *COMPILE_MODES)


def device_visible(accelerator: str) -> str:
    """``trainer.accelerator``: an accelerator that names a device must find one."""
    import torch

    needs = {"gpu": torch.cuda.is_available, "cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if accelerator in needs and not needs[accelerator]():
        kind = "an Apple GPU (mps)" if accelerator == "mps" else "a GPU"
        raise PydanticCustomError(
            "no_device",
            "needs {kind}, but none is visible",
            {
                "kind": kind,
                "fix": "use trainer=cpu (or trainer.accelerator=auto, which takes a GPU only when one is there)",
            },
        )
    return accelerator


Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
Text = Annotated[str, Field(min_length=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]

RGB = 3
"""Images are RGB: ``data.mean`` and ``data.std`` hold one number per channel."""

BatchLimit = rule("a number of batches >= 0, a fraction in [0, 1] or null", Optional[NonNegInt | Fraction])
Devices = rule(
    "a number of devices >= 1, -1 (all), auto, or a list of device indices",
    Union[
        PositiveInt,
        Literal[-1, "auto"],
        Annotated[list[NonNegInt], Field(min_length=1)],
        Annotated[str, Field(pattern=r"^\s*(-1|\d+(\s*,\s*\d+)*\s*,?)\s*$")],
    ],
)

# --------------------------------------------------------------------------------------------
# the fixed nodes


class Node(BaseModel):
    """A config node: strict types, and no keys the code would ignore."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=False, protected_namespaces=())


class Target(BaseModel):
    """A node Hydra instantiates (loggers, callbacks; the backbone before :func:`arguments_schema`)."""

    model_config = ConfigDict(strict=True, extra="allow")
    target: Text = Field(alias="_target_")


class ModelConfig(Node):
    backbone: Target
    pretrained_checkpoint: str | None = None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None = None
    compile: choice(compile_settings, False, True) = False
    channels_last: bool = True
    embedding_plots: bool = False
    projector: bool = False


class Outliers(Node):
    name: Text
    root: str | None = None
    batch_size: PositiveInt | None = None  # null: data.batch_size


class DataConfig(Node):
    """Arguments of :class:`mchad.data.datamodule.OODDataModule` (``name`` is its ``dataset``)."""

    name: Text
    n_classes: Annotated[int, Field(ge=2)]  # a classifier needs two known classes (Method refuses fewer)
    root: str | None = None
    download: bool = True
    val_size: rule("a fraction in (0, 1) or a count >= 1", Union[PositiveInt, Annotated[float, Field(gt=0, lt=1)]]) = (
        0.1
    )
    batch_size: PositiveInt = 128
    batches_per_epoch: PositiveInt | None = None
    eval_batch_size: PositiveInt = 1024
    outliers: Outliers | None = None
    mean: Annotated[
        list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]], Field(min_length=RGB, max_length=RGB)
    ]
    std: Annotated[list[Positive], Field(min_length=RGB, max_length=RGB)]
    crop_padding: NonNegInt = 4
    flip: bool = True
    num_workers: NonNegInt = 0


class TestSet(Node):
    name: Text
    root: str | None = None
    group: str = ""
    label: Text | None = None


class TrainerConfig(Node):
    """The Lightning Trainer arguments of ``config/trainer``; other Trainer arguments pass unchecked."""

    model_config = ConfigDict(extra="allow")
    accelerator: Annotated[Literal["cpu", "gpu", "cuda", "mps", "auto"], AfterValidator(device_visible)] = "auto"
    devices: Devices = "auto"
    strategy: Text = "auto"
    num_nodes: PositiveInt = 1
    sync_batchnorm: bool = False
    precision: choice(lightning_precisions, "auto") = "auto"
    max_epochs: PositiveInt
    limit_train_batches: BatchLimit = None
    limit_val_batches: BatchLimit = None
    limit_test_batches: BatchLimit = None
    limit_predict_batches: BatchLimit = None
    num_sanity_val_steps: Annotated[int, Field(ge=-1)] = 0
    log_every_n_steps: PositiveInt = 50
    fast_dev_run: rule("true, false or a number of batches >= 1", Union[bool, PositiveInt]) = False
    overfit_batches: rule("a number of batches >= 0 or a fraction in [0, 1]", Union[NonNegInt, Fraction]) = 0.0
    gradient_clip_val: NonNegative | None = None
    deterministic: rule("true, false or warn", Union[bool, Literal["warn"]]) = False
    benchmark: bool = False


class PartialTarget(BaseModel):
    """A Hydra partial: the code calls it with the arguments it supplies (a detector's model, head)."""

    model_config = ConfigDict(strict=True, extra="allow")
    target: Text = Field(alias="_target_")
    partial: Literal[True] = Field(alias="_partial_")


class DetectorConfig(Node):
    """One ``config/detectors/<name>.yaml`` (:mod:`mchad.evaluation.detectors`)."""

    detector: PartialTarget
    input: Literal["logits", "features", "embedding", "feature_maps", "inputs"]
    search: dict[Text, Annotated[list[Any], Field(min_length=1)]] = {}


class RunConfig(Node):
    """The top level. ``method`` and ``model.backbone`` get their own schemas (:func:`arguments_schema`)."""

    name: Text
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]  # Lightning's seed_everything range
    threads: PositiveInt | None = None
    tag: Text = "default"
    train: bool = True
    test: bool = True
    ckpt_path: str | None = None
    test_checkpoint: Literal["best", "current"] = "best"
    paths: dict[str, Text | None]  # paths.outliers may be null (download)
    model: ModelConfig
    data: DataConfig
    testsets: list[TestSet]
    ood_folders: list[Text] = []
    trainer: TrainerConfig
    method: dict[str, Any]
    logger: dict[str, Target] | None = None
    callbacks: dict[str, Target] | None = None
    # post-hoc detectors; runs saved before they existed have none of these keys
    detectors: dict[Text, DetectorConfig] | None = None
    detectors_select: Literal["fixed", "val"] = "fixed"
    detectors_fit_samples: PositiveInt | None = None
    detectors_all: bool = False


# --------------------------------------------------------------------------------------------
# constructor arguments: method and backbone

ARGUMENT_RULES: dict[str, Any] = {
    # method.*
    "n_classes": Field(ge=2),
    "n_embedding": Field(ge=1),
    "weight_*": Field(ge=0),
    "margin": Field(gt=0),
    "radius": Field(ge=0),
    "magnitude": Field(gt=0),
    # model.backbone.*
    "depth": Field(ge=10),
    "widen_factor": Field(ge=1),
    "drop_rate": Field(ge=0, lt=1),
    "n_outputs": Field(ge=1),
    # model.optimizer.*, model.scheduler.*
    "lr": Field(gt=0),
    "weight_decay": Field(ge=0),
    "momentum": Field(ge=0),
    "eta_min": Field(ge=0),
}
"""Ranges of constructor arguments by parameter name (a pattern); a ``Literal`` replaces the annotation."""

ARGUMENT_ORDER: list[tuple[str, str]] = [("margin_in", "margin_out")]
"""``(low, high)``: when a class takes both, ``low`` must be below ``high`` (energy: ID energies below
``margin_in``, outlier energies above ``margin_out``)."""


class Arguments(Node):
    """The keys of a ``_target_`` node besides the constructor's arguments."""

    #: check the values against the constructor's annotations (False: only names and :data:`ARGUMENT_RULES`,
    #: for third-party classes whose annotations a YAML value cannot meet, e.g. tuples)
    typed: ClassVar[bool] = True
    #: arguments the code passes when it calls the partial, so the config leaves them out
    supplied: ClassVar[tuple[str, ...]] = ()
    target: Text = Field(alias="_target_")


class MethodArguments(Arguments):
    name: Text  # the method column of results.csv


class OptimizerArguments(Arguments):
    typed = False
    supplied = ("params",)
    partial: Literal[True] = Field(alias="_partial_")


class SchedulerArguments(OptimizerArguments):
    supplied = ("optimizer", *STEP_COUNT_ARGUMENTS)


TARGET_NODES: dict[tuple[str, ...], tuple[str, type[Arguments]]] = {
    ("method",): ("mchad.methods.method.Method", MethodArguments),
    ("model", "backbone"): ("torch.nn.Module", Arguments),
    ("model", "optimizer"): ("torch.optim.Optimizer", OptimizerArguments),
    ("model", "scheduler"): ("torch.optim.lr_scheduler.LRScheduler", SchedulerArguments),
}
"""The nodes validated against their ``_target_`` class's signature: the base class the target must
have, and the model of the node's other keys. Checked in this order (the backbone's ``n_outputs``
is ``method.n_embedding``: a bad value is reported under ``method``)."""


def argument_type(name: str, annotation: Any) -> Any:
    """The annotation of a constructor argument with its range from :data:`ARGUMENT_RULES` (floats finite)."""
    tp = Finite if annotation is float else annotation
    for pattern, constraint in ARGUMENT_RULES.items():
        if fnmatch(name, pattern):
            return constraint if typing.get_origin(constraint) is Literal else Annotated[tp, constraint]
    return tp


@cache
def arguments_schema(cls: type, base: type[Arguments]) -> type[Arguments]:
    """A model of ``cls.__init__``'s arguments: its annotations, ranges from :data:`ARGUMENT_RULES`."""
    try:
        hints = typing.get_type_hints(cls.__init__) if base.typed else {}
    except Exception:  # annotations that do not resolve: types unchecked, ranges still apply
        hints = {}
    fields = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = None if p.name in base.supplied else ... if p.default is p.empty else p.default
        ranged = any(fnmatch(p.name, pattern) for pattern in ARGUMENT_RULES)
        fields[p.name] = (
            argument_type(p.name, hints.get(p.name, float if ranged and not base.typed else Any)),
            default,
        )
    return create_model(f"{cls.__name__}Arguments", __base__=base, **fields)


# --------------------------------------------------------------------------------------------
# messages

PROBLEMS = {
    "int_type": "is not an integer",
    "float_type": "is not a number",
    "finite_number": "is not a finite number",
    "bool_type": "is not a boolean",
    "string_type": "is not a string",
    "list_type": "is not a list",
    "dict_type": "is not a mapping",
    "model_type": "is not a mapping",
    "model_attributes_type": "is not a mapping",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "literal_error": "must be {expected}",
    "string_too_short": "must not be empty",
    "too_short": "must have {min_length} entries",
    "too_long": "must have {max_length} entries",
    "extra_forbidden": "is not a known key",
    "missing": "is missing",
}
"""pydantic's error types as the "what is wrong" half of a message (others use pydantic's own words)."""

FIXES: dict[str, str] = {
    "seed": "give a whole number >= 0, e.g. seed=1",
    "threads": "give a number of CPU threads >= 1, or null for torch's default (threads=4)",
    "name": "give the run a name, e.g. name=my-run",
    "tag": "give the sweep a tag, e.g. tag=default",
    "train": "use train=true or train=false",
    "test": "use test=true or test=false",
    "ckpt_path": "give the path of a checkpoint of this project, e.g. ckpt_path=logs/runs/NAME/TIME/checkpoints/last.ckpt",
    "test_checkpoint": "use test_checkpoint=best (best validation accuracy) or test_checkpoint=current (the last weights)",
    "paths.*": "give a directory, e.g. {key}=/data/mchad",
    "model.optimizer.lr": "use a finite learning rate > 0, e.g. model.optimizer.lr=1e-3",
    "model.optimizer.weight_decay": "use 0 or a small finite weight decay, e.g. model.optimizer.weight_decay=5e-5",
    "model.optimizer._target_": "name a torch optimizer class, e.g. model/optimizer=sgd or model.optimizer._target_=torch.optim.SGD",
    "model.scheduler._target_": "name a torch learning-rate schedule, e.g. model/scheduler=cosine, or model/scheduler=none",
    "model.*._partial_": "keep _partial_: true (the training loop passes the parameters and the step count)",
    "model.compile": "use false, true or a torch.compile mode, e.g. model.compile=reduce-overhead",
    "model.pretrained_checkpoint": "give the weights' file, or model.pretrained_checkpoint=null to train from scratch",
    "model.backbone._target_": "pick a backbone with backbone=wrn40-2 or backbone=wrn-small",
    "model.backbone.n_outputs": "it follows method.n_embedding: set method.n_embedding to a whole number >= 1",
    "model.backbone.depth": "use a WideResNet depth 6n + 4, e.g. model.backbone.depth=40 (or backbone=wrn-small)",
    "model.backbone.widen_factor": "use a whole number >= 1, e.g. model.backbone.widen_factor=2",
    "model.backbone.drop_rate": "use a dropout probability in [0, 1), e.g. model.backbone.drop_rate=0.3",
    "data.name": "pick the ID data set with data=NAME, a file of config/data/ (e.g. data=cifar10)",
    "data.n_classes": "a classifier needs at least 2 known classes, e.g. data.n_classes=10",
    "data.root": "give the folder of a local copy (root/{train,test}/<class>/*), or data.root=null to download",
    "data.val_size": "give a fraction in (0, 1), e.g. data.val_size=0.1, or a number of images, e.g. data.val_size=5000",
    "data.batch_size": "use a whole number of images >= 1, e.g. data.batch_size=128",
    "data.eval_batch_size": "use a whole number of images >= 1, e.g. data.eval_batch_size=1024",
    "data.batches_per_epoch": "use a whole number >= 1, e.g. data.batches_per_epoch=392, or null for one pass",
    "data.outliers": "give {name, root, batch_size} of an outlier set, e.g. data.outliers.name=tinyimages300k, or null",
    "data.outliers.name": "name the outlier set, e.g. data.outliers.name=tinyimages300k",
    "data.outliers.root": "give the folder of a local copy, or data.outliers.root=null",
    "data.outliers.batch_size": "use a whole number >= 1, e.g. data.outliers.batch_size=256, or null for data.batch_size",
    "data.mean": "give 3 numbers in [0, 1], one per RGB channel, e.g. data.mean=[0.4914,0.4824,0.4467]",
    "data.std": "give 3 numbers > 0, one per RGB channel, e.g. data.std=[0.2471,0.2435,0.2616]",
    "data.crop_padding": "use 0 (no random crop) or a few pixels, e.g. data.crop_padding=4",
    "data.num_workers": "use 0 (usually fastest: a batch is one tensor index) or a number of worker processes",
    "testsets": "pick a list with testsets=paper, openood, quickstart, noise, shared or none",
    "testsets.name": "give every test set a name, e.g. {name: gaussian, root: null, group: far}",
    "testsets.root": "give the folder of a local copy, or root: null",
    "testsets.group": "use near, far or '' as the group",
    "testsets.label": "give the set a label for results.csv, or leave the label out",
    "detectors_select": "use detectors_select=fixed (the yaml's hyperparameters) or val (picked by validation AUROC)",
    "detectors_fit_samples": "give a number of training images >= 1, or null for the whole split",
    "detectors_all": "use detectors=all rather than setting detectors_all",
    "detectors.*": "keep the layout of config/detectors/*.yaml: detector (a _partial_ _target_), input, search",
    "trainer.accelerator": "use trainer=cpu, trainer=gpu or trainer.accelerator=auto",
    "trainer.devices": "use trainer.devices=1, -1 (all), auto, or a list of device indices, e.g. trainer.devices=[0,1]",
    "trainer.strategy": "name a Lightning strategy, e.g. trainer.strategy=auto (or trainer=ddp)",
    "trainer.num_nodes": "use a whole number of machines >= 1, e.g. trainer.num_nodes=1",
    "trainer.precision": "use trainer.precision=auto (bf16-mixed on a GPU, 32-true on a CPU), 32-true or bf16-mixed",
    "trainer.max_epochs": "train for one epoch or more (trainer.max_epochs=10)",
    "trainer.limit_*_batches": "use a number of batches, a fraction of them (1.0 = all) or null for all, e.g. {key}=1.0",
    "trainer.num_sanity_val_steps": "use 0 (none), a number of batches, or -1 for all",
    "trainer.log_every_n_steps": "log every step or more, e.g. trainer.log_every_n_steps=20",
    "trainer.fast_dev_run": "use false, true or a number of batches (or debug=fdr)",
    "trainer.overfit_batches": "use 0 (off), a number of batches or a fraction (or debug=overfit)",
    "trainer.gradient_clip_val": "use null (no clipping) or a finite norm >= 0, e.g. trainer.gradient_clip_val=1.0",
    "trainer.deterministic": "use trainer.deterministic=true, false or warn",
    "method": "pick a method with method=mchad (or another config of config/method)",
    "method.name": "name the method, e.g. method.name=mchad",
    "method._target_": "point it at a Method class, e.g. method._target_=mchad.methods.mchad.MCHAD (or pick method=...)",
    "method.n_classes": "it follows data.n_classes: set data.n_classes to the number of known classes (>= 2)",
    "method.n_embedding": "give a whole number of embedding dimensions >= 1, e.g. method.n_embedding=16",
    "method.weight_*": "use a finite weight >= 0 (0 turns the term off), e.g. {key}=1.0",
    "method.margin": "use a margin > 0, e.g. method.margin=4.0",
    "method.radius": "use a radius >= 0, e.g. method.radius=0.0",
    "method.magnitude": "use an anchor magnitude > 0, e.g. method.magnitude=2.0",
    "method.margin_form": "use method.margin_form=reference (the original code) or method.margin_form=paper",
    "method.margin_in": "use finite energies with margin_in < margin_out, e.g. method.margin_in=-25 method.margin_out=-7",
    "method.margin_out": "use finite energies with margin_in < margin_out, e.g. method.margin_in=-25 method.margin_out=-7",
    "logger": "pick loggers with logger=default or logger=none",
    "logger.*": "give each logger a _target_ class, e.g. pytorch_lightning.loggers.CSVLogger (or logger=none)",
    "callbacks": "pick callbacks with callbacks=default or callbacks=none",
    "callbacks.*": "give each callback a _target_ class, e.g. pytorch_lightning.callbacks.RichProgressBar (or callbacks=none)",
}
"""The "how to fix" half of a message, by key pattern (list indices left out, ``{key}``: the full key)."""

TYPE_FIXES = {
    "bool_type": "use {key}=true or {key}=false",
    "extra_forbidden": "remove it or fix its spelling ({known})",
    "missing": "add it, e.g. +{key}=VALUE",
}
"""Fixes by error type, for keys without an entry in :data:`FIXES` (and every unknown key)."""


def show(value: Any) -> str:
    """A value as the config spells it: ``true``, ``null``, ``'abc'``, ``[0.5,0.5]``, ``nan``."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def key_of(loc: tuple) -> str:
    """``("testsets", 2, "name")`` -> ``testsets[2].name``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def fields_at(model: Any, loc: tuple) -> list[str]:
    """The keys the schema knows in the node at ``loc`` (for an unknown key's hint)."""

    def unwrap(tp: Any) -> Any:  # Annotated[X, ...] -> X, Optional[X] -> X
        while typing.get_origin(tp) in (Annotated, Union):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        return tp

    tp = unwrap(model)
    for part in loc:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or name: f for name, f in tp.model_fields.items()}
            tp = unwrap(fields[part].annotation) if part in fields else None
        else:  # list[X] or dict[str, X]
            tp = unwrap(typing.get_args(tp)[-1]) if typing.get_args(tp) else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items()]
    return []


def message(error: dict, model: type[BaseModel], prefix: tuple = ()) -> str:
    """One line for a pydantic error: ``<key>=<bad value> <what is wrong>: <how to fix>``."""
    loc = prefix + tuple(error["loc"])
    key = key_of(loc)
    ctx = {
        k: v if k == "expected" else show(int(v) if isinstance(v, float) and v.is_integer() else v)
        for k, v in error.get("ctx", {}).items()
    }
    problem = PROBLEMS[error["type"]].format(**ctx) if error["type"] in PROBLEMS else error["msg"]
    head = f"{key} {problem}" if error["type"] == "missing" else f"{key}={show(error['input'])} {problem}"
    pattern_key = ".".join(str(p) for p in loc if not isinstance(p, int))
    fix = error.get("ctx", {}).get("fix")
    if fix is None and error["type"] != "extra_forbidden":
        fix = next((hint for pattern, hint in FIXES.items() if fnmatch(pattern_key, pattern)), None)
    if fix is None:
        known = ", ".join(fields_at(model, tuple(error["loc"])[:-1])) or "see the config files"
        fix = TYPE_FIXES.get(error["type"], "fix {key} in the config or override it, e.g. {key}=VALUE")
        fix = fix.replace("{known}", f"known here: {known}")
    return " ".join(f"{head}: {fix.replace('{key}', key)}".split())


def check(model: type[BaseModel], values: Any, prefix: tuple = ()) -> BaseModel:
    """Validate ``values`` with ``model``; the first problem raises a one-line ConfigError."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise ConfigError(message(error.errors()[0], model, prefix)) from None


def locate(path: str) -> Any:
    """The object a dotted path names, e.g. ``mchad.methods.mchad.MCHAD``."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def target_class(node: dict, prefix: tuple, base: str) -> type:
    """The class a ``_target_`` names; it must import and be a ``base``."""
    key = key_of((*prefix, "_target_"))
    target = node.get("_target_")
    fix = FIXES.get(key, "point it at an importable class")
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{key}={show(target)} is not a class name: {fix}")
    try:
        cls = locate(target)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{key}={show(target)} cannot be imported: {fix}") from None
    if not isinstance(cls, type) or not issubclass(cls, locate(base)):
        raise ConfigError(f"{key}={show(target)} is not a {base.rpartition('.')[2]}: {fix}")
    return cls


def check_arguments(node: dict, prefix: tuple, base: str, keys: type[Arguments]) -> None:
    """Validate a ``_target_`` node against its class's ``__init__`` (:func:`arguments_schema`)."""
    cls = target_class(node, prefix, base)
    schema = arguments_schema(cls, keys)
    arguments = check(schema, node, prefix)
    for low, high in ARGUMENT_ORDER:
        lo, hi = getattr(arguments, low, None), getattr(arguments, high, None)
        if lo is not None and hi is not None and not lo < hi:
            key, other = key_of((*prefix, low)), key_of((*prefix, high))
            raise ConfigError(f"{key}={show(lo)} must be below {other}={show(hi)}: {FIXES.get(key, f'lower {key}')}")


# --------------------------------------------------------------------------------------------
# entry point


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain values, interpolations resolved, without Hydra's own node."""
    values = {}
    for key in cfg:
        if key == "hydra":
            continue
        try:
            value = OmegaConf.select(cfg, str(key), throw_on_missing=True)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as error:
            full_key = error.full_key or key
            raise ConfigError(f"{full_key} is missing (???): set it, e.g. {full_key}=VALUE") from None
        except OmegaConfBaseException as error:
            reason = " ".join(str(error).splitlines()[0].split())
            full_key = getattr(error, "full_key", None) or key
            raise ConfigError(f"{full_key} cannot be resolved ({reason}): fix the ${{...}} interpolation") from None
        values[str(key)] = value
    return values


def validate_config(cfg: DictConfig) -> None:
    """Check every value of the composed run config ``cfg``; raise ConfigError (one line) for the first problem.

    Order: the fixed nodes (:class:`RunConfig`), then ``method`` and ``model.backbone``
    against their ``_target_`` classes. Nothing is instantiated and no data is touched.
    """
    values = resolved(cfg)
    check(RunConfig, values)
    for path, (base, keys) in TARGET_NODES.items():
        node = values
        for part in path:
            node = node[part]
        if node is not None:  # model.scheduler: null = a constant learning rate
            check_arguments(node, path, base, keys)


__all__ = ["ARGUMENT_RULES", "FIXES", "RunConfig", "validate_config"]
