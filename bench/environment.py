"""Facts about the machine and the software a benchmark ran on, stored with every result."""

from __future__ import annotations

import logging
import os
import platform
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytorch_lightning as pl
import pytorch_ood
import torch
import torchvision

from mchad.rundir import code_version

CPU_NOTE = (
    "no GPU on this machine: absolute times are CPU times and say little about GPU training; "
    "only the ratios of ours to the reference, measured side by side in one run, are meaningful"
)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages; above the core count, other processes took CPU time from the timings."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def environment(device: torch.device) -> dict:
    """Versions, device, threads, git commit, date and load, taken when the run starts (the code it imported)."""
    return {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "torchvision": torchvision.__version__,
        "pytorch_ood": pytorch_ood.__version__,
        "python": platform.python_version(),
        **code_version(),  # git_commit and git_dirty, as a run's provenance.json records them
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": load_average(),
        "note": CPU_NOTE if device.type == "cpu" else "",
    }


def quiet() -> None:
    """Keep the tables readable: Lightning's banners and hints say nothing about speed."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "mchad"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The given NumPy array is not writable.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
