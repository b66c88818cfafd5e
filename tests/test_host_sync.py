"""A real training step (Trainer, default callbacks and loggers) never reads a tensor back to the host.

On a GPU such a read (``.item()``, ``float(t)``, ``if t.any():`` ...) is a synchronisation:
the CPU waits for the step to finish instead of queueing the next one. The CUDA test
(``tests/test_gpu.py``) checks the model's own step under ``set_sync_debug_mode``; this one
checks everything around it on the CPU: Lightning's logging, the progress bar, the
accuracy metric, the callbacks. It counts host reads in runs of 2 and 4 training steps:
reads that happen once per epoch (the epoch means the bar shows) are allowed, reads
that grow with the steps are not. Adam's and the scheduler's step counters are host
tensors by design in PyTorch (``capturable=False``), so their reads are not counted.
"""

from __future__ import annotations

import traceback
from collections import Counter

import pytest
import pytorch_lightning as pl
import torch

from mchad.train import build_run, build_trainer

HOST_READS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__")


def _from_torch_optim() -> bool:
    return any("/torch/optim/" in frame.filename for frame in traceback.extract_stack())


class Recorder(pl.Callback):
    """Records host reads from the first training batch to the end of the training epoch."""

    def __init__(self) -> None:
        self.recording = False
        self.reads: list[str] = []

    def on_train_batch_start(self, *args) -> None:
        self.recording = True

    def on_train_epoch_end(self, *args) -> None:
        self.recording = False


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    recorder = Recorder()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if recorder.recording and not _from_torch_optim():
                caller = traceback.extract_stack(limit=2)[0]
                recorder.reads.append(f"{_name} at {caller.filename}:{caller.lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return recorder


def host_reads(run_config, recorder: Recorder, steps: int) -> list[str]:
    cfg, run_dir = run_config(
        "experiment=quickstart", "trainer.max_epochs=1", f"trainer.limit_train_batches={steps}",
        "trainer.limit_val_batches=0", "trainer.log_every_n_steps=50", run_dir=None,
    )  # fmt: skip
    run_dir = run_dir.with_name(f"run{steps}")
    pl.seed_everything(0)
    run = build_run(cfg, run_dir)
    trainer = build_trainer(cfg, run_dir)
    trainer.callbacks.append(recorder)
    recorder.reads = []
    trainer.fit(run.module, datamodule=run.datamodule)
    return recorder.reads


def test_training_steps_read_nothing_back_to_the_host(run_config, recorder):
    two, four = host_reads(run_config, recorder, 2), host_reads(run_config, recorder, 4)
    # the spy works: the epoch's means are read once, at the end of the epoch
    assert two
    assert Counter(four) == Counter(two), f"host reads that grow with the steps: {Counter(four) - Counter(two)}"
