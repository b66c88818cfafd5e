"""OOD-detection metrics, as pytorch-ood 0.4.0's ``OODMetrics`` computes them.

OOD samples are the positive class and a higher score means more anomalous.
Let ``t_1 > t_2 > ... > t_m`` be the distinct scores of the ``N_id`` ID and
``N_ood`` OOD samples (ties form one threshold, as in scikit-learn's
``roc_curve`` and ``precision_recall_curve``) and, flagging ``s >= t_k`` as OOD,

    TP_k = #{OOD samples with s >= t_k},   FP_k = #{ID samples with s >= t_k},
    TPR_k = TP_k / N_ood,   FPR_k = FP_k / N_id,   P_k = TP_k / (TP_k + FP_k),
    with TPR_0 = FPR_0 = 0.

* AUROC    = sum_k (FPR_k - FPR_{k-1}) (TPR_k + TPR_{k-1}) / 2, the trapezoid
             area under the ROC; it equals P(s_ood > s_id) + P(s_ood = s_id) / 2.
* AUPR-OUT = sum_k (R_k - R_{k-1}) (P_k + P_{k-1}) / 2 with R_k = TPR_k and
             (R_0, P_0) = (0, 1): the trapezoid area under the precision-recall
             curve, ``sklearn.metrics.auc(recall, precision)`` of
             ``precision_recall_curve``. This is pytorch-ood's (and OpenOOD's)
             AUPR, which the paper's table used. It is NOT average precision
             ``sum_k (R_k - R_{k-1}) P_k`` (``average_precision_score``); the two
             differ most on ties: all-equal scores with a fraction q of OOD
             samples give (1 + q) / 2 here and q as average precision, one ID
             sample above one OOD sample gives 0.25 here and 0.5 there.
* AUPR-IN  = the same area with ID as the positive class and the negated score.
* FPR95    = FPR_{k*} with k* = min{k : TPR_k >= 0.95}: the fraction of ID
             samples flagged as OOD at the first ROC point (over all distinct
             thresholds) that flags 95% of the OOD samples. This is pytorch-ood's
             FPR95TPR (OOD positive). OpenOOD v1.0 uses ID as the positive class
             instead (fraction of OOD samples scored below the threshold that
             keeps 95% of the ID samples); OpenOOD v1.5 uses OOD positive but
             scikit-learn's default ``roc_curve(drop_intermediate=True)``, which
             drops collinear ROC points and can report a larger FPR on ties
             (1.0 instead of 0.95 for scores 0..19 given to 20 ID and 20 OOD samples).

All metrics come from ONE descending sort of the concatenated scores, on the
scores' device; counts are int64 and rates float64, so the values are exact up
to float64 rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor

METRIC_NAMES = ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95")

_TPR_LEVEL = 0.95


def ood_metrics(id_scores: Tensor, ood_scores: Tensor) -> dict[str, float]:
    """AUROC, AUPR-IN, AUPR-OUT and FPR95 (fractions in [0, 1], see the module docstring).

    Args:
        id_scores: OOD scores of the in-distribution samples, any shape (flattened).
        ood_scores: OOD scores of the OOD samples, any shape (flattened); moved to
            the device of ``id_scores``.

    Raises:
        ValueError: if either set is empty or a score is NaN.
    """
    id_scores = _flat_checked("id_scores", id_scores)
    ood_scores = _flat_checked("ood_scores", ood_scores).to(id_scores.device)
    tp, fp = _cumulative_counts(id_scores, ood_scores)
    n_ood, n_id = tp[-1], fp[-1]

    zero = tp.new_zeros(1)
    tpr = torch.cat([zero, tp]).double() / n_ood
    fpr = torch.cat([zero, fp]).double() / n_id
    # thresholds flagging fewer samples come first, so "ID positive on -score" counts from the end
    id_tp = (n_id - torch.cat([zero, fp[:-1]])).flip(0)
    id_fp = (n_ood - torch.cat([zero, tp[:-1]])).flip(0)
    first_at_level = torch.searchsorted(tpr, tpr.new_tensor([_TPR_LEVEL]))

    values = torch.stack(
        [
            _trapezoid(fpr, tpr),
            _pr_area(id_tp, id_fp),
            _pr_area(tp, fp),
            fpr[first_at_level[0]],
        ]
    )
    return dict(zip(METRIC_NAMES, values.tolist()))


def accuracy(pred: Tensor, labels: Tensor) -> float:
    """Closed-set accuracy ``#{i : pred_i = y_i, y_i >= 0} / #{i : y_i >= 0}``; OOD labels (-1) are ignored.

    Raises:
        ValueError: if the shapes differ or there is no sample with a known class.
    """
    if pred.shape != labels.shape:
        raise ValueError(f"accuracy: predictions {tuple(pred.shape)} and labels {tuple(labels.shape)} differ in shape")
    known = labels >= 0
    n_known = int(known.sum())
    if n_known == 0:
        raise ValueError("accuracy: no sample with a known class (label >= 0); pass the ID test set's labels")
    correct = (pred.to(labels.device) == labels) & known
    return float(correct.sum().double() / n_known)


def _flat_checked(name: str, scores: Tensor) -> Tensor:
    scores = scores.detach().reshape(-1)
    if scores.numel() == 0:
        raise ValueError(f"{name} is empty: every test set needs at least one sample; check the test set's data")
    if scores.is_floating_point():
        n_nan = int(torch.isnan(scores).sum())
        if n_nan:
            raise ValueError(f"{name} holds {n_nan} NaN scores: the method produced NaN (diverged training or a 0/0 in its score)")
    return scores


def _cumulative_counts(id_scores: Tensor, ood_scores: Tensor) -> tuple[Tensor, Tensor]:
    """``(TP_k, FP_k)`` at the distinct thresholds ``t_1 > ... > t_m`` (int64, last = totals)."""
    scores = torch.cat([id_scores, ood_scores])
    is_ood = torch.zeros(scores.numel(), dtype=torch.long, device=scores.device)
    is_ood[id_scores.numel() :] = 1
    sorted_scores, order = torch.sort(scores, descending=True)
    # a threshold closes where the next score differs; equal scores (including -0.0 and 0.0) share it
    closes = torch.ones_like(sorted_scores, dtype=torch.bool)
    closes[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    last_of_group = torch.nonzero(closes).reshape(-1)
    tp = torch.cumsum(is_ood[order], dim=0)[last_of_group]
    fp = last_of_group + 1 - tp
    return tp, fp


def _trapezoid(x: Tensor, y: Tensor) -> Tensor:
    """Area under the polyline through ``(x_k, y_k)`` in the given order."""
    return ((x[1:] - x[:-1]) * (y[1:] + y[:-1])).sum() / 2


def _pr_area(tp: Tensor, fp: Tensor) -> Tensor:
    """Trapezoid area under precision over recall, starting at (recall 0, precision 1)."""
    tp, fp = tp.double(), fp.double()
    one = tp.new_ones(1)
    recall = torch.cat([one - 1, tp / tp[-1]])
    precision = torch.cat([one, tp / (tp + fp)])
    return _trapezoid(recall, precision)
