"""The typed schema of a run config: every value, with its type and range, checked before any data is loaded.

``validate_config(cfg)`` resolves the composed run config and validates it with pydantic v2 in
*strict* mode: an integer field refuses ``2.5``, ``2.0`` and ``"2"``, a bool field ``1`` and
``"yes"``, a float field nan and inf unless it says otherwise. The first problem becomes one
:class:`~mchad.errors.ConfigError` line ``<key>=<bad value> <what is wrong>: <how to fix>``; the
fix is the field's ``description`` (``{key}`` stands for the full key), else derived from its
type, bounds and default (:func:`fix_for`: ``use a whole number >= 1, e.g. data.batch_size=128``).

Fixed nodes are pydantic models (:class:`RunConfig` and its parts). Nodes whose keys are a class's
constructor arguments (``trainer``, ``method``, ``model.backbone``, ``model.optimizer``,
``model.scheduler``: :data:`TARGET_NODES`) are checked against that class's ``__init__``
signature (:func:`arguments_schema`), with ranges from :data:`RULES` by parameter name (a
pattern such as ``weight_*``: ``torch.optim.SGD`` cannot carry this project's ranges, and a new
method gets its ranges by naming its parameters like the others). They are checked in that
order, so a value copied by an interpolation is reported under the key the user set. Checks
that need several nodes or the data (an outlier set for an outlier term, WideResNet's ``depth =
6n + 4``, data set names) stay with the code that builds the run.
"""

import inspect
import pydoc
import types
import typing
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
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined

from mchad.errors import ConfigError

# --------------------------------------------------------------------------------------------
# value types


def rule(description: str, tp: Any, fix: str | None = None) -> Any:
    """A value of type ``tp`` (checked strictly); anything else fails with one error, "must be <description>"."""
    adapter = TypeAdapter(tp)

    def check(value: Any) -> Any:
        try:
            return adapter.validate_python(value, strict=True)
        except ValidationError:
            raise PydanticCustomError("rule", "must be {rule}", {"rule": description}) from None

    return Annotated[Any, PlainValidator(check), Field(description=fix)]


def literal_values(tp: Any) -> tuple:
    """The values of a ``Literal`` type, or of a Union of them (Lightning's precision types)."""
    args = typing.get_args(tp)
    return args if typing.get_origin(tp) is Literal else tuple(v for arg in args for v in literal_values(arg))


@cache
def lightning_precisions() -> tuple:
    import pytorch_lightning

    return literal_values(typing.get_type_hints(pytorch_lightning.Trainer.__init__)["precision"])


def precision(value: Any) -> Any:
    """``trainer.precision``: ``auto`` (this project's) or a value of the Trainer's signature, equal in value
    AND type (``16`` is not ``"16"``); Lightning is imported only for a value other than ``auto``."""
    if value == "auto" or any(type(value) is type(c) and value == c for c in lightning_precisions()):
        return value
    choices = ", ".join(dict.fromkeys(c if isinstance(c, str) else show(c) for c in ("auto", *lightning_precisions())))
    raise PydanticCustomError("choice", "must be one of {choices}", {"choices": choices})


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes that ``model.compile`` accepts besides true and false."""

STEP_COUNT_ARGUMENTS = ("T_max", "total_steps", "total_iters")
"""A learning-rate schedule's length argument; left out of ``model.scheduler``, the training loop
passes the run's number of optimizer steps (:func:`mchad.module.build_scheduler`)."""


