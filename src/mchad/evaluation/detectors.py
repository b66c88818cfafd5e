"""Post-hoc OOD detectors of pytorch-ood on any trained model of this project.

``detectors=[knn,vim,...]`` (``config/detectors/<name>.yaml``, docs/detectors.md) scores the
test sets with detectors of ``pytorch_ood.detector`` besides the method's own scores. The
detectors are pytorch-ood's classes, called through their public representation API
(``fit_logits`` / ``predict_logits``, ``fit_features`` / ``predict_features``,
``fit_feature_maps`` / ``predict_feature_maps``, and ``predict`` for gradient detectors);
this module only decides what each one is given:

* ``input`` (from the yaml): ``logits`` (the class logits, i.e. the backbone output of a
  method with a linear class head), ``features`` (the backbone's pooled penultimate
  features), ``embedding`` (the backbone output, whatever the method makes of it),
  ``feature_maps`` (the last activations before pooling) or ``inputs`` (the normalised
  images, for detectors that need input gradients);
* the constructor arguments the code supplies, by name, where the class takes them:
  ``model`` / ``encoder`` / ``backbone`` (None: the project runs the network itself;
  a gradient detector's ``model`` maps images to logits), ``head`` (pooling and the linear
  class head, for detectors that reshape activations and propagate them on) and ``w`` /
  ``b`` (that head's weights).

Applicability is checked when the run is built, before any image is read
(:func:`check_detectors`): logit, gradient and head detectors need a method with a linear
class head (:attr:`mchad.methods.method.Method.linear_head`); MCHAD, CAC, Center and II have
class centers on an embedding instead. Named explicitly, such a detector is refused with one
line; under ``detectors=all`` it is skipped with a log line. A detector whose name is one of
the method's own scores (softmax's ``msp``, ``maxlogit``, ``energy``) is left out: the
method's row stands (the tests show both give the same values).

One pass: every detector is scored in the test step (:meth:`DetectorBank.score_batch`, called
by :class:`mchad.module.OODModule`), the forward-only ones from the same forward pass as the
method's scores; feature maps live for one batch only. Gradient detectors (ODIN) run their own
forward and backward passes on the batch, in float32, which is why the test trainer of a run with
one runs without inference mode (:func:`needs_gradients`).

Fitting: detectors that need it (``requires_fit`` of their class) fit on the ID training
split, un-augmented, capped at ``detectors_fit_samples`` images (a seeded sample; default all).
The split's features, embeddings and logits come from one forward pass and are kept in
``<run>/detectors/fit-<key>.pt``, keyed by the weights and the split, so evaluating the same
checkpoint again (other detectors, other hyperparameters) does not run the network over the
training split again. The fitted state of a pytorch-ood detector is not saved: it holds
objects that ``torch.load(weights_only=True)`` refuses (KNN's scikit-learn index), and
refitting from the kept representations takes milliseconds (bench/detectors.py measures it).

``detectors_select=val`` picks each detector's hyperparameters from its yaml's ``search``
grid by AUROC of the ID validation split against the validation outliers (the held-out
outliers, or the noise set without them), never the test sets, in one pass over the
validation sets for every candidate; the choice and every candidate's AUROC go to
``<run>/detectors_selection.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mchad.errors import ConfigError
from mchad.evaluation.metrics import ood_metrics
from mchad.files import atomic_file, atomic_write
from mchad.methods.method import Method

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mchad[detectors]'"
SELECTION_FILE = "detectors_selection.json"
CACHE_FOLDER = "detectors"


@dataclass(frozen=True)
class DetectorSpec:
    """One detector of the run: its name (the ``score`` column), the Hydra partial of its pytorch-ood
    class with the hyperparameters, what it consumes and its hyperparameter search grid."""

    name: str
    detector: Mapping[str, Any]
    input: str
    search: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, node: Mapping[str, Any]) -> DetectorSpec:
        return cls(name, dict(node["detector"]), str(node["input"]), dict(node.get("search") or {}))

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {k: v for k, v in self.detector.items() if not k.startswith("_")}

    def with_values(self, values: Mapping[str, Any]) -> DetectorSpec:
        return replace(self, detector={**self.detector, **values})

    def detector_class(self) -> type:
        module, _, name = str(self.detector["_target_"]).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            cls = None
        if not isinstance(cls, type) or not issubclass(cls, api().Detector):
            raise ConfigError(
                f"detectors.{self.name}.detector._target_={self.detector['_target_']} is not a pytorch-ood detector "
                "class: name one of pytorch_ood.detector, e.g. pytorch_ood.detector.KNN"
            )
        return cls


def api():
    """``pytorch_ood.api``, imported on first use: the package is the optional ``detectors`` extra."""
    try:
        return importlib.import_module("pytorch_ood.api")
    except ImportError:
        raise ConfigError(f"detectors=[...] needs pytorch-ood, which is not installed: {INSTALL_HINT}") from None


def representation(cls: type) -> str:
    """Which of pytorch-ood's representation APIs the class offers: logits, features, feature_maps or inputs."""
    pood = api()
    for base, kind in ((pood.GradientDetector, "inputs"), (pood.LogitsDetector, "logits"),
                       (pood.FeatureMapsDetector, "feature_maps"), (pood.FeaturesDetector, "features")):  # fmt: skip
        if issubclass(cls, base):
            return kind
    raise ConfigError(f"{cls.__name__} offers none of pytorch-ood's representation APIs: it cannot be scored here")


