"""Plant known bugs one at a time in a copy of the tree and check that the test meant to catch each fails.

A test suite earns trust by failing when the code is wrong. Each entry of :data:`BUGS` is a
plausible mistake that once went unnoticed (1-7: issue 20 of this project; 8-11: found by a review
of the tests, each passed the suite before its test was strengthened; 12-13: bugs found later, each
with the test that came with its fix): one or more exact text
replacements, and the tests that must then fail. The tool copies the files git tracks (with the
uncommitted changes) to a temporary folder, runs the named tests there once unchanged (they must
pass), then once per bug with it planted, and prints one line per bug. Exit status 1 when a test
fails unplanted or a planted bug goes unnoticed.

    python tools/planted_bugs.py          # all bugs, about 11 minutes on 2 cores
    python tools/planted_bugs.py 2 6      # only bugs 2 and 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    what: str
    edits: tuple[tuple[str, str, str], ...]
    """(file, text in it, what replaces the text): the text must occur exactly once."""
    tests: tuple[str, ...]


BUGS = (
    Bug(
        "the torch CPU generator is not restored on resume",
        (("src/mchad/module.py", '    torch.set_rng_state(states["torch"])\n', ""),),
        ("tests/test_faults.py::test_killed_twice_then_resumed_equals_the_uninterrupted_run",),
    ),
    Bug(
        "the config fingerprint ignores every trainer.* key",
        (("src/mchad/rundir.py", '"hydra", "paths",', '"hydra", "trainer", "paths",'),),
        ("tests/test_rundir.py",),
    ),
    Bug(
        "the schema takes data.val_size=1.0 as a fraction",
        (("src/mchad/schema.py", "Annotated[float, Field(gt=0, lt=1)]", "Annotated[float, Field(gt=0, le=1)]"),),
        ("tests/test_schema.py",),
    ),
    Bug(
        "the data module takes val_size=1.0 as a fraction",
        (
            ("src/mchad/data/datamodule.py", "val_size >= 1:", "val_size > 1:"),
            ("src/mchad/data/datamodule.py", "if val_size < 1 else", "if val_size <= 1 else"),
        ),
        ("tests/test_data_splits.py",),
    ),
    Bug(
        "the hyperparameter search minimizes its objective",
        (("src/mchad/conf/hparams_search/_common.yaml", "direction: maximize", "direction: minimize"),),
        ("tests/test_hparams_guard.py",),
    ),
    Bug(
        "a continued study is seeded as the first, replaying its trials",
        (("src/hydra_plugins/mchad_optuna_sweeper/sweeper.py", "s.seed + len(study.trials)", "s.seed"),),
        ("tests/test_hparams_guard.py",),
    ),
    Bug(
        "the test phase takes last.ckpt instead of the best checkpoint",
        (("src/mchad/train.py", "callback.best_model_path or None", "callback.last_model_path or None"),),
        ("tests/test_train.py::test_the_best_epoch_is_tested_when_it_is_not_the_last",),
    ),
    Bug(
        "the epoch's progress line shows the last step's loss",
        (("src/mchad/progress.py", 'f"{LOSS_KEY}_epoch", metrics', 'f"{LOSS_KEY}_step", metrics'),),
        ("tests/test_progress.py::test_a_run_writing_to_a_file_logs_one_line_per_epoch",),
    ),
    Bug(
        "the detectors fit on the whole training split, ignoring detectors_fit_samples",
        (("src/mchad/evaluation/detectors.py", "id_train_split(limit)", "id_train_split(None)"),),
        ("tests/test_detectors.py::test_rows_equal_pytorch_ood_fitted_on_the_capped_training_split_and_sklearn",),
    ),
    Bug(
        "detectors_select=val records its choice and tests the yaml's values",
        (
            (
                "src/mchad/evaluation/detectors.py",
                'return [spec.with_values(chosen[spec.name]["values"]) if spec.name in chosen else spec for spec in specs]',
                "return list(specs)",
            ),
        ),
        ("tests/test_detectors.py::test_select_on_validation_records_the_choice_and_tests_it",),
    ),
    Bug(
        "mchad-report imports the training stack (Lightning) to summarise",
        (
            (
                "src/mchad/report/tables.py",
                "    return _mean_std(per_run(results), row_keys(results))",
                "    import mchad.train  # noqa: F401\n    return _mean_std(per_run(results), row_keys(results))",
            ),
        ),
        ("tests/test_cli.py::test_help_and_the_report_never_import_the_training_stack",),
    ),
    Bug(
        "the augmentation's output stays float32 under trainer.precision=bf16-true or 64-true",
        (("src/mchad/data/augment.py", "dtype=self.scale.dtype", "dtype=torch.float32"),),
        ("tests/test_data_augment.py", "tests/test_train.py::test_a_run_in_bf16_true_precision_trains_and_tests"),
    ),
    Bug(
        "a removed half-made run directory leaves its run.log handler on the root logger",
        (("src/mchad/rundir.py", 'run_dir in Path(getattr(h, "baseFilename", "/")).parents', "False"),),
        ("tests/test_faults.py::test_a_diverging_loss_stops_with_one_line_and_no_results",),
    ),
)


def copy_tree(target: Path) -> None:
    """The files git tracks, as they are in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def failing_tests(tree: Path, tests: tuple[str, ...]) -> list[str] | None:
    """The tests that failed (empty: all passed), or None when pytest did not run them."""
    command = [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "-m", "slow or not slow"]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        return None
    return [line.split(" ")[1] for line in done.stdout.splitlines() if line.startswith("FAILED ")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("numbers", nargs="*", type=int, help=f"the bugs to plant (1-{len(BUGS)}), default all")
    chosen = parser.parse_args(argv).numbers or range(1, len(BUGS) + 1)
    problems = 0
    with tempfile.TemporaryDirectory(prefix="mchad-planted-") as folder:
        tree = Path(folder)
        copy_tree(tree)
        for number in chosen:
            bug = BUGS[number - 1]
            unplanted = failing_tests(tree, bug.tests)
            if unplanted != []:
                print(f"{number}. {bug.what}: the tests fail without the bug: {unplanted}", flush=True)
                problems += 1
                continue
            originals = {path: (tree / path).read_text() for path, _, _ in bug.edits}
            for path, old, new in bug.edits:
                text = (tree / path).read_text()
                if text.count(old) != 1:
                    raise SystemExit(
                        f"error: bug {number}: {old!r} is not once in {path}: update tools/planted_bugs.py"
                    )
                (tree / path).write_text(text.replace(old, new))
            caught = failing_tests(tree, bug.tests)
            for path, text in originals.items():
                (tree / path).write_text(text)
            problems += not caught
            print(f"{number}. {bug.what}: {'caught by ' + ', '.join(caught) if caught else 'MISSED'}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
