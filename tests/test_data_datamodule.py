"""OODDataModule on the offline sets: batches, outliers, determinism, val/test loaders, errors."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from mchad.data.datamodule import OODDataModule, permutation_stream, seeded_generator
from mchad.errors import ConfigError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUICKSTART_TESTSETS = [
    {"name": "digits-ood", "root": None, "group": "near"},
    {"name": "gaussian", "root": None, "group": "far"},
    {"name": "uniform", "root": None, "group": "far"},
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One cache for the module: the sets are generated or bundled, so building it once is enough."""
    return tmp_path_factory.mktemp("data")


def digits_module(data_dir: Path, **overrides) -> OODDataModule:
    args = dict(dataset="digits", n_classes=6, data_dir=data_dir, batch_size=32, eval_batch_size=100, seed=0)
    args.update(overrides)
    datamodule = OODDataModule(**args)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def first_batches(loader, n: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


def test_train_batches_one_pass(data_dir: Path) -> None:
    datamodule = digits_module(data_dir)
    loader = datamodule.train_dataloader()
    batches = list(loader)
    n_train = 722 - round(0.1 * 722)
    assert len(loader) == len(batches) == -(-n_train // 32)
    assert [len(x) for x, _ in batches[:-1]] == [32] * (len(batches) - 1)
    x, y = batches[0]
    assert x.shape == (32, 32, 32, 3) and x.dtype == torch.uint8 and y.dtype == torch.int64
    seen = torch.cat([y for _, y in batches])
    assert len(seen) == n_train and int(seen.min()) >= 0 and int(seen.max()) <= 5


def test_outlier_batches_are_appended_with_label_minus_one(data_dir: Path) -> None:
    datamodule = digits_module(
        data_dir, outliers={"name": "gaussian", "root": None, "batch_size": 16}, batches_per_epoch=4
    )
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 4
    for x, y in batches:
        assert x.shape == (48, 32, 32, 3)
        assert bool((y[:32] >= 0).all()) and bool((y[32:] == -1).all())


def test_more_batches_than_one_pass_cycle_with_full_batches(data_dir: Path) -> None:
    datamodule = digits_module(data_dir, batches_per_epoch=50)
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 50 and all(len(x) == 32 for x, _ in batches)


def test_permutation_stream_visits_everything_once_per_pass() -> None:
    stream = permutation_stream(10, 25, seeded_generator(0, 0))
    assert sorted(stream[:10].tolist()) == sorted(stream[10:20].tolist()) == list(range(10))
    assert len(stream) == 25


def test_batches_are_deterministic_given_seed_and_epoch(data_dir: Path) -> None:
    outliers = {"name": "gaussian", "root": None, "batch_size": 8}
    a = first_batches(digits_module(data_dir, outliers=outliers).train_dataloader())
    b = first_batches(digits_module(data_dir, outliers=outliers).train_dataloader())
    other_seed = first_batches(digits_module(data_dir, outliers=outliers, seed=1).train_dataloader())
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], other_seed[0][0])


def test_set_epoch_reshuffles_reproducibly(data_dir: Path) -> None:
    loader = digits_module(data_dir).train_dataloader()
    loader.sampler.set_epoch(2)
    epoch2 = [y for _, y in loader]
    assert all(torch.equal(a, b) for a, b in zip(epoch2, (y for _, y in loader)))
    loader.sampler.set_epoch(3)
    assert not torch.equal(epoch2[0], next(iter(loader))[1])


def test_batches_are_plain_items_for_replaced_samplers(data_dir: Path) -> None:
    """Lightning swaps the sampler for overfit_batches / DDP: integer keys mean epoch 0."""
    loader = digits_module(data_dir, outliers={"name": "gaussian", "root": None, "batch_size": 8}).train_dataloader()
    x0, y0 = loader.dataset[0]
    x1, y1 = loader.dataset[(0, 0)]
    assert torch.equal(x0, x1) and torch.equal(y0, y1) and x0.shape == (40, 32, 32, 3)
    assert not torch.equal(loader.dataset[(1, 0)][0], x0)