ACCEPTED_INPUTS = {
    "logits": ("logits",),
    "inputs": ("inputs",),
    "features": ("features", "embedding"),
    # a feature-map detector given pooled features sees them as (B, D, 1, 1) maps
    "feature_maps": ("feature_maps", "features"),
}
"""The yaml ``input`` values each representation API can take."""


def parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(cls.__init__).parameters


def uses_head(cls: type) -> bool:
    """Whether the detector propagates through, or reads the weights of, the linear class head."""
    return "head" in parameters(cls) or "w" in parameters(cls)


def why_not(spec: DetectorSpec, cls: type, method_name: str, method: Method, backbone: nn.Module) -> str | None:
    """Why ``spec`` cannot apply to this method and backbone; None when it can."""
    if (spec.input in ("logits", "inputs") or uses_head(cls)) and not method.linear_head:
        needs = "class logits from a linear class head" if spec.input in ("logits", "inputs") else (
            "the weights of a linear class head")  # fmt: skip
        return f"it needs {needs}, and the backbone output of {method_name} is {method.embedding_kind}"
    if spec.input in ("features", "feature_maps") or uses_head(cls):
        missing = [name for name in ("feature_maps", "fc") if not hasattr(backbone, name)]
        if missing:
            return f"the backbone {type(backbone).__name__} has no {' and no '.join(missing)} (see mchad.nn.wrn)"
    return None


