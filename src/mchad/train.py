"""One run: build everything from the config, check it, train, evaluate, write ``results.csv``.

``train(cfg, run_dir)`` is what ``mchad-train`` calls; ``evaluate_checkpoint(cfg, run_dir)`` is
what ``mchad-eval`` calls. Everything that can fail on bad input (values, names, shapes,
missing data, checkpoints) is checked before the first training step, so a bad run stops
with a one-line :class:`~mchad.errors.ConfigError` and leaves no ``results.csv``. A run
holds its directory's lock for its whole life; a first start that fails removes the
directory again (:func:`mchad.rundir.remove_unfinished`).

Resume: a run directory with ``checkpoints/last.ckpt`` and no results continues from
that checkpoint (the last completed epoch), with the weights, optimiser, scheduler,
loop counters and random states it held, so that its results equal the uninterrupted
run's. Every checkpoint is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.utilities import rank_zero_only

from mchad import rundir
from mchad.data.datamodule import OODDataModule
from mchad.errors import ConfigError, command
from mchad.evaluation.callback import OODEvaluation
from mchad.evaluation.detectors import (
    CACHE_FOLDER,
    DetectorBank,
    DetectorSpec,
    build_bank,
    check_detectors,
    needs_gradients,
)
from mchad.evaluation.results import RESULTS_FILE, format_table, read_results, results_complete, write_results
from mchad.loggers import check_packages, log_config, log_results
from mchad.methods import build_method, check_outliers
from mchad.module import OODModule
from mchad.nn.wrn import load_pretrained
from mchad.schema import validate_config

log = logging.getLogger(__name__)

# noise in every run that tells a researcher nothing: adverts printed by every Trainer, its list of
# accelerators found (the device used is in provenance.json), a deprecation inside Lightning's own
# pytree code, and, on every resume, that the checkpoint folder it resumes from is not empty
TRAINER_NOISE = ("💡 Tip", "GPU available: ", "TPU available: ", "HPU available: ")
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: not any(noise in record.getMessage() for noise in TRAINER_NOISE)
)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

RESOLVED_CONFIG_FILE = "config.yaml"
CHECKPOINT_CONFIG_KEY = "mchad_config"
"""Where a checkpoint keeps the resolved config of the run that wrote it (:class:`ConfigInCheckpoints`)."""


@dataclass
class Run:
    """Everything a run is made of, built and checked before training starts."""

    cfg: DictConfig
    run_dir: Path
    method_name: str
    datamodule: OODDataModule
    module: OODModule
    detectors: list[DetectorSpec] = field(default_factory=list)  # post-hoc detectors that apply (checked)

    @property
    def results_path(self) -> Path:
        return self.run_dir / RESULTS_FILE

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"


def resolve_precision(trainer_cfg: DictConfig) -> str:
    """``precision: auto`` means bf16 autocast on a GPU, fp32 elsewhere."""
    precision = str(trainer_cfg.get("precision", "auto"))
    if precision != "auto":
        return precision
    on_gpu = trainer_cfg.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu else "32-true"


def build_run(cfg: DictConfig, run_dir: Path, evaluation_only: bool = False) -> Run:
    """Validate the config, instantiate and check data, method and backbone; ConfigError on bad input.

    ``evaluation_only``: for a checkpoint of this project, loaded afterwards: no pretrained
    backbone, no training data and no outliers.
    """
    validate_config(cfg)
    check_packages(OmegaConf.to_container(cfg.logger, resolve=True) if cfg.get("logger") else None)
    method_name, method = build_method(cfg.method)
    if not evaluation_only:
        check_outliers(method_name, method, cfg.data)
    backbone = instantiate(cfg.model.backbone)
    detectors = check_detectors(cfg, method_name, method, backbone)  # before any image is read
    if cfg.model.pretrained_checkpoint and not evaluation_only:
        load_pretrained(backbone, cfg.model.pretrained_checkpoint)
    datamodule = OODDataModule.from_config(cfg, evaluation_only)
    datamodule.prepare_data()
    if not evaluation_only:
        datamodule.setup("fit")
    module = OODModule(
        backbone=backbone,
        method=method,
        augment=datamodule.augment,
        optimizer=instantiate(cfg.model.optimizer),
        scheduler=instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
        channels_last=cfg.model.channels_last,
        compile=cfg.model.compile,
        embedding_plots=cfg.model.embedding_plots,
        projector=cfg.model.projector,
        architecture=architecture(cfg, method_name),
    )
    return Run(
        cfg=cfg, run_dir=run_dir, method_name=method_name, datamodule=datamodule, module=module, detectors=detectors
    )


def architecture(cfg: DictConfig, method_name: str) -> dict[str, Any]:
    """What a checkpoint's weights fit: backbone, method and the sizes that shape them."""
    backbone = OmegaConf.to_container(cfg.model.backbone, resolve=True)
    return {
        "backbone": backbone,
        "method": method_name,
        "n_embedding": cfg.method.get("n_embedding"),
        "n_classes": cfg.data.n_classes,
    }


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list | None = None, **overrides) -> pl.Trainer:
    """A Trainer from ``cfg.trainer``, the configured callbacks, and ``loggers`` (default: configured).

    :class:`~mchad.evaluation.callback.OODEvaluation` is always one of the callbacks: it turns
    the steps' scores into the validation metrics and the test rows (:func:`evaluation_rows`);
    :class:`ConfigInCheckpoints` puts the run's config into every checkpoint."""
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["precision"] = resolve_precision(cfg.trainer)
    if loggers is None:
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
        log_config(loggers, cfg)  # MLflow / W&B: the resolved config
    configured = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks = [*configured, OODEvaluation(), ValidationHistory(), ConfigInCheckpoints(cfg)]
    if not loggers:  # logger=none: Lightning refuses a learning-rate monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    kwargs = {**trainer_cfg, "default_root_dir": str(run_dir), "logger": loggers or False, "callbacks": callbacks}
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and not trainer_cfg.get("plugins"):
        # the submitit worker requeues this job (docs/clusters.md): Lightning's own SLURM requeue would be a second
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    return pl.Trainer(**{**kwargs, **overrides})


