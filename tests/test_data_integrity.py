"""Data integrity through the registry: cache entries follow their source, and undecodable images name their file."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image_tree
from PIL import Image

from mchad.data import registry
from mchad.data.cache import CacheEntry
from mchad.data.download import RemoteFile
from mchad.data.images import read_images
from mchad.data.registry import cache_name, load_dataset
from mchad.errors import ConfigError


def load_tree(tmp_path: Path, root: Path):
    return load_dataset("imagefolder", "train", tmp_path / "data", root=root)


def decode(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def cache_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("mchad.data") and r.levelno >= logging.WARNING]


def entry_files(tmp_path: Path, name: str, root: Path, split: str) -> tuple[Path, Path, Path]:
    """Images, labels and sidecar of the cache entry of ``name`` read from ``root``."""
    version = registry.get_source(name).version
    return CacheEntry(tmp_path / "data" / "cache", cache_name(name, root), split, version).files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``tree/train/class000/{0,1,2}.png`` and ``class001/{0,1,2}.png``."""
    return write_image_tree(tmp_path / "tree", 2, 3, splits=("train",))


def test_unchanged_folder_is_read_from_the_cache(tmp_path: Path, tree: Path, caplog, monkeypatch) -> None:
    first = load_tree(tmp_path, tree)
    before = entry_files(tmp_path, "imagefolder", tree, "train")[2].stat()

    def no_decoding(folder):
        raise AssertionError(f"{folder} was decoded again")

    monkeypatch.setattr(registry, "read_class_tree", no_decoding)
    with caplog.at_level(logging.WARNING):
        second = load_tree(tmp_path, tree)
    assert not cache_warnings(caplog)
    after = entry_files(tmp_path, "imagefolder", tree, "train")[2].stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def replace_image(tree: Path) -> tuple[int, list[int], np.ndarray]:
    """class000/0.png overwritten by the bytes of class000/1.png: same name, likely the same size."""
    shutil.copyfile(tree / "train" / "class000" / "1.png", tree / "train" / "class000" / "0.png")
    return 6, [0, 0, 0, 1, 1, 1], decode(tree / "train" / "class000" / "1.png")


