"""One sweep over experiments with and without outliers: ``paths.outliers`` says where the outliers are for all
of them (``data.outliers`` is null in the experiments without outliers, so an override below it cannot compose)."""

from __future__ import annotations

from mchad.config import compose
from mchad.schema import validate_config


def test_paths_outliers_reaches_the_experiments_with_outliers_and_leaves_the_others_alone(tmp_path):
    roots = {}
    for experiment in ("cifar10-mchad", "cifar10-gmchad", "cifar10-softmax", "cifar10-oe"):
        cfg = compose([f"experiment={experiment}", f"paths.outliers={tmp_path}"])
        validate_config(cfg)
        roots[experiment] = cfg.data.outliers.root if cfg.data.outliers else None
    assert roots == {
        "cifar10-mchad": None,
        "cifar10-gmchad": str(tmp_path),
        "cifar10-softmax": None,
        "cifar10-oe": str(tmp_path),
    }