class ConfigInCheckpoints(pl.Callback):
    """Every checkpoint carries the run's resolved config under :data:`CHECKPOINT_CONFIG_KEY`, as plain
    containers (``torch.load(weights_only=True)`` reads them), so a checkpoint copied away from its run
    directory is still evaluated with the model, data and test sets it was trained with."""

    def __init__(self, cfg: DictConfig) -> None:
        self.config = resolved_config(cfg)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_CONFIG_KEY] = self.config


class ValidationHistory(pl.Callback):
    """The ``*/val`` metrics of every validation epoch, kept in the checkpoints (a resumed run has them all)."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, float]] = {}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            metrics = trainer.callback_metrics
            self.epochs[trainer.current_epoch] = {k: float(v) for k, v in metrics.items() if k.endswith("/val")}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = dict(state_dict["epochs"])


def validation_metrics(trainer: pl.Trainer, tested_best: bool) -> dict[str, float]:
    """The ``*/val`` metrics of the epoch whose weights are tested: the best epoch by the checkpoint's monitor
    (``Accuracy/val``) when ``tested_best``, else the last; {} without validation."""
    history = next(c for c in trainer.callbacks if isinstance(c, ValidationHistory)).epochs
    if not history:
        return {}
    epoch, callback = max(history), trainer.checkpoint_callback
    if tested_best and callback is not None and callback.monitor and callback.best_model_score is not None:
        best = float(callback.best_model_score)
        epoch = min((e for e in history if history[e].get(callback.monitor) == best), default=epoch)
    return history[epoch]


class RunResults(list):
    """A run's result rows (one per OOD test set and score, as in results.csv), and ``validation``: the
    ``*/val`` metrics of the tested weights (:func:`validation_metrics`), a hyperparameter search's objective."""

    def __init__(self, rows: list[dict] = (), validation: dict[str, float] | None = None) -> None:
        super().__init__(rows)
        self.validation = dict(validation or {})


def evaluation_rows(trainer: pl.Trainer) -> list[dict]:
    """The rows of the last ``trainer.test``, one per (OOD set, score)."""
    return next(c for c in trainer.callbacks if isinstance(c, OODEvaluation)).rows


def result_rows(run: Run, rows: list[dict], epochs: int) -> list[dict]:
    """Add the run's identity to the evaluator's rows (one per OOD set and score)."""
    meta = {
        "experiment": run.cfg.name,
        "method": run.method_name,
        "dataset": run.cfg.data.name,
        "seed": run.cfg.seed,
        "epochs": epochs,
        "debug": run.cfg.get("debug") or "",
        "run_dir": str(run.run_dir),
    }
    return [{**meta, **row} for row in rows]


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run config as plain containers, every interpolation resolved, without Hydra's own node."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    return resolved


