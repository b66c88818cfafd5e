"""Decoding image files and arrays into uint8 (N, 32, 32, 3) RGB arrays.

Every data set in the benchmark is used at 32x32. Images of another size are resized
to 32x32 as a whole (bilinear with antialiasing, aspect ratio not kept), as the
reference code's ``Resize(size=(32, 32))`` does for Textures and the other large-image
OOD sets. Greyscale images are repeated over the three channels. This runs once per
data set, when its cache entry is built, never in the training loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from mchad.errors import ConfigError

SIZE = 32
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".tif", ".tiff", ".webp"})
RESIZE_CHUNK = 4096


def list_images(folder: Path) -> list[Path]:
    """All image files under ``folder`` (recursive, hidden files skipped), in sorted order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def read_image(path: Path) -> np.ndarray:
    """One image file as uint8 (32, 32, 3) RGB.

    A file PIL cannot decode, truncated ones included (PIL's default, which this keeps),
    is a ConfigError naming the file.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (SIZE, SIZE):
                image = image.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        # PIL's message for an unknown format repeats the path
        unknown = isinstance(error, UnidentifiedImageError)
        reason = "unknown format or corrupt" if unknown else " ".join(str(error).split())
        raise ConfigError(f"{path}: cannot read image ({reason}): remove or replace the file") from error


def read_images(paths: Sequence[Path]) -> np.ndarray:
    """Image files as uint8 (N, 32, 32, 3), decoded by a thread pool (PIL releases the GIL).

    The first file in ``paths`` that cannot be decoded raises its ConfigError (see
    :func:`read_image`); ``Executor.map`` cancels the decodes not yet started.
    """
    out = np.empty((len(paths), SIZE, SIZE, 3), dtype=np.uint8)

    def decode(index: int) -> None:
        out[index] = read_image(paths[index])

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(decode, range(len(paths)), chunksize=256))
    return out


def read_class_tree(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A folder ``<class>/**/<image>``: images, and labels = index of the class folder in sorted order.

    Images directly in ``folder`` (outside any class folder) get label -1.
    """
    paths = list_images(folder)
    if not paths:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ConfigError(f"{folder} holds no image files ({suffixes}): point root at a folder of images")
    classes = sorted({p.relative_to(folder).parts[0] for p in paths if len(p.relative_to(folder).parts) > 1})
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array(
        [index[p.relative_to(folder).parts[0]] if len(p.relative_to(folder).parts) > 1 else -1 for p in paths],
        dtype=np.int64,
    )
    return read_images(paths), labels


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """uint8 arrays (N, H, W) grey or (N, H, W, 3) RGB -> uint8 (N, 32, 32, 3), resized bilinearly if needed."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:3] == (SIZE, SIZE):
        return np.ascontiguousarray(np.broadcast_to(images, (*images.shape[:3], 3)))
    out = np.empty((len(images), SIZE, SIZE, 3), dtype=np.uint8)
    for start in range(0, len(images), RESIZE_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + RESIZE_CHUNK])).permute(0, 3, 1, 2)
        resized = F.interpolate(chunk.float(), size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
        resized = resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        out[start : start + RESIZE_CHUNK] = resized.expand(-1, -1, -1, 3).numpy()
    return out
