"""One run: build everything from the config, check it, train, evaluate, write ``results.csv``.

``train(cfg)`` is what ``run.py`` calls; ``evaluate_checkpoint(cfg)`` is what ``eval.py`` calls.
Everything that can fail on bad input (names, shapes, missing data, missing outlier set)
is built and checked before the first training step, so a bad run stops with a one-line
:class:`~mchad.errors.ConfigError` and leaves no ``results.csv``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor

from mchad.data.datamodule import OODDataModule
from mchad.errors import ConfigError
from mchad.evaluation.results import format_table, read_results, results_complete, write_results
from mchad.methods import build_method
from mchad.methods.base import OODModule
from mchad.nn.wrn import load_pretrained

log = logging.getLogger(__name__)

# augmentation runs in the module's on_after_batch_transfer on purpose (it needs the training flag)
warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")

RESULTS_FILE = "results.csv"
RESOLVED_CONFIG_FILE = "config.yaml"
TEST_CHECKPOINTS = ("best", "current")


@dataclass
class Run:
    """Everything a run is made of, built and checked before training starts."""

    cfg: DictConfig
    run_dir: Path
    method_name: str
    datamodule: OODDataModule
    module: OODModule

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


def build_run(cfg: DictConfig, run_dir: Path, pretrained: bool = True) -> Run:
    """Instantiate and check data, method and backbone; raises ConfigError on bad input.

    ``pretrained``: initialise the backbone from ``model.pretrained_checkpoint`` (not needed
    when a checkpoint of this project is loaded afterwards).
    """
    if cfg.get("test_checkpoint", "best") not in TEST_CHECKPOINTS:
        raise ConfigError(f"test_checkpoint={cfg.test_checkpoint} is unknown: use one of {', '.join(TEST_CHECKPOINTS)}")
    method_name, method = build_method(cfg.method)
    if method.uses_outliers and not cfg.data.get("outliers"):
        raise ConfigError(
            f"method '{method_name}' has an outlier term (weight_oe>0) but data.outliers is null: "
            "set data.outliers.name (e.g. tinyimages300k or imagefolder with data.outliers.root) or method.weight_oe=0"
        )
    backbone = instantiate(cfg.model.backbone)
    if pretrained and cfg.model.pretrained_checkpoint:
        load_pretrained(backbone, cfg.model.pretrained_checkpoint)
    datamodule = OODDataModule.from_config(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = OODModule(
        backbone=backbone,
        method=method,
        augment=datamodule.augment,
        lr=cfg.model.lr,
        weight_decay=cfg.model.weight_decay,
        channels_last=cfg.model.channels_last,
        compile=cfg.model.compile,
        embedding_plots=cfg.model.embedding_plots,
        projector=cfg.model.projector,
    )
    return Run(cfg=cfg, run_dir=run_dir, method_name=method_name, datamodule=datamodule, module=module)


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list | None = None, **overrides) -> pl.Trainer:
    """A Trainer from ``cfg.trainer``, the configured callbacks, and ``loggers`` (default: configured)."""
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg["precision"] = resolve_precision(cfg.trainer)
    if loggers is None:
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not loggers:  # logger=none: Lightning refuses a learning-rate monitor with nothing to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    kwargs = {**trainer_cfg, "default_root_dir": str(run_dir), "logger": loggers or False, "callbacks": callbacks}
    return pl.Trainer(**{**kwargs, **overrides})


def result_rows(run: Run, rows: list[dict], epochs: int) -> list[dict]:
    """Add the run's identity to the evaluator's rows (one per OOD set and score)."""
    meta = {
        "experiment": run.cfg.name,
        "method": run.method_name,
        "dataset": run.cfg.data.name,
        "seed": run.cfg.seed,
        "epochs": epochs,
        "run_dir": str(run.run_dir),
    }
    return [{**meta, **row} for row in rows]


def save_resolved_config(cfg: DictConfig, path: Path) -> None:
    """The run's config with every interpolation resolved (Hydra's .hydra/config.yaml keeps them)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved), path)


def fit(run: Run) -> pl.Trainer:
    """Train, resuming from ``checkpoints/last.ckpt`` when a killed run left one."""
    trainer = build_trainer(run.cfg, run.run_dir)
    resume = run.last_checkpoint if run.last_checkpoint.exists() else None
    if resume:
        log.info("resuming from %s", resume)
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=str(resume) if resume else None)
    return trainer


def test(run: Run, ckpt_path: str | None, epochs: int, loggers: list | None = None) -> list[dict]:
    """Evaluate on the ID and OOD test sets on ONE device, so every image counts once.

    ``loggers``: those of the training trainer, so test metrics land in the same logs.
    """
    if not run.cfg.test:
        return []
    trainer = build_trainer(run.cfg, run.run_dir, loggers, devices=1, strategy="auto", num_nodes=1)
    run.datamodule.setup("test")
    trainer.test(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path, verbose=False)
    rows = result_rows(run, run.module.test_rows, epochs)
    write_results(rows, run.results_path)
    print(format_table(rows))
    log.info("results written to %s", run.results_path)
    return rows


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The best checkpoint by validation accuracy, else the last one, else the weights in memory."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    return callback.best_model_path or callback.last_model_path or None


def train(cfg: DictConfig, run_dir: str | Path) -> list[dict]:
    """Train and evaluate one configuration; returns the result rows written to results.csv.

    A run directory whose results.csv is complete is skipped (restartable sweeps).
    """
    run_dir = Path(run_dir)
    if results_complete(run_dir / RESULTS_FILE):
        log.info("%s is complete, skipping", run_dir / RESULTS_FILE)
        return read_results(run_dir / RESULTS_FILE).to_dict("records")
    pl.seed_everything(cfg.seed, workers=True)
    run = build_run(cfg, run_dir)
    save_resolved_config(cfg, run_dir / RESOLVED_CONFIG_FILE)
    if not cfg.train:
        return test(run, ckpt_path=None, epochs=0)
    trainer = fit(run)
    if torch.distributed.is_initialized():
        # trainer=ddp: testing runs in process 0 alone, on one device, outside the process group
        torch.distributed.destroy_process_group()
    if trainer.global_rank > 0:
        return []
    ckpt = best_checkpoint(trainer) if cfg.get("test_checkpoint", "best") == "best" else None
    return test(run, ckpt_path=ckpt, epochs=trainer.current_epoch, loggers=trainer.loggers)


def evaluate_checkpoint(cfg: DictConfig, run_dir: str | Path) -> list[dict]:
    """Evaluate the Lightning checkpoint ``cfg.ckpt_path`` on the configured test sets."""
    if not cfg.ckpt_path or not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} is not a file: pass ckpt_path=PATH/TO/checkpoints/last.ckpt")
    run = build_run(cfg, Path(run_dir), pretrained=False)
    save_resolved_config(cfg, run.run_dir / RESOLVED_CONFIG_FILE)
    state = torch.load(cfg.ckpt_path, map_location="cpu", weights_only=True)
    run.module.load_state_dict(state["state_dict"])
    return test(run, ckpt_path=None, epochs=int(state.get("epoch", 0)))
