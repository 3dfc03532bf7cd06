"""Scoring (SSIM-based anomaly maps, slice and series scores) and detection metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from oncostruct_reconstruction.model.metrics import auprc, auroc, best_dice, detection_metrics
from oncostruct_reconstruction.model.scoring import dissimilarity_map, series_score, slice_scores, ssim_map


def test_identical_images_have_ssim_one_and_zero_map() -> None:
    image = np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32)
    assert np.allclose(ssim_map(image, image), 1.0, atol=1e-5)
    assert float(dissimilarity_map(image, image).max()) < 1e-5


def test_map_is_high_where_the_image_differs() -> None:
    rng = np.random.default_rng(1)
    reconstruction = rng.random((1, 1, 64, 64), dtype=np.float32) * 0.2 + 0.4
    image = reconstruction.copy()
    image[0, 0, 20:30, 40:50] += 0.4
    anomaly_map = dissimilarity_map(image, reconstruction)[0, 0]
    assert anomaly_map[25, 45] > 5 * anomaly_map[50, 10]
    assert np.unravel_index(np.argmax(anomaly_map), anomaly_map.shape)[0] in range(18, 32)


def test_slice_scores_average_the_top_fraction_of_foreground() -> None:
    maps = np.zeros((2, 10, 10), np.float32)
    maps[1, 0, :] = 1.0  # 10 hot pixels
    masks = np.ones((2, 10, 10), bool)
    scores = slice_scores(maps, masks, top_fraction=0.1)
    assert scores.tolist() == [0.0, 1.0]
    masks[1, 0, :] = False  # hot pixels outside the foreground do not count
    assert slice_scores(maps, masks, top_fraction=0.1)[1] == 0.0


def test_series_score_names_the_worst_slice() -> None:
    score = series_score([0.1, 0.9, 0.3, 0.5], top_slices=2)
    assert score.worst_slice == 1
    assert score.maximum == pytest.approx(0.9)
    assert score.top_mean == pytest.approx(0.7)


def test_auroc_and_auprc_match_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(2)
    labels = rng.random(2000) < 0.1
    scores = np.round(rng.random(2000) + labels * 0.5, 2)  # rounding makes ties
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert auprc(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-9)


def test_perfect_separation_and_best_dice() -> None:
    labels = np.array([0, 0, 1, 1, 1], bool)
    scores = np.array([0.1, 0.2, 0.7, 0.8, 0.9])
    assert auroc(scores, labels) == 1.0
    assert auprc(scores, labels) == 1.0
    dice, threshold = best_dice(scores, labels)
    assert dice == 1.0
    assert threshold == pytest.approx(0.7)


def test_detection_metrics_only_score_the_foreground() -> None:
    truth = np.zeros((2, 4, 4), bool)
    truth[1, 1, 1] = True
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, 1, 1] = 1.0
    maps[0, 3, 3] = 5.0  # high, but in the background
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :3, :3] = True
    metrics = detection_metrics(maps, truth, masks, slice_scores=[0.0, 1.0])
    assert metrics.pixel_auprc == 1.0
    assert metrics.slice_auroc == 1.0
    assert metrics.best_dice == 1.0
