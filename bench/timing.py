"""Clocks for throughput and wall time, and running ours and the reference in alternating rounds.

Throughput over steps ``w+1 .. n`` (after ``w`` warm-up steps) with ``t_k`` the time
step ``k`` finished (the device synchronised)::

    rate = (n - w) * items_per_step / (t_n - t_w)

The ratio of a round compares ours with the reference measured right after (or before)
it, so slow drifts of the machine's load cancel; the reported ratio is the median
over rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timestamp marks finished work, not enqueued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class StepClock:
    """Timestamps taken after each step; :meth:`rate` is items per second after the warm-up."""

    device: torch.device
    times: list[float] = field(default_factory=list)

    def tick(self) -> None:
        synchronize(self.device)
        self.times.append(time.perf_counter())

    def rate(self, warmup: int, items_per_step: int) -> float:
        steps = len(self.times) - warmup
        if warmup < 1 or steps < 1:
            raise ValueError(
                f"need at least one warm-up and one timed step, got {len(self.times)} steps, warmup={warmup}"
            )
        return steps * items_per_step / (self.times[-1] - self.times[warmup - 1])


class ClockCallback(pl.Callback):
    """Ticks a :class:`StepClock` after every training batch (after the optimizer step)."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.tick()


@contextmanager
def stopwatch(device: torch.device):
    """``with stopwatch(device) as elapsed: ...``; afterwards ``elapsed()`` is the wall time in seconds."""
    synchronize(device)
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: end[0] - start
    synchronize(device)
    end.append(time.perf_counter())


def alternate(
    rounds: int, ours: Callable[[], float], reference: Callable[[], float], higher_is_better: bool
) -> list[dict]:
    """Run ``ours`` and ``reference`` ``rounds`` times each, the first in a round alternating.

    Each callable returns one measurement (a rate, or seconds when ``higher_is_better`` is
    False). Returns one dict per round: ours, reference, ratio (> 1: ours is better).
    """
    results = []
    for index in range(rounds):
        first, second = (ours, reference) if index % 2 == 0 else (reference, ours)
        measured = {first: first(), second: second()}
        ours_value, reference_value = measured[ours], measured[reference]
        ratio = ours_value / reference_value if higher_is_better else reference_value / ours_value
        results.append({"round": index + 1, "ours": ours_value, "reference": reference_value, "ratio": ratio})
    return results


def median(values) -> float:
    return statistics.median(list(values))
