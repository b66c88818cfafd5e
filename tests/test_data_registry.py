"""The data set registry: bundled and generated sets, local folders, and downloads via file:// URLs."""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import pickle
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from PIL import Image

from mchad.data import registry
from mchad.data.download import RemoteFile
from mchad.data.registry import SOURCES, ArchiveSource, dataset_names, load_dataset
from mchad.errors import ConfigError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def random_image(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_registry_has_every_contract_name() -> None:
    contract = {
        "cifar10", "cifar100", "svhn", "imagefolder", "gaussian", "uniform", "digits", "digits-ood",
        "tinyimages300k", "textures", "tinyimagenet-crop", "tinyimagenet-resize", "lsun-crop",
        "lsun-resize", "isun", "places365", "mnist", "fashionmnist",
    }  # fmt: skip
    assert contract <= set(dataset_names())


def test_unknown_name_and_split_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown data set 'cifar11': choose one of"):
        load_dataset("cifar11", "test", tmp_path)
    with pytest.raises(ConfigError, match="digits has no split 'val'"):
        load_dataset("digits", "val", tmp_path)


def test_digits_id_split(tmp_path: Path) -> None:
    train, test = load_dataset("digits", "train", tmp_path), load_dataset("digits", "test", tmp_path)
    assert train.images.shape[1:] == (32, 32, 3) and train.images.dtype == torch.uint8
    assert len(train) + len(test) == 1083  # digits 0-5 of sklearn's 1,797
    assert abs(len(train) / (len(train) + len(test)) - 2 / 3) < 0.01
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(6))
    assert int(train.images.max()) == 255
    train_rows = {row.tobytes() for row in train.images.numpy()}
    assert sum(row.tobytes() in train_rows for row in test.images.numpy()) < 5  # a few duplicate digits at most
    assert torch.equal(load_dataset("digits", "train", tmp_path / "other").labels, train.labels)


def test_digits_ood_is_classes_6_to_9_labelled_minus_one(tmp_path: Path) -> None:
    ood = load_dataset("digits-ood", "test", tmp_path)
    assert len(ood) == 1797 - 1083 and bool((ood.labels == -1).all())


@pytest.mark.parametrize("name", ["gaussian", "uniform"])
def test_noise_is_seeded(tmp_path: Path, name: str) -> None:
    test = load_dataset(name, "test", tmp_path / "a")
    assert test.images.shape == (10_000, 32, 32, 3) and bool((test.labels == -1).all())
    assert torch.equal(load_dataset(name, "test", tmp_path / "b").images, test.images)
    assert not torch.equal(load_dataset(name, "val", tmp_path / "a").images, test.images)


def test_noise_distributions(tmp_path: Path) -> None:
    gaussian = load_dataset("gaussian", "test", tmp_path).images.float() / 255
    uniform = load_dataset("uniform", "test", tmp_path).images.float() / 255
    # N(0.5, 0.5^2) clipped to [0, 1]: symmetric around 0.5, about 16% of pixels at each bound
    assert abs(gaussian.mean().item() - 0.5) < 0.01
    assert abs((gaussian == 0).float().mean().item() - 0.1587) < 0.01
    assert abs(uniform.mean().item() - 127 / 255) < 0.01 and int(uniform.max() * 255) == 254


def test_imagefolder_labels_from_sorted_class_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    expected = {}
    for cls in ["zebra", "ant"]:
        for i in range(3):
            expected[(cls, i)] = random_image(rng)
            save_image(root / cls / f"{i}.png", expected[(cls, i)])
    save_image(root / "ant" / "big.png", random_image(rng, 64))  # resized to 32x32
    (root / "ant" / "notes.txt").write_text("not an image")
    data = load_dataset("imagefolder", "train", tmp_path / "data", root=root)
    assert data.images.shape == (7, 32, 32, 3)
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]  # ant/0,1,2,big then zebra/0,1,2
    assert np.array_equal(data.images[4].numpy(), expected[("zebra", 0)])