def device_visible(accelerator: str) -> str:
    """``trainer.accelerator``: an accelerator that names a device must find one."""
    import torch

    needs = {"gpu": torch.cuda.is_available, "cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if accelerator in needs and not needs[accelerator]():
        kind = "an Apple GPU (mps)" if accelerator == "mps" else "a GPU"
        fix = "use trainer=cpu (or trainer.accelerator=auto, which takes a GPU only when one is there)"
        raise PydanticCustomError("no_device", "needs {kind}, but none is visible", {"kind": kind, "fix": fix})
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

Devices = rule(
    "a number of devices >= 1, -1 (all), auto, or a list of device indices",
    Union[
        PositiveInt,
        Literal[-1, "auto"],
        Annotated[list[NonNegInt], Field(min_length=1)],
        Annotated[str, Field(pattern=r"^\s*(-1|\d+(\s*,\s*\d+)*\s*,?)\s*$")],
    ],
    "e.g. {key}=1 or {key}=[0,1]",
)

# --------------------------------------------------------------------------------------------
# the fixed nodes


class Node(BaseModel):
    """A config node: strict types, and no keys the code would ignore."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=False, protected_namespaces=())


class Target(BaseModel):
    """A node Hydra instantiates (loggers, callbacks); its arguments are the class's business."""

    model_config = ConfigDict(strict=True, extra="allow")
    target: Text = Field(alias="_target_", description="give an importable class, e.g. {key}=torch.nn.Identity")


class ModelConfig(Node):
    backbone: Target  # then checked against its class (TARGET_NODES)
    pretrained_checkpoint: str | None = Field(None, description="give the weights' file, or {key}=null (no weights)")
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None = None
    compile: rule(
        f"true, false or one of {', '.join(COMPILE_MODES)}",
        Union[bool, Literal[COMPILE_MODES]],
        "e.g. {key}=reduce-overhead",
    ) = False
    channels_last: bool = True
    embedding_plots: bool = False
    projector: bool = False


class Outliers(Node):
    name: Text = Field(description="name the outlier set, e.g. {key}=tinyimages300k")
    root: str | None = Field(None, description="give the folder of a local copy, or {key}=null")
    batch_size: PositiveInt | None = Field(None, examples=[256])  # null: data.batch_size


class DataConfig(Node):
    """Arguments of :class:`mchad.data.datamodule.OODDataModule` (``name`` is its ``dataset``)."""

    name: Text = Field(description="pick the ID data set with data=NAME, a file of config/data/ (e.g. data=cifar10)")
    n_classes: Annotated[int, Field(ge=2, examples=[10])]  # a classifier needs two known classes
    root: str | None = Field(None, description="give a local copy's folder (root/{train,test}/<class>/*), or null")
    download: bool = True
    val_size: rule(
        "a fraction in (0, 1) or a whole count >= 1 (1.0 is neither: write 1 for one image)",
        Union[PositiveInt, Annotated[float, Field(gt=0, lt=1)]],
        "give a fraction in (0, 1), e.g. {key}=0.1, or a number of images, e.g. {key}=5000",
    ) = 0.1
    batch_size: PositiveInt = 128
    batches_per_epoch: PositiveInt | None = Field(None, examples=[392])  # null: one pass over the train split
    eval_batch_size: PositiveInt = 1024
    outliers: Outliers | None = Field(None, description="give {name, root, batch_size} of an outlier set, or null")
    mean: Annotated[
        list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]], Field(min_length=RGB, max_length=RGB)
    ] = Field(description="give 3 numbers in [0, 1], one per RGB channel, e.g. data.mean=[0.4914,0.4824,0.4467]")
    std: Annotated[list[Positive], Field(min_length=RGB, max_length=RGB)] = Field(
        description="give 3 numbers > 0, one per RGB channel, e.g. data.std=[0.2471,0.2435,0.2616]"
    )
    crop_padding: NonNegInt = Field(4, description="use 0 (no random crop) or a few pixels, e.g. {key}=4")
    flip: bool = True
    num_workers: NonNegInt = Field(0, description="use 0 (usually fastest: a batch is one tensor index) or more")


class TestSet(Node):
    name: Text = Field(description="give every test set a name, e.g. {name: gaussian, root: null, group: far}")
    root: str | None = Field(None, description="give the folder of a local copy, or root: null")
    group: str = Field("", description="use near, far or '' as the group")
    label: Text | None = Field(None, description="give the set a label for results.csv, or leave the label out")


class PartialTarget(Target):
    """A Hydra partial: the code calls it with the arguments it supplies (a detector's model, head)."""

    partial: Literal[True] = Field(alias="_partial_")


