"""Every data set of the benchmark by name: where its files come from and how they decode.

``load_dataset(name, split, data_dir, root=None, download=True)`` returns the data set
as :class:`~mchad.data.tensors.ImageTensors` (uint8 (N, 32, 32, 3), int64 labels),
decoded once and then read from the cache under ``<data_dir>/cache``. Downloads land
in ``<data_dir>/<name>/`` and are checked against the checksums their publishers (via
torchvision and pytorch-ood) list. Giving ``root`` reads a local copy instead:

- ID sets (cifar10, cifar100, svhn, mnist, fashionmnist): an image-folder tree
  ``root/<split>/<class>/*.{jpg,png,...}`` with classes in sorted order (the layout of
  torchvision's ``ImageFolder``).
- OOD sets and outliers: every image file under ``root`` (recursive), label -1;
  tinyimages300k also takes a .npy file of uint8 (N, 32, 32, 3) as root.
- imagefolder: ``root/<split>/`` if it exists, else ``root``; labels from the sorted
  class folders (a set used as OOD is relabelled -1 by the data module).

Labels returned here are each set's own: class indices for classification sets, -1 for
sets that are OOD by nature. Sizes other than 32x32 are resized (see
:mod:`mchad.data.images`). A local copy is cached under a digest of its path
(``<name>-local-<digest>``). Each cache entry records the fingerprint of what it was
decoded from (see :meth:`Source.fingerprint`): for a local copy the relative path, size
and modification time of each image file it reads; for a download the checksums the
registry lists; for generated and bundled sets a constant. An entry whose source has
changed since (an image added, removed or rewritten) is decoded again on its next use.
"""

from __future__ import annotations

import hashlib
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torchvision.datasets as tvd

from mchad.data.cache import CacheEntry, Fingerprint
from mchad.data.download import RemoteFile, extract, fetch
from mchad.data.images import list_images, read_class_tree, read_images, to_rgb32
from mchad.data.tensors import OOD_LABEL, ImageTensors
from mchad.errors import ConfigError
from mchad.files import file_lock

Arrays = tuple[np.ndarray, np.ndarray]

CACHE_FOLDER = "cache"


def ood_labels(n: int) -> np.ndarray:
    return np.full(n, OOD_LABEL, dtype=np.int64)


