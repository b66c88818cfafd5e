"""Fit and score time of every post-hoc detector (config/detectors) beside one forward pass, and KNN's peak memory.

    python bench/detectors.py [--device cpu|cuda] [--quick] [--backbone small|wrn40-2] [--threads N]

On a seeded softmax classifier (the backbone of ``--backbone``: WRN-10-1 by default on a CPU,
WRN-40-2 on a GPU; 10 classes; random weights, which do not change the work) and random
uint8 images, through the project's own code path (:mod:`mchad.evaluation.detectors`):

- ``forward``: one pass of the test images through the network (``backbone(x)``), the cost
  every detector's scores share, timed right before each detector's pass;
- ``train pass``: the one forward pass over the training images that the fitting detectors fit
  on (cached per checkpoint in a run, so paid once);
- per detector, ``fit``: its fit on those training representations; ``pass``: the test pass
  with this detector alone scored in it (:meth:`DetectorBank.score_batch`; ODIN: a forward and a
  backward pass, then a forward pass of the perturbed images); ``score``: ``pass - forward``, what the detector adds to the forward pass.

Each time is the median of ``--rounds`` runs. Separately, in a fresh process, KNN (k=50) fits
50,000 random 128-d features (WRN-40-2's width) and scores 10,000: the peak RSS above the
RSS before the fit (``ru_maxrss``) is its memory. The JSON goes to
``bench/results/detectors-<device>[-quick].json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
KNN_TRAIN, KNN_TEST, KNN_WIDTH = 50_000, 10_000, 128


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(function, device, rounds: int) -> float:
    """The median wall time of ``rounds`` calls (after one untimed warm-up call)."""
    function()
    times = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def knn_memory(queue) -> None:
    """Peak RSS of KNN fitting 50,000 and scoring 10,000 features, above the RSS before the fit (fresh process)."""
    import psutil
    import torch
    from pytorch_ood.detector import KNN

    generator = torch.Generator().manual_seed(0)
    train = torch.randn(KNN_TRAIN, KNN_WIDTH, generator=generator)
    test = torch.randn(KNN_TEST, KNN_WIDTH, generator=generator)
    labels = torch.zeros(KNN_TRAIN, dtype=torch.long)
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    detector = KNN(None, k=50).fit_features(train, labels)
    fitted = time.perf_counter()
    detector.predict_features(test)
    done = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    queue.put({
        "n_train": KNN_TRAIN, "n_test": KNN_TEST, "width": KNN_WIDTH, "k": 50,
        "features_mb": train.numel() * 4 / 2**20,
        "rss_before_mb": before / 2**20, "peak_rss_mb": peak / 2**20,
        "peak_above_before_mb": (peak - before) / 2**20,
        "fit_s": fitted - start, "score_s": done - fitted,
    })  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    import torch
    from hydra.utils import instantiate

    from mchad.config import compose
    from mchad.data.augment import BatchAugment
    from mchad.evaluation.detectors import DetectorBank, DetectorSpec, fitted, representations
    from mchad.methods.softmax import Softmax
    from mchad.module import OODModule

    device = torch.device(args.device)
    backbone_option = args.backbone or ("wrn40-2" if device.type == "cuda" else "wrn-small")
    n_train, n_test = (5_000, 1_024) if args.quick else (50_000, 10_000)
    cfg = compose([f"backbone={backbone_option}", "method=softmax", "data.n_classes=10", "detectors=all"])
    torch.manual_seed(0)
    backbone = instantiate(cfg.model.backbone, n_outputs=10)
    module = OODModule(backbone, Softmax(10, 10), BatchAugment(cfg.data.mean, cfg.data.std, 0, False))
    module.eval().to(device)
    generator = torch.Generator().manual_seed(1)
    batch = cfg.data.eval_batch_size
    train_x = torch.randint(0, 256, (n_train, 32, 32, 3), dtype=torch.uint8, generator=generator)
    train_y = torch.arange(n_train) % 10
    test_x = torch.randint(0, 256, (n_test, 32, 32, 3), dtype=torch.uint8, generator=generator)
    test_batches = [(test_x[i : i + batch], torch.zeros(0)) for i in range(0, n_test, batch)]

    def images(x):
        return module.augment(x.to(device), train=False)

    @torch.no_grad()
    def forward():
        for x, _ in test_batches:
            module.backbone(images(x))

    @torch.no_grad()
    def train_pass():
        chunks = {}
        for i in range(0, n_train, batch):
            reps = representations(
                module.backbone, module.method, images(train_x[i : i + batch]), {"features", "logits"}
            )
            for name, value in reps[1].items():
                chunks.setdefault(name, []).append(value)
        return {name: torch.cat(values) for name, values in chunks.items()} | {"labels": train_y.to(device)}

    rounds = 1 if args.quick else args.rounds
    train_pass_s = timed(train_pass, device, 1)
    train = train_pass()
    rows = []
    for name, node in cfg.detectors.items():
        spec = DetectorSpec.from_config(name, node)
        fit_s = timed(lambda spec=spec: fitted([spec], module, train, device), device, rounds)
        bank = DetectorBank(fitted([spec], module, train, device))
        # the forward pass timed right before each detector's, so that a drifting machine load hits both alike
        forward_s = timed(forward, device, rounds)
        pass_s = timed(lambda bank=bank: bank.score_loaders(module, [test_batches], device), device, rounds)
        own_pass = bool(bank.gradient)
        rows.append({
            "detector": name, "input": spec.input, "requires_fit": spec.detector_class().requires_fit,
            "fit_s": fit_s, "forward_s": forward_s, "pass_s": pass_s, "score_s": pass_s - forward_s,
            "own_gradient_pass": own_pass,
        })  # fmt: skip
        print(f"{name:12s} fit {fit_s:8.4f} s   pass {pass_s:8.3f} s   (forward {forward_s:.3f} s)", flush=True)
    queue = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=knn_memory, args=(queue,))
    child.start()
    memory = queue.get()
    child.join()
    print(
        f"KNN on {KNN_TRAIN} x {KNN_WIDTH} features ({memory['features_mb']:.1f} MB): peak RSS "
        f"{memory['peak_above_before_mb']:.1f} MB above the RSS before fitting; fit {memory['fit_s']:.2f} s, "
        f"score {KNN_TEST} in {memory['score_s']:.2f} s"
    )
    return {
        "name": "detectors",
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "quick": args.quick,
        "backbone": backbone_option,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "n_train": n_train,
        "n_test": n_test,
        "batch_size": batch,
        "rounds": rounds,
        "train_pass_s": train_pass_s,
        "detectors": rows,
        "knn_memory": memory,
        "torch": torch.__version__,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/detectors.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="5,000 training and 1,024 test images, one round")
    parser.add_argument("--backbone", choices=["wrn-small", "wrn40-2"], help="default: wrn40-2 on cuda, else wrn-small")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per figure (median), default 3")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available: use --device cpu", file=sys.stderr)
        sys.exit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"detectors-{args.device}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
