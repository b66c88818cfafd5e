"""A run directory holds one run: it belongs to one process at a time (:func:`lock`) and to one config
for its whole life (:func:`check_fingerprint`); ``provenance.json`` records what else decides the
numbers: code version, library versions, device, threads, determinism. Also its cleanup."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mchad.errors import ConfigError
from mchad.files import atomic_write, remove_parts

FINGERPRINT_FILE = "fingerprint.yaml"
PROVENANCE_FILE = "provenance.json"

NOT_IN_FINGERPRINT = (
    "hydra", "paths", "logger", "callbacks", "tag", "ckpt_path", "data.num_workers", "data.download", "data.root",
    "data.outliers.root", "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "model.embedding_plots", "model.projector",
)  # fmt: skip
"""Keys that change where things are read and written or what is shown, never a number. Every other
key is in the fingerprint, ``trainer.*`` included (``max_epochs``, ``limit_*_batches``, ``precision``,
``devices``: the number of DDP processes changes the global batch, ``accelerator``: CPU and GPU
kernels round differently)."""


@contextmanager
def exclusive(path: Path, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold the file lock ``path``, recording this process's id in it; while another process holds it,
    raise ConfigError(``busy(holder pid)``) at once. An OS file lock (``flock``) dies with its process,
    so a killed process's lock is free for the next start without any stale-lock handling."""
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(busy(path.read_text().strip() or "?")) from None
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def lock(run_dir: Path) -> AbstractContextManager[None]:
    """Hold ``run_dir`` for this process; a second process fails at once, naming the holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    how = "wait for it to finish, or give this run another directory (hydra.run.dir=...)"
    return exclusive(run_dir / ".lock", lambda holder: f"run directory {run_dir} is in use by process {holder}: {how}")


def checkpoint_run_dir(ckpt_path: str | Path) -> Path:
    """The run directory a checkpoint belongs to (``RUN/checkpoints/x.ckpt`` -> ``RUN``)."""
    path = Path(ckpt_path).absolute()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [2]}`` -> ``{"a.b": 1, "c": [2]}``; lists stay values."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def holds_a_run(run_dir: Path) -> bool:
    """Whether the directory holds something a run produced: a checkpoint or results."""
    return any((run_dir / "checkpoints").glob("*.ckpt")) or (run_dir / "results.csv").exists()


def check_fingerprint(run_dir: Path, cfg: DictConfig) -> None:
    """Refuse to continue or skip a run made with other result-deciding config values (the resolved
    config, flattened, without :data:`NOT_IN_FINGERPRINT`): a directory that holds no run yet (no
    checkpoint, no results) records them as ``fingerprint.yaml``; a later start (resume, or a sweep
    that skips a finished job) with any of them changed is refused, naming them, rewriting nothing."""
    path = run_dir / FINGERPRINT_FILE
    excluded = tuple(f"{key}." for key in NOT_IN_FINGERPRINT)
    flat = sorted(flatten(OmegaConf.to_container(cfg, resolve=True)).items())
    current = {k: v for k, v in flat if not f"{k}.".startswith(excluded)}
    if not (holds_a_run(run_dir) and path.exists()):
        OmegaConf.save(OmegaConf.create(current), path)
        return
    recorded = OmegaConf.to_container(OmegaConf.load(path))
    differing = sorted(k for k in current.keys() | recorded.keys() if current.get(k) != recorded.get(k))
    if differing:
        changes = ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in differing[:5])
        more = f" and {len(differing) - 5} more" if len(differing) > 5 else ""
        raise ConfigError(
            f"run directory {run_dir} holds a run made with another config ({changes}{more}): repeat the "
            "original command to resume or skip it, or start a new run in another directory (hydra.run.dir=...)"
        )


def remove_unfinished(run_dir: Path) -> None:
    """Remove a run directory that a failed first start left holding no run, its Hydra log included:
    a directory without checkpoints or results would only mislead a later report or a colleague. The
    log's handler goes first: the next line this process logs (a notebook, a test) would reopen the
    file, and raise, its folder gone."""
    if run_dir.is_dir() and not holds_a_run(run_dir):
        root = logging.getLogger()
        for handler in [h for h in root.handlers if run_dir in Path(getattr(h, "baseFilename", "/")).parents]:
            root.removeHandler(handler)
            handler.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def remove_orphans(run_dir: Path) -> None:
    """Delete temporary files that a killed writer left behind (the caller holds the lock)."""
    remove_parts(run_dir)
    for orphan in run_dir.glob(".*.tmp"):  # results.csv's and the sweep job's, from versions before atomic_write
        orphan.unlink(missing_ok=True)


def code_version() -> dict[str, Any]:
    """The git commit of this source tree and whether it had uncommitted changes, else the package version."""
    run = {"cwd": Path(__file__).resolve().parent, "capture_output": True, "text": True, "check": True}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout.strip())
        return {"git_commit": commit, "git_dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        with suppress(PackageNotFoundError):
            return {"package_version": version("mchad")}
        return {"package_version": "unknown"}


def peak_host_memory_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB. ``VmHWM`` belongs to the address space,
    which ``exec`` replaces, whereas ``ru_maxrss`` survives ``exec`` and would report a spawning parent's peak."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")), float("nan"))


def provenance(cfg: DictConfig, device: str) -> dict[str, Any]:
    """What decides a run's numbers besides its config: code, every installed package, device, threads, determinism."""
    import pytorch_lightning  # here: a command that only reads run directories never imports the training stack
    import torch

    cuda = torch.cuda.is_available() and device.startswith("cuda")
    packages = sorted((d.metadata["Name"].lower(), d.version) for d in distributions() if d.metadata["Name"])
    return {
        **code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": device,
        "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "deterministic": bool(cfg.trainer.get("deterministic")),
        "seed": cfg.seed,
        "host": socket.gethostname(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "packages": dict(packages),
    }


def write_provenance(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``provenance.json`` atomically."""
    atomic_write(run_dir / PROVENANCE_FILE, json.dumps(record, indent=1, default=str) + "\n")
