"""Shared fixtures: composing the real config for tiny CPU runs, and tiny image-folder trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mchad.config import compose

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# overrides that make any experiment a few-second CPU run
TINY = [
    "backbone=wrn-small",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.batch_size=8",
    "data.val_size=0.2",
    "data.eval_batch_size=32",
    "model.pretrained_checkpoint=null",
]


def write_image_tree(root: Path, n_classes: int, per_class: int, splits=("train", "test"), seed: int = 0) -> Path:
    """A folder tree ``root/<split>/<class>/<i>.png`` of random 32x32 RGB images."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in range(n_classes):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def run_config(tmp_path):
    """``run_config(*overrides)`` composes the project config with data and logs under tmp_path."""

    def make(*overrides: str, run_dir: Path | None = None):
        run_dir = run_dir or tmp_path / "run"
        return compose(
            [f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}", *overrides],
            output_dir=run_dir,
        ), run_dir

    return make


@pytest.fixture(scope="session")
def image_trees(tmp_path_factory):
    """Tiny ID trees with 10 and 100 classes and an outlier folder, built once per session."""
    base = tmp_path_factory.mktemp("trees")
    return {
        10: write_image_tree(base / "c10", 10, 3),
        100: write_image_tree(base / "c100", 100, 1),
        "outliers": write_image_tree(base / "outliers", 1, 24, splits=("all",)),
    }