def test_imagefolder_uses_the_split_folder_when_present(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for split, n in [("train", 2), ("test", 3)]:
        for i in range(n):
            save_image(tmp_path / "tree" / split / "only" / f"{i}.png", random_image(rng))
    assert len(load_dataset("imagefolder", "test", tmp_path / "data", root=tmp_path / "tree")) == 3


def test_imagefolder_without_root_or_images(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="imagefolder needs a root"):
        load_dataset("imagefolder", "test", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no image files"):
        load_dataset("imagefolder", "test", tmp_path, root=tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset("textures", "test", tmp_path, root=tmp_path / "missing")


def test_ood_set_from_local_folder_is_minus_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(4):
        save_image(tmp_path / "lsun" / "sub" / f"{i}.jpg", random_image(rng, 36))
    data = load_dataset("lsun-crop", "test", tmp_path / "data", root=tmp_path / "lsun")
    assert data.images.shape == (4, 32, 32, 3) and data.labels.tolist() == [-1] * 4


def test_archive_set_downloads_extracts_and_subsets(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    archive = tmp_path / "server" / "dtd.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(5):
            buffer = io.BytesIO()
            Image.fromarray(random_image(rng, 40 + i)).save(buffer, format="PNG")
            info = tarfile.TarInfo(f"dtd/images/class{i % 2}/{i}.png")
            info.size = buffer.tell()
            buffer.seek(0)
            tar.addfile(info, buffer)
    source = ArchiveSource("textures", RemoteFile(archive.as_uri(), "dtd.tar.gz", md5=md5(archive)), subset=3)
    monkeypatch.setitem(registry.SOURCES, "textures", source)
    data = load_dataset("textures", "test", tmp_path / "data")
    assert data.images.shape == (3, 32, 32, 3) and data.labels.tolist() == [-1] * 3
    assert (tmp_path / "data" / "textures" / "dtd" / "images" / "class0" / "0.png").exists()


def test_tinyimages300k_from_local_npy(tmp_path: Path) -> None:
    images = np.random.default_rng(4).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "300k.npy", images)
    data = load_dataset("tinyimages300k", "train", tmp_path / "data", root=tmp_path / "300k.npy")
    assert np.array_equal(data.images.numpy(), images) and bool((data.labels == -1).all())
    np.save(tmp_path / "bad.npy", images.astype(np.float32))
    with pytest.raises(ConfigError, match="expected uint8"):
        load_dataset("tinyimages300k", "train", tmp_path / "data", root=tmp_path / "bad.npy")


def _load_counting_downloads(data_dir: Path, log: Path) -> None:
    real_urlopen = urllib.request.urlopen

    def slow_counting_urlopen(*args, **kwargs):
        with open(log, "a") as f:
            f.write("download\n")
        time.sleep(0.5)
        return real_urlopen(*args, **kwargs)

    urllib.request.urlopen = slow_counting_urlopen
    assert len(load_dataset("tinyimages300k", "train", data_dir)) == 50


def test_parallel_runs_download_and_cache_once(tmp_path: Path, monkeypatch) -> None:
    served = tmp_path / "server" / "300K_random_images.npy"
    served.parent.mkdir()
    np.save(served, np.zeros((50, 32, 32, 3), dtype=np.uint8))
    remote = RemoteFile(served.as_uri(), served.name, md5=md5(served))
    monkeypatch.setattr(registry.TinyImages300kSource, "remote", remote)
    log = tmp_path / "downloads.log"
    context = multiprocessing.get_context("fork")
    runs = [context.Process(target=_load_counting_downloads, args=(tmp_path / "data", log)) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=60)
    assert [run.exitcode for run in runs] == [0, 0]
    assert log.read_text().count("download") == 1
    assert len(list((tmp_path / "data" / "cache").glob("tinyimages300k-train-v*.npy"))) == 2  # images + labels


def test_missing_download_without_network_permission(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_dataset("cifar10", "test", tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in message
    assert "data.download=true" in message and "root" in message


def test_local_class_tree_needs_the_split_folder(tmp_path: Path) -> None:
    (tmp_path / "cifar").mkdir()
    with pytest.raises(ConfigError, match=r"cifar/train does not exist.*train/<class>/<image>"):
        load_dataset("cifar10", "train", tmp_path / "data", root=tmp_path / "cifar")


def fake_cifar10_archive(folder: Path, rng: np.random.Generator) -> tuple[Path, dict[str, dict]]:
    """A cifar-10-python.tar.gz with the real layout: 5 train batches of 2 images, 1 test batch of 3."""
    batches = {
        **{
            f"data_batch_{i}": {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [i, 9 - i]}
            for i in range(1, 6)
        },
        "test_batch": {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [7, 8, 9]},
        "batches.meta": {"label_names": [f"class{i}" for i in range(10)]},
    }  # fmt: skip
    members = folder / "cifar-10-batches-py"
    members.mkdir(parents=True)
    for name, content in batches.items():
        (members / name).write_bytes(pickle.dumps(content))
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(members, arcname="cifar-10-batches-py")
    return archive, batches


def test_cifar10_through_torchvision_from_a_file_url(tmp_path: Path, monkeypatch) -> None:
    archive, batches = fake_cifar10_archive(tmp_path / "server", np.random.default_rng(5))
    members = archive.parent / "cifar-10-batches-py"
    remote = RemoteFile(archive.as_uri(), "cifar-10-python.tar.gz", md5=md5(archive))
    monkeypatch.setattr(SOURCES["cifar10"], "archive", remote)
    # torchvision's reader checks each member's md5 against its own table
    train_list = [[f"data_batch_{i}", md5(members / f"data_batch_{i}")] for i in range(1, 6)]
    monkeypatch.setattr(tvd.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(members / "test_batch")]])
    meta = {"filename": "batches.meta", "key": "label_names", "md5": md5(members / "batches.meta")}
    monkeypatch.setattr(tvd.CIFAR10, "meta", meta)

    train = load_dataset("cifar10", "train", tmp_path / "data")
    test = load_dataset("cifar10", "test", tmp_path / "data")
    assert train.images.shape == (10, 32, 32, 3) and test.images.shape == (3, 32, 32, 3)
    assert train.labels.tolist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4] and test.labels.tolist() == [7, 8, 9]
    expected = batches["test_batch"]["data"].reshape(3, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(test.images.numpy(), expected)
    assert (tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz").exists()

    corrupted = tmp_path / "data2" / "cifar10" / "cifar-10-python.tar.gz"
    corrupted.parent.mkdir(parents=True)
    corrupted.write_bytes(archive.read_bytes()[:-10])
    with pytest.raises(ConfigError, match=rf"{corrupted} is corrupted \(md5 .*, expected {md5(archive)}\)"):
        load_dataset("cifar10", "test", tmp_path / "data2")


@pytest.fixture(scope="session")
def cifar10_test_tree(tmp_path_factory) -> Path:
    """The real CIFAR-10 test images (JPEG) of ../shared/data, unpacked once per session."""
    archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        pytest.skip(f"{archive} is absent")
    dest = tmp_path_factory.mktemp("shared")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, members=[m for m in tar if m.name.startswith("cifar10/test/")], filter="data")
    return dest / "cifar10"


def test_real_cifar10_test_split_from_the_image_folder(cifar10_test_tree: Path, tmp_path: Path) -> None:
    data = load_dataset("cifar10", "test", tmp_path, root=cifar10_test_tree)
    assert data.images.shape == (10_000, 32, 32, 3)
    assert data.labels.bincount().tolist() == [1000] * 10
    first_cat = sorted((cifar10_test_tree / "test" / "cat").iterdir())[0]
    cat_index = int((data.labels < 3).sum())  # airplane, automobile, bird come before cat
    assert np.array_equal(data.images[cat_index].numpy(), np.asarray(Image.open(first_cat).convert("RGB")))
    assert 0.4 < data.images.float().mean().item() / 255 < 0.5  # CIFAR-10's mean is about 0.47


def test_download_facts_agree_with_torchvision():
    """The registry states URLs and md5s itself; torchvision keeps the same facts in undocumented attributes,
    which only this cross-check reads."""

    def remote(name: str, split: str = "test"):
        return [(r.url, r.filename, r.md5) for r in SOURCES[name].remotes(split)]

    assert remote("cifar10") == [(tvd.CIFAR10.url, tvd.CIFAR10.filename, tvd.CIFAR10.tgz_md5)]
    assert remote("cifar100") == [(tvd.CIFAR100.url, tvd.CIFAR100.filename, tvd.CIFAR100.tgz_md5)]
    for split in ("train", "test"):
        assert remote("svhn", split) == [tuple(tvd.SVHN.split_list[split])]
    for name, cls in (("mnist", tvd.MNIST), ("fashionmnist", tvd.FashionMNIST)):
        assert remote(name) == [(cls.mirrors[0] + f, f, md5) for f, md5 in cls.resources]
    assert remote("textures") == [(tvd.DTD._URL, "dtd-r1.0.1.tar.gz", tvd.DTD._MD5)]
    places_file, places_md5 = tvd.Places365._IMAGES_META[("val", True)]
    assert remote("places365") == [(tvd.Places365._BASE_URL + places_file, "val_256.tar", places_md5)]
