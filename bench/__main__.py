"""Run the benchmarks described in bench/README.md; each writes bench/results/<name>-<device>[-quick].json."""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from bench.options import BACKBONES, make_options

NAMES = ("train_throughput", "framework_overhead", "evaluation", "metrics", "input_pipeline", "seeds_per_device")
"""The benchmarks, in the order they run: each a module ``bench.<name>`` with ``NAME`` and ``run(options, paths)``.

Imported only when run, so that ``--help`` and bad arguments answer without loading torch."""

DATA_FOLDERS = ("cifar10", "tinyimagenet32")
"""What ``--data-root`` must hold (see bench/workload.py)."""

EXAMPLES = (
    textwrap.fill(f"benchmarks (default: all, in this order): {', '.join(NAMES)}; see bench/README.md.", 79)
    + """

examples:
  python -m bench --quick                         # all, fewer steps (< ~3 min on a CPU)
  python -m bench --device cpu --threads 1        # as the committed *-cpu.json files
  python -m bench --device cuda seeds_per_device  # how many seeds share one GPU
  python -m bench --data-root /data/unpacked metrics evaluation
"""
)


def fail(message: str) -> NoReturn:
    """Bad input found after parsing: ``error: <what was wrong>: <how to fix it>`` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all, listed below)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps, rounds and test images (under ~3 min on a CPU)"
    )
    parser.add_argument("--backbone", choices=list(BACKBONES), help="default: wrn40-2 on cuda, small (WRN-10-1) on cpu")
    parser.add_argument(
        "--threads", type=_count(1), metavar="N", help="torch threads for both sides (default: all cores)"
    )
    parser.add_argument(
        "--workers",
        type=_count(0),
        metavar="N",
        help="DataLoader worker processes of the reference pipeline in all (default: cores)",
    )
    parser.add_argument(
        "--data-root", type=Path, metavar="DIR", help="folder holding unpacked cifar10/ and tinyimagenet32/"
    )
    parser.add_argument("--results-dir", type=Path, metavar="DIR", help="default: bench/results")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, checked: argparse's usage and error for bad arguments, ``error:`` lines for bad paths."""
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    if args.data_root is not None:
        if not args.data_root.is_dir():
            fail(
                f"--data-root {args.data_root} does not exist: pass the folder holding the unpacked "
                f"{'/ and '.join(DATA_FOLDERS)}/, or leave it out"
            )
        missing = [f"{name}/" for name in DATA_FOLDERS if not (args.data_root / name).is_dir()]
        if missing:
            fail(
                f"--data-root {args.data_root} has no {' and no '.join(missing)}: pass the folder holding the "
                f"unpacked {'/ and '.join(DATA_FOLDERS)}/, or leave it out"
            )
    if args.results_dir is not None and args.results_dir.exists() and not args.results_dir.is_dir():
        fail(f"--results-dir {args.results_dir} is a file: pass a folder (created if missing)")
    return args


def benchmark(name: str) -> ModuleType:
    module = importlib.import_module(f"bench.{name}")
    assert name == module.NAME, f"bench.{name} is named {module.NAME}"
    return module


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available: use --device cpu, or run on a machine with a GPU")

    from bench.environment import environment, load_average, quiet
    from bench.report import busy, format_rounds, format_summary, write_json
    from bench.workload import data_paths

    options = make_options(
        args.device, args.quick, args.backbone, args.threads, args.workers, args.data_root, args.results_dir
    )
    quiet()
    torch.set_num_threads(options.threads)
    paths = data_paths(options.data_root)
    env = environment(options.torch_device)
    print(
        f"device {env['device']} ({env['device_name']}), torch {env['torch']}, lightning {env['lightning']}, "
        f"{options.threads} threads, load average {env['load_average']}, data: {paths.source}"
    )
    if env["note"]:
        print(f"note: {env['note']}")
    if busy(env["cpu_count"], env["load_average"]) and options.threads > 1 and options.device == "cpu":
        print(
            f"warning: load average {env['load_average']} exceeds the {env['cpu_count']} cores; with {options.threads} "
            "intra-op threads every small parallel op waits for a busy core, so timings vary several-fold. "
            "--threads 1 gives steadier ratios on a shared machine."
        )
    results = []
    for name in args.names or list(NAMES):
        started, started_load = time.perf_counter(), load_average()
        result = benchmark(name).run(options, paths)
        path = write_json(result, options, env, started_load)
        results.append(result)
        print(f"\n{format_rounds(result)}\n  ({time.perf_counter() - started:.0f} s, written to {path})", flush=True)
    print(f"\n{format_summary(results)}")


if __name__ == "__main__":
    main()