def save_run_config(cfg: DictConfig, run_dir: Path) -> None:
    """``config.yaml``: the config with every interpolation resolved; ``.hydra/``: Hydra's records.

    Hydra's own writing of ``.hydra/`` is off (``hydra.output_subdir: null``), so that a
    refused start (another config, a locked directory) rewrites nothing; a started run
    writes it here, once.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved_config(cfg)), run_dir / RESOLVED_CONFIG_FILE)
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    records = run_dir / ".hydra"
    records.mkdir(exist_ok=True)
    task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.save(task_cfg, records / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)}), records / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, records / "overrides.yaml")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of this project, read with ``weights_only=True``; ConfigError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"checkpoint {path} does not exist: give the path of a .ckpt file (e.g. RUN/checkpoints/last.ckpt)"
        )
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            raise ConfigError(f"{path} is not a checkpoint (torch.save writes a zip archive): give a .ckpt file "
                              "written by this project")  # fmt: skip
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them itself
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error):
            raise ConfigError(
                f"checkpoint {path} is refused: it holds objects other than tensors and plain values, which could "
                "run code when loaded: use only checkpoints written by this project"
            ) from None
        raise ConfigError(f"{path} is not a checkpoint of this project: give a .ckpt file it wrote") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise ConfigError(
            f"checkpoint {path} is truncated or damaged ({str(error).splitlines()[0]}): delete it (a run then "
            "restarts from its previous checkpoint or from scratch) or copy it again"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(
            f"{path} is not a Lightning checkpoint (no state_dict): give a .ckpt file written by this project"
        )
    return state


def check_architecture(run: Run, state: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose weights do not fit the configured model, saying expected vs found."""
    expected = run.module.state_dict()
    found = state["state_dict"]
    shapes_differ = [k for k in expected if k in found and tuple(expected[k].shape) != tuple(found[k].shape)]
    if expected.keys() == found.keys() and not shapes_differ:
        return
    recorded = state.get("hyper_parameters", {}).get("architecture") or {}
    wanted = run.module.hparams.architecture

    def describe(arch: dict) -> str:
        backbone = arch.get("backbone") or {}
        name = str(backbone.get("_target_", "?")).rsplit(".", 1)[-1]
        sizes = ",".join(f"{k}={v}" for k, v in backbone.items() if k != "_target_")
        return f"backbone {name}({sizes}), method {arch.get('method', '?')}, n_embedding {arch.get('n_embedding', '?')}"

    detail = describe(recorded) if recorded else f"{len(found)} tensors, e.g. {next(iter(found), '-')}"
    raise ConfigError(
        f"checkpoint {path} holds another architecture: expected {describe(wanted)}, found {detail}: give the "
        "experiment and overrides the checkpoint was trained with"
    )


def fit(run: Run) -> pl.Trainer:
    """Train, resuming from ``checkpoints/last.ckpt`` when a killed run left one."""
    resume = run.last_checkpoint if run.last_checkpoint.exists() else None
    if resume:
        check_architecture(run, load_checkpoint(resume), resume)
        log.info("resuming from %s", resume)
    trainer = build_trainer(run.cfg, run.run_dir)
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    return trainer


def test(run: Run, ckpt_path: str | None, epochs: int, loggers: list | None = None) -> list[dict]:
    """Evaluate on the ID and OOD test sets on ONE device, so every image counts once.

    ``loggers``: those of the training trainer, so test metrics land in the same logs.
    """
    if not run.cfg.test:
        return []
    gradients = {"inference_mode": False} if needs_gradients(run.detectors) else {}  # ODIN in the test step
    trainer = build_trainer(run.cfg, run.run_dir, loggers, devices=1, strategy="auto", num_nodes=1, **gradients)
    run.datamodule.setup("test")
    bank = prepare_detectors(run, ckpt_path, trainer.precision)
    tested_ckpt = None if bank else ckpt_path  # the detectors fitted on the tested weights, already loaded
    trainer.test(run.module, datamodule=run.datamodule, ckpt_path=tested_ckpt, verbose=False, weights_only=True)
    rows = result_rows(run, evaluation_rows(trainer), epochs)
    write_results(rows, run.results_path)
    tested = ckpt_path or run.cfg.get("ckpt_path") or (run.last_checkpoint if run.last_checkpoint.exists() else None)
    print(format_table(rows))
    log_results(trainer.loggers, rows, run.results_path, tested)  # MLflow / W&B: the results table, the checkpoint
    log.info("results written to %s", run.results_path)
    return rows


