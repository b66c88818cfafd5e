"""(c) Evaluation on the ID test set and the paper's 7 OOD test sets: ours against the reference approach.

Ours: ``trainer.test`` on OODModule and the data module, the path ``run.py`` takes:
every image of the 8 sets passes through the network once, then the method's scores and
:func:`mchad.evaluation.metrics.ood_metrics` (8 x n images). Reference: for each OOD set
the ID test set plus that set through a per-sample PIL DataLoader, fp32 NCHW, scored with
pytorch-ood's OODMetrics (7 x 2n images). Same (randomly initialised) weights; the time
is wall time from the call to the last metric. The metric values of both are compared.
"""

from __future__ import annotations

import copy

from bench import reference
from bench.options import Options
from bench.report import Result
from bench.timing import alternate, stopwatch
from bench.training import contiguous_copy
from bench.workload import BENCH_DATA, DataPaths, build_seeded_run, compose_config, describe, load
from mchad.evaluation.metrics import METRIC_NAMES
from mchad.train import build_trainer, evaluation_rows, resolve_precision

NAME = "evaluation"
TITLE = "(c) evaluation, ID test + 7 OOD sets: ours (each image once) vs reference (ID re-run per OOD set, PIL)"
TARGET = 1.8
REFERENCE_KEYS = {
    "AUROC": "AUROC",
    "AUPR-IN": "AUPR-IN",
    "AUPR-OUT": "AUPR-OUT",
    "FPR95": "FPR95TPR",
    "Accuracy": "ACC",
}


def largest_difference(ours: list[dict], theirs: list[dict]) -> float:
    """Largest absolute difference of any metric between matching (OOD set, score) rows."""
    theirs_by_key = {(row["ood_dataset"], row["score"]): row for row in theirs}
    return max(
        abs(row[key] - theirs_by_key[(row["ood_dataset"], row["score"])][reference_key])
        for row in ours
        for key, reference_key in REFERENCE_KEYS.items()
    )


def run(options: Options, paths: DataPaths) -> Result:
    run_dir = BENCH_DATA / "runs" / NAME
    cfg = compose_config(options, paths, run_dir)
    batch_size = cfg.data.eval_batch_size
    test_batches = None if options.eval_images is None else max(1, options.eval_images // batch_size)
    if test_batches is not None:
        cfg = compose_config(options, paths, run_dir, test_batches=test_batches)
    images_per_set = None if test_batches is None else test_batches * batch_size

    device = options.torch_device
    ours_run = build_seeded_run(cfg, run_dir)
    ours_run.datamodule.setup("test")
    reference_backbone = contiguous_copy(ours_run.module.backbone).to(device)
    reference_method = copy.deepcopy(ours_run.module.method).to(device)

    transform = reference.test_transform(cfg.data.mean, cfg.data.std)
    id_test = reference.first(reference.PILImages(load("cifar10", "test", paths.cifar10), transform), images_per_set)
    ood_sets = {
        entry.name: reference.first(
            reference.PILImages(load(entry.name, "test", entry.root).as_ood(), transform), images_per_set
        )
        for entry in cfg.testsets
    }
    rows: dict[str, list[dict]] = {}

    def ours() -> float:
        trainer = build_trainer(cfg, run_dir, devices=1)
        with stopwatch(device) as elapsed:
            trainer.test(ours_run.module, datamodule=ours_run.datamodule, verbose=False)
        rows["ours"] = evaluation_rows(trainer)
        return elapsed()

    def reference_eval() -> float:
        with stopwatch(device) as elapsed:
            rows["reference"] = reference.evaluate(
                reference_backbone, reference_method, id_test, ood_sets, batch_size, options.workers, device
            )
        return elapsed()

    rounds = alternate(options.eval_rounds, ours=ours, reference=reference_eval, higher_is_better=False)
    n_id, n_ood = len(id_test), [len(s) for s in ood_sets.values()]
    return Result(
        name=NAME,
        title=TITLE,
        unit="seconds",
        higher_is_better=False,
        rounds=rounds,
        target=TARGET,
        checks={
            "max |metric ours - reference| (AUROC, AUPR-IN, AUPR-OUT, FPR95, Accuracy)": largest_difference(
                rows["ours"], rows["reference"]
            ),
        },
        details={
            "images_per_id_set": n_id,
            "images_per_ood_set": n_ood,
            "images_through_network_ours": n_id + sum(n_ood),
            "images_through_network_reference": len(n_ood) * n_id + sum(n_ood),
            "ours_rows": rows["ours"],
            "reference_rows": rows["reference"],
        },
        config={
            **describe(cfg, paths),
            "ours_precision": resolve_precision(cfg.trainer),
            "reference_precision": "32-true",
            "reference_workers": options.workers,
            "metrics": list(METRIC_NAMES),
        },
    )