def replace_image_keeping_mtime(tree: Path) -> tuple[int, list[int], np.ndarray]:
    """class000/0.png rewritten with another size and its old modification time, as ``cp -p`` or ``rsync -t`` do."""
    path = tree / "train" / "class000" / "0.png"
    before = path.stat()
    pixels = np.full((32, 32, 3), 200, dtype=np.uint8)  # compresses far below the random image's size
    Image.fromarray(pixels).save(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    return 6, [0, 0, 0, 1, 1, 1], pixels


def add_image(tree: Path) -> tuple[int, list[int], np.ndarray]:
    pixels = np.full((32, 32, 3), 7, dtype=np.uint8)
    Image.fromarray(pixels).save(tree / "train" / "class001" / "3.png")
    return 7, [0, 0, 0, 1, 1, 1, 1], pixels


def remove_image(tree: Path) -> tuple[int, list[int], np.ndarray]:
    (tree / "train" / "class000" / "0.png").unlink()
    return 5, [0, 0, 1, 1, 1], decode(tree / "train" / "class000" / "1.png")


@pytest.mark.parametrize(
    ("change", "index"),
    [(replace_image, 0), (replace_image_keeping_mtime, 0), (add_image, 6), (remove_image, 0)],
    ids=["replaced", "replaced-mtime-kept", "added", "removed"],
)
def test_changed_folder_is_rebuilt(tmp_path: Path, tree: Path, caplog, change, index: int) -> None:
    load_tree(tmp_path, tree)
    count, labels, expected = change(tree)
    with caplog.at_level(logging.WARNING):
        data = load_tree(tmp_path, tree)
    assert len(data) == count and data.labels.tolist() == labels
    assert np.array_equal(data.images[index].numpy(), expected)
    [warning] = cache_warnings(caplog)
    assert cache_name("imagefolder", tree) in warning
    assert f"source changed: image folder {tree / 'train'}" in warning
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        load_tree(tmp_path, tree)
    assert not cache_warnings(caplog), "the rebuilt entry must match the folder"


def test_change_in_another_split_keeps_the_entry(tmp_path: Path, caplog) -> None:
    tree = write_image_tree(tmp_path / "tree", 2, 2)
    load_dataset("cifar10", "test", tmp_path / "data", root=tree)
    (tree / "train" / "class000" / "0.png").unlink()
    with caplog.at_level(logging.WARNING):
        load_dataset("cifar10", "test", tmp_path / "data", root=tree)
    assert not cache_warnings(caplog)


def test_truncated_cache_of_a_folder_is_rebuilt_as_decoded(tmp_path: Path, tree: Path, caplog) -> None:
    original = load_tree(tmp_path, tree).images.numpy().copy()
    images_file = entry_files(tmp_path, "imagefolder", tree, "train")[0]
    images_file.write_bytes(images_file.read_bytes()[:-1000])
    with caplog.at_level(logging.WARNING):
        data = load_tree(tmp_path, tree)
    assert np.array_equal(data.images.numpy(), original)
    [warning] = cache_warnings(caplog)
    assert "file size differs from the sidecar" in warning and cache_name("imagefolder", tree) in warning


def test_stale_part_files_go_when_the_entry_is_built(tmp_path: Path, tree: Path) -> None:
    cache_dir = tmp_path / "data" / "cache"
    cache_dir.mkdir(parents=True)
    images_file, labels_file, _ = entry_files(tmp_path, "imagefolder", tree, "train")
    killed = [cache_dir / f".{images_file.name}.a1b2c3.part", cache_dir / f".{labels_file.name}.d4e5f6.part"]
    for part in killed:
        part.write_bytes(b"\0" * 1000)
    load_tree(tmp_path, tree)
    assert not any(part.exists() for part in killed)
    assert not list(cache_dir.glob("*.part"))


def test_changed_npy_root_is_rebuilt(tmp_path: Path, caplog) -> None:
    path = tmp_path / "300k.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    load_dataset("tinyimages300k", "train", tmp_path / "data", root=path)
    changed = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    np.save(path, changed)  # same size, new content
    with caplog.at_level(logging.WARNING):
        data = load_dataset("tinyimages300k", "train", tmp_path / "data", root=path)
    assert np.array_equal(data.images.numpy(), changed)
    [warning] = cache_warnings(caplog)
    assert f"source changed: file {path}" in warning


def test_new_checksum_in_the_registry_rebuilds_the_download(tmp_path: Path, caplog, monkeypatch) -> None:
    served = tmp_path / "server" / "300K_random_images.npy"
    served.parent.mkdir()

    def serve(value: int) -> RemoteFile:
        np.save(served, np.full((4, 32, 32, 3), value, dtype=np.uint8))
        md5 = hashlib.md5(served.read_bytes()).hexdigest()
        return RemoteFile(served.as_uri(), served.name, md5=md5)

    monkeypatch.setattr(registry.TinyImages300kSource, "remote", serve(1))
    assert int(load_dataset("tinyimages300k", "train", tmp_path / "data").images.max()) == 1
    monkeypatch.setattr(registry.TinyImages300kSource, "remote", serve(2))
    (tmp_path / "data" / "tinyimages300k" / served.name).unlink()  # the old release, as its fix message says
    with caplog.at_level(logging.WARNING):
        assert int(load_dataset("tinyimages300k", "train", tmp_path / "data").images.max()) == 2
    [warning] = cache_warnings(caplog)
    assert f"source changed: download of {served.name}" in warning


def random_bytes_png(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())


def truncated_png(path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [random_bytes_png, truncated_png], ids=["corrupt", "truncated"])
@pytest.mark.parametrize(("name", "split"), [("imagefolder", "train"), ("lsun-crop", "test")])
def test_undecodable_image_names_its_file(tmp_path: Path, tree: Path, damage, name: str, split: str) -> None:
    bad = tree / "train" / "class001" / "1.png"
    damage(bad)
    with pytest.raises(ConfigError) as error:
        load_dataset(name, split, tmp_path / "data", root=tree)
    message = str(error.value)
    assert message.startswith(f"{bad}: cannot read image (") and message.endswith("remove or replace the file")
    assert "\n" not in message
    bad.unlink()  # the fix the message gives
    assert len(load_dataset(name, split, tmp_path / "data", root=tree)) == 5


def test_truncated_image_is_an_error_not_grey_pixels(tmp_path: Path) -> None:
    """One bad file among more than the decoding threads: its own error, not a half-decoded image."""
    paths = [tmp_path / f"{i:02d}.png" for i in range(40)]
    for i, path in enumerate(paths):
        Image.fromarray(np.full((32, 32, 3), i, dtype=np.uint8)).save(path)
    truncated_png(paths[25])
    expected = rf"^{re.escape(str(paths[25]))}: cannot read image \(image file is truncated"
    with pytest.raises(ConfigError, match=expected):
        read_images(paths)


def test_cache_entry_names_the_entry_that_load_dataset_writes(tmp_path: Path, tree: Path) -> None:
    """``mchad-data verify`` finds an entry through ``cache_entry``: the one a run read, root given as text too."""
    images = load_tree(tmp_path, tree)
    entry = registry.cache_entry("imagefolder", "train", tmp_path / "data", str(tree))
    assert entry.files == entry_files(tmp_path, "imagefolder", tree, "train")
    assert entry.verify() == (len(images), None) == (6, None)
