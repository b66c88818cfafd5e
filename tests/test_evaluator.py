"""evaluate: one row per (OOD set, score) from score tensors."""

from __future__ import annotations

import pytest
import torch

from mchad.errors import ConfigError
from mchad.evaluation.evaluator import evaluate
from mchad.evaluation.metrics import METRIC_NAMES, accuracy, ood_metrics


@pytest.fixture
def sets():
    generator = torch.Generator().manual_seed(0)
    logits = {
        "cifar10": torch.randn(40, 3, generator=generator) + torch.eye(3).repeat(14, 1)[:40] * 2,
        "svhn": torch.randn(25, 3, generator=generator),
        "gaussian": torch.randn(30, 3, generator=generator) - 1,
    }
    return {name: {"msp_like": -z.max(dim=1).values, "neg_sum": -z.sum(dim=1)} for name, z in logits.items()}


def predictions(sets):
    return (sets["cifar10"]["neg_sum"] * 1000).long() % 3


def test_one_row_per_ood_set_and_score(sets):
    id_labels = torch.arange(40) % 3
    rows = evaluate(sets, "cifar10", predictions(sets), id_labels, groups={"svhn": "far"})

    assert [(r["ood_dataset"], r["score"]) for r in rows] == [
        ("svhn", "msp_like"),
        ("svhn", "neg_sum"),
        ("gaussian", "msp_like"),
        ("gaussian", "neg_sum"),
    ]
    assert [r["group"] for r in rows] == ["far", "far", "", ""]
    assert all(set(r) == {"ood_dataset", "group", "score", "Accuracy", *METRIC_NAMES, "n_id", "n_ood"} for r in rows)

    expected_accuracy = accuracy(predictions(sets), id_labels)
    for row in rows:
        ood = sets[row["ood_dataset"]][row["score"]]
        assert {m: row[m] for m in METRIC_NAMES} == ood_metrics(sets["cifar10"][row["score"]], ood)
        assert row["Accuracy"] == expected_accuracy
        assert (row["n_id"], row["n_ood"]) == (40, len(ood))


def test_id_set_only_gives_no_rows(sets):
    assert evaluate({"cifar10": sets["cifar10"]}, "cifar10", predictions(sets), torch.arange(40) % 3, {}) == []


def test_missing_id_set_raises(sets):
    with pytest.raises(ConfigError, match="'cifar100' has no scores"):
        evaluate(sets, "cifar100", predictions(sets), torch.arange(40) % 3, {})


def test_mismatched_labels_raise(sets):
    with pytest.raises(ValueError, match="differ in shape"):
        evaluate(sets, "cifar10", predictions(sets), torch.arange(39) % 3, {})
