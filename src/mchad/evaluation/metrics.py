"""OOD-detection metrics, as pytorch-ood 0.4.0's ``OODMetrics`` computes them.

Why not pytorch-ood's or scikit-learn's own: on 10^6 scores this module takes 0.046 s, pytorch-ood's
``OODMetrics`` 0.378 s (8.2x, ``python -m bench metrics``, bench/README.md) and scikit-learn's
per-metric functions about 1.1 s (each sorts the scores again); tests/test_metrics.py checks the
values against both.

OOD samples are the positive class and a higher score means more anomalous. Let ``t_1 > ... > t_m``
be the distinct scores of the ``N_id`` ID and ``N_ood`` OOD samples (ties form one threshold, as
in scikit-learn's ``roc_curve``) and, flagging ``s >= t_k`` as OOD, ``TP_k``/``FP_k`` the OOD/ID
samples flagged, ``TPR_k = TP_k / N_ood``, ``FPR_k = FP_k / N_id``, ``P_k = TP_k / (TP_k + FP_k)``,
``TPR_0 = FPR_0 = 0``.

* AUROC    = the trapezoid area under the ROC = P(s_ood > s_id) + P(s_ood = s_id) / 2.
* AUPR-OUT = the trapezoid area under the precision-recall curve from (R, P) = (0, 1), i.e.
             ``sklearn.metrics.auc(recall, precision)``: pytorch-ood's (and OpenOOD's) AUPR, which
             the paper's table used; NOT average precision (``average_precision_score``), which
             differs most on ties (all-equal scores with a fraction q of OOD: (1 + q) / 2 here, q there).
* AUPR-IN  = the same area with ID as the positive class and the negated score.
* FPR95    = FPR_{k*}, k* = min{k : TPR_k >= 0.95}: pytorch-ood's FPR95TPR (OOD positive) over all
             distinct thresholds (OpenOOD v1.5's ``roc_curve(drop_intermediate=True)`` can report more
             on ties; OpenOOD v1.0 takes ID as the positive class).

TP changes only at an OOD score and FP only at an ID score, so each curve is a sum over the runs
of equal scores of one set. The counts are exact integers and the rates float64, so AUROC and
FPR95 are exact up to one rounding. On the CPU the counts come from the two sets sorted apart with
NumPy (:func:`_parts_from_sorted`: ~4 ``np.sort`` times, the previous pooled implementation 14:
bench/README.md). Scores on a GPU are copied to the host first: a test set's 10^4 scores cost
well under a millisecond there, small next to the network's pass over the same images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

METRIC_NAMES = ("AUROC", "AUPR-IN", "AUPR-OUT", "FPR95")

_TPR_LEVEL = 0.95
_RANGE = 1 << 16


def ood_metrics(id_scores: Tensor, ood_scores: Tensor) -> dict[str, float]:
    """AUROC, AUPR-IN, AUPR-OUT and FPR95 (fractions in [0, 1], see the module docstring).

    Args:
        id_scores: OOD scores of the in-distribution samples, any shape (flattened), any device.
        ood_scores: OOD scores of the OOD samples, any shape (flattened), any device.

    Raises:
        ValueError: if either set is empty or a score is NaN.
    """
    id_scores = _flat_checked("id_scores", id_scores)
    ood_scores = _flat_checked("ood_scores", ood_scores)
    dtype = torch.promote_types(id_scores.dtype, ood_scores.dtype)
    id_scores, ood_scores = id_scores.to(dtype), ood_scores.to(dtype)
    parts = _parts_from_sorted(id_scores.cpu().numpy(), ood_scores.cpu().numpy())
    return _metrics(id_scores.numel(), ood_scores.numel(), *parts)


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
            raise ValueError(
                f"{name} holds {n_nan} NaN scores: the method produced NaN (diverged training or a 0/0 in its score)"
            )
    return scores


def _metrics(
    n_id: int, n_ood: int, auroc_pairs: int, fp_at_level: int, out_terms: np.ndarray, in_terms: np.ndarray
) -> dict[str, float]:
    """The four metrics from their exact counts and the PR terms of the runs in rising order.

    ``auroc_pairs``: the ID-OOD pairs ranked right, counted twice, and the tied pairs
    once; ``fp_at_level``: the ID samples flagged at FPR95's threshold. The terms are summed
    by torch (the array is only wrapped), whose summation order earlier results were made with.
    """
    values = {
        "AUROC": auroc_pairs / (2 * n_id * n_ood),
        "AUPR-IN": float(torch.as_tensor(in_terms).sum()) / (2 * n_id),
        "AUPR-OUT": float(torch.as_tensor(out_terms).sum()) / (2 * n_ood),
        "FPR95": fp_at_level / n_id,
    }
    return {name: values[name] for name in METRIC_NAMES}


def _smallest_count_at_level(n: int) -> int:
    """The smallest ``t`` with ``t / n >= 0.95`` in float64, the comparison the curve points make."""
    t = max(int(_TPR_LEVEL * n) - 1, 0)  # below the level: the product's rounding error is far below 1
    while t / n < _TPR_LEVEL:
        t += 1
    return t


def _parts_from_sorted(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple:
    """:func:`_metrics`'s arguments from each set sorted alone with NumPy.

    The sorted sets are cut at every ``_RANGE``-th score of either set, which splits no
    run of equal scores, and each range of scores is done alone (:func:`_range_terms`):
    its buffers then stay in the cache and within the memory the allocator keeps between
    calls, where fresh pages would cost more than the arithmetic.
    """
    ids, oods = np.sort(id_scores), np.sort(ood_scores)
    n_id, n_ood = len(ids), len(oods)
    cuts = np.sort(np.concatenate([ids[_RANGE::_RANGE], oods[_RANGE::_RANGE]]))
    id_cuts = np.concatenate([[0], np.searchsorted(ids, cuts), [n_id]])
    ood_cuts = np.concatenate([[0], np.searchsorted(oods, cuts), [n_ood]])
    # a term per run of equal scores, at most one per sample
    auroc_pairs, out_terms, in_terms, n_out, n_in = 0, np.empty(n_ood), np.empty(n_id), 0, 0
    for i0, i1, o0, o1 in zip(
        id_cuts[:-1].tolist(), id_cuts[1:].tolist(), ood_cuts[:-1].tolist(), ood_cuts[1:].tolist()
    ):
        pairs, out_part, in_part = _range_terms(ids, oods, slice(i0, i1), slice(o0, o1))
        auroc_pairs += pairs
        out_terms[n_out : n_out + len(out_part)] = out_part
        in_terms[n_in : n_in + len(in_part)] = in_part
        n_out, n_in = n_out + len(out_part), n_in + len(in_part)
    # the threshold flagging the top t OOD samples is the score of OOD sample n_ood - t (ascending)
    level_score = oods[n_ood - _smallest_count_at_level(n_ood)]
    fp_at_level = n_id - int(np.searchsorted(ids, level_score, side="left"))
    return auroc_pairs, fp_at_level, out_terms[:n_out], in_terms[:n_in]


def _range_terms(
    ids: np.ndarray, oods: np.ndarray, id_range: slice, ood_range: slice
) -> tuple[int, np.ndarray, np.ndarray]:
    """AUROC's pairs and the PR-OUT and PR-IN terms of the runs of equal scores in one range of the sorted sets.

    A run of a set is one step of that set's PR curve; its bounds in the set count that
    set's samples below and up to its score, :func:`_pooled_counts` those of both sets.
    Every sample below the range precedes it in both sets.
    """
    n_id, n_ood = len(ids), len(oods)
    id_bounds, ood_bounds = _run_bounds(ids, id_range), _run_bounds(oods, ood_range)
    id_lt, id_le, ood_lt, ood_le = _pooled_counts(ids, oods, id_range, ood_range, id_bounds, ood_bounds)
    # each of the c OOD samples of a run [start, end) at u adds #{ID < u} + #{ID <= u} = (ood_lt - start) +
    # (ood_le - end), the IDs below it twice and those tied once; sum_runs c (start + end) telescopes
    pairs = int(np.dot(np.diff(ood_bounds), ood_lt + ood_le)) - (ood_range.stop**2 - ood_range.start**2)
    # PR-OUT at an OOD score u steps from flagging s > u to flagging s >= u
    tp = np.subtract(n_ood, ood_bounds, dtype=np.float64)  # #{OOD >= u} at a run, #{OOD > u} at the next entry
    flagged, flagged_before = (np.subtract(n_id + n_ood, below, dtype=np.float64) for below in (ood_lt, ood_le))
    out_terms = _pr_terms(tp[:-1], flagged, tp[1:], flagged_before)
    # PR-IN (ID positive, -score) at an ID score v steps from flagging s < v to flagging s <= v
    tp = id_bounds.astype(np.float64)  # #{ID < v} at a run, #{ID <= v} at the next entry
    in_terms = _pr_terms(tp[1:], id_le.astype(np.float64), tp[:-1], id_lt.astype(np.float64))
    return pairs, out_terms, in_terms


def _pr_terms(
    positive: np.ndarray, flagged: np.ndarray, positive_before: np.ndarray, flagged_before: np.ndarray
) -> np.ndarray:
    """``(positive - positive_before) (precision + precision_before)`` per step, from float64 counts.

    Overwrites both ``flagged`` arrays (the terms are in the first). A precision is 1 where
    nothing is flagged, which only the start of a sweep's first step can be: PR-OUT's at
    the highest score, PR-IN's at the lowest.
    """
    nothing_flagged = [end for end in (0, -1) if len(flagged_before) and flagged_before[end] == 0]
    flagged_before[nothing_flagged] = 1.0  # positive_before is 0 there too
    precision_before = np.divide(positive_before, flagged_before, out=flagged_before)
    precision_before[nothing_flagged] = 1.0
    terms = np.divide(positive, flagged, out=flagged)
    terms += precision_before
    terms *= positive - positive_before
    return terms


def _run_bounds(ascending: np.ndarray, within: slice) -> np.ndarray:
    """The start of each run of equal values in ``ascending[within]``, then ``within.stop``, as indices into ``ascending``.

    If ``within`` starts a run, the bounds of a run of value v count ``#{x < v}`` and ``#{x <= v}``.
    """
    part = ascending[within]
    new = np.ones(len(part) + 1, dtype=bool)
    # equal scores (including -0.0 and 0.0) form one run
    np.not_equal(part[1:], part[:-1], out=new[1:-1])
    bounds = np.flatnonzero(new)
    bounds += within.start
    return bounds


def _pooled_counts(
    ids: np.ndarray, oods: np.ndarray, id_range: slice, ood_range: slice, id_bounds: np.ndarray, ood_bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``#{s < v}`` and ``#{s <= v}`` over both sets at the score v of each ID run, then of each OOD run (int64).

    float32 scores become int64 keys, twice the float32 bit pattern read as a signed
    magnitude (so -0.0 and 0.0 share a key), plus 1 for OOD. Timsort finds the two
    sorted runs of keys and merges them in linear time, IDs before OODs on ties, so a
    run of either set starts where the key changes, at its count ``#{s < v}``, except
    that an OOD run tied with IDs (keys differing in the class bit only) starts after
    them. A binary search per run costs more than the whole merge; other dtypes leave
    no spare bit for the class and take it.
    """
    id_start, id_end, ood_start, ood_end = id_bounds[:-1], id_bounds[1:], ood_bounds[:-1], ood_bounds[1:]
    if ids.dtype != np.float32:
        # the other set's samples at or below a score of the range are those below the range and some in it
        range_ids, range_oods = ids[id_range], oods[ood_range]
        id_values, ood_values = ids[id_start], oods[ood_start]
        return (
            id_start + ood_range.start + np.searchsorted(range_oods, id_values, side="left"),
            id_end + ood_range.start + np.searchsorted(range_oods, id_values, side="right"),
            ood_start + id_range.start + np.searchsorted(range_ids, ood_values, side="left"),
            ood_end + id_range.start + np.searchsorted(range_ids, ood_values, side="right"),
        )
    keys = _merged_keys(ids[id_range], oods[ood_range])
    change = keys[1:] ^ keys[:-1]
    starts = np.ones(len(keys), dtype=bool)
    np.not_equal(change, 0, out=starts[1:])
    is_ood = np.bitwise_and(keys, 1, dtype=np.int8).view(bool)  # the class bit survives the cast to the low byte
    below = id_range.start + ood_range.start
    id_lt = np.flatnonzero(starts & ~is_ood)
    ood_lt = np.flatnonzero(starts & is_ood)
    tied_ood_first = np.flatnonzero(change == 1)
    for counts, shift in ((id_lt, below), (ood_lt, below), (tied_ood_first, below + 1)):
        counts += shift
    tied_id_run = np.searchsorted(id_lt, tied_ood_first) - 1
    tied_ood_run = np.searchsorted(ood_lt, tied_ood_first)
    id_le, ood_le = np.diff(id_bounds), np.diff(ood_bounds)
    id_le += id_lt
    id_le[tied_id_run] += ood_end[tied_ood_run] - ood_start[tied_ood_run]
    ood_le += ood_lt
    ood_lt[tied_ood_run] = id_lt[tied_id_run]
    return id_lt, id_le, ood_lt, ood_le


def _merged_keys(ids: np.ndarray, oods: np.ndarray) -> np.ndarray:
    """The sorted int64 keys of the two ascending float32 sets (see :func:`_pooled_counts`)."""
    keys = np.empty(len(ids) + len(oods), dtype=np.int64)
    zero = np.float32(0)  # a Python 0 would make searchsorted convert the whole array
    for scores, part in ((ids, keys[: len(ids)]), (oods, keys[len(ids) :])):
        part[:] = scores.view(np.int32)
        part <<= 1
        # the sign bit reads as -2^31: twice -(magnitude) is -2^32 - twice the bits
        negative, zero_end = np.searchsorted(scores, zero, side="left"), np.searchsorted(scores, zero, side="right")
        np.subtract(-(1 << 32), part[:negative], out=part[:negative])
        part[negative:zero_end] = 0  # -0.0 is the sign bit alone
    keys[len(ids) :] += 1
    keys.sort(kind="stable")
    return keys