class DetectorConfig(Node):
    """One ``config/detectors/<name>.yaml`` (:mod:`mchad.evaluation.detectors`)."""

    detector: PartialTarget
    input: Literal["logits", "features", "embedding", "feature_maps", "inputs"]
    search: dict[Text, Annotated[list[Any], Field(min_length=1)]] = {}


class RunConfig(Node):
    """The top level. ``trainer``, ``method`` and ``model.backbone`` get their own schemas (:data:`TARGET_NODES`)."""

    name: Text = Field(description="give the run a name, e.g. name=my-run")
    seed: Annotated[int, Field(ge=0, le=2**32 - 1, examples=[1])]  # Lightning's seed_everything range
    threads: PositiveInt | None = Field(None, description="give a number of CPU threads >= 1 (threads=4), or null")
    tag: Text = "default"
    train: bool = True
    test: bool = True
    ckpt_path: str | None = Field(
        None, description="give a checkpoint, e.g. {key}=logs/runs/NAME/TIME/checkpoints/last.ckpt"
    )
    test_checkpoint: Literal["best", "current"] = Field(
        "best", description="best: the best validation accuracy, current: the last weights"
    )
    debug: Text | None = None  # the debug group's option: marks the results (results.csv's debug column)
    paths: dict[str, Text | None] = Field(description="give a directory, e.g. {key}=/data/mchad")  # outliers: null
    model: ModelConfig
    data: DataConfig
    testsets: list[TestSet] = Field(description="pick a list, e.g. testsets=paper (or openood, noise, none...)")
    ood_folders: list[Text] = []
    trainer: dict[str, Any]
    method: dict[str, Any] = Field(description="pick a method with method=mchad (or another config of config/method)")
    logger: dict[str, Target] | None = Field(None, description="pick logger=default or logger=none")
    callbacks: dict[str, Target] | None = Field(None, description="pick callbacks=default or callbacks=none")
    # post-hoc detectors; runs saved before they existed have none of these keys
    detectors: dict[Text, DetectorConfig] | None = Field(
        None, description="keep the layout of config/detectors/*.yaml: detector (a _partial_ _target_), input, search"
    )
    detectors_select: Literal["fixed", "val"] = Field(
        "fixed", description="fixed: the yaml's hyperparameters, val: picked by validation AUROC"
    )
    detectors_fit_samples: PositiveInt | None = Field(
        None, description="give a number of training images >= 1, or null for the whole split"
    )
    detectors_all: bool = Field(False, description="use detectors=all rather than setting detectors_all")


# --------------------------------------------------------------------------------------------
# constructor arguments: trainer, method, backbone, optimizer, scheduler

MARGINS = "use finite energies with margin_in < margin_out, e.g. method.margin_in=-25 method.margin_out=-7"

