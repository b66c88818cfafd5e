"""The benchmark harness's own arithmetic: the seeds-per-device aggregation, best-of summaries,
the metrics benchmark's ratio to np.sort."""

from __future__ import annotations

import dataclasses
import statistics

import pytest

from bench import metrics as metrics_benchmark
from bench.options import make_options
from bench.report import Result, format_rounds
from bench.seeds_per_device import aggregate_rate


def test_aggregate_rate_counts_the_steps_inside_the_common_window():
    # worker a: steps end at 1..10 s, worker b (twice the images per step) at 2, 4, ..., 12 s; warm-up 2 steps
    a = {"times": [float(t) for t in range(1, 11)], "images_per_step": 10}
    b = {"times": [float(t) for t in range(2, 13, 2)], "images_per_step": 20}
    # window: after both warm-ups (a: 2 s, b: 4 s) until the first to stop (a: 10 s) = (4, 10]
    expected = (6 * 10 + 3 * 20) / 6
    assert aggregate_rate([a, b], warmup=2) == pytest.approx(expected)


def test_aggregate_rate_refuses_workers_that_did_not_overlap():
    with pytest.raises(RuntimeError, match="did not train at the same time"):
        aggregate_rate(
            [{"times": [1.0, 2.0], "images_per_step": 1}, {"times": [5.0, 6.0], "images_per_step": 1}], warmup=1
        )


def test_best_summary_takes_the_best_round_not_the_median():
    rounds = [
        {"round": k, "ours": rate, "reference": 100.0, "ratio": rate / 100}
        for k, rate in ((1, 100.0), (2, 180.0), (3, 150.0))
    ]
    result = Result("x", "t", "images/s", True, rounds, {}, round_label="seeds", summary="best")
    assert (result.ours, result.ratio) == (180.0, 1.8)
    assert result.figures()["ratio_best"] == 1.8
    assert Result("x", "t", "images/s", True, rounds, {}).ratio == 1.5
    assert "seeds" in format_rounds(result) and " best " in format_rounds(result)


def test_metrics_benchmark_reports_ours_against_one_np_sort_per_round():
    options = dataclasses.replace(make_options("cpu", threads=1), metric_scores=2_000)
    result = metrics_benchmark.run(options, paths=None)
    for row in result.rounds:
        assert row["ours_vs_np_sort"] == pytest.approx(row["ours"] / row["np_sort"])
    assert result.details["ours_vs_np_sort"] == statistics.median(r["ours_vs_np_sort"] for r in result.rounds)
    assert result.details["ours_vs_np_sort_met"] == (result.details["ours_vs_np_sort"] <= metrics_benchmark.SORT_TARGET)
    assert "np.sort" in format_rounds(result)