def test_val_split_is_disjoint_from_train(data_dir: Path) -> None:
    datamodule = digits_module(data_dir)
    train = torch.cat([x for x, _ in datamodule.train_dataloader()]).flatten(1)
    val_id, val_ood = datamodule.val_dataloader()
    val = torch.cat([x for x, _ in val_id]).flatten(1)
    assert len(val) == round(0.1 * 722)
    assert len(train) + len(val) == 722
    assert (
        len({row.numpy().tobytes() for row in train} | {row.numpy().tobytes() for row in val}) >= 715
    )  # few duplicates
    ood_labels = torch.cat([y for _, y in val_ood])
    assert len(ood_labels) == 1000 and bool((ood_labels == -1).all())


def test_outlier_validation_set_is_held_out(data_dir: Path) -> None:
    datamodule = digits_module(data_dir, outliers={"name": "gaussian", "root": None, "batch_size": 8})
    _, val_ood = datamodule.val_dataloader()
    held_out = torch.cat([x for x, _ in val_ood]).flatten(1)
    assert len(held_out) == round(0.1 * 722)
    held = {row.numpy().tobytes() for row in held_out}
    for x, y in datamodule.train_dataloader():
        assert not any(row.numpy().tobytes() in held for row in x[y == -1].flatten(1))


def test_test_loaders_names_and_groups(data_dir: Path) -> None:
    testsets = [{"name": "digits", "root": None, "group": "near"}, *QUICKSTART_TESTSETS]  # ID entry skipped
    datamodule = digits_module(data_dir, testsets=testsets)
    datamodule.setup("test")
    loaders = datamodule.test_dataloader()
    assert datamodule.test_set_names == ["digits", "digits-ood", "gaussian", "uniform"]
    assert datamodule.test_set_groups == {"digits-ood": "near", "gaussian": "far", "uniform": "far"}
    sizes = [sum(len(y) for _, y in loader) for loader in loaders]
    assert sizes == [361, 714, 10_000, 10_000]
    x, y = next(iter(loaders[1]))
    assert x.shape == (100, 32, 32, 3) and bool((y == -1).all())
    assert bool((torch.cat([y for _, y in loaders[0]]) >= 0).all())


def test_test_set_labels_name_two_sets_of_one_source(data_dir: Path, tmp_path: Path) -> None:
    from conftest import write_image_tree

    folders = [write_image_tree(tmp_path / f"set{i}", 1, 5 + i, splits=("images",), seed=i) for i in range(2)]
    testsets = [
        {"name": "imagefolder", "root": str(f), "group": "far", "label": f"set{i}"} for i, f in enumerate(folders)
    ]
    datamodule = digits_module(data_dir, testsets=testsets)
    datamodule.setup("test")
    assert datamodule.test_set_names == ["digits", "set0", "set1"]
    assert [sum(len(y) for _, y in loader) for loader in datamodule.test_dataloader()[1:]] == [5, 6]
    with pytest.raises(ConfigError, match="listed twice"):
        OODDataModule("digits", 6, data_dir, testsets=[testsets[0], {**testsets[1], "label": "set0"}])


def test_augment_module_follows_the_config(data_dir: Path) -> None:
    datamodule = OODDataModule("digits", 6, data_dir, mean=[0.3] * 3, std=[0.4] * 3, crop_padding=2, flip=False)
    assert datamodule.augment.crop_padding == 2 and datamodule.augment.flip is False
    x = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)
    torch.testing.assert_close(datamodule.augment(x, train=False), torch.full((1, 3, 32, 32), -0.75))


