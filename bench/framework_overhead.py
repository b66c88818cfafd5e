"""(b) Framework overhead: our Lightning training step against a bare PyTorch loop over the same data path.

Both sides use the data module's uint8 batches, ``BatchAugment`` on the device, the
channels_last backbone, the method's loss, Adam with the cosine schedule and the same
precision; ours adds what Lightning and OODModule add (hooks, ``self.log`` of every loss
term, the accuracy metric, the optimizer closure). Ratio = ours / bare (images/s).
"""

from __future__ import annotations

from bench.options import Options
from bench.report import Result
from bench.timing import alternate
from bench.training import lightning_rate, our_data_plain_loop_rate, steps, training_config
from bench.workload import BENCH_DATA, DataPaths, compose_config
from mchad.train import resolve_precision

NAME = "framework_overhead"
TITLE = "(b) framework overhead: ours (Lightning step) vs bare PyTorch loop, same data path"
TARGET = 0.95


def run(options: Options, paths: DataPaths) -> Result:
    run_dir = BENCH_DATA / "runs" / NAME
    cfg = compose_config(options, paths, run_dir, train_batches=steps(options))
    rounds = alternate(
        # the two sides differ by a few percent at most, less than the load's drift between
        # rounds on a shared machine, so the median needs more rounds than elsewhere
        2 * options.rounds - 1,
        ours=lambda: lightning_rate(options, cfg, run_dir),
        reference=lambda: our_data_plain_loop_rate(options, cfg, run_dir),
        higher_is_better=True,
    )
    return Result(
        name=NAME,
        title=TITLE,
        unit="images/s",
        higher_is_better=True,
        rounds=rounds,
        target=TARGET,
        config={
            **training_config(cfg, paths, options),
            "precision": resolve_precision(cfg.trainer),
        },
    )
