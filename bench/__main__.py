"""Run the benchmarks described in bench/README.md; each writes bench/results/<name>-<device>[-quick].json."""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import torch

from bench import evaluation, framework_overhead, input_pipeline, metrics, seeds_per_device, train_throughput
from bench.environment import environment, load_average
from bench.options import BACKBONES, make_options
from bench.report import busy, format_rounds, format_summary, write_json
from bench.workload import data_paths

BENCHMARKS = {
    module.NAME: module
    for module in (train_throughput, framework_overhead, evaluation, metrics, input_pipeline, seeds_per_device)
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    parser.add_argument("--quick", action="store_true", help="fewer steps, rounds and test images (under ~3 min on a CPU)")
    parser.add_argument("--backbone", choices=list(BACKBONES), help="default: wrn40-2 on cuda, small (WRN-10-1) on cpu")
    parser.add_argument("--threads", type=int, help="torch threads for both sides (default: all cores)")
    parser.add_argument("--workers", type=int, help="DataLoader worker processes of the reference pipeline in all (default: cores)")
    parser.add_argument("--data-root", type=Path, help="folder holding unpacked cifar10/ and tinyimagenet32/")
    parser.add_argument("--results-dir", type=Path, help="default: bench/results")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    return args


def quiet() -> None:
    """Keep the tables readable: Lightning's banners and hints say nothing about speed."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "mchad"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The given NumPy array is not writable.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available; use --device cpu")
    options = make_options(args.device, args.quick, args.backbone, args.threads, args.workers, args.data_root, args.results_dir)
    quiet()
    torch.set_num_threads(options.threads)
    paths = data_paths(options.data_root)
    env = environment(options.torch_device)
    print(f"device {env['device']} ({env['device_name']}), torch {env['torch']}, lightning {env['lightning']}, "
          f"{options.threads} threads, load average {env['load_average']}, data: {paths.source}")
    if env["note"]:
        print(f"note: {env['note']}")
    if busy(env["cpu_count"], env["load_average"]) and options.threads > 1 and options.device == "cpu":
        print(f"warning: load average {env['load_average']} exceeds the {env['cpu_count']} cores; with {options.threads} "
              "intra-op threads every small parallel op waits for a busy core, so timings vary several-fold. "
              "--threads 1 gives steadier ratios on a shared machine.")
    results = []
    for name in args.names or list(BENCHMARKS):
        started, started_load = time.perf_counter(), load_average()
        result = BENCHMARKS[name].run(options, paths)
        path = write_json(result, options, env, started_load)
        results.append(result)
        print(f"\n{format_rounds(result)}\n  ({time.perf_counter() - started:.0f} s, written to {path})", flush=True)
    print(f"\n{format_summary(results)}")


if __name__ == "__main__":
    main()
