"""Sweeps through hydra-submitit-launcher: ``hydra/launcher=slurm`` (SLURM) and ``slurm_local`` / ``submitit_local``.

The local executor runs the code path of a SLURM job (the launcher pickled, a submitit worker
per job, our job's child process under it, requeue on USR2) on this machine, so what a cluster
does is tested here: a sweep writes its results and the summary, a re-run skips finished jobs,
and a job that gets submitit's preemption signal is requeued and resumes from ``last.ckpt``.
What sbatch receives is checked from the script submitit writes for our ``slurm`` config.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mchad.cli.launch import check_launcher_plugin
from mchad.config import compose
from mchad.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

# a quickstart run of a few seconds: epochs of at most 5 batches, 2 batches of 128 per val and test set
QUICK = ["experiment=quickstart", "debug=limit", "data.eval_batch_size=128", "logger=none", "test_checkpoint=current",
         "~callbacks.progress_bar", "~callbacks.lr_monitor", "tag=t"]  # fmt: skip


def command(tmp_path: Path, *overrides: str) -> list[str]:
    paths = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]
    return [sys.executable, str(ROOT / "run.py"), "-m", *QUICK, *paths, *overrides]


def sweep(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(tmp_path, *overrides), cwd=tmp_path, capture_output=True, text=True, timeout=900)


def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "logs" / "multiruns" / "t" / "quickstart").iterdir())


@pytest.mark.slow  # about 60 s on 2 idle cores; make test-slow
def test_local_sweep_writes_results_and_the_summary(tmp_path):
    result = sweep(tmp_path, "hydra/launcher=slurm_local", "seed=1,2", "trainer.max_epochs=1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Submitit 'local' sweep output dir" in result.stdout + result.stderr
    assert "sweep finished: 2 of 2 runs succeeded, 0 failed" in result.stdout
    dirs = run_dirs(tmp_path)
    assert [[part for part in d.name.split(",") if part.startswith("seed=")] for d in dirs] == [["seed=1"], ["seed=2"]]
    for d in dirs:
        rows = pd.read_csv(d / "results.csv")
        assert sorted(rows["ood_dataset"]) == ["digits-ood", "gaussian", "uniform"] and set(rows["epochs"]) == {1}
        assert set(rows["seed"]) == {int(d.name.split("seed=")[1].split(",")[0])}
    # submitit's own files (pickles, each job's stdout and stderr) stay inside the sweep directory
    assert len(list((tmp_path / "logs" / "multiruns" / "t" / ".submitit").rglob("*_result.pkl"))) == 2
    assert not (tmp_path / "logs" / "multiruns" / "t" / ".submitit" / "%j").exists(), "submitit's folder pattern"


def worker_of(pid: int) -> int:
    """The parent process of ``pid``: the submitit worker of a job's child process."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow  # about 100 s on 2 idle cores: three worker and child processes one after the other
