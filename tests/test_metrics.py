"""ood_metrics against pytorch-ood 0.4.0's OODMetrics and scikit-learn, on the cases where they could differ.

Float64 scores take the CPU path's binary search, float32 scores its merge; both must
equal the torch path (the one GPUs take) to the bit.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from pytorch_ood.metrics import OODMetrics
from sklearn.metrics import average_precision_score

from mchad.evaluation import metrics
from mchad.evaluation.metrics import METRIC_NAMES, accuracy, ood_metrics
from mchad.evaluation.oracle import sklearn_metrics as sklearn_oracle
from mchad.module import KnownClassAccuracy

_gen = torch.Generator().manual_seed(0)


def _randn(n: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, generator=_gen, dtype=torch.float64) + shift


CASES = {
    "random": (_randn(700), _randn(900, 1.0)),
    "float32": (_randn(300).float(), _randn(300, 0.5).float()),
    "heavy ties": (_randn(800).round(), _randn(600, 0.7).round()),
    "three values": ((_randn(500) > 0).double() + (_randn(500) > 1).double(), (_randn(400, 1) > 0).double() * 2),
    "all equal": (torch.full((50,), 3.0), torch.full((70,), 3.0)),
    "perfectly separated": (_randn(100) - 10, _randn(100) + 10),
    "reversed": (_randn(100) + 10, _randn(100) - 10),
    "one each, separated": (torch.tensor([0.0]), torch.tensor([1.0])),
    "one each, reversed": (torch.tensor([1.0]), torch.tensor([0.0])),
    "one each, tied": (torch.tensor([0.5]), torch.tensor([0.5])),
    "unbalanced 10:1000": (_randn(10), _randn(1000, 0.3)),
    "unbalanced 1000:7": (_randn(1000), _randn(7, 2.0)),
    "paired ties": (torch.arange(20.0), torch.arange(20.0)),
    "signed zeros and infinities": (torch.tensor([-0.0, 1.0, -math.inf, math.inf]), torch.tensor([0.0, math.inf, 1.0])),
}
# scikit-learn rejects infinite scores
FINITE_CASES = [name for name, (a, b) in CASES.items() if bool(torch.cat([a, b]).isfinite().all())]


def pytorch_ood_metrics(id_scores, ood_scores) -> dict[str, float]:
    """OODMetrics takes one score tensor with labels, -1 marking OOD; FPR95 is its "FPR95TPR"."""
    scores = torch.cat([id_scores, ood_scores])
    labels = torch.cat([torch.zeros(len(id_scores), dtype=torch.long), -torch.ones(len(ood_scores), dtype=torch.long)])
    with warnings.catch_warnings():
        # its AUTC, which we do not report, warns on constant or infinite scores
        warnings.simplefilter("ignore", UserWarning)
        reference = OODMetrics().update(scores, labels).compute()
    return {
        "AUROC": reference["AUROC"],
        "AUPR-IN": reference["AUPR-IN"],
        "AUPR-OUT": reference["AUPR-OUT"],
        "FPR95": reference["FPR95TPR"],
    }


def sklearn_metrics(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict[str, float]:
    return sklearn_oracle(id_scores.double().numpy(), ood_scores.double().numpy())


@pytest.mark.parametrize("dtype", [None, torch.float32], ids=["as-is", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_equals_pytorch_ood(case, dtype):
    id_scores, ood_scores = (scores.to(dtype or scores.dtype) for scores in CASES[case])
    ours = ood_metrics(id_scores, ood_scores)
    assert list(ours) == list(METRIC_NAMES)
    assert ours == pytest.approx(pytorch_ood_metrics(id_scores, ood_scores), abs=1e-6)


@pytest.mark.parametrize("dtype", [None, torch.float32], ids=["as-is", "float32"])
@pytest.mark.parametrize("case", FINITE_CASES)
def test_equals_sklearn(case, dtype):
    id_scores, ood_scores = (scores.to(dtype or scores.dtype) for scores in CASES[case])
    assert ood_metrics(id_scores, ood_scores) == pytest.approx(sklearn_metrics(id_scores, ood_scores), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64])
@pytest.mark.parametrize("sizes", [(3000, 2000), (2000, 3000), (1, 500), (500, 1)])
def test_ties_within_and_across_the_sets(sizes, dtype):
    """Scores with two decimals (ties within and across the sets) give scikit-learn's values."""
    generator = torch.Generator().manual_seed(sum(sizes))
    n_id, n_ood = sizes
    id_scores = (torch.randn(n_id, generator=generator) * 3).round(decimals=2)
    ood_scores = (torch.randn(n_ood, generator=generator) * 3 + 1).round(decimals=2)
    if dtype == torch.int64:
        id_scores, ood_scores = id_scores * 100, ood_scores * 100
    id_scores, ood_scores = id_scores.to(dtype), ood_scores.to(dtype)
    assert ood_metrics(id_scores, ood_scores) == pytest.approx(sklearn_metrics(id_scores, ood_scores), abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_equal_and_special_scores(dtype):
    special = torch.tensor([-0.0, 0.0, -math.inf, math.inf, 1.0, -1.0, 1e-45, -1e-45, 3.4e38, -3.4e38])
    generator = torch.Generator().manual_seed(5)
    for id_scores, ood_scores in [
        (torch.full((50,), 3.0), torch.full((70,), 3.0)),
        (torch.full((7,), -0.0), torch.full((3,), 0.0)),
        (special, special.flip(0)),
        (
            special[torch.randint(0, 10, (300,), generator=generator)],
            special[torch.randint(0, 10, (200,), generator=generator)],
        ),
    ]:
        id_scores, ood_scores = id_scores.to(dtype), ood_scores.to(dtype)
        assert ood_metrics(id_scores, ood_scores) == pytest.approx(pytorch_ood_metrics(id_scores, ood_scores), abs=1e-6)


def test_smallest_count_at_level_matches_the_float_comparison():
    for n in range(1, 3000):
        t = metrics._smallest_count_at_level(n)
        assert t / n >= 0.95 and not (t - 1) / n >= 0.95


def test_known_values():
    assert ood_metrics(torch.tensor([0.0]), torch.tensor([1.0])) == {
        "AUROC": 1.0,
        "AUPR-IN": 1.0,
        "AUPR-OUT": 1.0,
        "FPR95": 0.0,
    }
    # all tied: one ROC segment from (0,0) to (1,1); PR trapezoid from (0, 1) to (1, 1/2)
    assert ood_metrics(torch.zeros(4), torch.zeros(4)) == {
        "AUROC": 0.5,
        "AUPR-IN": 0.75,
        "AUPR-OUT": 0.75,
        "FPR95": 1.0,
    }
    # 19 of 20 OOD above every ID sample, one below: TPR reaches 0.95 exactly at FPR 0
    ood = torch.cat([torch.full((19,), 5.0), torch.tensor([-5.0])])
    assert ood_metrics(torch.zeros(10), ood)["FPR95"] == 0.0


def test_aupr_is_the_trapezoid_not_average_precision():
    """pytorch-ood's AUPR (used by the paper) is not scikit-learn's average precision; pin the difference."""
    id_scores, ood_scores = CASES["all equal"]
    is_ood = np.r_[np.zeros(50), np.ones(70)]
    scores = torch.cat([id_scores, ood_scores]).numpy()
    assert average_precision_score(is_ood, scores) == pytest.approx(70 / 120)
    assert ood_metrics(id_scores, ood_scores)["AUPR-OUT"] == pytest.approx((1 + 70 / 120) / 2)


def test_shapes_devices_and_dtypes_do_not_matter():
    id_scores, ood_scores = CASES["heavy ties"]
    expected = ood_metrics(id_scores, ood_scores)
    assert ood_metrics(id_scores.reshape(20, 40), ood_scores.reshape(2, 300)) == expected
    assert ood_metrics(id_scores.float(), ood_scores) == pytest.approx(expected, abs=1e-12)
    assert ood_metrics(id_scores.to(torch.int64), ood_scores.to(torch.int64)) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_matches_cpu():
    id_scores, ood_scores = CASES["heavy ties"]
    expected = ood_metrics(id_scores, ood_scores)
    assert ood_metrics(id_scores.cuda(), ood_scores.cuda()) == pytest.approx(expected, abs=1e-12)
    assert ood_metrics(id_scores.cuda().float(), ood_scores.cuda().float()) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("id_scores", "ood_scores", "message"),
    [
        (torch.tensor([]), torch.tensor([1.0]), "id_scores is empty"),
        (torch.tensor([1.0]), torch.zeros(0, 3), "ood_scores is empty"),
        (torch.tensor([1.0, math.nan]), torch.tensor([1.0]), "id_scores holds 1 NaN"),
        (torch.tensor([1.0]), torch.tensor([math.nan, math.nan]), "ood_scores holds 2 NaN"),
    ],
)
def test_bad_scores_raise_one_line(id_scores, ood_scores, message):
    with pytest.raises(ValueError, match=message) as error:
        ood_metrics(id_scores, ood_scores)
    assert "\n" not in str(error.value)


