"""mchad.rundir and mchad.files: the config fingerprint of a run directory, atomic writes, orphan cleanup."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from mchad import rundir
from mchad.config import compose
from mchad.errors import ConfigError
from mchad.files import atomic_file, atomic_write


def finished_run(tmp_path: Path, *overrides: str) -> Path:
    """A run directory as a finished run leaves it: results.csv and the fingerprint of its config."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rundir.check_fingerprint(run_dir, compose(["experiment=quickstart", *overrides]))
    (run_dir / "results.csv").write_text("method\n")
    return run_dir


def test_a_finished_run_refuses_fewer_epochs(tmp_path):
    run_dir = finished_run(tmp_path, "trainer.max_epochs=8")
    recorded = (run_dir / rundir.FINGERPRINT_FILE).read_text()
    with pytest.raises(ConfigError) as caught:
        rundir.check_fingerprint(run_dir, compose(["experiment=quickstart", "trainer.max_epochs=2"]))
    assert str(caught.value).startswith(
        f"run directory {run_dir} holds a run made with another config (trainer.max_epochs: 8 -> 2): repeat the "
        "original command"
    )
    assert (run_dir / rundir.FINGERPRINT_FILE).read_text() == recorded
    assert yaml.safe_load(recorded)["trainer.max_epochs"] == 8


@pytest.mark.parametrize(
    "override", ["trainer.limit_val_batches=3", "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0"]
)
def test_trainer_keys_that_change_numbers_are_in_the_fingerprint(tmp_path, override):
    run_dir = finished_run(tmp_path)
    with pytest.raises(ConfigError, match=f"\\({override.split('=')[0]}: "):
        rundir.check_fingerprint(run_dir, compose(["experiment=quickstart", override]))


@pytest.mark.parametrize(
    "override",
    [
        "trainer.log_every_n_steps=1",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        "data.num_workers=2",
        "model.embedding_plots=true",
        "tag=other",
    ],
)
def test_keys_that_change_no_number_are_not(tmp_path, override):
    run_dir = finished_run(tmp_path)
    rundir.check_fingerprint(run_dir, compose(["experiment=quickstart", override]))


def test_an_empty_directory_takes_the_new_config(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rundir.check_fingerprint(run_dir, compose(["experiment=quickstart", "trainer.max_epochs=8"]))
    rundir.check_fingerprint(run_dir, compose(["experiment=quickstart", "trainer.max_epochs=2"]))
    assert "trainer.max_epochs: 2" in (run_dir / rundir.FINGERPRINT_FILE).read_text()


def test_atomic_write_replaces_whole_and_takes_the_umask(tmp_path):
    path = tmp_path / "file.json"
    path.write_text("old")
    old_umask = os.umask(0o027)
    try:
        atomic_write(path, "new")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.json"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_part(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(path) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_orphans_of_killed_writers_are_removed(tmp_path):
    orphans = [".provenance.json.x1y2.part", ".results.csv.dead.tmp", ".run_return.json.tmp"]
    for name in [*orphans, "results.csv"]:
        (tmp_path / name).write_text("half")
    rundir.remove_orphans(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
