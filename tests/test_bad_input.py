"""Every bad input ends the same way: ONE line ``error: <what>: <fix>`` on stderr, exit status 2,
no results.csv and no run directory left behind.

The table runs in-process (``mchad.cli.train``'s ``train_main`` / ``eval_main``, what ``mchad-train`` /
``mchad-eval`` call, with stderr and the exit status captured); ``test_bad_input_end_to_end`` runs a few rows through
the real command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mchad.cli.train import eval_main, train_main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["experiment=quickstart", "trainer.max_epochs=1", "logger=none"]


class Exploit:
    """Unpickling this writes a marker file: what a crafted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def image_class_folder(root: Path) -> Path:
    """``root/class0/`` with one valid image; the caller adds a broken one."""
    folder = root / "class0"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "fine.png")
    return folder


def corrupt_image(tmp: Path) -> Path:
    (image_class_folder(tmp / "corrupt") / "broken.png").write_bytes(os.urandom(500))
    return tmp / "corrupt"


def truncated_image(tmp: Path) -> Path:
    path = image_class_folder(tmp / "truncated") / "half.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return tmp / "truncated"


def text_file(tmp: Path) -> Path:
    path = tmp / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    return path


def truncated_checkpoint(tmp: Path) -> Path:
    path = tmp / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "epoch": 0}, path)
    path.write_bytes(path.read_bytes()[:600])
    return path


def foreign_checkpoint(tmp: Path) -> Path:
    path = tmp / "foreign.ckpt"
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(3, 3, 3, 3)}, "epoch": 0}, path)
    return path


def malicious_checkpoint(tmp: Path) -> Path:
    path = tmp / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Exploit(tmp / "pwned")}, path)
    return path


def a_file(tmp: Path) -> Path:
    path = tmp / "occupied"
    path.write_text("a file where a directory should be\n")
    return path