def test_accuracy():
    labels = torch.tensor([0, 1, 2, 2, -1])
    assert accuracy(torch.tensor([0, 1, 0, 2, 7]), labels) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="no sample with a known class"):
        accuracy(torch.tensor([1]), torch.tensor([-1]))
    with pytest.raises(ValueError, match="differ in shape"):
        accuracy(torch.tensor([1, 2]), torch.tensor([1]))


def test_running_accuracy_over_batches_equals_accuracy_of_all_and_ignores_outliers():
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(-1, 5, (100,), generator=generator)
    pred = torch.randint(0, 5, (100,), generator=generator)
    running = KnownClassAccuracy()
    for chunk in (slice(0, 7), slice(7, 64), slice(64, 100)):
        running.update(pred[chunk], labels[chunk])
    assert running.compute().item() == pytest.approx(accuracy(pred, labels))
    running.reset()
    running.update(torch.tensor([3, 1]), torch.tensor([-1, -1]))
    assert running.compute().item() == 0.0  # no known class yet: 0, not NaN


def test_many_small_tied_sets():
    generator = torch.Generator().manual_seed(1)
    for _ in range(100):
        n_id, n_ood = torch.randint(1, 30, (2,), generator=generator).tolist()
        id_scores = torch.randint(0, 4, (n_id,), generator=generator).double()
        ood_scores = torch.randint(1, 5, (n_ood,), generator=generator).double()
        ours = ood_metrics(id_scores, ood_scores)
        assert ours == pytest.approx(pytorch_ood_metrics(id_scores, ood_scores), abs=1e-9)
        assert ours == pytest.approx(sklearn_metrics(id_scores, ood_scores), abs=1e-9)
        assert ood_metrics(id_scores.float(), ood_scores.float()) == ours