def prepare_detectors(run: Run, ckpt_path: str | None, precision: str) -> DetectorBank | None:
    """The run's post-hoc detectors fitted on the weights to be tested (``ckpt_path``'s, loaded here, or
    those in memory) and handed to the test step; None without detectors. ``precision``: the test
    trainer's (``Trainer.precision``, aliases resolved), which the fitting pass runs at.

    The training-split representations they fit on are cached in the directory of the run that
    trained the weights (``<run>/detectors``), so ``mchad-eval`` of its checkpoints reuses them.
    """
    if not run.detectors:
        return None
    if ckpt_path:
        run.module.load_state_dict(load_checkpoint(ckpt_path)["state_dict"])
    trained_in = rundir.checkpoint_run_dir(run.cfg.ckpt_path) if run.cfg.get("ckpt_path") else run.run_dir
    bank = build_bank(
        run.detectors,
        run.module,
        run.datamodule,
        device=device_of(run.cfg),
        fit_samples=run.cfg.get("detectors_fit_samples"),
        select=run.cfg.get("detectors_select") or "fixed",
        cache_dir=trained_in / CACHE_FOLDER,
        run_dir=run.run_dir,
        precision=precision,
    )
    run.module.detectors = bank
    return bank


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The checkpoint best by validation accuracy; None (the weights in memory) without validation."""
    callback = trainer.checkpoint_callback
    return (callback.best_model_path or None) if callback is not None else None


def completed_epochs(state: dict[str, Any]) -> int:
    """How many training epochs had finished when the checkpoint was written (its ``epoch`` is 0-based).

    A checkpoint written after the last batch of epoch e (at validation end or epoch end,
    before Lightning counts the epoch as completed) holds e + 1 completed epochs.
    """
    batches = state.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    return int(state.get("epoch", -1)) + (1 if batches.get("is_last_batch", True) else 0)


def apply_threads(cfg: DictConfig) -> None:
    """``threads``: intra-op threads of this process, set before anything is built (null: torch's default)."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))


def device_of(cfg: DictConfig) -> str:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    return "cuda" if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()) else "cpu"


def train(cfg: DictConfig, run_dir: str | Path) -> list[dict]:
    """Train and evaluate one configuration; returns the result rows written to results.csv
    (:class:`RunResults`, with the tested weights' validation metrics when it trained).

    A run directory whose results.csv is complete is skipped (restartable sweeps), after
    checking that it was made with the same config.
    """
    run_dir = Path(run_dir)
    validate_config(cfg)
    apply_threads(cfg)
    if rank_zero_only.rank > 0:
        # the other processes of a DDP run (trainer=ddp) run this script again: process 0 holds the directory
        return _train_locked(cfg, run_dir)
    with rundir.lock(run_dir):
        try:
            return _train_locked(cfg, run_dir)
        except BaseException:
            rundir.remove_unfinished(run_dir)
            raise


