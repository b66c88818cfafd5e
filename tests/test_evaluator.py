"""evaluate: one row per (OOD set, score), the ID set scored once."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mchad.errors import ConfigError
from mchad.evaluation.evaluator import evaluate
from mchad.evaluation.metrics import METRIC_NAMES, accuracy, ood_metrics
from mchad.methods.method import Method


class CountingMethod(Method):
    """Logits are the embedding; two scores; counts scores() calls per outputs dict."""

    score_names = ("msp_like", "neg_sum")

    def __init__(self) -> None:
        super().__init__(n_classes=3, n_embedding=3)
        self.scored: Counter[int] = Counter()

    def forward(self, z):
        return {"logits": z}

    def loss(self, out, y):
        return {}

    def predict(self, out):
        return out["logits"].argmax(dim=1)

    def scores(self, out):
        self.scored[id(out)] += 1
        logits = out["logits"]
        return {"msp_like": -logits.max(dim=1).values, "neg_sum": -logits.sum(dim=1)}


@pytest.fixture
def sets():
    generator = torch.Generator().manual_seed(0)
    return {
        "cifar10": {"logits": torch.randn(40, 3, generator=generator) + torch.eye(3).repeat(14, 1)[:40] * 2},
        "svhn": {"logits": torch.randn(25, 3, generator=generator)},
        "gaussian": {"logits": torch.randn(30, 3, generator=generator) - 1},
    }


def test_rows_and_id_scored_once(sets):
    method = CountingMethod()
    id_labels = torch.arange(40) % 3
    rows = evaluate(method, sets, id_labels, id_name="cifar10", groups={"svhn": "far"})

    assert {name: method.scored[id(out)] for name, out in sets.items()} == {"cifar10": 1, "svhn": 1, "gaussian": 1}
    assert [(r["ood_dataset"], r["score"]) for r in rows] == [
        ("svhn", "msp_like"),
        ("svhn", "neg_sum"),
        ("gaussian", "msp_like"),
        ("gaussian", "neg_sum"),
    ]
    assert [r["group"] for r in rows] == ["far", "far", "", ""]
    assert all(set(r) == {"ood_dataset", "group", "score", "Accuracy", *METRIC_NAMES, "n_id", "n_ood"} for r in rows)

    id_out = sets["cifar10"]
    expected_accuracy = accuracy(id_out["logits"].argmax(1), id_labels)
    for row in rows:
        ood_out = sets[row["ood_dataset"]]
        expected = ood_metrics(CountingMethod().scores(id_out)[row["score"]], CountingMethod().scores(ood_out)[row["score"]])
        assert {m: row[m] for m in METRIC_NAMES} == expected
        assert row["Accuracy"] == expected_accuracy
        assert (row["n_id"], row["n_ood"]) == (40, len(ood_out["logits"]))


def test_id_set_only_gives_no_rows(sets):
    assert evaluate(CountingMethod(), {"cifar10": sets["cifar10"]}, torch.arange(40) % 3, "cifar10", {}) == []


def test_missing_id_set_raises(sets):
    with pytest.raises(ConfigError, match="'cifar100' has no outputs"):
        evaluate(CountingMethod(), sets, torch.arange(40) % 3, "cifar100", {})


def test_mismatched_labels_raise(sets):
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate(CountingMethod(), sets, torch.arange(39) % 3, "cifar10", {})
