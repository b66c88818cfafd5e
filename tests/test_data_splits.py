"""The train / validation splits of OODDataModule when training outliers are configured.

The ID set and the outlier set are stand-ins whose every image carries its own index in its
first pixel, so each split can be read back as a set of indices and compared exactly
(content comparisons on real images would be blurred by duplicate images).
"""

from __future__ import annotations

import pytest
import torch

from mchad.data.datamodule import DataRef, OODDataModule, split_sizes
from mchad.data.tensors import ImageTensors
from mchad.errors import ConfigError

N_ID, N_OUTLIERS, N_CLASSES = 60, 400, 3


def tagged(n: int, n_classes: int) -> ImageTensors:
    """``n`` images whose pixel (0, 0) holds the image's index (low byte, high byte), labels ``i % n_classes``."""
    index = torch.arange(n)
    images = torch.zeros(n, 32, 32, 3, dtype=torch.uint8)
    images[:, 0, 0, 0] = (index % 256).to(torch.uint8)
    images[:, 0, 0, 1] = (index // 256).to(torch.uint8)
    return ImageTensors(images, index % n_classes)


def indices(images: torch.Tensor) -> list[int]:
    """The indices carried by tagged images (any number of them, NHWC uint8)."""
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


@pytest.fixture
def tagged_module(monkeypatch, tmp_path):
    """``tagged_module(**overrides)``: a set-up data module whose ID set and outliers are tagged stand-ins."""
    sets = {"id": tagged(N_ID, N_CLASSES), "outliers": tagged(N_OUTLIERS, 1)}

    def load(self, ref: DataRef) -> ImageTensors:
        return sets[ref.role]

    monkeypatch.setattr(OODDataModule, "load", load)

    def make(**overrides) -> OODDataModule:
        args = dict(
            dataset="digits", n_classes=N_CLASSES, data_dir=tmp_path, val_size=0.2, batch_size=8,
            outliers={"name": "gaussian", "root": None, "batch_size": 4}, seed=0,
        )  # fmt: skip
        datamodule = OODDataModule(**{**args, **overrides})
        datamodule.setup("fit")
        return datamodule

    return make


@pytest.mark.parametrize("seed", [0, 7])
def test_with_outliers_id_train_and_val_are_disjoint_and_cover_the_train_set(tagged_module, seed):
    fit = tagged_module(seed=seed).fit_data
    train, val = fit.id_pool.tolist(), indices(fit.val_id.images)
    assert len(val) == round(0.2 * N_ID)
    assert not set(train) & set(val)
    # no image is lost or counted twice: the two parts are a partition of the ID train set
    assert sorted(train + val) == list(range(N_ID))
    # the val labels are those of the images it holds
    assert fit.val_id.labels.tolist() == [i % N_CLASSES for i in val]


@pytest.mark.parametrize("seed", [0, 7])
def test_outlier_pool_and_ood_validation_outliers_are_disjoint_and_cover_the_outliers(tagged_module, seed):
    fit = tagged_module(seed=seed).fit_data
    pool, held_out = fit.outlier_pool.tolist(), indices(fit.val_ood.images)
    # as many held-out outliers as ID val images, at most a tenth of the outliers
    assert len(held_out) == min(round(0.2 * N_ID), N_OUTLIERS // 10)
    assert not set(pool) & set(held_out)
    assert sorted(pool + held_out) == list(range(N_OUTLIERS))
    assert bool((fit.val_ood.labels == -1).all())


def test_training_batches_draw_only_from_the_train_parts(tagged_module):
    """What the loader serves, not just the index pools: no val image and no held-out outlier is trained on."""
    datamodule = tagged_module(batches_per_epoch=20)
    fit = datamodule.fit_data
    val, held_out = set(indices(fit.val_id.images)), set(indices(fit.val_ood.images))
    seen_id, seen_outliers = set(), set()
    for x, y in datamodule.train_dataloader():
        seen_id |= set(indices(x[y >= 0]))
        seen_outliers |= set(indices(x[y == -1]))
    # 20 batches of 8 ID images cycle through all 48 train images; 20 x 4 outliers are 80 draws
    assert seen_id == set(fit.id_pool.tolist()) and not seen_id & val
    assert len(seen_outliers) == 80 and not seen_outliers & held_out
    assert seen_outliers <= set(fit.outlier_pool.tolist())


@pytest.mark.parametrize(("val_size", "expected"), [(0.25, 25), (1, 1), (30, 30)])
def test_val_size_is_a_fraction_or_a_whole_count(val_size, expected):
    assert split_sizes(100, val_size) == expected


@pytest.mark.parametrize("val_size", [1.0, 2.0])
def test_a_float_of_one_or_more_is_not_a_fraction(val_size):
    """1.0 as a fraction would mean all images; as a count, one: refused rather than guessed."""
    with pytest.raises(ConfigError, match=rf"^data.val_size={val_size} is not a fraction in \(0, 1\): "):
        split_sizes(100, val_size)
