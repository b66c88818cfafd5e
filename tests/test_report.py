"""mchad-report on a synthetic sweep: 2 data sets x 2 methods x 3 seeds x 3 OOD sets, plus one failed
and one incomplete run. Expected numbers are recomputed here with pandas, independently of the module."""

from __future__ import annotations

import csv
import itertools
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from PIL import Image

from mchad.cli.report import main
from mchad.errors import ConfigError
from mchad.report import auroc_boxplot, find_runs, load_results, per_ood, select_headline, summarize, to_markdown

SRC = Path(__file__).resolve().parents[1] / "src"
DESIGN_COLUMNS = [
    "experiment", "method", "dataset", "ood_dataset", "group", "score", "seed", "Accuracy",
    "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95", "n_id", "n_ood", "epochs", "run_dir",
]  # fmt: skip
METRICS = ["Accuracy", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95"]
DATASETS = ("cifar10", "svhn")
METHOD_SCORES = {"softmax": ("msp", "energy"), "mchad": ("distance",)}
SEEDS = (1, 2, 3)
OOD_SETS = {"textures": "far", "lsun-crop": "far", "cifar100": "near"}


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=DESIGN_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def result_row(run_dir, dataset, method, seed, ood, group, score, accuracy, auroc, rng) -> dict:
    """One results.csv row as run.py writes it; AUPR-IN, AUPR-OUT and FPR95 drawn from ``rng``."""
    return {
        "experiment": f"{dataset}-{method}",
        "method": method,
        "dataset": dataset,
        "ood_dataset": ood,
        "group": group,
        "score": score,
        "seed": seed,
        "Accuracy": accuracy,
        "AUROC": auroc,
        "AUPR-IN": rng.uniform(0.5, 1),
        "AUPR-OUT": rng.uniform(0.5, 1),
        "FPR95": rng.uniform(0, 1),
        "n_id": 1000,
        "n_ood": 500,
        "epochs": 10,
        "run_dir": str(run_dir),
    }


def make_sweep(root: Path) -> dict[str, Path]:
    """A Hydra-multirun-like tree under ``root``; returns the failed and the incomplete run directories."""
    rng = random.Random(0)
    sweep = root / "multiruns" / "2024-05-01_12-00-00"
    for dataset in DATASETS:
        for method, scores in METHOD_SCORES.items():
            for seed in SEEDS:
                run_dir = sweep / f"{dataset}-{method}" / str(seed)
                (run_dir / ".hydra").mkdir(parents=True)
                (run_dir / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n")
                accuracy = rng.uniform(0.5, 0.99)
                rows = [
                    result_row(run_dir, dataset, method, seed, ood, group, score, accuracy, rng.uniform(0.5, 1), rng)
                    for score in scores
                    for ood, group in OOD_SETS.items()
                ]
                write_csv(run_dir / "results.csv", rows)
    failed = sweep / "cifar10-mchad" / "4"
    (failed / ".hydra").mkdir(parents=True)
    (failed / ".hydra" / "config.yaml").write_text("seed: 4\n")
    (failed / "error.txt").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n")
    incomplete = sweep / "cifar10-mchad" / "5"
    (incomplete / "checkpoints").mkdir(parents=True)
    (incomplete / "checkpoints" / "last.ckpt").write_bytes(b"not a real checkpoint")
    return {"failed": failed, "incomplete": incomplete}


def expected_summary(root: Path) -> pd.DataFrame:
    """Mean/std over seeds of the per-seed mean over OOD sets, in percent, straight from the CSV files."""
    raw = pd.concat([pd.read_csv(path) for path in root.rglob("results.csv")])
    per_seed = raw.groupby(["dataset", "method", "score", "seed"])[METRICS].mean()
    stats = per_seed.groupby(level=["dataset", "method", "score"]).agg(["mean", "std"]) * 100
    return stats


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep")
    return {"root": root, **make_sweep(root)}


@pytest.fixture(scope="module")
def cli_report(sweep, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``mchad-report ROOT --out OUT --latex`` run once, as a user would."""
    out = tmp_path_factory.mktemp("report")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    process = subprocess.run(
        [sys.executable, "-m", "mchad.cli.report", str(sweep["root"]), "--out", str(out), "--latex"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr
    return out, process


def test_find_runs_classifies_complete_failed_and_incomplete(sweep):
    runs = find_runs(sweep["root"]).set_index("run_dir")
    assert runs["status"].value_counts().to_dict() == {"complete": 12, "failed": 1, "incomplete": 1}
    assert runs.loc[str(sweep["failed"].resolve()), "status"] == "failed"
    assert "CUDA out of memory" in runs.loc[str(sweep["failed"].resolve()), "detail"]
    assert runs.loc[str(sweep["incomplete"].resolve()), "status"] == "incomplete"


def test_results_with_missing_columns_make_an_incomplete_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.csv").write_text("experiment,method,dataset\ncifar10-mchad,mchad,cifar10\n")
    runs = find_runs(tmp_path)
    assert runs["status"].tolist() == ["incomplete"]
    assert load_results(tmp_path).empty


def test_summary_csv_matches_independent_pandas_computation(sweep, cli_report):
    out, _ = cli_report
    summary = pd.read_csv(out / "summary.csv").set_index(["dataset", "method", "score"])
    expected = expected_summary(sweep["root"])
    assert sorted(summary.index) == sorted(expected.index)
    for key, row in expected.iterrows():
        for metric in METRICS:
            # summary.csv keeps two decimals
            assert summary.loc[key, f"{metric}_mean"] == pytest.approx(row[(metric, "mean")], abs=0.006)
            assert summary.loc[key, f"{metric}_std"] == pytest.approx(row[(metric, "std")], abs=0.006)
    assert (summary["n_seeds"] == len(SEEDS)).all()


def test_rows_follow_the_paper_order(cli_report):
    out, _ = cli_report
    summary = pd.read_csv(out / "summary.csv")
    paper_order = [
        (dataset, method, score)
        for dataset in DATASETS
        for method in ("mchad", "softmax")
        for score in METHOD_SCORES[method]
    ]
    assert list(zip(summary["dataset"], summary["method"], summary["score"], strict=True)) == paper_order


def test_failed_and_incomplete_runs_are_listed_not_averaged(sweep, cli_report):
    out, process = cli_report
    assert "12 complete, 1 incomplete, 1 failed runs" in process.stdout
    summary_md = (out / "summary.md").read_text()
    for kind in ("failed", "incomplete"):
        run_dir = str(sweep[kind].resolve())
        assert run_dir in process.stdout
        assert f"- {kind}: {run_dir}" in summary_md
    assert "| cifar10 | mchad | distance |" in summary_md


def test_per_ood_tables_hold_each_ood_set(sweep, cli_report):
    out, _ = cli_report
    raw = pd.concat([pd.read_csv(path) for path in sweep["root"].rglob("results.csv")])
    textures = raw[(raw["dataset"] == "svhn") & (raw["method"] == "mchad") & (raw["ood_dataset"] == "textures")]
    auroc = 100 * textures["AUROC"]
    text = (out / "per_ood" / "svhn.md").read_text()
    assert all(f"## {ood}" in text for ood in OOD_SETS)
    textures_section = text.split("## textures")[1].split("##")[0]
    mchad_row = next(line for line in textures_section.splitlines() if line.startswith("| mchad | distance |"))
    header = next(line for line in textures_section.splitlines() if line.startswith("| method |"))
    cells = dict(zip(header.split(" | "), mchad_row.split(" | "), strict=True))
    assert cells["AUROC"] == f"{auroc.mean():.2f} ± {auroc.std():.2f}"


def test_auroc_boxplots_are_valid_pngs(cli_report):
    out, _ = cli_report
    for dataset in DATASETS:
        with Image.open(out / f"auroc_{dataset}.png") as image:
            assert image.format == "PNG"
            image.verify()


def test_latex_table_is_written_with_booktabs_rules(cli_report):
    out, _ = cli_report
    tex = (out / "summary.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "$\\pm$" in tex and "mchad" in tex


def latex_rows(tex: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """The data rows of summary.tex by (dataset, method, score), repeated names (left blank) filled in."""
    lines = tex.splitlines()
    header_line = lines[lines.index("\\toprule") + 1]
    header = [name.replace("\\_", "_") for name in header_line.removesuffix(" \\\\").split(" & ")]
    body = lines[lines.index(header_line) + 2 : lines.index("\\bottomrule")]
    rows, previous = {}, ["", "", ""]
    for line in body:
        if line == "\\midrule":
            continue
        cells = line.removesuffix(" \\\\").split(" & ")
        key = [cell or previous[i] for i, cell in enumerate(cells[:3])]
        rows[tuple(key)] = dict(zip(header, cells, strict=True))
        previous = key
    return rows


def test_latex_table_holds_the_mean_and_std_of_every_row(sweep, cli_report):
    out, _ = cli_report
    rows = latex_rows((out / "summary.tex").read_text())
    expected = expected_summary(sweep["root"])
    assert sorted(rows) == sorted(expected.index)
    for key, stats in expected.iterrows():
        for metric in METRICS:
            mean, std = (float(part) for part in rows[key][metric].split(" $\\pm$ "))
            # the table prints two decimals
            assert mean == pytest.approx(stats[(metric, "mean")], abs=0.0051), (key, metric)
            assert std == pytest.approx(stats[(metric, "std")], abs=0.0051), (key, metric)
        assert rows[key]["n_seeds"] == str(len(SEEDS))


def per_run_auroc(root: Path, dataset: str) -> dict[str, np.ndarray]:
    """Tick label 'method<newline>score' -> each run's AUROC (mean over its OOD sets, percent), from the CSV files."""
    raw = pd.concat([pd.read_csv(path) for path in root.rglob("results.csv")])
    runs = raw[raw["dataset"] == dataset].groupby(["method", "score", "run_dir"])["AUROC"].mean() * 100
    return {
        f"{method}\n{score}": group.to_numpy() for (method, score), group in runs.groupby(level=["method", "score"])
    }


def _near(position: int, xs) -> bool:
    return abs(float(np.mean(xs)) - position) < 0.4


@pytest.mark.parametrize("dataset", DATASETS)
def test_auroc_boxplot_draws_each_methods_per_run_values(sweep, dataset):
    expected = per_run_auroc(sweep["root"], dataset)
    axes = auroc_boxplot(load_results(sweep["root"]), dataset).axes[0]
    labels = [tick.get_text() for tick in axes.get_xticklabels()]
    assert sorted(labels) == sorted(expected) and labels[0] == "mchad\ndistance"  # paper order: mchad first
    for position, label in enumerate(labels, start=1):
        values = expected[label]
        # the points: one per run, drawn at this box, holding exactly the runs' values
        (points,) = [c.get_offsets() for c in axes.collections if _near(position, c.get_offsets()[:, 0])]
        np.testing.assert_allclose(np.sort(points[:, 1]), np.sort(values), rtol=1e-12)
        # the box: quartiles, median and whiskers of the same values (matplotlib's own statistics)
        (stats,) = cbook.boxplot_stats(values)
        lines = [(line.get_xdata(), line.get_ydata()) for line in axes.lines if _near(position, line.get_xdata())]
        (box_x, box_y), *_ = [(x, y) for x, y in lines if len(x) == 5]
        assert (min(box_y), max(box_y)) == pytest.approx((stats["q1"], stats["q3"]))
        (median,) = [y[0] for x, y in lines if len(x) == 2 and (min(x), max(x)) == (min(box_x), max(box_x))]
        assert median == pytest.approx(np.median(values))
        whiskers = sorted(tuple(sorted(y)) for x, y in lines if len(x) == 2 and x[0] == x[1])
        assert whiskers == [
            pytest.approx((stats["whislo"], stats["q1"])),
            pytest.approx((stats["q3"], stats["whishi"])),
        ]


def test_no_latex_flag_writes_no_tex(sweep, tmp_path):
    assert main([str(sweep["root"]), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "summary.csv").is_file() and not (tmp_path / "summary.tex").exists()


def test_headline_scores_keep_one_row_per_method(sweep):
    results = load_results(sweep["root"])
    summary = summarize(select_headline(results, ["distance", "softmax=msp"]))
    assert set(zip(summary["method"], summary["score"], strict=True)) == {("mchad", "distance"), ("softmax", "msp")}
    # "distance" alone leaves softmax, which has no such score, with all its scores
    assert set(select_headline(results, ["distance"])["score"]) == {"distance", "msp", "energy"}


@pytest.mark.parametrize("choice", ["mchad=msp", "nosuchmethod=msp", "nosuchscore", "softmax="])
def test_headline_score_that_does_not_exist_is_a_config_error(sweep, choice):
    with pytest.raises(ConfigError):
        select_headline(load_results(sweep["root"]), [choice])


def test_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        find_runs(tmp_path / "nowhere")


def test_no_complete_run_exits_with_an_error(sweep, tmp_path, capsys):
    assert main([str(sweep["failed"]), "--out", str(tmp_path / "out")]) == 1
    assert "no complete run" in capsys.readouterr().err


def _ablation_run(root: Path, overrides: list[str], seed: int, auroc: float) -> None:
    """A run directory as Hydra writes it for ``run.py -m experiment=cifar10-gmchad tag=ablation OVERRIDES seed=N``."""
    run_dir = root / "cifar10-gmchad" / ",".join(sorted([*overrides, f"seed={seed}"]))
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  job:\n    config:\n      override_dirname:\n        kv_sep: '='\n        item_sep: ','\n"
        "        exclude_keys: [experiment, tag, data.root]\n"
    )
    command = ["experiment=cifar10-gmchad", "tag=ablation", "data.root=/data/cifar10", *overrides, f"seed={seed}"]
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in command))
    row = {
        "experiment": "cifar10-gmchad", "method": "gmchad", "dataset": "cifar10", "ood_dataset": "textures",
        "group": "far", "score": "distance", "seed": seed, "Accuracy": 0.9, "AUROC": auroc, "AUPR-IN": 0.5,
        "AUPR-OUT": 0.5, "FPR95": 0.5, "n_id": 10, "n_ood": 10, "epochs": 1, "run_dir": str(run_dir),
    }  # fmt: skip
    write_csv(run_dir / "results.csv", [row])


def test_variants_of_an_ablation_are_averaged_apart(tmp_path):
    for seed in (1, 2):
        _ablation_run(tmp_path, [], seed, auroc=0.70 + seed / 100)
        _ablation_run(tmp_path, ["method.margin=8"], seed, auroc=0.80 + seed / 100)
        _ablation_run(tmp_path, ["method.margin=8", "+trainer.max_epochs=2"], seed, auroc=0.90)
    summary = summarize(load_results(tmp_path)).set_index("variant")
    assert summary.loc["", "AUROC_mean"] == pytest.approx(71.5)
    assert summary.loc["method.margin=8", "AUROC_mean"] == pytest.approx(81.5)
    assert summary.loc["+trainer.max_epochs=2,method.margin=8", "AUROC_mean"] == pytest.approx(90.0)
    assert (summary["n_seeds"] == 2).all()
    assert "| variant |" in to_markdown(summary.reset_index())


def test_n_seeds_counts_runs_not_distinct_seed_values(tmp_path):
    """Two sweeps that both ran seed 1 (e.g. the sweep repeated on another machine) and one run of seed 2:
    three runs of the same variant, all averaged, so n_seeds is 3 (the module docstring: "n_seeds counts runs,
    so two runs with the same seed count twice"), not the 2 distinct seed values."""
    runs = {("sweep-a", 1): 0.70, ("sweep-b", 1): 0.80, ("sweep-b", 2): 0.90}
    for (sweep_name, seed), auroc in runs.items():
        run_dir = tmp_path / sweep_name / "cifar10-mchad" / str(seed)
        run_dir.mkdir(parents=True)
        row = {
            "experiment": "cifar10-mchad", "method": "mchad", "dataset": "cifar10", "ood_dataset": "textures",
            "group": "far", "score": "distance", "seed": seed, "Accuracy": 0.9, "AUROC": auroc, "AUPR-IN": 0.5,
            "AUPR-OUT": 0.5, "FPR95": 0.5, "n_id": 10, "n_ood": 10, "epochs": 1, "run_dir": str(run_dir),
        }  # fmt: skip
        write_csv(run_dir / "results.csv", [row])
    results = load_results(tmp_path)
    for table in (summarize(results), per_ood(results)):
        assert len(table) == 1 and table["variant"].tolist() == [""]
        assert table["n_seeds"].tolist() == [3]
        assert table["AUROC_mean"].iloc[0] == pytest.approx(80.0)
        assert table["AUROC_std"].iloc[0] == pytest.approx(pd.Series([70.0, 80.0, 90.0]).std())


def test_tables_leave_out_the_variant_column_when_no_run_has_one(cli_report):
    out, _ = cli_report
    assert "variant" not in (out / "summary.md").read_text()
    assert "variant" not in (out / "summary.tex").read_text()


def test_long_row_names_are_wrapped_apart_and_the_legend_is_off_the_data(tmp_path):
    """An ablation's long variant names: every box label in lines of at most 16 characters, no two labels overlapping
    once drawn, and the legend outside the axes (it would hide points inside)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from mchad.report.stats import add_confidence_intervals

    variants = [
        [],
        ["method.margin=8", "model.optimizer.lr=0.003"],
        ["method.margin=8", "method.weight_center=0.05", "+trainer.max_epochs=2"],
        ["model.optimizer.weight_decay=0.0005", "method.margin=16"],
        ["method.margin=16", "model.optimizer.lr=0.0003", "data.batch_size=256"],
    ]
    for seed in (1, 2, 3):
        for index, overrides in enumerate(variants):
            _ablation_run(tmp_path, overrides, seed, auroc=0.70 + index / 20 + seed / 100)
    results = load_results(tmp_path)
    summary = add_confidence_intervals(summarize(results), results)
    figure = auroc_boxplot(results, "cifar10", intervals=summary)
    FigureCanvasAgg(figure).draw()
    axes = figure.axes[0]

    labels = axes.get_xticklabels()
    expected = {"gmchad" + variant + "distance" for variant in summary["variant"]}
    assert {label.get_text().replace("\n", "") for label in labels} == expected and len(labels) == len(variants)
    assert max(len(line) for label in labels for line in label.get_text().split("\n")) <= 16
    boxes = [label.get_window_extent() for label in labels]
    for left, right in itertools.pairwise(boxes):
        assert left.x1 < right.x0, (left, right)
    assert all(figure.bbox.x0 <= box.x0 and box.x1 <= figure.bbox.x1 for box in boxes)
    (legend,) = figure.legends
    legend_box, data_box = legend.get_window_extent(), axes.get_window_extent()
    assert not legend_box.overlaps(data_box) and legend_box.x1 <= figure.bbox.x1
    assert [text.get_text() for text in legend.get_texts()] == ["seed 1", "seed 2", "seed 3", "mean, 95% bootstrap CI"]


def test_wrap_label_breaks_after_separators_keeps_numbers_whole_and_cuts_what_has_no_break():
    from mchad.report.plots import wrap_label

    assert wrap_label("mchad") == ["mchad"]
    assert wrap_label("method.margin=8,method.weight_center=0.05,+trainer.max_epochs=2") == [
        "method.margin=8,", "method.weight_", "center=0.05,", "+trainer.max_", "epochs=2",
    ]  # fmt: skip
    assert wrap_label("a" * 40) == ["a" * 16, "a" * 16, "a" * 8]
    assert wrap_label("one two three four five", width=9) == ["one two", "three", "four five"]
