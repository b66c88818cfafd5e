"""The input pipeline alone: training batches per second, ready on the device, without the network.

Ours: the data module's uint8 batches (128 ID + 256 outliers, one tensor index each)
moved to the device and passed through ``BatchAugment`` (crop, flip, normalise,
channels_last). Reference: the ID and outlier DataLoaders with per-sample PIL transforms
and workers (:mod:`bench.reference`), batches moved to the device.
"""

from __future__ import annotations

from bench.options import Options
from bench.report import Result
from bench.timing import StepClock, alternate
from bench.training import ReferenceTraining
from bench.workload import BENCH_DATA, DataPaths, build_seeded_run, compose_config, describe

NAME = "input_pipeline"
TITLE = "input pipeline: ours (data module + BatchAugment) vs reference (PIL transforms, workers)"
TARGET = 10.0
WARMUP = 3


def run(options: Options, paths: DataPaths) -> Result:
    run_dir = BENCH_DATA / "runs" / NAME
    cfg = compose_config(options, paths, run_dir)
    device = options.torch_device
    datamodule = build_seeded_run(cfg, run_dir).datamodule
    augment = datamodule.augment.to(device)
    reference_data = ReferenceTraining(options, cfg, paths)
    n_batches = WARMUP + options.pipeline_batches

    def drain(batches, prepare) -> float:
        clock = StepClock(device)
        for index, (x, y) in enumerate(batches):
            if index == n_batches:
                break
            prepare(x.to(device, non_blocking=True))
            y.to(device, non_blocking=True)  # a training step needs the labels on the device too
            clock.tick()
        return clock.rate(WARMUP, 1)

    def ours() -> float:
        return drain(datamodule.train_dataloader(), lambda x: augment(x, train=True))

    def reference_rate() -> float:
        batches = reference_data.batches()
        rate = drain(batches, lambda x: x)
        batches.close()
        return rate

    # a round takes seconds, so never fewer than three
    rounds = alternate(max(options.rounds, 3), ours=ours, reference=reference_rate, higher_is_better=True)
    return Result(
        name=NAME,
        title=TITLE,
        unit="batches/s",
        higher_is_better=True,
        rounds=rounds,
        target=TARGET,
        config={
            **describe(cfg, paths),
            "images_per_batch": cfg.data.batch_size + cfg.data.outliers.batch_size,
            "warmup_batches": WARMUP,
            "timed_batches": options.pipeline_batches,
            "reference_workers": options.workers,
            "ours_workers": cfg.data.num_workers,
        },
    )