RULES: dict[str, Any] = {
    # trainer.* (Lightning's Trainer)
    "accelerator": Annotated[
        Literal["cpu", "gpu", "cuda", "mps", "auto"],
        AfterValidator(device_visible),
        Field(description="use trainer=cpu, trainer=gpu or trainer.accelerator=auto"),
    ],
    "devices": Devices,
    "strategy": Annotated[Text, Field(description="name a Lightning strategy, e.g. {key}=auto (or trainer=ddp)")],
    "precision": Annotated[
        Any, PlainValidator(precision), Field(description="e.g. {key}=auto (bf16-mixed on a GPU, 32-true on a CPU)")
    ],
    "max_epochs": Annotated[int, Field(ge=1, description="train for one epoch or more ({key}=10)")],
    "limit_*_batches": rule(
        "a number of batches >= 0, a fraction in [0, 1] or null",
        Optional[NonNegInt | Fraction],
        "e.g. {key}=1.0 (all) or {key}=10",
    ),
    "num_sanity_val_steps": Annotated[int, Field(ge=-1, description="use 0 (none), a number of batches, or -1 (all)")],
    "fast_dev_run": rule(
        "true, false or a number of batches >= 1", Union[bool, PositiveInt], "e.g. {key}=2 (or debug=fdr)"
    ),
    "overfit_batches": rule(
        "a number of batches >= 0 or a fraction in [0, 1]", Union[NonNegInt, Fraction], "e.g. {key}=0.1"
    ),
    "gradient_clip_val": Annotated[
        NonNegative | None, Field(description="use null (no clipping) or a norm, e.g. {key}=1.0")
    ],
    "deterministic": rule("true, false or warn", Union[bool, Literal["warn"]], "e.g. {key}=true"),
    "log_every_n_steps": Field(ge=1),
    "check_val_every_n_epoch": Field(ge=1),
    "num_nodes": Field(ge=1),
    "accumulate_grad_batches": Field(ge=1),
    # method.*, model.optimizer.*
    "weight_decay": Field(ge=0, description="use 0 or a small finite weight decay, e.g. {key}=5e-5"),
    "n_classes": Field(ge=2, description="it follows data.n_classes: set that to the number of known classes"),
    "n_embedding": Field(ge=1, description="give a whole number of embedding dimensions >= 1, e.g. {key}=16"),
    "weight_*": Field(ge=0, description="use a finite weight >= 0 (0 turns the term off), e.g. {key}=1.0"),
    "margin": Field(gt=0),
    "margin_in": Field(description=MARGINS),
    "margin_out": Field(description=MARGINS),
    "radius": Field(ge=0),
    "magnitude": Field(gt=0),
    # model.backbone.*
    "depth": Field(ge=10, description="use a WideResNet depth 6n + 4, e.g. {key}=40 (or backbone=wrn-small)"),
    "widen_factor": Field(ge=1),
    "drop_rate": Field(ge=0, lt=1, description="use a dropout probability in [0, 1), e.g. {key}=0.3"),
    "n_outputs": Field(ge=1, description="it follows method.n_embedding: set that to a whole number >= 1"),
    # model.optimizer.*, model.scheduler.*
    "lr": Field(gt=0, description="use a finite learning rate > 0, e.g. {key}=1e-3"),
    "momentum": Field(ge=0),
    "eta_min": Field(ge=0),
}
"""Ranges (and fixes) of constructor arguments by parameter name (a pattern): a ``FieldInfo`` narrows the
signature's annotation (int or float), anything else is the argument's whole type."""


class Arguments(Node):
    """The keys of a node validated against a constructor, besides its arguments."""

    #: check the values against the constructor's annotations (False: only names and :data:`RULES`,
    #: for third-party classes whose annotations a YAML value cannot meet, e.g. tuples)
    typed: ClassVar[bool] = True
    #: arguments the code passes when it calls the class, so the config leaves them out
    supplied: ClassVar[tuple[str, ...]] = ()
    #: arguments the config must give although the constructor has a default
    required: ClassVar[tuple[str, ...]] = ()


class TrainerArguments(Arguments):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    required = ("max_epochs",)


class TargetArguments(Arguments):
    target: Text = Field(alias="_target_")


class MethodArguments(TargetArguments):
    name: Text = Field(description="name the method, e.g. {key}=mchad")  # the method column of results.csv


class OptimizerArguments(TargetArguments):
    typed = False
    supplied = ("params",)
    partial: Literal[True] = Field(alias="_partial_", description="keep it: the training loop passes the parameters")


class SchedulerArguments(OptimizerArguments):
    supplied = ("optimizer", *STEP_COUNT_ARGUMENTS)


