"""Detection metrics of anomaly maps against pixel ground truth (numpy only).

Pixel AUPRC (average precision) is the MOOD challenge's metric and the one
that matters when anomalies are small: AUROC looks good as soon as the
large normal background ranks low. Best Dice is the overlap at the best
threshold (an upper bound on what a single threshold gives).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt


def _ranked(
    scores: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Cumulative true/false positives at each distinct threshold, highest score first."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Ties share one threshold: take the last index of each run of equal scores.
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = (last + 1 - tp).astype(np.float64)
    return tp, fp, s[last]


def auroc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count half); NaN if only one class is present."""
    tp, fp, _ = _ranked(scores, labels)
    positives, negatives = tp[-1], fp[-1]
    if positives == 0 or negatives == 0:
        return float("nan")
    tpr = np.r_[0.0, tp / positives]
    fpr = np.r_[0.0, fp / negatives]
    return float(np.trapezoid(tpr, fpr))


def auprc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Average precision: Σ (Rₙ − Rₙ₋₁) Pₙ over thresholds (the step-wise area, no interpolation)."""
    tp, fp, _ = _ranked(scores, labels)
    positives = tp[-1]
    if positives == 0:
        return float("nan")
    precision = tp / (tp + fp)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_dice(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float]:
    """The best Dice over all thresholds, and the threshold that gives it.

    Returns
    -------
    tuple of float
        ``(dice, threshold)``: predicting ``score >= threshold`` gives ``dice``.
    """
    tp, fp, thresholds = _ranked(scores, labels)
    positives = tp[-1]
    if positives == 0:
        return float("nan"), float("nan")
    dice = 2 * tp / (tp + fp + positives)
    best = int(np.argmax(dice))
    return float(dice[best]), float(thresholds[best])


@dataclass(frozen=True)
class DetectionMetrics:
    """Pixel- and slice-level detection quality of one method.

    Attributes
    ----------
    pixel_auroc, pixel_auprc, best_dice
        Over foreground pixels of every evaluated slice.
    slice_auroc
        Anomalous slices (any ground-truth pixel) against normal ones, by slice score.
    """

    pixel_auroc: float
    pixel_auprc: float
    best_dice: float
    slice_auroc: float

    def as_dict(self) -> dict[str, float]:
        """The metrics by name."""
        return asdict(self)


def detection_metrics(
    maps: npt.ArrayLike,
    truth: npt.ArrayLike,
    masks: npt.ArrayLike,
    slice_scores: npt.ArrayLike,
) -> DetectionMetrics:
    """Pixel AUROC, pixel AUPRC, best Dice and slice AUROC of anomaly maps.

    Parameters
    ----------
    maps
        ``(n, y, x)`` anomaly maps (higher = more abnormal).
    truth
        ``(n, y, x)`` ground-truth anomaly masks.
    masks
        ``(n, y, x)`` foreground masks: only these pixels are scored, so the
        empty background (trivially normal for every method) does not inflate the numbers.
    slice_scores
        ``(n,)`` per-slice scores.
    """
    values = np.asarray(maps, dtype=np.float32)
    labels = np.asarray(truth, dtype=bool)
    keep = np.asarray(masks, dtype=bool) | labels
    if values.shape != labels.shape or values.shape != keep.shape:
        raise ValueError(f"maps {values.shape}, truth {labels.shape} and masks {keep.shape} must match")
    pixel_scores, pixel_labels = values[keep], labels[keep]
    slice_labels = labels.reshape(labels.shape[0], -1).any(axis=1)
    return DetectionMetrics(
        pixel_auroc=auroc(pixel_scores, pixel_labels),
        pixel_auprc=auprc(pixel_scores, pixel_labels),
        best_dice=best_dice(pixel_scores, pixel_labels)[0],
        slice_auroc=auroc(slice_scores, slice_labels),
    )
