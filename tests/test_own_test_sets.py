"""Your own OOD test sets: ``ood_folders=[DIR]`` on run.py and eval.py, and a ``testsets/mine.yaml``
of your own found through ``--config-dir`` or ``hydra.searchpath``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mchad.cli.launch import launch
from mchad.cli.train import eval_run_dir_override
from mchad.train import evaluate_checkpoint, train

# a few training steps: what is checked here is which test sets are evaluated and how their rows are named
QUICK = [
    "experiment=quickstart",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "logger=none",
    "test_checkpoint=current",
]


def image_folder(root: Path, n: int = 12) -> Path:
    """Images of other sizes and formats, some in a sub-folder: all must be read, resized to 32x32."""
    rng = np.random.default_rng(0)
    (root / "deeper").mkdir(parents=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        folder, suffix = (root / "deeper", ".jpg") if i % 3 == 0 else (root, ".png" if i % 2 else ".bmp")
        Image.fromarray(pixels).save(folder / f"{i}{suffix}")
    return root


def results(tmp: Path) -> pd.DataFrame:
    [path] = list(tmp.rglob("results.csv"))
    return pd.read_csv(path)


def test_ood_folders_alone_name_the_rows_after_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = image_folder(tmp_path / "street-photos")
    launch(train, "run", [*QUICK, "testsets=none", f"ood_folders=[{folder}]", f"hydra.run.dir={tmp_path / 'run'}"])
    table = results(tmp_path / "run")
    assert table.ood_dataset.tolist() == ["street-photos"] and table.n_ood.tolist() == [12]


def test_a_test_set_group_of_your_own_through_config_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = image_folder(tmp_path / "mine-images")
    (tmp_path / "conf" / "testsets").mkdir(parents=True)
    (tmp_path / "conf" / "testsets" / "mine.yaml").write_text(
        f"# @package testsets\n- {{name: imagefolder, root: {folder}, group: far, label: mine}}\n"
    )
    launch(train, "run", ["--config-dir", str(tmp_path / "conf"), *QUICK, "testsets=mine",
                          f"hydra.run.dir={tmp_path / 'run'}"])  # fmt: skip
    table = results(tmp_path / "run")
    assert table.ood_dataset.tolist() == ["mine"] and table.group.tolist() == ["far"]


def test_a_typo_in_your_own_group_lists_your_options_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "testsets").mkdir(parents=True)
    (tmp_path / "conf" / "testsets" / "mine.yaml").write_text("# @package testsets\n[]\n")
    with pytest.raises(SystemExit) as exit_info:
        launch(train, "run", [*QUICK, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "testsets=mien"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "unknown testsets 'mien'" in line and "mine" in line


@pytest.mark.parametrize("content", ["empty", "unreadable"])
def test_a_folder_without_readable_images_is_one_line_naming_it(content, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "nothing-here"
    folder.mkdir()
    if content == "unreadable":
        (folder / "photo.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as exit_info:
        launch(train, "run", [*QUICK, "testsets=none", f"ood_folders=[{folder}]"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and line.startswith("error: ") and str(folder) in line


def test_eval_adds_ood_folders_to_a_finished_run(quickstart_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(quickstart_run.run_dir, tmp_path / "run")  # eval.py writes into the run's directory
    folder = image_folder(tmp_path / "reviewer-set")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    launch(
        evaluate_checkpoint,
        "eval",
        [f"ckpt_path={ckpt}", "testsets=none", f"ood_folders=[{folder}]"],
        defaults=eval_run_dir_override,
    )  # what eval.py passes: results go to <run>/eval/<time>
    [path] = list((tmp_path / "run" / "eval").rglob("results.csv"))
    table = pd.read_csv(path)
    assert table.ood_dataset.tolist() == ["reviewer-set"] and (table.experiment == "quickstart").all()
