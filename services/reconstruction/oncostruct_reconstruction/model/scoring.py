"""Anomaly maps and scores from an image and its nearest-normal reconstruction (numpy/scipy only).

The map is what a reader would judge: where the image differs from the
normal anatomy the network imagined. Structural dissimilarity (1 − SSIM)
catches texture and edge changes that a plain difference misses; the
absolute difference catches flat intensity changes that SSIM's local
normalisation hides. Both are smoothed, because single-pixel differences
are reconstruction noise, not findings.

The served ONNX graph computes the same map in torch
(:mod:`oncostruct_reconstruction.model.network`); a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float32]

#: SSIM stabilisers for data range 1 (Wang et al. 2004: K1 = 0.01, K2 = 0.03).
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


@dataclass(frozen=True)
class DissimilarityConfig:
    """How the anomaly map is computed; stored with the model so serving and scoring agree.

    Attributes
    ----------
    ssim_sigma, ssim_radius
        Gaussian window of the local SSIM statistics (pixels).
    ssim_weight, l1_weight
        Weights of ``(1 − SSIM) / 2`` and ``|image − reconstruction|`` in the map.
    smooth_sigma, smooth_radius
        Gaussian smoothing of the combined map (pixels).
    feature_weight
        Weight of the feature-level term (0: off): per encoder level, the mean squared difference of
        the network's features of the image and of its reconstruction, divided by the level's
        scale, upsampled, averaged over levels and smoothed (after Kobayashi et al. 2020, who score
        differences at several feature levels). It needs the network, so only the served graph
        (:class:`~oncostruct_reconstruction.model.network.AnomalyGraph`) computes it;
        :func:`dissimilarity_map` is the pixel-level map alone.
    feature_scales
        One divisor per encoder level, calibrated on normal slices so that each level's 99th
        percentile equals the pixel-level map's
        (:func:`~oncostruct_reconstruction.model.training.calibrate_feature_scales`).
    feature_levels
        Encoder levels the feature-level term averages (0 is the full-resolution stem); empty: all.
        Coarse levels localise poorly: upsampled from 16² they blur a finding over its surroundings.
    head_weight
        Weight of the corruption head's smoothed probability in the map (0: off; only networks
        with a corruption head have one, and only the served graph computes it).
    """

    ssim_sigma: float = 1.5
    ssim_radius: int = 4
    ssim_weight: float = 0.5
    l1_weight: float = 0.5
    smooth_sigma: float = 1.5
    smooth_radius: int = 4
    feature_weight: float = 0.0
    feature_scales: tuple[float, ...] = ()
    feature_levels: tuple[int, ...] = ()
    head_weight: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_scales", tuple(float(scale) for scale in self.feature_scales))
        object.__setattr__(self, "feature_levels", tuple(int(level) for level in self.feature_levels))
        if any(level < 0 for level in self.feature_levels) or len(set(self.feature_levels)) < len(self.feature_levels):
            raise ValueError("feature_levels must be distinct levels, 0 or more")
        if self.feature_weight < 0 or any(scale <= 0 for scale in self.feature_scales):
            raise ValueError("feature_weight must be >= 0 and feature_scales positive")
        if self.head_weight < 0:
            raise ValueError("head_weight must be >= 0")


def gaussian_kernel(sigma: float, radius: int) -> FloatArray:
    """Normalised 1D Gaussian of ``2 * radius + 1`` taps (the one the ONNX graph uses too)."""
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return np.asarray(kernel / kernel.sum(), dtype=np.float32)


def gaussian_blur(images: npt.ArrayLike, sigma: float, radius: int) -> FloatArray:
    """Blur the last two axes with a separable Gaussian, zero padding (like the graph's ``conv2d``)."""
    values = np.asarray(images, dtype=np.float32)
    kernel = gaussian_kernel(sigma, radius).astype(np.float64)
    out = ndimage.correlate1d(values.astype(np.float64), kernel, axis=-1, mode="constant")
    out = ndimage.correlate1d(out, kernel, axis=-2, mode="constant")
    return np.asarray(out, dtype=np.float32)


def ssim_map(image: npt.ArrayLike, reconstruction: npt.ArrayLike, sigma: float = 1.5, radius: int = 4) -> FloatArray:
    """Local structural similarity of two images in [0, 1] (Wang et al. 2004), per pixel.

    Parameters
    ----------
    image, reconstruction
        Arrays of the same shape; the last two axes are the image plane.
    sigma, radius
        Gaussian window.

    Returns
    -------
    numpy.ndarray
        SSIM per pixel, same shape as the inputs (1 where identical).
    """
    x = np.asarray(image, dtype=np.float32)
    y = np.asarray(reconstruction, dtype=np.float32)
    if x.shape != y.shape:
        raise ValueError(f"image {x.shape} and reconstruction {y.shape} differ in shape")
    mu_x, mu_y = gaussian_blur(x, sigma, radius), gaussian_blur(y, sigma, radius)
    var_x = gaussian_blur(x * x, sigma, radius) - mu_x**2
    var_y = gaussian_blur(y * y, sigma, radius) - mu_y**2
    cov = gaussian_blur(x * y, sigma, radius) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return (numerator / denominator).astype(np.float32)


def dissimilarity_map(
    image: npt.ArrayLike, reconstruction: npt.ArrayLike, config: DissimilarityConfig | None = None
) -> FloatArray:
    """Per-pixel anomaly map: smoothed mix of structural and absolute dissimilarity (the pixel-level map).

    Parameters
    ----------
    image, reconstruction
        Model input and output, same shape (``(n, 1, s, s)`` or any with the plane last).
    config
        Window sizes and weights (default :class:`DissimilarityConfig`).

    Returns
    -------
    numpy.ndarray
        Non-negative map, same shape; 0 where the image equals its reconstruction.
    """
    cfg = config or DissimilarityConfig()
    x = np.asarray(image, dtype=np.float32)
    y = np.asarray(reconstruction, dtype=np.float32)
    structural = (1.0 - ssim_map(x, y, cfg.ssim_sigma, cfg.ssim_radius)) / 2.0
    combined = cfg.ssim_weight * structural + cfg.l1_weight * np.abs(x - y)
    return np.maximum(gaussian_blur(combined, cfg.smooth_sigma, cfg.smooth_radius), 0.0).astype(np.float32)


def slice_scores(maps: npt.ArrayLike, masks: npt.ArrayLike | None = None, top_fraction: float = 0.01) -> FloatArray:
    """One score per slice: the mean of its highest ``top_fraction`` of foreground map values.

    A high quantile rather than the maximum, so that one hot pixel does not
    flag a slice; rather than the mean, so that a small lesion is not diluted
    by the normal rest of the slice.

    Parameters
    ----------
    maps
        ``(n, …, y, x)`` anomaly maps.
    masks
        Foreground masks broadcastable to ``maps`` (default: every pixel).
    top_fraction
        Fraction of each slice's foreground pixels averaged.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float32 scores (0 for a slice without foreground).
    """
    values = np.asarray(maps, dtype=np.float32)
    n = values.shape[0]
    flat = values.reshape(n, -1)
    keep = np.broadcast_to(np.asarray(masks, dtype=bool).reshape(n, -1), flat.shape) if masks is not None else None
    scores = np.zeros(n, dtype=np.float32)
    for index in range(n):
        row = flat[index][keep[index]] if keep is not None else flat[index]
        if row.size == 0:
            continue
        count = max(1, int(np.ceil(row.size * top_fraction)))
        scores[index] = float(np.mean(np.partition(row, row.size - count)[row.size - count :]))
    return scores


@dataclass(frozen=True)
class SeriesScore:
    """Scores of a whole series.

    Attributes
    ----------
    maximum
        The highest slice score (the series is as abnormal as its worst slice).
    top_mean
        Mean of the ``top_slices`` highest slice scores (steadier than the maximum).
    worst_slice
        Index of the slice with the highest score.
    """

    maximum: float
    top_mean: float
    worst_slice: int


def series_score(scores: npt.ArrayLike, top_slices: int = 3) -> SeriesScore:
    """Summarise per-slice scores into a series score."""
    values = np.asarray(scores, dtype=np.float32).ravel()
    if values.size == 0:
        raise ValueError("a series score needs at least one slice score")
    top = np.sort(values)[::-1][: max(1, top_slices)]
    return SeriesScore(maximum=float(values.max()), top_mean=float(top.mean()), worst_slice=int(np.argmax(values)))


#: Quantile of the held-out normal voxels' map values that becomes a model's threshold. The 99.9th
#: percentile (used before) let sharp models flag small regions in normal series (1 to 8 in the job
#: tests' normal series, depending on the training run); at the 99.99th none of the runs did.
THRESHOLD_QUANTILE = 0.9999
#: Quantile of the held-out normal voxels' residuals |input − reconstruction| above which a voxel
#: differs from its nearest normal image in the image itself (the growth mask of proposals,
#: :func:`~oncostruct_reconstruction.model.regions.find_regions`).
RESIDUAL_QUANTILE = 0.995


def calibrate_threshold(maps: npt.ArrayLike, masks: npt.ArrayLike, quantile: float = 0.999) -> float:
    """The map value that ``quantile`` of the foreground voxels of normal slices stay below.

    Calibrated on held-out normal slices, it bounds the voxel false-positive rate
    on normal anatomy at ``1 - quantile`` (0.1 % by default).

    Parameters
    ----------
    maps
        ``(n, …)`` anomaly maps of normal slices.
    masks
        Their foreground masks, the same number of voxels per slice.
    quantile
        In (0, 1).
    """
    values = np.asarray(maps, dtype=np.float32)
    keep = np.asarray(masks, dtype=bool).reshape(values.shape[0], -1)
    foreground = values.reshape(values.shape[0], -1)[keep]
    if foreground.size == 0:
        raise ValueError("no foreground voxels to calibrate a threshold on")
    return float(np.quantile(foreground, quantile))


def calibrate_residual_threshold(
    images: npt.ArrayLike, reconstructions: npt.ArrayLike, masks: npt.ArrayLike, quantile: float = RESIDUAL_QUANTILE
) -> float:
    """The residual |image − reconstruction| that ``quantile`` of normal slices' foreground voxels stay below.

    Parameters
    ----------
    images, reconstructions
        ``(n, 1, s, s)`` normal (held-out) slices and the model's reconstructions of them.
    masks
        ``(n, s, s)`` foreground masks.
    """
    residuals = np.abs(np.asarray(images, dtype=np.float32) - np.asarray(reconstructions, dtype=np.float32))
    return calibrate_threshold(
        residuals.reshape(len(residuals), -1), np.asarray(masks).reshape(len(residuals), -1), quantile
    )