# (id, command line with {tmp} and {made} placeholders, maker of {made}, entry, text the message must contain)
CASES = [
    # names of config options and keys
    ("unknown-experiment", ["experiment=nope"], None, "run", "unknown experiment 'nope'"),
    ("unknown-method", [*QUICK, "method=nope"], None, "run", "unknown method 'nope'"),
    ("unknown-data", [*QUICK, "data=nope"], None, "run", "unknown data 'nope'"),
    ("unknown-backbone", [*QUICK, "backbone=nope"], None, "run", "unknown backbone 'nope'"),
    ("unknown-trainer", [*QUICK, "trainer=nope"], None, "run", "unknown trainer 'nope'"),
    ("unknown-testsets", [*QUICK, "testsets=nope"], None, "run", "unknown testsets 'nope'"),
    ("unknown-logger", [*QUICK, "logger=nope"], None, "run", "unknown logger 'nope'"),
    ("unknown-callbacks", [*QUICK, "callbacks=nope"], None, "run", "unknown callbacks 'nope'"),
    ("unknown-debug", [*QUICK, "debug=nope"], None, "run", "unknown debug 'nope'"),
    ("unknown-detector", [*QUICK, "detectors=[knn,nope]"], None, "run", "unknown detectors 'nope': choose one of"),
    # post-hoc detectors (docs/detectors.md)
    (
        "detector-not-applicable",
        [*QUICK, "detectors=[vim]"],
        None,
        "run",
        "detector vim does not apply to method mchad",
    ),
    (
        "detector-input",
        [*QUICK, "detectors=[knn]", "detectors.knn.input=logits"],
        None,
        "run",
        "detectors.knn.input=logits does not fit KNN",
    ),
    (
        "detector-argument",
        [*QUICK, "detectors=[knn]", "+detectors.knn.detector.kk=3"],
        None,
        "run",
        "detectors.knn names kk",
    ),
    (
        "detectors-select",
        [*QUICK, "detectors_select=test"],
        None,
        "run",
        "detectors_select='test' must be 'fixed' or 'val'",
    ),
    ("detectors-fit-samples", [*QUICK, "detectors_fit_samples=0"], None, "run", "detectors_fit_samples=0"),
    ("unknown-experiment-in-sweep", ["-m", "experiment=quickstart,nope"], None, "run", "unknown experiment 'nope'"),
    ("unknown-key", [*QUICK, "foo=1"], None, "run", "foo"),
    ("unknown-nested-key", [*QUICK, "model.foo=1"], None, "run", "foo"),
    ("override-syntax", [*QUICK, "seed=[1"], None, "run", "seed"),
    ("override-no-value-syntax", [*QUICK, "seed=1)"], None, "run", "seed"),
    # top-level values
    ("seed-text", [*QUICK, "seed=abc"], None, "run", "seed"),
    ("seed-negative", [*QUICK, "seed=-1"], None, "run", "seed"),
    ("seed-fraction", [*QUICK, "seed=1.5"], None, "run", "seed"),
    ("seed-null", [*QUICK, "seed=null"], None, "run", "seed"),
    ("threads-zero", [*QUICK, "threads=0"], None, "run", "threads"),
    ("threads-negative", [*QUICK, "threads=-2"], None, "run", "threads"),
    ("threads-text", [*QUICK, "threads=many"], None, "run", "threads"),
    ("test-checkpoint", [*QUICK, "test_checkpoint=worst"], None, "run", "test_checkpoint"),
    ("train-flag", [*QUICK, "train=maybe"], None, "run", "train"),
    ("test-flag", [*QUICK, "test=2"], None, "run", "test"),
    # model
    ("lr-nan", [*QUICK, "model.optimizer.lr=nan"], None, "run", "model.optimizer.lr"),
    ("lr-inf", [*QUICK, "model.optimizer.lr=inf"], None, "run", "model.optimizer.lr"),
    ("lr-negative", [*QUICK, "model.optimizer.lr=-0.1"], None, "run", "model.optimizer.lr"),
    ("lr-zero", [*QUICK, "model.optimizer.lr=0"], None, "run", "model.optimizer.lr"),
    ("lr-text", [*QUICK, "model.optimizer.lr=fast"], None, "run", "model.optimizer.lr"),
    (
        "weight-decay-negative",
        [*QUICK, "model.optimizer.weight_decay=-1e-4"],
        None,
        "run",
        "model.optimizer.weight_decay",
    ),
    ("weight-decay-nan", [*QUICK, "model.optimizer.weight_decay=nan"], None, "run", "model.optimizer.weight_decay"),
    ("compile-mode", [*QUICK, "model.compile=fastest"], None, "run", "model.compile"),
    ("channels-last", [*QUICK, "model.channels_last=yes"], None, "run", "model.channels_last"),
    # trainer
    ("epochs-text", [*QUICK, "trainer.max_epochs=abc"], None, "run", "trainer.max_epochs"),
    ("epochs-zero", [*QUICK, "trainer.max_epochs=0"], None, "run", "trainer.max_epochs"),
    ("epochs-negative", [*QUICK, "trainer.max_epochs=-1"], None, "run", "trainer.max_epochs"),
    ("epochs-fraction", [*QUICK, "trainer.max_epochs=1.5"], None, "run", "trainer.max_epochs"),
    ("precision-unknown", [*QUICK, "trainer.precision=foo"], None, "run", "trainer.precision"),
    ("precision-int8", [*QUICK, "trainer.precision=8"], None, "run", "trainer.precision"),
    ("gpu-without-gpu", [*QUICK, "trainer=gpu"], None, "run", "GPU"),
    ("accelerator-unknown", [*QUICK, "trainer.accelerator=tpu9"], None, "run", "trainer.accelerator"),
    ("log-every-zero", [*QUICK, "trainer.log_every_n_steps=0"], None, "run", "trainer.log_every_n_steps"),
    ("limit-val-negative", [*QUICK, "trainer.limit_val_batches=-1"], None, "run", "trainer.limit_val_batches"),
    ("clip-negative", [*QUICK, "trainer.gradient_clip_val=-1"], None, "run", "trainer.gradient_clip_val"),
    # data
    ("batch-zero", [*QUICK, "data.batch_size=0"], None, "run", "data.batch_size"),
    ("batch-negative", [*QUICK, "data.batch_size=-5"], None, "run", "data.batch_size"),
    ("batch-fraction", [*QUICK, "data.batch_size=2.5"], None, "run", "data.batch_size"),
    ("batch-text", [*QUICK, "data.batch_size=big"], None, "run", "data.batch_size"),
    ("eval-batch-zero", [*QUICK, "data.eval_batch_size=0"], None, "run", "data.eval_batch_size"),
    ("batches-per-epoch-zero", [*QUICK, "data.batches_per_epoch=0"], None, "run", "data.batches_per_epoch"),
    ("val-size-zero", [*QUICK, "data.val_size=0"], None, "run", "data.val_size"),
    ("val-size-negative", [*QUICK, "data.val_size=-0.1"], None, "run", "data.val_size"),
    ("crop-negative", [*QUICK, "data.crop_padding=-1"], None, "run", "data.crop_padding"),
    ("crop-fraction", [*QUICK, "data.crop_padding=1.5"], None, "run", "data.crop_padding"),
    ("flip-text", [*QUICK, "data.flip=maybe"], None, "run", "data.flip"),
    ("mean-short", [*QUICK, "data.mean=[0.5,0.5]"], None, "run", "data.mean"),
    ("std-long", [*QUICK, "data.std=[0.5,0.5,0.5,0.5]"], None, "run", "data.std"),
    ("std-zero", [*QUICK, "data.std=[0,1,1]"], None, "run", "data.std"),
    ("n-classes-zero", [*QUICK, "data.n_classes=0"], None, "run", "data.n_classes"),
    # method
    ("embedding-fraction", [*QUICK, "method.n_embedding=2.5"], None, "run", "method.n_embedding"),
    ("embedding-zero", [*QUICK, "method.n_embedding=0"], None, "run", "method.n_embedding"),
    ("embedding-text", [*QUICK, "method.n_embedding=abc"], None, "run", "method.n_embedding"),
    ("margin-negative", [*QUICK, "method.margin=-1"], None, "run", "method.margin"),
    ("margin-zero", [*QUICK, "method.margin=0"], None, "run", "method.margin"),
    ("weight-negative", [*QUICK, "method.weight_center=-1"], None, "run", "method.weight_center"),
    ("weight-nan", [*QUICK, "method.weight_ce=nan"], None, "run", "method.weight_ce"),
    ("margin-form", [*QUICK, "method.margin_form=both"], None, "run", "method.margin_form"),
    ("outliers-missing", [*QUICK, "method.weight_oe=0.5"], None, "run", "choose them with outliers="),
    # Hydra's command line: flags, sweeps, and every job of a sweep checked before the first starts
    ("sweep-without-m", [*QUICK, "seed=1,2,3"], None, "run", "seed=1,2,3 gives several values"),
    ("cfg-with-m", ["-m", "--cfg", "job", *QUICK], None, "run", "--cfg prints the config of one run"),
    ("unknown-flag", ["--cfgg", "job", *QUICK], None, "run", "--cfgg is not a flag of"),
    ("flag-value", ["--cfg", "jobs", *QUICK], None, "run", "invalid choice: 'jobs'"),
    ("sweep-method-constraint", ["-m", *QUICK, "method=softmax", "seed=1,2"], None, "run", "job 1 (seed=1): method."),
    ("sweep-second-job", ["-m", *QUICK, "seed=1,-2"], None, "run", "job 2 (seed=-2): seed"),
    ("sweep-product", ["-m", *QUICK, "seed=1,2", "method=mchad,softmax"], None, "run", "(seed=1 method=softmax)"),
    (
        "sweep-slurm",
        ["-m", *QUICK, "hydra/launcher=slurm_local", "method=softmax", "seed=1,2"],
        None,
        "run",
        "(seed=1)",
    ),
    ("sweep-unknown-key", ["-m", *QUICK, "foo=1,2"], None, "run", "job 1 (foo=1)"),
    ("sweep-interval", ["-m", *QUICK, "seed=interval(1,2)"], None, "run", "is an interval"),
    ("sweep-pretrained", ["-m", *QUICK, "seed=1,2", "model.pretrained_checkpoint={tmp}/no.pt"], None, "run", "no.pt"),
    # directories
    ("run-dir-is-a-file", [*QUICK, "hydra.run.dir={made}"], a_file, "run", "is a file"),
    ("log-dir-below-a-file", [*QUICK, "paths.log_dir={made}/logs"], a_file, "run", "is a file"),
    ("log-dir-not-writable", [*QUICK, "paths.log_dir=/proc/mchad-logs"], None, "run", "not writable"),
    # data on disk
    ("image-folder-missing", [*QUICK, "data.outliers={name: imagefolder, root: '{tmp}/nope'}"], None, "run", "nope"),
    (
        "corrupt-image",
        [*QUICK, "data.outliers={name: imagefolder, root: '{made}'}"],
        corrupt_image,
        "run",
        "broken.png",
    ),
    (
        "truncated-image",
        [*QUICK, "data.outliers={name: imagefolder, root: '{made}'}"],
        truncated_image,
        "run",
        "half.png",
    ),
    ("id-root-missing", [*QUICK, "data=cifar10", "data.root={tmp}/nope", "data.download=false"], None, "run", "nope"),
    ("pretrained-missing", [*QUICK, "model.pretrained_checkpoint={tmp}/nope.pt"], None, "run", "nope.pt"),
    # checkpoints given to eval.py
    ("eval-no-checkpoint", ["experiment=quickstart"], None, "eval", "ckpt_path"),
    ("eval-missing-checkpoint", ["experiment=quickstart", "ckpt_path={tmp}/nope.ckpt"], None, "eval", "nope.ckpt"),
    ("eval-text-file", ["experiment=quickstart", "ckpt_path={made}"], text_file, "eval", "not a checkpoint"),
    ("eval-truncated", ["experiment=quickstart", "ckpt_path={made}"], truncated_checkpoint, "eval", "truncated"),
    (
        "eval-other-architecture",
        ["experiment=quickstart", "ckpt_path={made}"],
        foreign_checkpoint,
        "eval",
        "another architecture",
    ),
    ("eval-malicious", ["experiment=quickstart", "ckpt_path={made}"], malicious_checkpoint, "eval", "refused"),
]


