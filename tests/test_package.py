"""The wheel: built from the repository, installed into a fresh virtual environment, run from elsewhere.

The fresh environment gets the wheel only (``--no-deps``); its dependencies come from the test
environment's site-packages on ``PYTHONPATH``, where the editable ``mchad`` is invisible (editable
installs are ``.pth`` hooks, which ``PYTHONPATH`` entries do not run). So ``mchad`` and its config
come from the wheel: a file missing from it fails here.
"""

from __future__ import annotations

import csv
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the freshly built wheel; returns its bin directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp / "dist"), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = (tmp / "dist").glob("mchad-*.whl")
    venv.EnvBuilder(with_pip=False).create(tmp / "env")
    python = tmp / "env" / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return python.parent


def env_with_dependencies() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(site.getsitepackages())}


def test_the_wheel_declares_its_dependencies_and_ships_the_config(installed):
    script = (
        "import importlib.metadata as m, mchad.config as c; "
        "import re; print(sorted(re.split('[<>=!~ ;[]', r)[0] for r in m.requires('mchad') if 'extra' not in r)); "
        "print(c.CONFIG_DIR); print(len(list(c.CONFIG_DIR.rglob('*.yaml'))))"
    )
    out = subprocess.run([installed / "python", "-c", script], capture_output=True, text=True, env=env_with_dependencies(),
                         check=True, cwd="/").stdout.splitlines()  # fmt: skip
    assert {"torch", "pytorch-lightning", "hydra-core", "pandas"} <= set(eval(out[0]))
    assert Path(out[1]).is_relative_to(installed.parent) and "site-packages" in out[1]
    assert int(out[2]) == len(list((ROOT / "src" / "mchad" / "conf").rglob("*.yaml")))


@pytest.mark.slow
def test_a_console_script_trains_from_another_directory(installed, tmp_path):
    process = subprocess.run(
        [installed / "mchad-train", "experiment=quickstart", "trainer.max_epochs=1", "trainer.limit_val_batches=2",
         "logger=none", "hydra.run.dir=run"],
        cwd=tmp_path, env=env_with_dependencies(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    with open(tmp_path / "run" / "results.csv") as f:
        assert {row["ood_dataset"] for row in csv.DictReader(f)} == {"digits-ood", "gaussian", "uniform"}
    assert (tmp_path / "data").is_dir()  # paths are relative to where the command runs


def test_console_scripts_answer_help(installed):
    for script in ("mchad-train", "mchad-eval", "mchad-data", "mchad-report"):
        process = subprocess.run([installed / script, "--help"], capture_output=True, text=True, env=env_with_dependencies(),
                                 timeout=300, cwd="/")  # fmt: skip
        assert process.returncode == 0, (script, process.stderr[-2000:])
