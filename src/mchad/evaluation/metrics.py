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

All metrics come from one ascending order of the pooled scores and whether each
is OOD (:func:`_ascending`); counts are int64 and rates float64, so the values
are exact up to float64 rounding (AUROC is an exact integer sum divided once).
"""

from __future__ import annotations

import numpy as np
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
    n_id, n_ood = id_scores.numel(), ood_scores.numel()
    tp, flagged = _counts_at_thresholds(*_ascending(id_scores, ood_scores))
    fp = flagged - tp
    # the ROC and PR points in order of rising threshold; the last point flags nothing
    auroc = (fp[:-1] - fp[1:]).mul(tp[:-1] + tp[1:]).sum().double() / (2 * n_id * n_ood)
    # with ID positive on -score, point i flags the samples below threshold i as ID
    aupr_in = _pr_area(n_id - fp, n_id + n_ood - flagged, n_id)
    aupr_out = _pr_area(tp, flagged, n_ood)
    # TP falls with the threshold, so the points with TPR >= 0.95 are a prefix; the last is k*
    last_at_level = (tp.double() / n_ood >= _TPR_LEVEL).sum() - 1
    fpr95 = fp[last_at_level].double() / n_id
    values = torch.stack([auroc, aupr_in, aupr_out, fpr95])
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
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # exact; NumPy has no bfloat16
    if scores.numel() == 0:
        raise ValueError(f"{name} is empty: every test set needs at least one sample; check the test set's data")
    if scores.is_floating_point():
        n_nan = int(torch.isnan(scores).sum())
        if n_nan:
            raise ValueError(f"{name} holds {n_nan} NaN scores: the method produced NaN (diverged training or a 0/0 in its score)")
    return scores


def _ascending(id_scores: Tensor, ood_scores: Tensor) -> tuple[Tensor, Tensor]:
    """The pooled scores in ascending order, and a bool mask of which are OOD.

    Off the CPU this is one ``torch.sort`` of the concatenation. On the CPU each set
    is sorted alone with NumPy's vectorised sort (about 3x ``torch.sort`` on this
    data) and the two sorted runs are merged by a stable argsort, which timsort does
    in linear time. The order among equal scores is irrelevant: they share one threshold.
    """
    if id_scores.device.type != "cpu":
        values, order = torch.sort(torch.cat([id_scores, ood_scores]))
        return values, order >= id_scores.numel()
    pooled = np.concatenate([np.sort(id_scores.numpy()), np.sort(ood_scores.numpy())])
    order = np.argsort(pooled, kind="stable")
    return torch.from_numpy(pooled[order]), torch.from_numpy(order >= id_scores.numel())


def _counts_at_thresholds(values: Tensor, is_ood: Tensor) -> tuple[Tensor, Tensor]:
    """``(TP, flagged)`` at the distinct thresholds in rising order, then 0 and 0 for "flag nothing".

    For the i-th distinct value ``u_i`` starting at position ``start_i`` of the
    ascending ``values``: ``flagged_i = #{s >= u_i} = N - start_i`` and
    ``TP_i = N_ood - #{OOD samples before start_i}`` (int64).
    """
    starts = torch.ones_like(values, dtype=torch.bool)
    # equal scores (including -0.0 and 0.0) share a threshold
    torch.ne(values[1:], values[:-1], out=starts[1:])
    start = torch.nonzero(starts).reshape(-1)
    ood_before = torch.cumsum(is_ood, dim=0)[start] - is_ood[start].long()
    n_ood = is_ood.sum(dtype=torch.long)
    zero = start.new_zeros(1)
    return torch.cat([n_ood - ood_before, zero]), torch.cat([values.numel() - start, zero])


def _pr_area(tp: Tensor, flagged: Tensor, n_positive: int) -> Tensor:
    """Trapezoid area under precision over recall ``tp / n_positive``; precision is 1 where nothing is flagged."""
    precision = torch.where(flagged > 0, tp.double() / flagged.clamp(min=1), 1.0)
    return (tp[:-1] - tp[1:]).abs().mul(precision[:-1] + precision[1:]).sum() / (2 * n_positive)