def fill(argv: list[str], tmp: Path, made: Path | None) -> list[str]:
    return [a.replace("{tmp}", str(tmp)).replace("{made}", str(made)) for a in argv]


def left_behind(tmp: Path) -> list[Path]:
    """What a refused start must not leave: anything under logs/ (results, Hydra records, logs, empty
    ``logs/runs/<name>/`` folders), the ``eval/`` folder of an evaluation, lock files under data/."""
    made = [*(tmp / "logs").rglob("*"), *tmp.glob("**/eval"), *(tmp / "data").rglob("*.lock")]
    return sorted(made)


@pytest.mark.parametrize(("argv", "maker", "entry", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(argv, maker, entry, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    made = maker(tmp_path) if maker else None
    main = train_main if entry == "run" else eval_main
    with pytest.raises(SystemExit) as exit_info:
        main([*fill(argv, tmp_path, made), f"paths.data_dir={tmp_path / 'data'}"])
    stderr = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, stderr
    assert len(stderr) == 1 and stderr[0].startswith("error: "), stderr
    assert expected in stderr[0], stderr[0]
    assert ": " in stderr[0][len("error: ") :], f"no fix given: {stderr[0]}"
    assert not left_behind(tmp_path), left_behind(tmp_path)
    assert not (tmp_path / "pwned").exists(), "a crafted checkpoint ran code"


def test_the_table_covers_at_least_70_inputs():
    assert len(CASES) >= 70


@pytest.mark.parametrize("case", ["seed-text", "sweep-second-job", "image-folder-missing"])
def test_full_error_adds_the_traceback_and_still_ends_in_the_error_line_and_exit_2(case, tmp_path, monkeypatch, capsys):
    """``HYDRA_FULL_ERROR=1``: the traceback, then the same last line and status, found before or during the run."""
    _, argv, _, _, expected = next(c for c in CASES if c[0] == case)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SystemExit) as exit_info:
        train_main([*fill(argv, tmp_path, None), f"paths.data_dir={tmp_path / 'data'}"])
    stderr = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2, stderr
    assert stderr[0].startswith("Traceback") and stderr[-1].startswith("error: ") and expected in stderr[-1], stderr
    assert not left_behind(tmp_path), left_behind(tmp_path)


def test_the_example_sweep_is_refused_in_one_line_before_any_job(tmp_path, monkeypatch, capsys):
    """What docs and the issue show: both jobs would fail on n_embedding; the first is named, nothing is made."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        train_main(["-m", "experiment=quickstart", "method=softmax", "seed=1,2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: job 1 (seed=1): method.n_embedding=8 must equal n_classes=6 for Softmax (the backbone outputs "
        "the logits): set method.n_embedding=6\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["seed-text", "eval-malicious", "run-dir-is-a-file", "sweep-method-constraint"])
def test_bad_input_end_to_end(case, tmp_path):
    """The same through the real command line, in a subprocess: the status and the one line."""
    _, argv, maker, entry, expected = next(c for c in CASES if c[0] == case)
    made = maker(tmp_path) if maker else None
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / f"{entry}.py"), *fill(argv, tmp_path, made), f"paths.data_dir={tmp_path / 'data'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not left_behind(tmp_path)
    assert not (tmp_path / "pwned").exists()
