"""``mchad-report --stats`` and the code-version grouping on a synthetic sweep.

2 data sets x 2 methods (softmax with two scores, so three rows a data set) x 3 seeds x 5 OOD sets.
cifar10 has a clear winner: mchad is above both softmax scores on every (seed, OOD set). svhn has a
tie: softmax/energy differs from mchad by alternating signs, softmax/msp is far below. Every expected
number is recomputed here with scipy and statsmodels from the CSV files, independently of the module.
"""

from __future__ import annotations

import io
import json
import random
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from statsmodels.stats.multitest import multipletests
from test_report import latex_rows, result_row, write_csv

from mchad.cli.report import main
from mchad.report import auroc_boxplot, load_results, summarize
from mchad.report.stats import (
    add_confidence_intervals,
    cd_blocks,
    cd_figure,
    mark_best,
    nemenyi_critical_distance,
    paired_tests,
)

DATASETS = ("cifar10", "svhn")
METHOD_SCORES = {"mchad": ("distance",), "softmax": ("msp", "energy")}
SEEDS = (1, 2, 3)
OOD_SETS = ("textures", "lsun-crop", "lsun-resize", "isun", "places365")
COMMIT = "23cae10" + "0" * 33
PACKAGES = {"python": "3.12.3", "torch": "2.14.1", "pytorch_lightning": "2.6.6", "cuda": "12.8", "cudnn": 91000}
METRICS = ["Accuracy", "AUROC", "AUPR-IN", "AUPR-OUT", "FPR95"]


def auroc(dataset: str, score: str, seed: int, ood_index: int) -> float:
    """The designed AUROC of one (seed, OOD set); string seeds keep random.Random the same in every process."""
    own = random.Random(f"{dataset}/{score}/{seed}/{ood_index}").uniform(-0.01, 0.01)
    if dataset == "cifar10":
        return {"distance": 0.95, "energy": 0.85, "msp": 0.80}[score] + own
    shared = 0.90 + random.Random(f"{dataset}/{seed}/{ood_index}").uniform(-0.02, 0.02)
    pair = SEEDS.index(seed) * len(OOD_SETS) + ood_index
    # energy: mchad's value give or take 0.1 .. 1.5 points, alternately up and down; a tie, mchad ahead on average
    tie = -((-1) ** pair) * 0.001 * (pair + 1)
    return {"distance": shared, "energy": shared + tie, "msp": 0.70 + own}[score]