def seeded_subset(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` of ``range(n)`` drawn without replacement by a fixed seed, in increasing order."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def path_fingerprint(path: Path) -> Fingerprint:
    """A local file by its size and modification time; a folder by those and the relative path of each image in it.

    Cheap (no file is read), and it changes when a file is added, removed or rewritten.
    """
    if path.is_file():
        stat = path.stat()
        return Fingerprint(f"file {path}", f"{stat.st_size}-{stat.st_mtime_ns}")
    digest = hashlib.sha256()
    for image in list_images(path):
        stat = image.stat()
        # NUL cannot occur in a file name, so the records cannot run into each other
        digest.update(f"{image.relative_to(path).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return Fingerprint(f"image folder {path}", digest.hexdigest())


def remote_fingerprint(remotes: list[RemoteFile]) -> Fingerprint:
    """Downloaded files by the checksums the registry lists for them."""
    return Fingerprint(
        "download of " + ", ".join(remote.filename for remote in remotes),
        " ".join(f"{remote.algorithm}:{remote.checksum}" for remote in remotes),
    )


def read_ood_folder(folder: Path, subset: int | None = None) -> Arrays:
    """Every image under ``folder`` (or a seeded subset of ``subset`` of them), labelled -1."""
    paths = list_images(folder)
    if not paths:
        raise ConfigError(f"{folder} holds no image files: point root at a folder of images")
    if subset is not None and subset < len(paths):
        paths = [paths[i] for i in seeded_subset(len(paths), subset, seed=0)]
    return read_images(paths), ood_labels(len(paths))


class Source(ABC):
    """One data set: its name, its splits, and how to turn its files into arrays.

    ``version`` is part of the cache file name; bump it when the decoding changes so old
    cache entries are rebuilt. A change of what the decoding reads is caught by
    :meth:`fingerprint` and :meth:`local_fingerprint` instead.
    """

    splits: tuple[str, ...] | None = ("test",)
    version: int = 1

    def __init__(self, name: str) -> None:
        self.name = name

    def check_split(self, split: str) -> None:
        if self.splits is not None and split not in self.splits:
            raise ConfigError(f"data set {self.name} has no split '{split}': choose one of {', '.join(self.splits)}")

    @abstractmethod
    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        """Decode ``split`` from the files in ``folder`` (``<data_dir>/<name>``), fetching them if allowed."""

    def remotes(self, split: str) -> list[RemoteFile]:
        """The files :meth:`load` fetches for ``split``."""
        return []

    def fingerprint(self, split: str) -> Fingerprint:
        """What :meth:`load` decodes ``split`` from: the checksums of :meth:`remotes`."""
        return remote_fingerprint(self.remotes(split))

    def local_input(self, split: str, root: Path) -> Path:
        """The file or folder of the local copy at ``root`` that ``split`` is decoded from."""
        return root

    def local_fingerprint(self, split: str, root: Path) -> Fingerprint:
        """What :meth:`load_local` decodes ``split`` from: the files of :meth:`local_input`."""
        return path_fingerprint(self.local_input(split, root))

    def load_local(self, split: str, root: Path) -> Arrays:
        """Decode ``split`` from a local copy at ``root``; by default every image under it, label -1."""
        return read_ood_folder(self.local_input(split, root))


class ClassTreeSource(Source):
    """A classification set; a local copy is an image-folder tree ``root/<split>/<class>/*``."""

    splits = ("train", "test")

    def local_input(self, split: str, root: Path) -> Path:
        folder = root / split
        if not folder.is_dir():
            raise ConfigError(
                f"{folder} does not exist: {self.name} root must hold {split}/<class>/<image> files "
                "(or set root=null to download the data set)"
            )
        return folder

    def load_local(self, split: str, root: Path) -> Arrays:
        return read_class_tree(self.local_input(split, root))


def _open_torchvision(name: str, open_dataset: Callable[[], object]) -> object:
    """Open a torchvision data set, turning its integrity errors into ConfigError."""
    try:
        return open_dataset()
    except RuntimeError as error:
        raise ConfigError(
            f"the downloaded {name} files are incomplete or corrupted ({error}): delete them to download again"
        ) from error


class CifarSource(ClassTreeSource):
    """CIFAR-10 / CIFAR-100 (fine labels) from the python-pickle archive, read by torchvision."""

    def __init__(self, name: str, dataset_class: type[tvd.CIFAR10], archive: RemoteFile) -> None:
        super().__init__(name)
        self.dataset_class = dataset_class
        self.archive = archive

    def remotes(self, split: str) -> list[RemoteFile]:
        return [self.archive]

    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        cls = self.dataset_class
        extract(fetch(self.remotes(split)[0], folder, download), folder)
        data = _open_torchvision(self.name, lambda: cls(str(folder), train=split == "train", download=False))
        return np.ascontiguousarray(data.data), np.asarray(data.targets, dtype=np.int64)


class SvhnSource(ClassTreeSource):
    """SVHN cropped digits (32x32 .mat files); torchvision maps the label 10 of digit 0 to 0."""

    def remotes(self, split: str) -> list[RemoteFile]:
        md5 = {"train": "e26dedcc434d2e4c54c9b2d4a06d8373", "test": "eb5a983be6a315427106f1b164d9cef3"}[split]
        return [RemoteFile(f"http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat", f"{split}_32x32.mat", md5=md5)]

    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        fetch(self.remotes(split)[0], folder, download)
        data = _open_torchvision(self.name, lambda: tvd.SVHN(str(folder), split=split, download=False))
        return np.ascontiguousarray(data.data.transpose(0, 2, 3, 1)), np.asarray(data.labels, dtype=np.int64)


class MnistSource(ClassTreeSource):
    """MNIST / Fashion-MNIST, 28x28 grey, resized to 32x32 and repeated over 3 channels."""

    def __init__(self, name: str, dataset_class: type[tvd.MNIST], mirror: str, md5s: tuple[str, str, str, str]) -> None:
        super().__init__(name)
        self.dataset_class = dataset_class
        self.files = [RemoteFile(mirror + filename, filename, md5=md5) for filename, md5 in zip(MNIST_FILES, md5s)]

    def remotes(self, split: str) -> list[RemoteFile]:
        return self.files

    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        cls = self.dataset_class
        raw = folder / cls.__name__ / "raw"
        for remote in self.remotes(split):
            extract(fetch(remote, raw, download), raw)
        data = _open_torchvision(self.name, lambda: cls(str(folder), train=split == "train", download=False))
        return to_rgb32(data.data.numpy()), data.targets.numpy().astype(np.int64)


class ArchiveSource(Source):
    """An OOD test set published as one archive of images (all labelled -1).

    ``subset``: keep a fixed seeded subset of this many images (Places365).
    """

    def __init__(self, name: str, remote: RemoteFile, subset: int | None = None) -> None:
        super().__init__(name)
        self.remote = remote
        self.subset = subset

    def remotes(self, split: str) -> list[RemoteFile]:
        return [self.remote]

    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        extract(fetch(self.remote, folder, download), folder)
        return read_ood_folder(folder, self.subset)

    def load_local(self, split: str, root: Path) -> Arrays:
        return read_ood_folder(self.local_input(split, root), self.subset)


class TinyImages300kSource(Source):
    """The 300,000 TinyImages of Hendrycks' outlier-exposure release, one uint8 .npy file.

    Returned as a memory map, so building its cache copies it chunk by chunk, never
    as a whole in memory nor as float32.
    """

    splits = ("train",)
    remote = RemoteFile(
        "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",
        "300K_random_images.npy",
        md5="64ca64357de98351f28454274a112dc3",
    )

    def remotes(self, split: str) -> list[RemoteFile]:
        return [self.remote]

    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        return self._read_npy(fetch(self.remote, folder, download))

    def load_local(self, split: str, root: Path) -> Arrays:
        path = self.local_input(split, root)
        return self._read_npy(path) if path.suffix == ".npy" else read_ood_folder(path)

    @staticmethod
    def _read_npy(path: Path) -> Arrays:
        images = np.load(path, mmap_mode="r")
        if images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3):
            raise ConfigError(f"{path} holds {images.dtype} {images.shape}, expected uint8 (N, 32, 32, 3)")
        return images, ood_labels(len(images))


class ImageFolderSource(Source):
    """Any folder of images; needs ``root``."""

    splits = None
    needs_root = "imagefolder needs a root: set the data set's root to a folder of <class>/<image> files"

    def fingerprint(self, split: str) -> Fingerprint:
        raise ConfigError(self.needs_root)

    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        raise ConfigError(self.needs_root)

    def local_input(self, split: str, root: Path) -> Path:
        return root / split if (root / split).is_dir() else root

    def load_local(self, split: str, root: Path) -> Arrays:
        return read_class_tree(self.local_input(split, root))


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """clip(N(128, 128^2), 0, 255) as uint8: N(0.5, 0.5^2) clipped to [0, 1] in unit scale."""
    return np.clip(rng.standard_normal(shape, dtype=np.float32) * 128 + 128, 0, 255).astype(np.uint8)


def uniform_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform over {0, ..., 254}: the distribution of floor(U[0, 255)), pytorch-ood's ``UniformNoise``."""
    return rng.integers(0, 255, size=shape, dtype=np.uint8)


class NoiseSource(Source):
    """10,000 seeded noise images per split, label -1.

    The distributions are pytorch-ood's ``GaussianNoise`` / ``UniformNoise`` defaults,
    which the MCHAD reference used (see :func:`gaussian_noise`, :func:`uniform_noise`).
    The seed is derived from the set's name and the split, so the validation noise
    differs from the test noise and every run sees the same images.
    """

    splits = ("train", "val", "test")
    length = 10_000
    chunk = 1_000

    def __init__(self, name: str, draw: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]) -> None:
        super().__init__(name)
        self.draw = draw

    def fingerprint(self, split: str) -> Fingerprint:
        return Fingerprint(f"{self.name} noise", f"{self.draw.__name__} v{self.version}")

    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        rng = np.random.default_rng(zlib.crc32(f"{self.name}/{split}".encode()))
        shape = (self.chunk, 32, 32, 3)
        chunks = [self.draw(rng, shape) for _ in range(self.length // self.chunk)]
        return np.concatenate(chunks), ood_labels(self.length)

    def local_input(self, split: str, root: Path) -> Path:
        raise ConfigError(f"{self.name} noise is generated, it takes no root: set its root to null")


class DigitsSource(Source):
    """scikit-learn's bundled 8x8 digits (1,797 images, offline), for the CPU quickstart.

    Grey levels 0..16 are scaled to 0..255 and each pixel is repeated 4x4 to 32x32 RGB.
    ``digits``: classes 0-5, labels 0..5, split 2/3 train, 1/3 test by a fixed seed.
    ``digits-ood``: classes 6-9, all images, label -1.
    """

    id_classes = 6
    train_fraction = 2 / 3

    def __init__(self, name: str, ood: bool) -> None:
        super().__init__(name)
        self.ood = ood
        self.splits = ("test",) if ood else ("train", "test")

    def fingerprint(self, split: str) -> Fingerprint:
        return Fingerprint("scikit-learn's bundled digits", f"load_digits v{self.version}")

    def load(self, split: str, folder: Path, download: bool) -> Arrays:
        # imported here: scikit-learn takes a second to import and only this set needs it
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255 / 16)).astype(np.uint8)
        images = images.repeat(4, axis=1).repeat(4, axis=2)
        labels = digits.target.astype(np.int64)
        if self.ood:
            keep = labels >= self.id_classes
            return to_rgb32(images[keep]), ood_labels(int(keep.sum()))
        ids = np.flatnonzero(labels < self.id_classes)
        order = np.random.default_rng(0).permutation(ids)
        n_train = round(len(ids) * self.train_fraction)
        chosen = np.sort(order[:n_train] if split == "train" else order[n_train:])
        return to_rgb32(images[chosen]), labels[chosen]

    def local_input(self, split: str, root: Path) -> Path:
        raise ConfigError(f"{self.name} is bundled with scikit-learn, it takes no root: set its root to null")


def _odin(name: str, url_id: str, filename: str, md5: str) -> ArchiveSource:
    return ArchiveSource(name, RemoteFile(f"https://www.dropbox.com/s/raw/{url_id}/{filename}", filename, md5=md5))


MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
"""The four files of the MNIST format, in the order of the md5s below; torchvision's readers open them."""

# Where the data sets are published and their checksums: the same files torchvision downloads
# (tests/test_data_registry.py checks that they still agree), stated here because torchvision keeps them
# in undocumented class attributes.

SOURCES: dict[str, Source] = {
    source.name: source
    for source in [
        CifarSource(
            "cifar10",
            tvd.CIFAR10,
            RemoteFile(
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "cifar-10-python.tar.gz",
                md5="c58f30108f718f92721af3b95e74349a",
            ),
        ),
        CifarSource(
            "cifar100",
            tvd.CIFAR100,
            RemoteFile(
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "cifar-100-python.tar.gz",
                md5="eb9058c3a382ffc7106e4002c42a8d85",
            ),
        ),
        SvhnSource("svhn"),
        MnistSource(
            "mnist",
            tvd.MNIST,
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        ),
        MnistSource(
            "fashionmnist",
            tvd.FashionMNIST,
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        ),
        ImageFolderSource("imagefolder"),
        NoiseSource("gaussian", gaussian_noise),
        NoiseSource("uniform", uniform_noise),
        DigitsSource("digits", ood=False),
        DigitsSource("digits-ood", ood=True),
        TinyImages300kSource("tinyimages300k"),
        # DTD as in torchvision.datasets.DTD and pytorch-ood's Textures: all 5,640 images
        ArchiveSource(
            "textures",
            RemoteFile(
                "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                "dtd-r1.0.1.tar.gz",
                md5="fff73e5086ae6bdbea199a49dfb8a4c1",
            ),
        ),
        # the ODIN release (Liang et al., ICLR 2018), URLs and md5s as in pytorch-ood
        _odin("tinyimagenet-crop", "avgm2u562itwpkl", "Imagenet.tar.gz", "7c0827e4246c3718a5ee076e999e52e5"),
        _odin("tinyimagenet-resize", "kp3my3412u5k9rl", "Imagenet_resize.tar.gz", "0f9ff11d45babf2eff5fe12281d1ac31"),
        _odin("lsun-crop", "fhtsw1m3qxlwj6h", "LSUN.tar.gz", "458a0a0ab8e5f1cb4516d7400568e460"),
        _odin("lsun-resize", "moqh2wh8696c3yl", "LSUN_resize.tar.gz", "278b7b31c8cb7e804a1465a8ce03a2dc"),
        # iSUN from the same ODIN release; pytorch-ood lacks it, the md5 is the one other projects check
        _odin("isun", "ssz7qxfqae0cca5", "iSUN.tar.gz", "be77b0f2c26fda898afac5f99645ee70"),
        # torchvision's Places365 small (256x256) validation images, a fixed seeded 10,000 of 36,500
        ArchiveSource(
            "places365",
            RemoteFile(
                "http://data.csail.mit.edu/places/places365/val_256.tar",
                "val_256.tar",
                md5="e27b17d8d44f4af9a78502beb927f808",
            ),
            subset=10_000,
        ),
    ]
}


def dataset_names() -> list[str]:
    return sorted(SOURCES)


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"unknown data set '{name}': choose one of {', '.join(dataset_names())}")
    return SOURCES[name]


def cache_name(name: str, root: Path | None) -> str:
    """The cache entry's name: the set's name, plus a digest of the local copy's path if any."""
    if root is None:
        return name
    return f"{name}-local-{hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]}"


def cache_entry(name: str, split: str, data_dir: str | Path, root: str | Path | None = None) -> CacheEntry:
    """The cache entry of data set ``name``'s ``split`` under ``data_dir`` (``root``: the user's copy it is read from)."""
    key = cache_name(name, Path(root).expanduser() if root is not None else None)
    return CacheEntry(Path(data_dir).expanduser() / CACHE_FOLDER, key, split, get_source(name).version)


def load_dataset(
    name: str, split: str, data_dir: str | Path, root: str | Path | None = None, download: bool = True
) -> ImageTensors:
    """Data set ``name``'s ``split`` as uint8 image and int64 label tensors (see module docstring).

    Fetching, extraction and decoding happen once, under a lock per cache entry, so
    parallel runs wait for the first one instead of repeating its work. The source's
    fingerprint is taken before the decoding, so files that change while it runs make
    the next call decode again.
    """
    source = get_source(name)
    source.check_split(split)
    local = Path(root).expanduser() if root is not None else None
    if local is not None and not local.exists():
        raise ConfigError(
            f"root={local} for data set {name} does not exist: point it at a local copy or set it to null"
        )
    fingerprint = source.local_fingerprint(split, local) if local is not None else source.fingerprint(split)
    entry = cache_entry(name, split, data_dir, local)
    # checked without the lock, and quietly: an invalid entry is reported once, by open_or_build() under the lock
    tensors = entry.open(fingerprint, warn=False)
    if tensors is not None:
        return tensors
    folder = Path(data_dir).expanduser() / name
    with file_lock(entry.folder / entry.name):
        return entry.open_or_build(
            fingerprint,
            lambda: source.load_local(split, local) if local is not None else source.load(split, folder, download),
        )
