"""A benchmark's outcome: its rounds, the median ratio against a target, the JSON file and the printed table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.environment import load_average
from bench.options import Options
from bench.timing import median
from mchad.files import atomic_write


@dataclass
class Result:
    """Ours against the reference, measured in alternating rounds.

    ``unit``: of the ``ours`` / ``reference`` values; ``higher_is_better``: whether they
    are rates (ratio = ours / reference) or times (ratio = reference / ours).
    ``target``: the ratio the issue asks for, or None. ``checks``: equalities verified
    on the way (e.g. metric values ours vs reference), ``details``: anything else worth keeping.
    ``round_label``: what a round stands for in the table. ``summary``: ``"median"`` over
    the rounds (repetitions of one measurement), or ``"best"`` round (rounds that are
    settings, e.g. the number of seeds sharing a device). ``notes``: lines printed under the table.
    """

    name: str
    title: str
    unit: str
    higher_is_better: bool
    rounds: list[dict]
    config: dict
    target: float | None = None
    checks: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    round_label: str = "round"
    summary: str = "median"
    notes: list[str] = field(default_factory=list)

    def _summarised(self, key: str) -> float:
        if self.summary == "best":
            return max(self.rounds, key=lambda r: r["ratio"])[key]
        return median(r[key] for r in self.rounds)

    @property
    def ratio(self) -> float:
        return self._summarised("ratio")

    @property
    def ours(self) -> float:
        return self._summarised("ours")

    @property
    def reference(self) -> float:
        return self._summarised("reference")

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    def figures(self) -> dict:
        return {
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            f"ours_{self.summary}": self.ours,
            f"reference_{self.summary}": self.reference,
            f"ratio_{self.summary}": self.ratio,
            "target": self.target,
            "target_met": self.met,
        }


def busy(cores: int | None, *loads: list[float] | None) -> bool | None:
    """Whether other processes competed for the CPU: a 1-minute load average above the core count."""
    ones = [load[0] for load in loads if load]
    return None if not ones or not cores else max(ones) > cores


def write_json(result: Result, options: Options, run_environment: dict, started_load: list[float] | None) -> Path:
    """Write ``<results_dir>/<name>-<device>[-quick].json`` atomically; returns its path.

    ``run_environment``: :func:`bench.environment.environment` at the start of the run.
    """
    record = {
        "benchmark": result.name,
        "title": result.title,
        "figures": result.figures(),
        "rounds": result.rounds,
        "checks": result.checks,
        "details": result.details,
        "config": result.config,
        "options": options.as_dict(),
        "environment": run_environment,
        "load_average_at_start": started_load,
        "load_average_at_end": load_average(),
    }
    record["machine_busy"] = busy(record["environment"]["cpu_count"], started_load, record["load_average_at_end"])
    options.results_dir.mkdir(parents=True, exist_ok=True)
    path = options.results_dir / f"{result.name}-{options.suffix}.json"
    atomic_write(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def _number(value: float) -> str:
    return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"


def format_rounds(result: Result) -> str:
    """The per-round table of one benchmark, with its median and target."""
    lines = [f"{result.title}  [{result.unit}, {'higher' if result.higher_is_better else 'lower'} is better]"]
    lines.append(f"  {result.round_label:>5}  {'ours':>14}  {'reference':>14}  {'ratio':>7}")
    for r in result.rounds:
        lines.append(f"  {r['round']:>5}  {_number(r['ours']):>14}  {_number(r['reference']):>14}  {r['ratio']:>7.2f}")
    target = "" if result.target is None else f"  target >= {result.target:g}: {'met' if result.met else 'MISSED'}"
    lines.append(
        f"  {result.summary:>5}  {_number(result.ours):>14}  {_number(result.reference):>14}  {result.ratio:>7.2f}{target}"
    )
    for name, value in result.checks.items():
        lines.append(f"  check {name}: {value}")
    lines += [f"  {note}" for note in result.notes]
    return "\n".join(lines)


def format_summary(results: list[Result]) -> str:
    """One line per benchmark: medians, ratio, target."""
    header = f"{'benchmark':<22} {'unit':<12} {'ours':>12} {'reference':>12} {'ratio':>7} {'target':>7}  status"
    lines = [header, "-" * len(header)]
    for result in results:
        target = "" if result.target is None else f">={result.target:g}"
        status = "" if result.met is None else ("met" if result.met else "MISSED")
        lines.append(
            f"{result.name:<22} {result.unit:<12} {_number(result.ours):>12} {_number(result.reference):>12} "
            f"{result.ratio:>7.2f} {target:>7}  {status}"
        )
    return "\n".join(lines)
