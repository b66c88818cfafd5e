"""Peak memory of the data module with a 300,000-image uint8 outlier set (TinyImages300k's size).

    python bench/data_memory.py [--npy PATH/300K_random_images.npy] [--keep DIR]

Without ``--npy`` a random (300000, 32, 32, 3) uint8 .npy file (921.6 MB) is generated in a
temporary data dir. Three phases run in fresh processes, so each peak RSS
(``ru_maxrss``) is its own:

- ``build``: ``prepare_data()`` + ``setup()`` with an empty cache: the .npy is copied
  chunk by chunk into the uint8 cache, then memory-mapped;
- ``load``: ``prepare_data()`` + ``setup()`` with the cache in place (a normal run);
- ``epoch``: ``load`` and then one epoch of 392 training batches (128 ID + 256 outliers),
  which touches most of the outlier file's pages.

The figure to compare is the peak RSS minus the RSS after the imports, against the uint8
size of the outliers (921.6 MB; as float32 it would be 3.69 GB). The JSON goes to
``bench/results/data_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

N_IMAGES = 300_000
UINT8_BYTES = N_IMAGES * 32 * 32 * 3
RESULTS = Path(__file__).resolve().parent / "results" / "data_memory.json"


def make_outliers(path: Path) -> None:
    """A random uint8 (300000, 32, 32, 3) .npy, written in chunks."""
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(N_IMAGES, 32, 32, 3))
    for start in range(0, N_IMAGES, 20_000):
        out[start : start + 20_000] = rng.integers(0, 256, (min(20_000, N_IMAGES - start), 32, 32, 3), dtype=np.uint8)
    out.flush()


def phase(name: str, data_dir: str, npy: str, queue: multiprocessing.Queue) -> None:
    """Run one phase in this (fresh) process and report its memory figures."""
    from mchad.data.datamodule import OODDataModule

    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    datamodule = OODDataModule(
        "digits", 6, data_dir, batch_size=128, batches_per_epoch=392,
        outliers={"name": "tinyimages300k", "root": npy, "batch_size": 256},
    )  # fmt: skip
    datamodule.prepare_data()
    datamodule.setup("fit")
    if name == "epoch":
        for x, _ in datamodule.train_dataloader():
            assert x.shape == (384, 32, 32, 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    queue.put(
        {
            "phase": name,
            "seconds": round(time.perf_counter() - start, 2),
            "rss_after_imports_mb": round(baseline / 1e6, 1),
            "peak_rss_mb": round(peak / 1e6, 1),
            "peak_minus_imports_mb": round((peak - baseline) / 1e6, 1),
            "rss_end_mb": round(psutil.Process().memory_info().rss / 1e6, 1),
            "outlier_images_dtype": str(datamodule.fit_data.outliers.images.dtype),
        }
    )


def run_phase(name: str, data_dir: Path, npy: Path) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=phase, args=(name, str(data_dir), str(npy), queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npy", type=Path, help="the real 300K_random_images.npy (else a random one is generated)")
    parser.add_argument("--keep", type=Path, help="use this data dir and keep it (default: a temporary dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mchad-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        npy = args.npy or work / "300K_random_images.npy"
        if not npy.exists():
            print(f"generating {npy} ({UINT8_BYTES / 1e6:.1f} MB)", flush=True)
            make_outliers(npy)
        phases = [run_phase(name, work / "data", npy) for name in ("build", "load", "epoch")]
    for result in phases:
        print(
            f"{result['phase']:>5}: peak RSS {result['peak_rss_mb']:7.1f} MB, "
            f"{result['peak_minus_imports_mb']:7.1f} MB above the imports ({result['rss_after_imports_mb']:.1f} MB), "
            f"{result['seconds']:.1f} s"
        )
    print(
        f"outliers: {N_IMAGES} images, uint8 size {UINT8_BYTES / 1e6:.1f} MB (float32: {4 * UINT8_BYTES / 1e6:.1f} MB)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "n_outlier_images": N_IMAGES,
        "uint8_size_mb": UINT8_BYTES / 1e6,
        "real_file": args.npy is not None,
        "python": sys.version.split()[0],
        "phases": phases,
    }
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