def check_spec(spec: DetectorSpec) -> type:
    """The detector's class, after checking that its input and search grid fit it (ConfigError otherwise)."""
    cls = spec.detector_class()
    kind = representation(cls)
    # the head's weights map pooled features to logits: a detector holding them reads the features
    accepted = ("features",) if "w" in parameters(cls) else ACCEPTED_INPUTS[kind]
    if spec.input not in accepted:
        raise ConfigError(
            f"detectors.{spec.name}.input={spec.input} does not fit {cls.__name__}, which consumes {kind}: "
            f"use input: {' or '.join(accepted)}"
        )
    if spec.input == "feature_maps" and cls.requires_fit:
        raise ConfigError(
            f"detectors.{spec.name}.input=feature_maps: {cls.__name__} fits, and fitting on feature maps would hold "
            "them for the whole training split: use input: features"
        )
    # named arguments only: what a class passes on in **kwargs (KNN to scikit-learn) would fail only when the
    # detector is built, after training
    named = [n for n, p in parameters(cls).items() if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    unknown = [k for k in (*spec.search, *spec.hyperparameters) if k not in named]
    if unknown:
        raise ConfigError(
            f"detectors.{spec.name} names {unknown[0]}, which {cls.__name__} does not take: use its arguments "
            f"({', '.join(named)})"
        )
    return cls


def needs_gradients(specs: Sequence[DetectorSpec]) -> bool:
    """Whether a detector needs input gradients: Lightning's ``inference_mode`` must then be off."""
    return any(representation(spec.detector_class()) == "inputs" for spec in specs)


def check_detectors(cfg: DictConfig, method_name: str, method: Method, backbone: nn.Module) -> list[DetectorSpec]:
    """The run's detectors (``cfg.detectors``), checked against the method and backbone before any data is read.

    Raises one-line ConfigErrors: pytorch-ood missing, an unknown class, an ``input`` the class
    cannot take, a detector that does not apply to the method (unless ``detectors=all``).
    """
    nodes = OmegaConf.to_container(cfg.detectors, resolve=True) if cfg.get("detectors") else {}
    if not nodes:
        return []
    api()
    specs = []
    for name, node in nodes.items():
        spec = DetectorSpec.from_config(name, node)
        cls = check_spec(spec)
        if name in method.score_names:
            log.info("detector %s: %s scores %s itself, its own row stands", name, method_name, name)
            continue
        reason = why_not(spec, cls, method_name, method, backbone)
        if reason and cfg.get("detectors_all"):
            log.info("detectors=all: skipping %s on %s: %s", name, method_name, reason)
            continue
        if reason:
            raise ConfigError(
                f"detector {name} does not apply to method {method_name}: {reason}: drop it from detectors=[...] "
                "(detectors=all skips the detectors that do not apply)"
            )
        specs.append(spec)
    return specs


# --------------------------------------------------------------------------------------------
# representations


def representations(
    backbone: nn.Module, method: Method, x: Tensor, needs: set[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    """The backbone output ``z`` (as the method gets it) and the representations ``needs`` names, from one forward.

    With features or maps needed, ``z = fc(mean(feature_maps(x)))``, the same operations as
    ``backbone(x)`` (:meth:`mchad.nn.wrn.WideResNet.forward`), so ``z`` and the method's scores
    are those of the plain pass. Representations are float32 (the detectors' arithmetic), ``z`` as computed.
    """
    reps: dict[str, Tensor] = {}
    if needs & {"features", "feature_maps"}:
        maps = backbone.feature_maps(x)
        features = maps.mean(dim=(2, 3))
        z = backbone.fc(features)
        reps["features"] = features.float()
        if "feature_maps" in needs:
            reps["feature_maps"] = maps.float()
    else:
        z = backbone(x)
    reps["embedding"] = z.float()
    if "logits" in needs:
        reps["logits"] = method(z)["logits"].float()
    return z, reps


def as_maps(rep: Tensor) -> Tensor:
    """Pooled features as (B, D, 1, 1) maps for a feature-map detector; maps as they are."""
    return rep if rep.dim() == 4 else rep[:, :, None, None]


@dataclass
class FittedDetector:
    """A built detector and the representation API of pytorch-ood it is called through (``kind``: logits,
    features or feature_maps: ``fit_<kind>`` / ``predict_<kind>``; inputs: ``predict``)."""

    spec: DetectorSpec
    kind: str
    detector: Any

    def representation(self, reps: Mapping[str, Tensor]) -> Tensor:
        rep = reps[self.spec.input]
        return as_maps(rep) if self.kind == "feature_maps" else rep

    def score(self, reps: Mapping[str, Tensor]) -> Tensor:
        return getattr(self.detector, f"predict_{self.kind}")(self.representation(reps))

    def fit(self, reps: Mapping[str, Tensor], labels: Tensor) -> None:
        if not self.detector.requires_fit:
            return
        try:
            getattr(self.detector, f"fit_{self.kind}")(self.representation(reps), labels)
        except (ValueError, AssertionError, RuntimeError) as error:
            raise ConfigError(
                f"detector {self.spec.name} cannot fit on {len(labels)} training images "
                f"({str(error).splitlines()[0] if str(error) else 'a class is missing'}): raise detectors_fit_samples "
                f"or change detectors.{self.spec.name}.detector"
            ) from None


def build_detector(spec: DetectorSpec, backbone: nn.Module, method: Method) -> FittedDetector:
    """Instantiate the partial with the arguments the code supplies (by the names the class takes)."""
    cls = spec.detector_class()
    kind = representation(cls)

    def logits_of_inputs(x: Tensor) -> Tensor:
        return method(backbone(x))["logits"]

    def head(maps: Tensor) -> Tensor:
        return backbone.fc(maps.mean(dim=(2, 3)))

    fc = getattr(backbone, "fc", None)
    supplied = {
        "model": logits_of_inputs if kind == "inputs" else None,
        "encoder": None,
        "backbone": None,
        "head": head,
        "w": fc.weight if fc is not None else None,
        "b": fc.bias if fc is not None else None,
    }
    wanted = parameters(cls)
    partial = instantiate(dict(spec.detector))
    return FittedDetector(spec, kind, partial(**{k: v for k, v in supplied.items() if k in wanted}))


class DetectorBank:
    """The run's detectors, built on the tested weights and fitted: scored in the test pass (forward-only)
    or in a pass of their own (gradient detectors)."""

    def __init__(self, detectors: Sequence[FittedDetector]) -> None:
        self.forward = [d for d in detectors if d.kind != "inputs"]
        self.gradient = [d for d in detectors if d.kind == "inputs"]
        self.needs = {d.spec.input for d in self.forward}

    def score_batch(self, backbone: nn.Module, method: Method, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``z`` for the method and every detector's scores of the batch ``x`` (normalised images)."""
        z, reps = representations(backbone, method, x, self.needs)
        scores = {d.spec.name: d.score(reps) for d in self.forward}
        if self.gradient:
            # float32 under a mixed-precision test pass too: the input gradient's sign is what ODIN uses
            with torch.autocast(x.device.type, enabled=False):
                scores |= {d.spec.name: d.detector.predict(x).detach() for d in self.gradient}
        return z, scores

    def score_loaders(
        self,
        module: nn.Module,
        loaders: Sequence,
        device: torch.device,
        precision: str = "32-true",
    ) -> list[dict[str, Tensor]]:
        """Every detector's scores of every loader's images; the forward-only detectors at ``precision``
        (as in the test pass), gradient detectors in float32."""
        module.eval().to(device)
        results = []
        for loader in loaders:
            chunks: dict[str, list[Tensor]] = {}
            for x, _ in loader:
                x = module.augment(x.to(device), train=False)
                with torch.no_grad(), autocast(device, precision):
                    scores = self.score_batch(module.backbone, module.method, x)[1]
                for name, value in scores.items():
                    chunks.setdefault(name, []).append(value.cpu())
            results.append({name: torch.cat(values) for name, values in chunks.items()})
        return results


# --------------------------------------------------------------------------------------------
# fitting and selection


def weights_key(module: nn.Module, split: Mapping[str, Any]) -> str:
    """A hash of the weights and of what the training split is: names the cached representations."""
    digest = hashlib.sha256(json.dumps(split, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_atomically(value: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as out:
        torch.save(value, out)


@torch.no_grad()
def training_representations(
    module: nn.Module, datamodule: Any, limit: int | None, cache_dir: Path, device: torch.device, precision: str
) -> dict[str, Tensor]:
    """Features, embeddings (and logits) of the un-augmented ID training split, with ``labels``: one
    forward pass at the test pass's ``precision``, cached in ``cache_dir`` under the weights and the split."""
    split = {"dataset": datamodule.dataset, "root": datamodule.root, "seed": datamodule.seed,
             "val_size": datamodule.val_size, "limit": limit, "precision": precision}  # fmt: skip
    path = cache_dir / f"fit-{weights_key(module, split)}.pt"
    if path.is_file():
        log.info("detectors: reusing the training-split representations in %s", path)
        return torch.load(path, map_location="cpu", weights_only=True)
    images = datamodule.id_train_split(limit)
    log.info("detectors: one pass over %d training images (un-augmented) to fit on", len(images))
    needs = {"features"} | ({"logits"} if module.method.linear_head else set())
    module.eval().to(device)
    chunks: dict[str, list[Tensor]] = {}
    for x, y in datamodule.eval_loader(images):
        with autocast(device, precision):
            _, reps = representations(module.backbone, module.method, module.augment(x.to(device), train=False), needs)
        for name, value in {**reps, "labels": y}.items():
            chunks.setdefault(name, []).append(value.cpu())
    result = {name: torch.cat(values) for name, values in chunks.items()}
    try:
        save_atomically(result, path)
    except OSError as error:  # e.g. someone else's read-only run directory: evaluating does not need the copy
        log.warning("detectors: could not keep the representations in %s (%s)", path, error.strerror)
    return result


def autocast(device: torch.device, precision: str):
    """The autocast of Lightning's ``*-mixed`` precisions, so that the detectors see the test pass's numbers.
    ``precision``: the Trainer's own (``Trainer.precision``), in which aliases such as ``bf16`` are resolved."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def fitted(
    specs: Sequence[DetectorSpec], module: nn.Module, train: Mapping[str, Tensor], device
) -> list[FittedDetector]:
    """The detectors built on the module, those that need it fitted on ``train`` (representations and ``labels``)."""
    detectors = [build_detector(spec, module.backbone, module.method) for spec in specs]
    if any(d.detector.requires_fit for d in detectors):
        on_device = {k: v.to(device) for k, v in train.items()}
        for detector in detectors:
            detector.fit(on_device, on_device["labels"])
    return detectors


def candidates(spec: DetectorSpec) -> list[dict[str, Any]]:
    """Every combination of the search grid, in grid order (the first wins a tie); [{}] without a grid."""
    keys = list(spec.search)
    return [dict(zip(keys, values)) for values in itertools.product(*(spec.search[k] for k in keys))]


def label(spec: DetectorSpec, values: Mapping[str, Any]) -> str:
    return f"{spec.name}[{','.join(f'{k}={v}' for k, v in values.items())}]"


def select_on_validation(
    specs: Sequence[DetectorSpec],
    module: nn.Module,
    datamodule: Any,
    train: Mapping[str, Tensor],
    device: torch.device,
    precision: str,
    record: Path,
) -> list[DetectorSpec]:
    """Each spec with the values of its search grid that score the highest validation AUROC (ID validation
    split vs. validation outliers); every candidate's AUROC is written to ``record`` (JSON)."""
    grid = {spec.name: candidates(spec) for spec in specs if spec.search}
    if not grid:
        return list(specs)
    variants, owners = [], []
    for spec in specs:
        for values in grid.get(spec.name, []):
            variant = replace(spec.with_values(values), name=label(spec, values))
            try:
                variants += fitted([variant], module, train, device)
                owners.append((spec, values))
            except ConfigError as error:
                log.info("detectors_select=val: leaving out %s: %s", variant.name, error)
    log.info("detectors_select=val: %d candidates on the validation sets", len(variants))
    loaders = datamodule.val_dataloader()
    val_id, val_ood = DetectorBank(variants).score_loaders(module, loaders, device, precision=precision)
    chosen: dict[str, dict[str, Any]] = {}
    for variant, (spec, values) in zip(variants, owners):
        auroc = ood_metrics(val_id[variant.spec.name], val_ood[variant.spec.name])["AUROC"]
        entry = chosen.setdefault(spec.name, {"values": values, "AUROC": auroc, "candidates": []})
        entry["candidates"].append({"values": values, "AUROC": auroc})
        if auroc > entry["AUROC"]:
            entry["values"], entry["AUROC"] = values, auroc
    n = {"n_val_id": len(next(iter(val_id.values()))), "n_val_ood": len(next(iter(val_ood.values())))}
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        record, json.dumps({"selected_by": "AUROC on the validation sets", **n, "detectors": chosen}, indent=2)
    )
    for name, entry in chosen.items():
        log.info("detectors_select=val: %s %s (validation AUROC %.4f)", name, entry["values"], entry["AUROC"])
    return [spec.with_values(chosen[spec.name]["values"]) if spec.name in chosen else spec for spec in specs]


def build_bank(
    specs: Sequence[DetectorSpec],
    module: nn.Module,
    datamodule: Any,
    device: torch.device | str,
    fit_samples: int | None,
    select: str,
    cache_dir: Path,
    run_dir: Path,
    precision: str = "32-true",
) -> DetectorBank:
    """Fit the detectors on the module's current weights (choosing hyperparameters first with ``select="val"``)."""
    device = torch.device(device)
    needs_training = any(spec.detector_class().requires_fit for spec in specs)
    train = (
        training_representations(module, datamodule, fit_samples, cache_dir, device, precision)
        if needs_training
        else {}
    )
    if select == "val":
        specs = select_on_validation(specs, module, datamodule, train, device, precision, run_dir / SELECTION_FILE)
    return DetectorBank(fitted(specs, module, train, device))
