"""How long the commands take to start: each ``--help`` against ``import pytorch_lightning``, and a re-run sweep.

    python bench/cli_start.py [--rounds 3] [--jobs 3] [--baseline OTHER/src] [--skip-sweep]

Runs in one go, in alternating rounds (every figure once per round, the order reversed every
other round), so that a drifting machine load hits every figure alike; each figure is the
median over ``--rounds`` fresh processes:

- ``import_lightning``: ``python -c "import pytorch_lightning"``, what any command that
  trained would pay, the yardstick;
- ``help/<command>``: ``<command> --help`` of every console script (target: at most half of
  ``import_lightning``);
- ``sweep_skip/<k>``: re-running a finished quickstart sweep of ``k`` jobs (1 and ``--jobs``);
  ``skip_per_job`` is the difference divided by ``--jobs - 1``: what one more finished job
  costs (target: at most a few seconds).

The processes run the code that ``PYTHONPATH`` names; ``--baseline OTHER/src`` measures the same
figures of another checkout in the same rounds (``baseline:`` rows), e.g. the code before a change.
Prints a table and writes ``bench/results/cli_start.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = ("mchad-train", "mchad-eval", "mchad-data", "mchad-report")
SWEEP = ["experiment=quickstart", "debug=limit", "trainer.max_epochs=1", "logger=none", "tag=bench"]
RESULTS = Path(__file__).resolve().parent / "results" / "cli_start.json"


def seconds(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3, help="jobs of the larger re-run sweep (at least 2)")
    parser.add_argument("--baseline", type=Path, help="another checkout's src folder, measured alongside")
    parser.add_argument("--skip-sweep", action="store_true", help="only the --help figures")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    versions = {"": os.environ.get("PYTHONPATH", "")}
    if args.baseline:
        versions["baseline:"] = str(args.baseline.absolute())
    with tempfile.TemporaryDirectory(prefix="mchad-bench-") as tmp:
        seeds = ",".join(str(s) for s in range(1, args.jobs + 1))
        runs = []
        for prefix, path in versions.items():
            # each version re-runs a sweep it trained itself: a run directory refuses another code's config
            folder = Path(tmp) / (prefix.rstrip(":") or "current")
            folder.mkdir()
            sweep = [str(bin_dir / "mchad-train"), "-m", *SWEEP, f"paths.log_dir={folder}/logs",
                     f"paths.data_dir={folder}/data"]  # fmt: skip
            commands = {"import_lightning": [sys.executable, "-c", "import pytorch_lightning"]}
            commands |= {f"help/{command}": [str(bin_dir / command), "--help"] for command in COMMANDS}
            if not args.skip_sweep:
                # trains the jobs once; the timed re-runs skip them
                seconds([*sweep, f"seed={seeds}"], folder, {**os.environ, "PYTHONPATH": path})
                commands |= {"sweep_skip/1": [*sweep, "seed=1"], f"sweep_skip/{args.jobs}": [*sweep, f"seed={seeds}"]}
            runs += [(prefix + name, command, path, folder) for name, command in commands.items()]
        times: dict[str, list[float]] = {name: [] for name, *_ in runs}
        for round_ in range(args.rounds):
            for name, command, path, folder in runs if round_ % 2 == 0 else runs[::-1]:
                times[name].append(seconds(command, folder, {**os.environ, "PYTHONPATH": path}))
    figures = {name: statistics.median(values) for name, values in times.items()}
    for prefix in versions if not args.skip_sweep else ():
        many, one = figures[f"{prefix}sweep_skip/{args.jobs}"], figures[f"{prefix}sweep_skip/1"]
        figures[f"{prefix}skip_per_job"] = (many - one) / (args.jobs - 1)
    for name, value in figures.items():
        lightning = figures[name.split("help/")[0] + "import_lightning"] if "help/" in name else None
        ratio = f"  ({value / lightning:.2f} x import_lightning)" if lightning else ""
        print(f"{name:<32} {value:7.2f} s{ratio}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {"rounds": args.rounds, "versions": versions, "seconds": figures, "each": times}
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
