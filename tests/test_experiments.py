"""Every experiment config composes, trains two steps and evaluates, on tiny local image trees.

The numbers in results.csv are checked against an independent evaluation of the weights that were
tested: the module is caught as ``Trainer.test`` receives it (after testing it holds the tested weights,
whichever checkpoint they came from), the test batches are passed through it again here, and the
metrics are scikit-learn's (mchad.evaluation.oracle) on those outputs.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import TINY, assert_results_match, expected_rows, outputs_on_test_batches

from mchad.config import options
from mchad.evaluation.oracle import sklearn_metrics
from mchad.methods import build_method
from mchad.train import train

EXPERIMENTS = [name for name in options("experiment") if name != "quickstart"]
DATASETS = {"cifar10": 10, "cifar100": 100, "svhn": 10}
METHODS = options("method")


def test_every_dataset_method_pair_has_an_experiment():
    expected = {f"{d}-{m}" for d in DATASETS for m in METHODS}
    assert expected <= set(EXPERIMENTS), sorted(expected - set(EXPERIMENTS))


# the fast suite trains every method once (on the CIFAR-10 layout); the other data sets' experiments
# differ only in their data config, which test_every_dataset_method_pair_has_an_experiment reads
@pytest.mark.parametrize(
    "experiment",
    [e if e.startswith("cifar10-") else pytest.param(e, marks=pytest.mark.slow) for e in EXPERIMENTS],
)
def test_experiment_trains_and_evaluates(experiment, run_config, image_trees, tested):
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
    # one test batch of 32 per set (TINY): the whole ID test tree when it is smaller, 32 noise images per OOD set
    n_test = len(list((image_trees[DATASETS[dataset]] / "test").rglob("*.png")))
    assert set(results.n_id) == {min(n_test, 32)} and set(results.n_ood) == {32}
    module, datamodule = tested["module"], tested["datamodule"]
    outputs = outputs_on_test_batches(module, datamodule, cfg.trainer.limit_test_batches)
    assert_results_match(results, expected_rows(module.method, outputs, datamodule.test_set_names[0]))


def test_quickstart_metrics_equal_sklearn_on_distances_computed_by_hand(run_config, tested):
    """MCHAD's score written out: the squared Euclidean distance of the embedding to the nearest center.

    Two test batches of 256: the whole ID test set (361 digits 0-5) and 512 images of each OOD set.
    """
    cfg, run_dir = run_config(
        "experiment=quickstart", *TINY, "data.eval_batch_size=256", "trainer.limit_test_batches=2",
        "logger=none", "callbacks=none", "test_checkpoint=current",
    )  # fmt: skip
    train(cfg, run_dir)
    results = pd.read_csv(run_dir / "results.csv")
    module, datamodule = tested["module"], tested["datamodule"]
    centers = module.method.class_centers()
    embeddings = {}
    with torch.no_grad():
        module.eval()
        for name, loader in zip(datamodule.test_set_names, datamodule.test_dataloader()):
            batches = [b for _, b in zip(range(2), loader)]
            z = torch.cat([module.backbone(module.augment(x, train=False)) for x, _ in batches])
            embeddings[name] = (z, torch.cat([y for _, y in batches]))
    squared = {name: ((z[:, None, :] - centers[None]) ** 2).sum(2) for name, (z, _) in embeddings.items()}
    id_distance, id_labels = squared["digits"], embeddings["digits"][1]
    assert len(id_labels) == 361
    accuracy = float((id_distance.argmin(1) == id_labels).double().mean())
    expected = {
        (name, "distance"): {
            "Accuracy": accuracy,
            **sklearn_metrics(id_distance.min(1).values.double().numpy(), d.min(1).values.double().numpy()),
            "n_id": 361,
            "n_ood": 512,
        }
        for name, d in squared.items()
        if name != "digits"
    }
    assert set(results.ood_dataset) == {"digits-ood", "gaussian", "uniform"}
    assert_results_match(results, expected)