def _train_locked(cfg: DictConfig, run_dir: Path) -> list[dict]:
    primary = rank_zero_only.rank == 0  # only process 0 of a DDP run keeps the directory's records
    fresh = not rundir.holds_a_run(run_dir)
    if primary:
        rundir.check_fingerprint(run_dir, cfg)
        if results_complete(run_dir / RESULTS_FILE):
            log.info("%s is complete, skipping", run_dir / RESULTS_FILE)
            return read_results(run_dir / RESULTS_FILE).to_dict("records")
        rundir.remove_orphans(run_dir)
    started = time.time()
    record = rundir.provenance(cfg, device_of(cfg))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run = build_run(cfg, run_dir)
    if primary:
        if fresh:
            save_run_config(cfg, run_dir)
        rundir.write_provenance(run_dir, record)
    if not cfg.train:
        rows = test(run, ckpt_path=None, epochs=0)
    else:
        trainer = fit(run)
        if torch.distributed.is_initialized():
            # trainer=ddp: testing runs in process 0 alone, on one device, outside the process group
            torch.distributed.destroy_process_group()
        if trainer.global_rank > 0:
            return []
        ckpt = best_checkpoint(trainer) if cfg.get("test_checkpoint", "best") == "best" else None
        rows = test(run, ckpt_path=ckpt, epochs=trainer.current_epoch, loggers=trainer.loggers)
        rows = RunResults(rows, validation_metrics(trainer, tested_best=ckpt is not None))
    finished = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_time_s": round(time.time() - started, 3),
                "peak_host_memory_mb": round(rundir.peak_host_memory_mb(), 1)}  # fmt: skip
    if torch.cuda.is_available():
        finished["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    rundir.write_provenance(run_dir, {**record, **finished})
    return rows


EVALUATION_KEYS = (
    "testsets",
    "ood_folders",
    "data.eval_batch_size",
    "trainer",
    "test_checkpoint",
    "ckpt_path",
    "paths",
    "logger",
    "callbacks",
    "threads",
    "data.num_workers",
    "data.root",
    "data.download",
    "detectors",
    "detectors_select",
    "detectors_fit_samples",
    "detectors_all",
)
"""What ``mchad-eval`` may change in a checkpoint's config: where and on what it is evaluated, never the model."""


def trained_config(ckpt_path: str | Path, state: dict[str, Any]) -> tuple[DictConfig, str] | None:
    """The resolved config a checkpoint was trained with, and where it was read: the checkpoint itself
    (:class:`ConfigInCheckpoints`) or, for one written before checkpoints carried it, the ``config.yaml``
    of its run directory. None for a checkpoint with neither (someone else's)."""
    inside = state.get(CHECKPOINT_CONFIG_KEY)
    if isinstance(inside, dict):
        return OmegaConf.create(inside), f"the checkpoint {ckpt_path}"
    saved_path = rundir.checkpoint_run_dir(ckpt_path) / RESOLVED_CONFIG_FILE
    if saved_path.is_file():
        return OmegaConf.load(saved_path), str(saved_path)
    return None


def saved_run_config(cfg: DictConfig, run_dir: Path, state: dict[str, Any] | None = None) -> DictConfig | None:
    """The config the checkpoint ``cfg.ckpt_path`` was trained with (:func:`trained_config`), with the
    evaluation overrides of the command line (:data:`EVALUATION_KEYS`) and ``run_dir`` as output directory.
    ``state``: the checkpoint, when the caller has read it already.

    None for a checkpoint without a config (someone else's): then the command line
    describes the model. An override that would change the model is refused.
    """
    found = trained_config(cfg.ckpt_path, state if state is not None else load_checkpoint(cfg.ckpt_path))
    if found is None:
        return None
    saved, source = found
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    given = {o.lstrip("+~").split("=", 1)[0].split("@", 1)[0] for o in overrides}
    for key in sorted(given):
        if key == "experiment" and OmegaConf.select(cfg, "name") == saved.name:
            continue
        if not any(key == k or key.startswith(k + ".") for k in EVALUATION_KEYS):
            raise ConfigError(
                f"{key} would change the model, which {command('eval')} takes from {source}: drop the override "
                f"({command('eval')} changes only {', '.join(EVALUATION_KEYS)})"
            )
    with open_dict(saved):
        for key in ("logger", "callbacks", "ckpt_path", "ood_folders", *(k for k in given if k != "experiment")):
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), merge=False)
        saved.paths.output_dir = str(run_dir)
    return saved


def evaluate_checkpoint(cfg: DictConfig, run_dir: str | Path) -> list[dict]:
    """Evaluate the Lightning checkpoint ``cfg.ckpt_path`` on the configured test sets.

    The model and test sets come from the config the checkpoint was trained with
    (:func:`saved_run_config`) when it has one, else from the command line.
    """
    run_dir = Path(run_dir)
    if not cfg.ckpt_path:
        rundir.remove_unfinished(run_dir)
        raise ConfigError("ckpt_path is not set: pass ckpt_path=PATH/TO/checkpoints/last.ckpt")
    with rundir.lock(run_dir):
        try:
            state = load_checkpoint(cfg.ckpt_path)  # read once: its config, then its weights
            cfg = saved_run_config(cfg, run_dir, state) or cfg
            validate_config(cfg)
            apply_threads(cfg)
            run = build_run(cfg, run_dir, evaluation_only=True)
            check_architecture(run, state, cfg.ckpt_path)
            save_run_config(cfg, run_dir)
            run.module.load_state_dict(state["state_dict"])
            return test(run, ckpt_path=None, epochs=completed_epochs(state))
        except BaseException:
            rundir.remove_unfinished(run_dir)
            raise
