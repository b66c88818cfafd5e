"""(a) Training throughput of cifar10-gmchad: ours against the reference pipeline.

Ours: the data module (uint8 batches, 128 ID + 256 outliers) and OODModule (augmentation
on the device, channels_last, ``precision: auto``) in a real Lightning Trainer
(``limit_train_batches``, no logger, no checkpoints). Reference: per-sample PIL data sets
and transforms with DataLoader workers, fp32 NCHW, a plain loop (:mod:`bench.reference`).
Same backbone, method (MCHAD loss), initial weights, data and device. Images/s counts ID
and outlier images after the warm-up steps.
"""

from __future__ import annotations

from bench.options import Options
from bench.report import Result
from bench.timing import alternate
from bench.training import ReferenceTraining, lightning_rate, steps, training_config
from bench.workload import BENCH_DATA, DataPaths, compose_config
from mchad.train import resolve_precision

NAME = "train_throughput"
TITLE = "(a) training throughput, cifar10-gmchad: ours (Lightning) vs reference (PIL, workers, fp32)"


def run(options: Options, paths: DataPaths) -> Result:
    run_dir = BENCH_DATA / "runs" / NAME
    cfg = compose_config(options, paths, run_dir, train_batches=steps(options))
    reference = ReferenceTraining(options, cfg, paths)
    rounds = alternate(
        options.rounds,
        ours=lambda: lightning_rate(options, cfg, run_dir),
        reference=reference.rate,
        higher_is_better=True,
    )
    return Result(
        name=NAME,
        title=TITLE,
        unit="images/s",
        higher_is_better=True,
        rounds=rounds,
        config={
            **training_config(cfg, paths, options),
            "ours_precision": resolve_precision(cfg.trainer),
            "reference_precision": "32-true",
            "reference_workers": options.workers,
        },
    )
