"""Adding a method takes one Python file and one yaml, both outside the package.

The toy method lives in its own module on ``PYTHONPATH`` and its config in a folder given with
``--config-dir``; ``run.py experiment=quickstart method=toy`` trains and evaluates it like a built-in
one. If this test needs a change in the package, adding a method has become harder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from conftest import assert_results_match, independent_results
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]

TOY_MODULE = '''
"""A linear softmax head: the smallest complete method."""
import torch
import torch.nn.functional as F

from mchad.methods.method import Method, masked_mean, split_known


class Toy(Method):
    score_names = ("neg_max_logit",)

    def __init__(self, n_classes: int, n_embedding: int, temperature: float = 1.0) -> None:
        super().__init__(n_classes, n_embedding)
        self.head = torch.nn.Linear(n_embedding, n_classes)
        self.temperature = temperature

    def forward(self, z):
        return {"logits": self.head(z) / self.temperature}

    def loss(self, out, y):
        known, _ = split_known(y)
        per_sample = F.cross_entropy(out["logits"], y.clamp(min=0), reduction="none")
        return {"ce": masked_mean(per_sample, known)}

    def predict(self, out):
        return out["logits"].argmax(dim=1)

    def scores(self, out):
        return {"neg_max_logit": -out["logits"].max(dim=1).values}
'''

TOY_YAML = """# @package method
name: toy
_target_: toymethod.Toy
n_classes: ${data.n_classes}
n_embedding: 8
temperature: 2.0
"""


def test_a_method_from_outside_the_package_trains_and_is_evaluated(tmp_path, monkeypatch):
    (tmp_path / "toymethod.py").write_text(TOY_MODULE)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "toy.yaml").write_text(TOY_YAML)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--config-dir", str(tmp_path / "conf"), "experiment=quickstart",
         "method=toy", "trainer.max_epochs=1", "trainer.limit_val_batches=2", "data.eval_batch_size=256",
         "trainer.limit_test_batches=2", f"hydra.run.dir={run_dir}",
         f"paths.data_dir={tmp_path / 'data'}", "logger=none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    results = pd.read_csv(run_dir / "results.csv")
    assert set(results.method) == {"toy"}
    assert set(results.score) == {"neg_max_logit"}
    assert set(results.ood_dataset) == {"digits-ood", "gaussian", "uniform"}
    # the numbers: scikit-learn's metrics on the toy head's outputs of the tested weights, computed here again
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert_results_match(results, independent_results(saved, run_dir / "checkpoints" / "best.ckpt"))
