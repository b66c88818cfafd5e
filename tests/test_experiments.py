"""Every experiment config composes, trains two steps and evaluates, on tiny local image trees."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import TINY
from mchad.config import options
from mchad.methods import build_method
from mchad.train import train

EXPERIMENTS = [name for name in options("experiment") if name != "quickstart"]
DATASETS = {"cifar10": 10, "cifar100": 100, "svhn": 10}
METHODS = ("mchad", "gmchad", "cac", "gcac", "center", "gcenter", "ii", "softmax", "oe", "energy")


def test_every_dataset_method_pair_has_an_experiment():
    expected = {f"{d}-{m}" for d in DATASETS for m in METHODS}
    assert expected <= set(EXPERIMENTS), sorted(expected - set(EXPERIMENTS))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_and_evaluates(experiment, run_config, image_trees):
    dataset = experiment.split("-")[0]
    cfg, run_dir = run_config(f"experiment={experiment}")
    overrides = [
        f"experiment={experiment}",
        *TINY,
        f"data.root={image_trees[DATASETS[dataset]]}",
        "data.download=false",
        "testsets=noise",
        "logger=none",
        "callbacks=none",
        "test_checkpoint=current",
    ]
    if cfg.data.get("outliers"):
        overrides += [
            "data.outliers.name=imagefolder",
            f"data.outliers.root={image_trees['outliers']}",
            "data.outliers.batch_size=8",
        ]
    cfg, run_dir = run_config(*overrides)
    _, method = build_method(cfg.method)
    rows = train(cfg, run_dir)
    results = pd.read_csv(run_dir / "results.csv")
    assert len(rows) == len(results) == 2 * len(method.score_names)
    assert set(results.score) == set(method.score_names)
    assert results[["AUROC", "FPR95", "Accuracy"]].notna().all().all()