TARGET_NODES: dict[tuple[str, ...], tuple[str, type[Arguments], str]] = {
    ("trainer",): ("pytorch_lightning.Trainer", TrainerArguments, ""),
    ("method",): (
        "mchad.methods.method.Method", MethodArguments,
        "point it at a Method class, e.g. method._target_=mchad.methods.mchad.MCHAD (or pick method=...)",
    ),
    ("model", "backbone"): ("torch.nn.Module", TargetArguments, "pick a backbone with backbone=wrn40-2 or backbone=wrn-small"),
    ("model", "optimizer"): (
        "torch.optim.Optimizer", OptimizerArguments,
        "name a torch optimizer class, e.g. model/optimizer=sgd or model.optimizer._target_=torch.optim.SGD",
    ),
    ("model", "scheduler"): (
        "torch.optim.lr_scheduler.LRScheduler", SchedulerArguments,
        "name a torch learning-rate schedule, e.g. model/scheduler=cosine, or model/scheduler=none",
    ),
}  # fmt: skip
"""The nodes validated against a constructor's signature: the class (or, with a ``_target_``, the base
class the target must have), the model of the node's other keys, and the fix for a bad ``_target_``.
Checked in this order (the backbone's ``n_outputs`` is ``method.n_embedding``: a bad value is reported
under ``method``)."""