def test_missing_test_set_fails_in_prepare_data(tmp_path: Path) -> None:
    datamodule = OODDataModule("digits", 6, tmp_path, download=False, testsets=[{"name": "textures"}])
    with pytest.raises(ConfigError, match=r"dtd-r1\.0\.1\.tar\.gz not found: set data\.download=true"):
        datamodule.prepare_data()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset": "nope"}, "unknown data set 'nope'"),
        ({"testsets": [{"name": "lsun"}]}, "unknown data set 'lsun'"),
        ({"testsets": [{"name": "gaussian"}, {"name": "gaussian"}]}, "listed twice"),
        ({"outliers": {"root": "/x"}}, "has no name"),
        ({"batch_size": 0}, "data.batch_size=0"),
        ({"batches_per_epoch": 0}, "data.batches_per_epoch=0"),
    ],
)
def test_bad_arguments_are_config_errors(tmp_path: Path, overrides: dict, message: str) -> None:
    args = dict(dataset="digits", n_classes=6, data_dir=tmp_path)
    with pytest.raises(ConfigError, match=message):
        OODDataModule(**{**args, **overrides})


def test_wrong_n_classes_and_val_size_are_config_errors(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="data.n_classes=5 but digits has labels 0..5"):
        digits_module(data_dir, n_classes=5)
    with pytest.raises(ConfigError, match="data.val_size=722"):
        digits_module(data_dir, val_size=722)


@pytest.mark.slow
def test_real_cifar10_with_tinyimagenet_outliers(tmp_path: Path) -> None:
    """The full CIFAR-10 JPEG tree as ID data and Tiny ImageNet 32x32 test images as outliers."""
    if not (SHARED_DATA / "cifar10-jpeg.tar.gz").exists():
        pytest.skip(f"{SHARED_DATA} is absent")
    for archive in ("cifar10-jpeg.tar.gz", "tinyimagenet32-test.tar.gz"):
        with tarfile.open(SHARED_DATA / archive) as tar:
            tar.extractall(tmp_path / "shared", filter="data")
    datamodule = OODDataModule(
        "cifar10", 10, tmp_path / "data", root=tmp_path / "shared" / "cifar10", batches_per_epoch=3,
        outliers={"name": "tinyimages300k", "root": tmp_path / "shared" / "tinyimagenet32", "batch_size": 256},
        testsets=[{"name": "tinyimagenet-resize", "root": tmp_path / "shared" / "tinyimagenet32", "group": "far"}],
    )  # fmt: skip
    datamodule.prepare_data()
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape == (384, 32, 32, 3) and int((y == -1).sum()) == 256
    datamodule.setup("test")
    assert [sum(len(b[1]) for b in loader) for loader in datamodule.test_dataloader()] == [10_000, 10_000]


class RecordingModule(pl.LightningModule):
    """A linear classifier that records the labels of the training batches it sees."""

    def __init__(self, augment: torch.nn.Module) -> None:
        super().__init__()
        self.augment = augment
        self.linear = torch.nn.Linear(3 * 32 * 32, 6)
        self.seen: list[tuple[int, list[int]]] = []

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.augment(x, train=self.training), y

    def training_step(self, batch, batch_idx: int):
        x, y = batch
        self.seen.append((self.current_epoch, y.tolist()))
        return torch.nn.functional.cross_entropy(self.linear(x.flatten(1)), y.clamp(min=0))

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        assert batch[0].dtype == torch.float32

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:You have overridden `on_after_batch_transfer`")
@pytest.mark.filterwarnings("ignore:You requested to overfit")  # Lightning swaps in a sequential sampler
@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")
@pytest.mark.parametrize(
    "trainer_args", [{"limit_train_batches": 2}, {"overfit_batches": 1}], ids=["epochs", "overfit"]
)
def test_lightning_reshuffles_per_epoch_and_overfits_one_batch(data_dir: Path, trainer_args: dict) -> None:
    datamodule = OODDataModule("digits", 6, data_dir, batch_size=16, outliers={"name": "gaussian", "batch_size": 4})
    module = RecordingModule(datamodule.augment)
    trainer = pl.Trainer(
        max_epochs=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **trainer_args,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    epoch0 = [labels for epoch, labels in module.seen if epoch == 0]
    epoch1 = [labels for epoch, labels in module.seen if epoch == 1]
    assert all(len(labels) == 20 and labels[16:] == [-1] * 4 for labels in epoch0 + epoch1)
    assert (epoch0 == epoch1) == ("overfit_batches" in trainer_args)
