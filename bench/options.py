"""What one ``python -m bench`` invocation is asked to do: device, size and repetition of every benchmark."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BACKBONES = {"small": "wrn-small", "wrn40-2": "wrn40-2"}
"""``--backbone`` choices -> ``config/backbone`` options (small = WRN-10-1, for CPUs)."""


@dataclass(frozen=True)
class Options:
    """Settings shared by all benchmarks.

    ``rounds``: how often ours and the reference alternate (each round runs both, the
    order flipping every round); the reported ratio is the median over rounds.
    ``eval_rounds``: the same for the evaluation benchmark, whose rounds are long.
    ``warmup_steps`` / ``timed_steps``: training steps (or batches) per measurement;
    throughput counts only the steps after the warm-up.
    ``eval_images``: images per test set in the evaluation benchmark (None = all).
    ``workers``: DataLoader worker processes of the reference pipeline in all (training
    splits them over its ID and outlier loaders).
    ``seed_counts``: the numbers of seeds that share the device in ``seeds_per_device``.
    """

    device: str
    quick: bool
    backbone: str
    threads: int
    workers: int
    data_root: Path | None
    results_dir: Path
    rounds: int
    eval_rounds: int
    warmup_steps: int
    timed_steps: int
    pipeline_batches: int
    eval_images: int | None
    metric_scores: int
    seed_counts: tuple[int, ...]

    @property
    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.device)

    @property
    def suffix(self) -> str:
        """File-name suffix of the results: ``<device>`` or ``<device>-quick``."""
        return f"{self.device}-quick" if self.quick else self.device

    def as_dict(self) -> dict:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


def make_options(
    device: str | None = None,
    quick: bool = False,
    backbone: str | None = None,
    threads: int | None = None,
    workers: int | None = None,
    data_root: Path | None = None,
    results_dir: Path | None = None,
) -> Options:
    """Defaults sized so the full CPU run takes about 10 minutes and ``quick`` under 3."""
    import torch  # here, not at the top: ``python -m bench --help`` needs only BACKBONES

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device == "cuda"
    cores = os.cpu_count() or 1
    return Options(
        device=device,
        quick=quick,
        backbone=backbone or ("wrn40-2" if on_gpu else "small"),
        threads=threads or cores,
        workers=workers if workers is not None else cores,
        data_root=data_root,
        results_dir=results_dir or Path(__file__).resolve().parent / "results",
        rounds=2 if quick else 3,
        # a full evaluation round passes 220,000 images through the network (both sides)
        eval_rounds=2,
        warmup_steps=(5 if quick else 10) if on_gpu else 2,
        timed_steps=(20 if quick else 100) if on_gpu else (4 if quick else 12),
        pipeline_batches=15 if quick else 40,
        eval_images=1024 if quick else None,
        metric_scores=1_000_000,
        seed_counts=((1, 2, 4) if quick else (1, 2, 3, 4, 6, 8)) if on_gpu else ((1, 2) if quick else (1, 2, 3)),
    )