@cache
def arguments_schema(cls: type, base: type[Arguments]) -> type[Arguments]:
    """A model of ``cls.__init__``'s arguments: its annotations (floats finite), ranges from :data:`RULES`."""
    try:
        hints = typing.get_type_hints(cls.__init__) if base.typed else {}
    except Exception:  # annotations that do not resolve: types unchecked, ranges still apply
        hints = {}
    fields = {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is p.empty or p.name in base.required
        default = None if p.name in base.supplied else ... if required else p.default
        ranged = next((rule for pattern, rule in RULES.items() if fnmatch(p.name, pattern)), None)
        tp = hints.get(p.name, float if ranged is not None and not base.typed else Any)
        tp = Finite if tp is float else tp
        if ranged is not None:
            tp = Annotated[tp, ranged] if isinstance(ranged, FieldInfo) else ranged
        fields[p.name] = (tp, default)
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
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X, ``Optional[X]`` -> X."""
    while typing.get_origin(tp) in (Annotated, Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def field_at(model: Any, loc: tuple) -> tuple[FieldInfo | None, list[str]]:
    """The field at ``loc`` (the last model field on the way, for list entries and mapping values), and
    the keys the node holding it knows (an unknown key's hint)."""
    tp, field, known = model, None, []
    for part in loc:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or name: f for name, f in tp.model_fields.items()}
            known = list(fields)
            field = fields.get(part)
            tp = unwrap(field.annotation) if field else None
        else:  # list[X] or dict[str, X]
            tp = unwrap(typing.get_args(tp)[-1]) if typing.get_args(tp) else None
            known = []
    return field, known


def bounds(field: FieldInfo) -> str:
    """The field's range in words, e.g. `` >= 1``, `` in [0, 1)``."""
    metadata = list(field.metadata)
    for arg in typing.get_args(field.annotation):  # Optional[Annotated[int, Field(ge=1)]]
        for extra in typing.get_args(arg)[1:]:
            metadata += getattr(extra, "metadata", [extra])
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = {name: getattr(m, name) for m in metadata for name in signs if hasattr(m, name)}
    low, high = next((n for n in ("ge", "gt") if n in found), None), next((n for n in ("le", "lt") if n in found), None)
    if low and high:
        return f" in {'[' if low == 'ge' else '('}{found[low]}, {found[high]}{']' if high == 'le' else ')'}"
    return "".join(f" {signs[n]} {found[n]}" for n in (low, high) if n)


def fix_for(field: FieldInfo | None, error_type: str) -> str:
    """The "how to fix" half: the field's description, else derived from its type, bounds and default."""
    if field is not None and field.description:
        return field.description
    if error_type == "missing":
        return "add it, e.g. +{key}=VALUE"
    if field is None:
        return "fix {key} in the config or override it, e.g. {key}=VALUE"
    tp = unwrap(field.annotation)
    if tp is bool:
        return "use {key}=true or {key}=false"
    example = field.examples[0] if field.examples else field.default
    if example in (None, PydanticUndefined):
        example = ""
    else:
        example = f", e.g. {{key}}={example if isinstance(example, str) else show(example)}"
    if tp in (int, float):
        nullable = ", or null" if type(None) in typing.get_args(field.annotation) else ""
        return f"use a {'whole' if tp is int else 'finite'} number{bounds(field)}{example}{nullable}"
    return (
        f"use one of them{example}" if typing.get_origin(tp) is Literal else f"fix {{key}}{example or ' in the config'}"
    )


def message(error: dict, model: type[BaseModel], prefix: tuple = ()) -> str:
    """One line for a pydantic error: ``<key>=<bad value> <what is wrong>: <how to fix>``."""
    loc = tuple(error["loc"])
    key = key_of(prefix + loc)
    ctx = {
        k: v if k == "expected" else show(int(v) if isinstance(v, float) and v.is_integer() else v)
        for k, v in error.get("ctx", {}).items()
    }
    problem = PROBLEMS[error["type"]].format(**ctx) if error["type"] in PROBLEMS else error["msg"]
    head = f"{key} {problem}" if error["type"] == "missing" else f"{key}={show(error['input'])} {problem}"
    field, known = field_at(model, loc)
    if error["type"] == "extra_forbidden":
        fix = f"remove it or fix its spelling (known here: {', '.join(known) or 'see the config files'})"
    else:
        fix = error.get("ctx", {}).get("fix") or fix_for(field, error["type"])
    return " ".join(f"{head}: {fix.replace('{key}', key)}".split())


def check(model: type[BaseModel], values: Any, prefix: tuple = ()) -> BaseModel:
    """Validate ``values`` with ``model``; the first problem raises a one-line ConfigError."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise ConfigError(message(error.errors()[0], model, prefix)) from None


def check_arguments(node: dict, prefix: tuple, base: str, keys: type[Arguments], fix: str = "") -> None:
    """Validate a node against a constructor's signature (:func:`arguments_schema`): ``base`` itself, or for a
    node with a ``_target_`` (``keys`` a :class:`TargetArguments`) the class it names, which must be a ``base``."""
    cls = pydoc.locate(base)
    if issubclass(keys, TargetArguments):
        key, target = key_of((*prefix, "_target_")), node.get("_target_")
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{key}={show(target)} is not a class name: {fix}")
        try:
            named = pydoc.locate(target)
        except pydoc.ErrorDuringImport:
            named = None
        if named is None:
            raise ConfigError(f"{key}={show(target)} cannot be imported: {fix}")
        if not isinstance(named, type) or not issubclass(named, cls):
            raise ConfigError(f"{key}={show(target)} is not a {base.rpartition('.')[2]}: {fix}")
        cls = named
    arguments = check(arguments_schema(cls, keys), node, prefix)
    # the energy margins: ID energies below margin_in, outlier energies above margin_out
    low, high = getattr(arguments, "margin_in", None), getattr(arguments, "margin_out", None)
    if low is not None and high is not None and not low < high:
        key, other = key_of((*prefix, "margin_in")), key_of((*prefix, "margin_out"))
        raise ConfigError(f"{key}={show(low)} must be below {other}={show(high)}: {MARGINS}")


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
        except OmegaConfBaseException as error:
            full_key = getattr(error, "full_key", None) or key
            if isinstance(error, MissingMandatoryValue):
                raise ConfigError(f"{full_key} is missing (???): set it, e.g. {full_key}=VALUE") from None
            reason = " ".join(str(error).splitlines()[0].split())
            raise ConfigError(f"{full_key} cannot be resolved ({reason}): fix the ${{...}} interpolation") from None
        values[str(key)] = value
    return values


def validate_config(cfg: DictConfig) -> None:
    """Check every value of the composed run config ``cfg``; raise ConfigError (one line) for the first problem.

    Order: the fixed nodes (:class:`RunConfig`), then :data:`TARGET_NODES` against their
    classes' signatures. Nothing is instantiated and no data is touched.
    """
    values = resolved(cfg)
    check(RunConfig, values)
    for path, (base, keys, fix) in TARGET_NODES.items():
        node = values
        for part in path:
            node = node[part]
        if node is not None:  # model.scheduler: null = a constant learning rate
            check_arguments(node, path, base, keys, fix)


__all__ = ["RULES", "RunConfig", "validate_config"]