def test_preempted_job_is_requeued_and_resumes_from_its_last_checkpoint_and_a_rerun_skips_it(tmp_path):
    """SLURM sends USR2 to every process of a job before its time limit or on preemption: here by hand,
    as soon as the first epoch's last.ckpt exists, four epochs before the run would end."""
    epochs = 5
    sweep_process = subprocess.Popen(
        command(tmp_path, "hydra/launcher=slurm_local", "seed=1", f"trainer.max_epochs={epochs}"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 600
        last = None
        while last is None or not last.exists():
            assert sweep_process.poll() is None and time.time() < deadline, "no last.ckpt before the sweep ended"
            time.sleep(0.2)
            found = list((tmp_path / "logs" / "multiruns" / "t").glob("quickstart/*/checkpoints/last.ckpt"))
            last = found[0] if found else None
        run_dir = last.parent.parent
        child = int((run_dir / ".lock").read_text())
        worker = worker_of(child)
        assert "submitit" in Path(f"/proc/{worker}/cmdline").read_text()
        for pid in (child, worker):  # as SLURM does: the child ignores it, the worker requeues the job
            os.kill(pid, signal.SIGUSR2)
        output, _ = sweep_process.communicate(timeout=600)
    finally:
        if sweep_process.poll() is None:
            sweep_process.kill()
    assert sweep_process.returncode == 0, output
    assert "sweep finished: 1 of 1 runs succeeded, 0 failed" in output
    logs = "".join(p.read_text() for p in (tmp_path / "logs" / "multiruns" / "t" / ".submitit").rglob("*_log.out"))
    assert "this job is preempted" in logs and "Requeued job" in logs, logs[-3000:]
    assert f"resuming from {last}" in (run_dir / "run.log").read_text()
    results = run_dir / "results.csv"
    assert set(pd.read_csv(results)["epochs"]) == {epochs}
    assert not (run_dir / "error.txt").exists()

    # the same sweep again, through the plugin's own submitit_local: the finished run is skipped
    mtime = results.stat().st_mtime_ns
    again = sweep(tmp_path, "hydra/launcher=submitit_local", "seed=1", f"trainer.max_epochs={epochs}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "sweep finished: 1 of 1 runs succeeded, 0 failed" in again.stdout
    assert results.stat().st_mtime_ns == mtime, "a finished run must be skipped"
    assert "is complete, skipping" in (run_dir / "run.log").read_text()


def test_slurm_config_reaches_sbatch(tmp_path, monkeypatch):
    """The documented keys, through the plugin and submitit, into the sbatch script of a 3-job array."""
    import submitit

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")  # submitit looks for srun
    cfg = compose(["experiment=quickstart", f"paths.log_dir={tmp_path / 'logs'}", "hydra/launcher=slurm",
                   "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=240",
                   "hydra.launcher.array_parallelism=8", "hydra.launcher.account=lab",
                   "+hydra.launcher.additional_parameters.mail-user=me@uni.edu"])  # fmt: skip
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    captured = {}

    def map_array(executor, fn, *args):
        captured["executor"] = executor
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher.launch([["seed=1"], ["seed=2"], ["seed=3"]], initial_job_idx=0)
    executor = captured["executor"]._executor
    assert executor.max_num_timeout == 5
    executor.parameters["map_count"] = 3
    script = executor._make_submission_file_text("python -m submitit.core._submit FOLDER", "uid")
    expected = ["--partition=gpu", "--gpus-per-node=1", "--time=240", "--array=0-2%3", "--signal=USR2@120",
                "--requeue", "--account=lab", "--mem=16GB", "--cpus-per-task=4", "--mail-user=me@uni.edu"]  # fmt: skip
    for line in expected:
        assert f"#SBATCH {line}" in script, script
    assert "export SUBMITIT_EXECUTOR=slurm" in script
    assert str(tmp_path / "logs" / "multiruns" / "default" / ".submitit") in script
    executor.parameters["map_count"] = 20
    assert "#SBATCH --array=0-19%8" in executor._make_submission_file_text("x", "uid")


def test_missing_submitit_is_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # what find_spec reports for a package not installed
    for launcher in ("slurm", "slurm_local", "submitit_slurm"):
        with pytest.raises(
            ConfigError, match=r"needs the hydra-submitit-launcher plugin.*pip install 'mchad\[slurm\]'"
        ):
            check_launcher_plugin(["experiment=quickstart", f"hydra/launcher={launcher}"])
    check_launcher_plugin(["hydra/launcher=joblib"])


def test_lightning_leaves_the_requeue_to_submitit(run_config, monkeypatch):
    """In a SLURM job the Trainer's own auto-requeue (SIGUSR1 -> scontrol requeue) is off under submitit."""
    from mchad.train import build_trainer

    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "run", "SLURM_JOB_ID": "7", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    cfg, run_dir = run_config("experiment=quickstart", "logger=none", "callbacks=none")
    assert build_trainer(cfg, run_dir)._accelerator_connector.cluster_environment.auto_requeue
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    environment = build_trainer(cfg, run_dir)._accelerator_connector.cluster_environment
    assert type(environment).__name__ == "SLURMEnvironment" and not environment.auto_requeue
    assert OmegaConf.select(cfg, "trainer.plugins") is None