def write_run(
    run_dir: Path, dataset: str, method: str, seed: int, ood_sets=OOD_SETS, provenance: dict | None = None
) -> None:
    """One run directory as Hydra and run.py leave it: .hydra/config.yaml, results.csv, provenance.json."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(f"seed: {seed}\n")
    rng = random.Random(f"{run_dir.name}/{dataset}/{method}/{seed}")
    rows = [
        result_row(
            run_dir, dataset, method, seed, ood, "far", score, 0.9 + seed / 100, auroc(dataset, score, seed, index), rng
        )
        for score in METHOD_SCORES[method]
        for index, ood in enumerate(ood_sets)
    ]
    write_csv(run_dir / "results.csv", rows)
    if provenance is not None:
        (run_dir / "provenance.json").write_text(json.dumps(provenance))


def make_sweep(root: Path, datasets=DATASETS, ood_sets=OOD_SETS) -> Path:
    sweep = root / "multiruns" / "2024-05-01_12-00-00"
    for dataset in datasets:
        for method in METHOD_SCORES:
            for seed in SEEDS:
                provenance = {"git_commit": COMMIT, "git_dirty": False, **PACKAGES, "seed": seed}
                write_run(sweep / f"{dataset}-{method}" / str(seed), dataset, method, seed, ood_sets, provenance)
    return sweep


def raw_results(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(path) for path in sorted(root.rglob("results.csv"))], ignore_index=True)


def expected_pairs(root: Path, dataset: str) -> pd.DataFrame:
    """Best row (highest mean AUROC) against each other row: Wilcoxon over (seed, OOD set), Holm over the others."""
    raw = raw_results(root)
    raw = raw[raw["dataset"] == dataset].assign(AUROC=lambda frame: frame["AUROC"] * 100)
    wide = raw.pivot_table(index=["seed", "ood_dataset"], columns=["method", "score"], values="AUROC")
    best = wide.mean().idxmax()
    others = [column for column in wide.columns if column != best]
    p_values = [stats.wilcoxon(wide[best], wide[other]).pvalue for other in others]
    holm = multipletests(p_values, alpha=0.05, method="holm")[1]
    return pd.DataFrame(
        {"best": [best] * len(others), "row": others, "p_value": p_values, "p_holm": holm,
         "n_pairs": len(wide), "mean_difference": [(wide[best] - wide[other]).mean() for other in others]}
    )  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("stats-sweep"))


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> tuple[Path, str]:
    """``mchad-report SWEEP --out OUT --stats --latex`` run once; the output folder and stdout."""
    out = tmp_path_factory.mktemp("stats-report")
    # capsys is per test; this runs once for the module
    with redirect_stdout(io.StringIO()) as stdout:
        assert main([str(sweep), "--out", str(out), "--stats", "--latex"]) == 0
    return out, stdout.getvalue()


def test_bootstrap_intervals_match_scipy(sweep, report):
    out, _ = report
    summary = pd.read_csv(out / "summary.csv").set_index(["dataset", "method", "score"])
    raw = raw_results(sweep)
    per_run = raw.groupby(["dataset", "method", "score", "seed"])[METRICS].mean() * 100
    for key, runs in per_run.groupby(level=["dataset", "method", "score"]):
        for metric in METRICS:
            interval = stats.bootstrap(
                (runs[metric].to_numpy(),), np.mean, n_resamples=10_000, confidence_level=0.95, method="percentile",
                rng=np.random.default_rng(0),
            ).confidence_interval  # fmt: skip
            # summary.csv keeps two decimals
            assert summary.loc[key, f"{metric}_ci_low"] == pytest.approx(interval.low, abs=0.006), (key, metric)
            assert summary.loc[key, f"{metric}_ci_high"] == pytest.approx(interval.high, abs=0.006), (key, metric)
            assert summary.loc[key, f"{metric}_ci_low"] <= summary.loc[key, f"{metric}_mean"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_paired_tests_match_scipy_wilcoxon_and_statsmodels_holm(sweep, report, dataset):
    out, _ = report
    pairs = pd.read_csv(out / "stats" / f"{dataset}_pairs.csv", keep_default_na=False)
    expected = expected_pairs(sweep, dataset)
    assert len(pairs) == len(expected) == 2
    for _, row in expected.iterrows():
        method, score = row["row"]
        (written,) = pairs[(pairs["method"] == method) & (pairs["score"] == score)].to_dict("records")
        assert written["best"] == " ".join(row["best"])
        assert written["n_pairs"] == len(SEEDS) * len(OOD_SETS)
        assert float(written["p_value"]) == pytest.approx(row["p_value"], rel=1e-5)
        assert float(written["p_holm"]) == pytest.approx(row["p_holm"], rel=1e-5)
        assert float(written["mean_difference"]) == pytest.approx(row["mean_difference"], rel=1e-5)
        assert written["significant"] == (row["p_holm"] < 0.05)


def test_clear_winner_and_tie_come_out_as_designed(sweep, report):
    out, _ = report
    cifar10, svhn = expected_pairs(sweep, "cifar10"), expected_pairs(sweep, "svhn")
    assert set(cifar10["best"]) == {("mchad", "distance")} and (cifar10["p_holm"] < 0.001).all()
    svhn_holm = dict(zip(svhn["row"], svhn["p_holm"], strict=True))
    assert set(svhn["best"]) == {("mchad", "distance")}
    assert svhn_holm[("softmax", "energy")] > 0.5 and svhn_holm[("softmax", "msp")] < 0.001
    marks = pd.read_csv(out / "summary.csv", keep_default_na=False).set_index(["dataset", "method", "score"])
    assert marks["vs_best"].to_dict() == {
        ("cifar10", "mchad", "distance"): "best", ("cifar10", "softmax", "msp"): "different",
        ("cifar10", "softmax", "energy"): "different", ("svhn", "mchad", "distance"): "best",
        ("svhn", "softmax", "msp"): "different", ("svhn", "softmax", "energy"): "n.s.",
    }  # fmt: skip


def markdown_auroc(text: str) -> dict[tuple[str, str, str], str]:
    """The AUROC cell of each (dataset, method, score) row of the first Markdown table in ``text``."""
    lines = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    header, rows = lines[0], lines[2:]
    return {tuple(cells[:3]): dict(zip(header, cells, strict=True))["AUROC"] for cells in rows}


def test_markdown_and_latex_mark_the_best_and_the_ties(report):
    out, _ = report
    markdown = (out / "summary.md").read_text()
    cells = markdown_auroc(markdown)
    assert cells[("cifar10", "mchad", "distance")].startswith("**") and cells[("svhn", "mchad", "distance")].endswith(
        "**"
    )
    assert cells[("svhn", "softmax", "energy")].endswith("]†")
    assert not any(mark in cells[("cifar10", "softmax", "msp")] for mark in ("**", "†"))
    assert "Bold: the best mean AUROC of the data set; †: not significantly different from it" in markdown
    assert "percentile bootstrap confidence interval" in markdown
    tex = (out / "summary.tex").read_text()
    latex = {key: row["AUROC"] for key, row in latex_rows(tex).items()}
    assert latex[("cifar10", "mchad", "distance")].startswith("\\textbf{")
    assert latex[("svhn", "softmax", "energy")].endswith("$^\\dagger$")
    assert "$\\pm$" in latex[("cifar10", "softmax", "msp")] and "[" in latex[("cifar10", "softmax", "msp")]
    note = tex.split("\\end{tabular}")[1]
    assert "$^\\dagger$: not significantly different" in note and "95\\% percentile bootstrap" in note


def test_stdout_shows_intervals_tests_and_the_cd_diagram(report):
    out, stdout = report
    assert "percentile bootstrap confidence interval" in stdout and "Wilcoxon" in stdout and "Holm" in stdout
    svhn = stdout.split("svhn:")[1]
    assert "softmax energy" in svhn and "n.s." in svhn and "[" in svhn
    assert "CD diagram: mean AUROC ranks of 3 rows over 10 (dataset, OOD set) blocks" in stdout
    for name in ("cd_diagram.png", "auroc_cifar10.png", "auroc_svhn.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"


def test_one_data_set_and_two_rows_still_draw_the_cd_diagram(sweep, tmp_path, capsys):
    """With one data set the blocks are its OOD sets; two rows are ranked like more (Wilcoxon instead of Friedman)."""
    dirs = [str(sweep / "cifar10-mchad"), str(sweep / "cifar10-softmax")]
    assert main([*dirs, "--out", str(tmp_path), "--stats", "--score", "distance", "--score", "softmax=msp"]) == 0
    stdout = capsys.readouterr().out
    assert "CD diagram: mean AUROC ranks of 2 rows over 5 (dataset, OOD set) blocks" in stdout
    assert (tmp_path / "cd_diagram.png").is_file()
    assert (tmp_path / "stats" / "cifar10_pairs.csv").is_file() and not (tmp_path / "stats" / "svhn_pairs.csv").exists()


def test_too_few_blocks_skip_the_cd_diagram_with_one_line(tmp_path, capsys):
    make_sweep(tmp_path / "runs", datasets=("cifar10",), ood_sets=OOD_SETS[:3])
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--stats"]) == 0
    captured = capsys.readouterr()
    (line,) = [line for line in captured.out.splitlines() if "CD diagram" in line]
    assert line.startswith("CD diagram skipped: it needs at least 5 blocks") and "3 (dataset, OOD set)" in line
    assert not (tmp_path / "out" / "cd_diagram.png").exists() and "Traceback" not in captured.err


def test_one_code_version_keeps_the_default_columns(sweep, tmp_path, capsys):
    assert main([str(sweep), "--out", str(tmp_path)]) == 0
    assert "warning" not in capsys.readouterr().out
    columns = pd.read_csv(tmp_path / "summary.csv").columns
    assert "code_version" not in columns and "vs_best" not in columns and "AUROC_ci_low" not in columns


def test_mixed_code_and_package_versions_warn_and_split_the_rows(tmp_path, capsys):
    other = "f00ba47" + "1" * 33
    runs = {
        ("mchad", 1): {"git_commit": COMMIT, "git_dirty": False, **PACKAGES},
        ("mchad", 2): {"git_commit": COMMIT, "git_dirty": False, **PACKAGES},
        ("mchad", 3): {"git_commit": COMMIT, "git_dirty": True, **PACKAGES},
        ("softmax", 1): {"git_commit": other, "git_dirty": False, **PACKAGES, "torch": "2.13.0"},
        ("softmax", 2): {"git_commit": other, "git_dirty": False, **PACKAGES, "torch": "2.13.0"},
        ("softmax", 3): None,
    }
    for (method, seed), provenance in runs.items():
        write_run(tmp_path / "runs" / f"cifar10-{method}" / str(seed), "cifar10", method, seed, provenance=provenance)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings[0].startswith(
        "warning: the runs differ in code_version: 23cae10 (2 runs), f00ba47 (2 runs), 23cae10+dirty (1 run), "
        "unknown (1 run); their rows are reported apart"
    ), warnings
    # the run without provenance.json is named once, not again for each package
    assert warnings[1:] == ["warning: the runs differ in torch: 2.14.1 (3 runs), 2.13.0 (2 runs), unknown (1 run)"]
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    versions = summary.groupby(["method", "code_version"])["n_seeds"].first().to_dict()
    assert versions == {
        ("mchad", "23cae10"): 2, ("mchad", "23cae10+dirty"): 1, ("softmax", "f00ba47"): 2, ("softmax", "unknown"): 1,
    }  # fmt: skip
    assert "| code_version |" in (tmp_path / "out" / "summary.md").read_text()


def test_help_exits_0_and_bad_arguments_exit_2_with_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--stats" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["logs", "--out", "report", "--stats=yes"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert exit_info.value.code == 2 and len(errors) == 1
    assert errors[0].startswith("mchad-report: error: argument --stats: ignored explicit argument 'yes'")


def test_intervals_in_memory_equal_scipy_and_the_box_plot_draws_them_with_seed_colours(sweep):
    results = load_results(sweep)
    summary = add_confidence_intervals(summarize(results), results)
    raw = raw_results(sweep)
    runs = raw[raw["dataset"] == "svhn"].groupby(["method", "score", "seed"])["AUROC"].mean() * 100
    auroc_figure = auroc_boxplot(results, "svhn", intervals=summary)
    axes = auroc_figure.axes[0]
    labels = [tick.get_text() for tick in axes.get_xticklabels()]
    (means,) = [line for line in axes.lines if line.get_marker() == "D"]
    by_box = []
    for position, label in enumerate(labels, start=1):
        method, score = label.split("\n")
        values = runs.loc[(method, score)]
        interval = stats.bootstrap(
            (values.to_numpy(),), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(0)
        ).confidence_interval
        row = summary.set_index(["dataset", "method", "score"]).loc[("svhn", method, score)]
        assert (row["AUROC_ci_low"], row["AUROC_ci_high"]) == pytest.approx((interval.low, interval.high), rel=1e-12)
        # the diamond: the mean, beside its box
        assert means.get_xydata()[position - 1] == pytest.approx((position + 0.34, values.mean()))
        # the points: one per run, coloured by seed, the same colour for a seed in every box
        (points,) = [c for c in axes.collections if abs(np.mean(c.get_offsets()[:, 0]) - position) < 0.2]
        np.testing.assert_allclose(np.sort(points.get_offsets()[:, 1]), np.sort(values.to_numpy()), rtol=1e-12)
        by_box.append({seed: tuple(colour) for seed, colour in zip(values.index, points.get_facecolors(), strict=True)})
    assert all(colours == by_box[0] for colours in by_box) and len(set(by_box[0].values())) == len(SEEDS)
    assert [text.get_text() for text in auroc_figure.legends[0].get_texts()] == [
        *(f"seed {seed}" for seed in SEEDS),
        "mean, 95% bootstrap CI",
    ]


def test_identical_rows_are_not_different_with_p_one(sweep):
    """A row copied under another score name: every difference is zero, which scipy cannot rank."""
    results = load_results(sweep / "cifar10-mchad")
    results = pd.concat([results, results.assign(score="copy")], ignore_index=True)
    summary = summarize(results)
    pairs = paired_tests(results, summary)
    assert pairs[["score", "n_pairs", "p_value", "p_holm", "significant"]].to_dict("records") == [
        {"score": "copy", "n_pairs": 15, "p_value": 1.0, "p_holm": 1.0, "significant": False}
    ]
    assert mark_best(summary, pairs)["vs_best"].tolist() == ["best", "n.s."]


def test_stats_without_the_stats_extra_is_one_error_line(sweep, tmp_path, monkeypatch, capsys):
    import mchad.report

    monkeypatch.setitem(sys.modules, "scikit_posthocs", None)  # what its import meets when it is not installed
    monkeypatch.delitem(sys.modules, "mchad.report.stats", raising=False)
    monkeypatch.delattr(mchad.report, "stats", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--out", str(tmp_path), "--stats"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: --stats needs the package scikit_posthocs, which is not installed: pip install 'mchad[stats]'\n"
    )


# Demšar (2006), table 5a: critical values of the two-tailed Nemenyi test at alpha = 0.05 (the studentized range
# statistic divided by sqrt 2), k = 2 .. 10 classifiers
DEMSAR_Q_005 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}


@pytest.mark.parametrize("k", sorted(DEMSAR_Q_005))
def test_nemenyi_critical_distance_equals_demsars_table(k):
    for n_blocks in (5, 10, 14):
        q_alpha = nemenyi_critical_distance(k, n_blocks) / np.sqrt(k * (k + 1) / (6 * n_blocks))
        # the table's three decimals (it prints 2.343 for k = 3, where the quantile is 2.3437)
        assert q_alpha == pytest.approx(DEMSAR_Q_005[k], abs=1e-3)


def test_cd_diagram_draws_the_mean_ranks_and_critical_distance_computed_independently(sweep):
    """The diagram of 3 rows over 10 (dataset, OOD set) blocks, checked against ranks, Friedman's statistic and CD
    recomputed here from the CSV files."""
    raw = raw_results(sweep)
    means = (
        raw.groupby(["dataset", "ood_dataset", "method", "score"])["AUROC"].mean().mul(100).unstack(["method", "score"])
    )
    ranks = np.array([stats.rankdata(-block) for block in means.to_numpy()])  # 1 = highest AUROC
    mean_rank = dict(zip((f"{m} {s}" for m, s in means.columns), ranks.mean(axis=0), strict=True))
    n, k = ranks.shape
    friedman = 12 * n / (k * (k + 1)) * (np.sum(ranks.mean(axis=0) ** 2) - k * (k + 1) ** 2 / 4)
    critical = DEMSAR_Q_005[k] * np.sqrt(k * (k + 1) / (6 * n))

    figure, line = cd_figure(*cd_blocks(load_results(sweep)))
    axes = figure.axes[0]
    drawn = {}
    for text in axes.texts:  # "mchad distance (1.20)" left, "(3.00) softmax msp" right, "CD = 1"
        label = text.get_text()
        if "(" in label:
            name = label.split(" (")[0] if not label.startswith("(") else label.split(") ", 1)[1]
            drawn[name] = float(label.split("(")[1].split(")")[0])
    assert drawn == {name: pytest.approx(rank, abs=0.005) for name, rank in mean_rank.items()}
    # the rank markers sit at the exact mean ranks
    markers = sorted(float(c.get_offsets()[0, 0]) for c in axes.collections)
    assert markers == pytest.approx(sorted(mean_rank.values()), abs=1e-12)
    # the CD bar (the horizontal line above the axis) is as long as the critical distance
    (bar,) = [line for line in axes.lines if np.allclose(line.get_ydata(), 0.5)]
    assert np.ptp(bar.get_xdata()) == pytest.approx(critical, rel=5e-4)
    # rows within the critical distance share a bar, the others do not: here mchad distance and softmax energy
    bars = [ln for ln in axes.lines if np.ptp(ln.get_ydata()) == 0 and ln.get_ydata()[0] < 0 and len(ln.get_xdata()) > 1
            and np.ptp(ln.get_xdata()) > 0 and ln.get_linewidth() == 2]  # fmt: skip
    joined = sorted(sorted(float(x) for x in ln.get_xdata()) for ln in bars)
    close = sorted(r for r in mean_rank.values() if abs(r - min(mean_rank.values())) <= critical)
    assert joined == [pytest.approx(close, abs=1e-12)] and len(close) == 2
    p_value = stats.chi2.sf(friedman, k - 1)
    assert line == (
        f"CD diagram: mean AUROC ranks of 3 rows over 10 (dataset, OOD set) blocks, Friedman p = {p_value:.2g}, "
        f"Nemenyi CD = {critical:.2f}"
    )
