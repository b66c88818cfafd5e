"""How long the commands take to start: each ``--help`` against ``import pytorch_lightning``, and a re-run sweep.

    python bench/cli_start.py [--rounds 3] [--jobs 3] [--skip-sweep]

Runs in one go, so that every figure sees the same machine load; each figure is the median
of ``--rounds`` fresh processes:

- ``import_lightning``: ``python -c "import pytorch_lightning"``, what any command that
  trained would pay, the yardstick;
- ``help/<command>``: ``<command> --help`` of every console script (target: at most half of
  ``import_lightning``);
- ``sweep_skip/<k>``: re-running a finished quickstart sweep of ``k`` jobs (1 and ``--jobs``);
  ``skip_per_job`` is the difference divided by ``--jobs - 1``: what one more finished job
  costs (target: at most a few seconds).

The processes run the code that ``PYTHONPATH`` names (``PYTHONPATH=/other/checkout/src`` measures
another version with this script). Prints a table and writes ``bench/results/cli_start.json``.
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


def seconds(command: list[str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def median_of(rounds: int, command: list[str], cwd: Path | None = None) -> float:
    return statistics.median(seconds(command, cwd) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3, help="jobs of the larger re-run sweep (at least 2)")
    parser.add_argument("--skip-sweep", action="store_true", help="only the --help figures")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    figures = {"import_lightning": median_of(args.rounds, [sys.executable, "-c", "import pytorch_lightning"])}
    for command in COMMANDS:
        figures[f"help/{command}"] = median_of(args.rounds, [str(bin_dir / command), "--help"])
    if not args.skip_sweep:
        with tempfile.TemporaryDirectory(prefix="mchad-bench-") as tmp:
            where = [f"paths.log_dir={tmp}/logs", f"paths.data_dir={tmp}/data"]
            seeds = ",".join(str(s) for s in range(1, args.jobs + 1))
            sweep = [str(bin_dir / "mchad-train"), "-m", *SWEEP, *where]
            seconds([*sweep, f"seed={seeds}"], Path(tmp))  # trains the jobs once; the timed re-runs skip them
            figures["sweep_skip/1"] = median_of(args.rounds, [*sweep, "seed=1"], Path(tmp))
            figures[f"sweep_skip/{args.jobs}"] = median_of(args.rounds, [*sweep, f"seed={seeds}"], Path(tmp))
            figures["skip_per_job"] = (figures[f"sweep_skip/{args.jobs}"] - figures["sweep_skip/1"]) / (args.jobs - 1)
    lightning = figures["import_lightning"]
    for name, value in figures.items():
        ratio = f"  ({value / lightning:.2f} x import_lightning)" if name.startswith("help/") else ""
        print(f"{name:<22} {value:7.2f} s{ratio}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    record = {"rounds": args.rounds, "pythonpath": os.environ.get("PYTHONPATH", ""), "seconds": figures}
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
