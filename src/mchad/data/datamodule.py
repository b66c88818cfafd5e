"""The data module: ID train/val/test splits, training outliers and OOD test sets as uint8 tensors.

Every data set is a uint8 tensor in memory (or memory-mapped from the cache), so a batch
is one tensor index, not a loop over samples: the DataLoaders run with ``batch_size=None``
over data sets whose items are whole batches (:class:`TrainBatches`, :class:`EvalBatches`).
Augmentation
and normalisation happen later, on the training device (:attr:`OODDataModule.augment`,
called from the module's steps).

Training batches: ``batches_per_epoch`` batches (default: one pass over the train split)
of ``batch_size`` ID images taken from a stream of seeded random permutations of the
train split (a new permutation starts where the last one ends, so more batches than one
pass cycle through the data), each followed by ``outliers.batch_size`` outlier images
(label -1) from their own permutation stream. The permutations depend on ``seed`` and
the epoch only, so a run is reproducible and a run resumed at an epoch boundary sees the
batches it would have seen. No loader draws from the global RNG either: each has a
generator of its own (PyTorch would otherwise draw a worker base seed from the global
RNG every time a loader is iterated, shifting the dropout masks of a resumed run).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mchad.data.augment import BatchAugment, derive_seed
from mchad.data.registry import get_source, load_dataset
from mchad.data.tensors import OOD_LABEL, ImageTensors
from mchad.errors import ConfigError

log = logging.getLogger(__name__)

CIFAR10_MEAN = (0.4914, 0.4824, 0.4467)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
VAL_NOISE = "gaussian"
VAL_NOISE_SIZE = 1000
LOADER_STREAM = 3


@dataclass(frozen=True)
class DataRef:
    """One data set a run needs: its role (id, outliers, val-ood, test-ood), name, split and local root."""

    role: str
    name: str
    split: str
    root: str | None


@dataclass(frozen=True)
class FitData:
    """What training and validation read: the full ID train set with the indices of its
    train part, the ID and OOD validation sets, and the outliers with the indices of
    their train part (None without outliers)."""

    train: ImageTensors
    id_pool: Tensor
    val_id: ImageTensors
    val_ood: ImageTensors
    outliers: ImageTensors | None = None
    outlier_pool: Tensor | None = None


def seeded_generator(*seeds: int) -> torch.Generator:
    """A torch generator whose state depends on all of ``seeds`` (e.g. run seed and epoch)."""
    return torch.Generator().manual_seed(derive_seed(*seeds))


def permutation_stream(n: int, total: int, generator: torch.Generator) -> Tensor:
    """The first ``total`` entries of concatenated random permutations of ``range(n)``."""
    rounds = -(-total // n)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(rounds)])[:total]


class TrainBatches(Dataset):
    """A map-style data set whose items are the training batches of an epoch.

    Item ``(epoch, k)`` (or ``k``, meaning epoch 0) is batch k of that epoch:
    ``(x uint8 (B + B_o, 32, 32, 3), y int64 (B + B_o,))``, ``batch_size`` ID images from
    ``id_pool`` followed by ``outlier_batch_size`` outliers from ``outlier_pool`` with label
    -1. Every process derives an epoch's permutation streams from ``(seed, epoch)`` alone,
    so DataLoader workers agree without sharing state. ``batches_per_epoch=None`` is one
    pass over ``id_pool`` (the last batch may be smaller); otherwise every batch is full.
    """

    def __init__(
        self,
        data: ImageTensors,
        id_pool: Tensor,
        batch_size: int,
        batches_per_epoch: int | None,
        seed: int,
        outliers: ImageTensors | None = None,
        outlier_pool: Tensor | None = None,
        outlier_batch_size: int = 0,
    ) -> None:
        self.data = data
        self.id_pool = id_pool
        self.batch_size = batch_size
        self.id_total = len(id_pool) if batches_per_epoch is None else batches_per_epoch * batch_size
        self.seed = seed
        self.outliers = outliers
        self.outlier_pool = outlier_pool
        self.outlier_batch_size = outlier_batch_size
        self._plan: tuple[int, tuple[Tensor, ...], tuple[Tensor, ...]] | None = None

    def __len__(self) -> int:
        return -(-self.id_total // self.batch_size)

    def plan(self, epoch: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """The epoch's ID and outlier index batches (positions in the full tensors)."""
        if self._plan is None or self._plan[0] != epoch:
            generator = seeded_generator(self.seed, epoch)
            id_stream = self.id_pool[permutation_stream(len(self.id_pool), self.id_total, generator)]
            outlier_batches: tuple[Tensor, ...] = ()
            if self.outliers is not None:
                outlier_stream = permutation_stream(
                    len(self.outlier_pool), len(self) * self.outlier_batch_size, generator
                )
                outlier_batches = self.outlier_pool[outlier_stream].split(self.outlier_batch_size)
            self._plan = (epoch, id_stream.split(self.batch_size), outlier_batches)
        return self._plan[1], self._plan[2]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        epoch, k = key if isinstance(key, tuple) else (0, key)
        id_batches, outlier_batches = self.plan(epoch)
        ids = id_batches[k]
        labels = self.data.labels[ids]
        if self.outliers is None:
            return self.data.images.index_select(0, ids), labels
        outlier_ids = outlier_batches[k]
        # one uint8 batch filled in place: index_select is ~15x faster than advanced indexing + cat
        images = self.data.images.new_empty((len(ids) + len(outlier_ids), *self.data.images.shape[1:]))
        torch.index_select(self.data.images, 0, ids, out=images[: len(ids)])
        torch.index_select(self.outliers.images, 0, outlier_ids, out=images[len(ids) :])
        outlier_labels = torch.full((len(outlier_ids),), OOD_LABEL, dtype=torch.int64)
        return images, torch.cat([labels, outlier_labels])


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, k)`` for the ``n_batches`` batches of an epoch, in order.

    Lightning calls :meth:`set_epoch` before each epoch (also through its distributed
    wrapper, where each process takes every world_size-th batch); iterating without it
    repeats the same epoch. For ``overfit_batches`` Lightning replaces this sampler by a
    plain sequential one: keys ``k``, epoch 0, the same batches every epoch.
    """

    def __init__(self, n_batches: int) -> None:
        self.n_batches = n_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, k) for k in range(self.n_batches))


class EvalBatches(Dataset):
    """A map-style data set whose item k is the k-th slice of ``batch_size`` samples of ``data``."""

    def __init__(self, data: ImageTensors, batch_size: int) -> None:
        self.data = data
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        window = slice(k * self.batch_size, (k + 1) * self.batch_size)
        return self.data.images[window], self.data.labels[window]


def folder_testsets(folders: Sequence[str]) -> list[dict]:
    """``ood_folders`` as test-set entries: every image below each folder, named after the folder."""
    entries = []
    for folder in folders:
        path = Path(folder).expanduser().absolute()
        if not path.is_dir():
            raise ConfigError(
                f"ood_folders entry {folder} is not a folder: give folders of images, e.g. ood_folders=[/data/my-ood]"
            )
        entries.append({"name": "imagefolder", "root": str(path), "group": "", "label": path.name})
    return entries


def split_sizes(n: int, val_size: float | int) -> int:
    """Number of validation samples: a fraction of ``n`` (0 < val_size < 1) or a whole count (an int >= 1).

    A float >= 1 is neither (1.0 would hold out one image, not all of them) and is refused.
    """
    if isinstance(val_size, float) and val_size >= 1:
        raise ConfigError(
            f"data.val_size={val_size} is not a fraction in (0, 1): give a fraction, e.g. data.val_size=0.1, "
            "or a whole number of images, e.g. data.val_size=5000"
        )
    n_val = round(val_size * n) if val_size < 1 else int(val_size)
    if not 0 < n_val < n:
        raise ConfigError(
            f"data.val_size={val_size} leaves {n_val} of {n} images for validation: use a fraction in (0, 1)"
        )
    return n_val


class OODDataModule(pl.LightningDataModule):
    """ID data, optional training outliers and OOD test sets, served as uint8 batches.

    Args:
        dataset: registry name of the ID set (``data.name``), e.g. ``cifar10``.
        n_classes: number of known classes; ID labels must lie in 0..n_classes-1.
        data_dir: downloads and the tensor cache live here (``paths.data_dir``).
        root: local copy of the ID set (``root/<split>/<class>/*``) instead of a download.
        download: allow downloads; without them a missing file is a ConfigError.
        val_size: part of the ID train set held out for validation (fraction or count),
            split by ``seed``.
        batch_size: ID images per training batch.
        batches_per_epoch: training batches per epoch; None = one pass over the train split.
        eval_batch_size: images per validation / test batch.
        outliers: ``{name, root, batch_size}`` of a training outlier set (label -1), or None.
            A held-out slice (as large as the ID validation split, at most a tenth of the
            outliers) is the OOD validation set.
        testsets: ``[{name, root, group, label}]`` OOD test sets, in the order of the test
            loaders; ``label`` (default: ``name``) names the set in results.csv.
            A test set with the ID set's own name is skipped (shared test set lists name
            cifar10 and cifar100 as near-OOD of each other).
        mean, std: normalisation statistics for :attr:`augment`.
        crop_padding, flip: training augmentation (see :class:`BatchAugment`).
        seed: seeds the train/val split, the outlier hold-out and the batch order.
        num_workers: DataLoader workers; 0 is usually best, a batch is a single tensor index.
        evaluation_only: prepare and load the test sets alone (evaluating a checkpoint needs
            neither the training images nor the outliers).

    Loaders: ``train_dataloader()`` yields ``(x, y)`` with ``x`` uint8 (B + B_o, 32, 32, 3);
    ``val_dataloader()`` is ``[ID val split, OOD val set]``; ``test_dataloader()`` is
    ``[ID test set, *OOD test sets]`` named by :attr:`test_set_names` (index 0 is the ID
    set) with groups in :attr:`test_set_groups` (OOD set name -> near / far / "").
    """

    def __init__(
        self,
        dataset: str,
        n_classes: int,
        data_dir: str | Path,
        root: str | None = None,
        download: bool = True,
        val_size: float | int = 0.1,
        batch_size: int = 128,
        batches_per_epoch: int | None = None,
        eval_batch_size: int = 1024,
        outliers: Mapping | None = None,
        testsets: Sequence[Mapping] = (),
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        crop_padding: int = 4,
        flip: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        evaluation_only: bool = False,
    ) -> None:
        super().__init__()
        get_source(dataset)
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("n_classes", n_classes)):
            if value < 1:
                raise ConfigError(f"data.{name}={value} must be at least 1")
        if batches_per_epoch is not None and batches_per_epoch < 1:
            raise ConfigError(f"data.batches_per_epoch={batches_per_epoch} must be at least 1, or null for one pass")
        if not val_size > 0:
            raise ConfigError(f"data.val_size={val_size} must be positive: a fraction in (0, 1) or a count")
        self.dataset = dataset
        self.n_classes = n_classes
        self.data_dir = Path(data_dir)
        self.root = root
        self.download = download
        self.val_size = val_size
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.eval_batch_size = eval_batch_size
        self.outliers = self._outlier_config(outliers)
        self.testsets = self._testset_configs(testsets)
        self.seed = seed
        self.num_workers = num_workers
        self.evaluation_only = evaluation_only
        self.augment = BatchAugment(mean, std, crop_padding, flip, seed)
        self.test_set_names: list[str] = [dataset] + [t["label"] for t in self.testsets]
        self.test_set_groups: dict[str, str] = {t["label"]: t["group"] for t in self.testsets}
        self._fit: FitData | None = None
        self._test: list[ImageTensors] | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig, evaluation_only: bool = False) -> OODDataModule:
        """Build from a composed run config: the ``data`` node (``name`` is ``dataset``),
        ``testsets`` followed by ``ood_folders``, ``paths.data_dir`` and ``seed``."""
        data = OmegaConf.to_container(cfg.data, resolve=True)
        testsets = OmegaConf.to_container(cfg.testsets, resolve=True) or []
        return cls(
            dataset=data.pop("name"),
            data_dir=cfg.paths.data_dir,
            testsets=[*testsets, *folder_testsets(cfg.get("ood_folders") or [])],
            seed=cfg.seed,
            evaluation_only=evaluation_only,
            **data,
        )

    def _outlier_config(self, outliers: Mapping | None) -> dict | None:
        if not outliers:
            return None
        if not outliers.get("name"):
            raise ConfigError(
                f"data.outliers={dict(outliers)} has no name: set data.outliers.name (e.g. tinyimages300k)"
            )
        get_source(outliers["name"])
        batch_size = outliers.get("batch_size") or self.batch_size
        return {"name": outliers["name"], "root": outliers.get("root"), "batch_size": int(batch_size)}

    def _testset_configs(self, testsets: Sequence[Mapping]) -> list[dict]:
        configs = []
        for entry in testsets:
            if not entry.get("name"):
                raise ConfigError(f"test set entry {dict(entry)} has no name: give each testsets entry a name")
            get_source(entry["name"])
            if entry["name"] == self.dataset:
                log.info("skipping test set %s: it is the ID set", entry["name"])
                continue
            # the label names the set in results.csv; two image folders need two labels
            label = entry.get("label") or entry["name"]
            if label in (c["label"] for c in configs):
                raise ConfigError(f"test set {label} is listed twice: remove one entry or give it another label")
            configs.append(
                {"name": entry["name"], "root": entry.get("root"), "group": entry.get("group") or "", "label": label}
            )
        return configs

    def data_refs(self) -> list[DataRef]:
        """Every data set (and split) this module loads, in the order :meth:`prepare_data` prepares them."""
        test_refs = [DataRef("test-ood", t["name"], "test", t["root"]) for t in self.testsets]
        if self.evaluation_only:
            return [DataRef("id", self.dataset, "test", self.root), *test_refs]
        refs = [DataRef("id", self.dataset, split, self.root) for split in ("train", "test")]
        if self.outliers:
            refs.append(DataRef("outliers", self.outliers["name"], "train", self.outliers["root"]))
        else:
            refs.append(DataRef("val-ood", VAL_NOISE, "val", None))
        return refs + test_refs

    def load(self, ref: DataRef) -> ImageTensors:
        return load_dataset(ref.name, ref.split, self.data_dir, root=ref.root, download=self.download)

    def prepare_data(self) -> None:
        """Download, verify and cache every data set the run needs (ConfigError if one is missing)."""
        for ref in self.data_refs():
            self.load(ref)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and self._fit is None:
            self._fit = self._setup_fit()
        if stage in ("test", "predict", None) and self._test is None:
            self._test = self._setup_test()

    def _id_split(self) -> tuple[ImageTensors, Tensor, int]:
        """The ID train set, its seeded permutation and the number of validation images at its start."""
        train = self.load(DataRef("id", self.dataset, "train", self.root))
        self._check_labels(train)
        order = torch.randperm(len(train), generator=seeded_generator(self.seed, 0))
        return train, order, split_sizes(len(train), self.val_size)

    def id_train_split(self, limit: int | None = None) -> ImageTensors:
        """The ID images training read (without the validation split), un-augmented; the first ``limit``
        of the seeded permutation (a seeded random sample) in file order. Loads no outliers."""
        train, order, n_val = self._id_split()
        return train.subset(order[n_val:][:limit].sort().values)

    def _setup_fit(self) -> FitData:
        train, order, n_val = self._id_split()
        val_id = train.subset(order[:n_val].sort().values)
        if not self.outliers:
            noise = self.load(DataRef("val-ood", VAL_NOISE, "val", None))
            log.info("%s: %d train, %d val images", self.dataset, len(train) - n_val, n_val)
            return FitData(train, order[n_val:], val_id, noise.subset(torch.arange(VAL_NOISE_SIZE)).as_ood())
        outliers = self.load(DataRef("outliers", self.outliers["name"], "train", self.outliers["root"])).as_ood()
        n_held = min(n_val, len(outliers) // 10)
        if n_held < 1:
            raise ConfigError(f"outlier set {self.outliers['name']} has only {len(outliers)} images: use a larger set")
        outlier_order = torch.randperm(len(outliers), generator=seeded_generator(self.seed, 1))
        val_ood = outliers.subset(outlier_order[:n_held].sort().values)
        log.info(
            "%s: %d train, %d val images; outliers %s: %d train, %d val images",
            self.dataset, len(train) - n_val, n_val, self.outliers["name"], len(outliers) - n_held, n_held,
        )  # fmt: skip
        return FitData(train, order[n_val:], val_id, val_ood, outliers, outlier_order[n_held:])

    def _setup_test(self) -> list[ImageTensors]:
        test = self.load(DataRef("id", self.dataset, "test", self.root))
        self._check_labels(test)
        oods = [self.load(DataRef("test-ood", t["name"], "test", t["root"])).as_ood() for t in self.testsets]
        return [test, *oods]

    def _check_labels(self, data: ImageTensors) -> None:
        low, high = int(data.labels.min()), int(data.labels.max())
        if low < 0 or high >= self.n_classes:
            raise ConfigError(
                f"data.n_classes={self.n_classes} but {self.dataset} has labels {low}..{high}: "
                f"set data.n_classes={high + 1} or use a data set with class folders only"
            )

    def _loader(self, batches: Dataset, sampler: Sampler | None = None) -> DataLoader:
        """A loader over a data set of whole batches (``batch_size=None``: no collation)."""
        return DataLoader(
            batches,
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=seeded_generator(self.seed, LOADER_STREAM),
        )

    @property
    def fit_data(self) -> FitData:
        """The training and validation tensors (set up on first use)."""
        if self._fit is None:
            self.setup("fit")
        return self._fit

    def train_dataloader(self) -> DataLoader:
        fit = self.fit_data
        batches = TrainBatches(
            fit.train, fit.id_pool, self.batch_size, self.batches_per_epoch, self.seed,
            fit.outliers, fit.outlier_pool, self.outliers["batch_size"] if self.outliers else 0,
        )  # fmt: skip
        return self._loader(batches, EpochSampler(len(batches)))

    def eval_loader(self, data: ImageTensors) -> DataLoader:
        """Batches of ``eval_batch_size`` images of ``data`` in order (validation, testing, fitting detectors)."""
        return self._loader(EvalBatches(data, self.eval_batch_size))

    def val_dataloader(self) -> list[DataLoader]:
        fit = self.fit_data
        return [self.eval_loader(fit.val_id), self.eval_loader(fit.val_ood)]

    def test_dataloader(self) -> list[DataLoader]:
        if self._test is None:
            self.setup("test")
        return [self.eval_loader(data) for data in self._test]
