"""Synthetic anomalies with pixel ground truth, MOOD-challenge style (numpy/scipy only).

Used by the quality benchmark and its CI-sized test: each kind changes a
normal slice in a way a reader would call abnormal, inside the foreground,
and returns the exact pixels it changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
from scipy import ndimage  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

AnomalyKind = Literal["blob", "patch", "noise", "deformation"]
ANOMALY_KINDS: tuple[AnomalyKind, ...] = get_args(AnomalyKind)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float], angle: float) -> FloatArray:
    """Squared normalised elliptical distance of each pixel from ``centre`` (< 1 inside the ellipse)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    dr, dc = rows - centre[0], cols - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (cos * dr + sin * dc) / radii[0]
    v = (-sin * dr + cos * dc) / radii[1]
    return np.asarray(u**2 + v**2, dtype=np.float32)


def _pick_centre(mask: BoolArray, margin: int, rng: np.random.Generator) -> tuple[int, int]:
    inner = ndimage.binary_erosion(mask, iterations=max(1, margin)) if margin > 0 else mask
    candidates = np.argwhere(inner if inner.any() else mask)
    if candidates.size == 0:
        raise ValueError("the slice has no foreground to place an anomaly in")
    row, col = candidates[rng.integers(len(candidates))]
    return int(row), int(col)


def insert_anomaly(
    image: npt.ArrayLike,
    mask: npt.ArrayLike,
    kind: AnomalyKind,
    rng: np.random.Generator,
    donor: npt.ArrayLike | None = None,
    radius_range: tuple[float, float] = (0.05, 0.12),
) -> tuple[FloatArray, BoolArray]:
    """Insert one synthetic anomaly into a 2D slice.

    Parameters
    ----------
    image
        ``(y, x)`` slice in [0, 1].
    mask
        ``(y, x)`` foreground mask; the anomaly is centred inside it.
    kind
        ``"blob"`` (smooth hyper- or hypointense ellipse), ``"patch"`` (a
        region copied from ``donor`` at another place), ``"noise"`` (a region
        replaced by noise around its mean) or ``"deformation"`` (a local
        radial warp: mass effect without intensity change).
    rng
        Random generator (all randomness comes from it).
    donor
        Another slice to take the ``"patch"`` content from (default: the image itself, shifted).
    radius_range
        Ellipse radii as fractions of the image side.

    Returns
    -------
    tuple
        The changed slice (float32, clipped to [0, 1]) and the boolean ground
        truth of the pixels it changed.
    """
    x = np.asarray(image, dtype=np.float32).copy()
    fg = np.asarray(mask, dtype=bool)
    side = min(x.shape)
    radii = (
        float(rng.uniform(*radius_range) * side),
        float(rng.uniform(*radius_range) * side),
    )
    centre = _pick_centre(fg, int(max(radii)), rng)
    distance = _disc(x.shape, centre, radii, float(rng.uniform(0, np.pi)))
    region = distance < 1.0

    if kind == "blob":
        # Smooth profile, full strength in the centre: a lesion, not a cut-out.
        profile = np.clip(1.0 - distance, 0.0, 1.0) ** 0.5
        sign = 1.0 if rng.random() < 0.5 else -1.0
        strength = float(rng.uniform(0.35, 0.6))
        out = x + sign * strength * profile
    elif kind == "patch":
        source = np.asarray(donor, dtype=np.float32) if donor is not None else x
        shift = rng.integers(side // 6, side // 3, size=2) * rng.choice([-1, 1], size=2)
        moved = np.roll(source, tuple(int(s) for s in shift), axis=(0, 1))
        out = np.where(region, moved, x)
    elif kind == "noise":
        level = float(x[region].mean()) if region.any() else 0.5
        noise = rng.normal(level, float(rng.uniform(0.15, 0.3)), size=x.shape).astype(np.float32)
        out = np.where(region, noise, x)
    elif kind == "deformation":
        # Push pixels outward from the centre (sample closer to it), strongest at the centre.
        rows, cols = np.mgrid[: x.shape[0], : x.shape[1]].astype(np.float32)
        weight = np.clip(1.0 - distance, 0.0, 1.0) ** 2 * float(rng.uniform(0.5, 0.8))
        sample_r = rows - (rows - centre[0]) * weight
        sample_c = cols - (cols - centre[1]) * weight
        out = ndimage.map_coordinates(x, [sample_r, sample_c], order=1, mode="constant")
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; known: {', '.join(ANOMALY_KINDS)}")

    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    # Ground truth: inside the region and visibly changed (a patch may copy near-identical tissue).
    truth = region & (np.abs(out - x) > 0.02) & (fg | (out > 0.02))
    if kind in ("blob", "noise", "patch"):
        truth = ndimage.binary_closing(truth, iterations=1) & region
    return out, np.asarray(truth, dtype=bool)


def anomalous_set(
    slices: npt.ArrayLike,
    masks: npt.ArrayLike,
    kinds: Sequence[AnomalyKind],
    seed: int,
) -> tuple[FloatArray, BoolArray, list[AnomalyKind]]:
    """One anomaly of a cycling kind inserted into each slice.

    Parameters
    ----------
    slices
        ``(n, y, x)`` or ``(n, 1, y, x)`` normal slices in [0, 1].
    masks
        ``(n, y, x)`` foreground masks.
    kinds
        Kinds to cycle through.
    seed
        Seed of the random generator.

    Returns
    -------
    tuple
        Changed slices (same shape as ``slices``), ``(n, y, x)`` ground truth,
        and the kind used per slice.
    """
    values = np.asarray(slices, dtype=np.float32)
    planes = values.reshape(values.shape[0], *values.shape[-2:])
    fg = np.asarray(masks, dtype=bool)
    rng = np.random.default_rng(seed)
    out = np.empty_like(planes)
    truth = np.zeros(planes.shape, dtype=bool)
    used: list[AnomalyKind] = []
    for index, plane in enumerate(planes):
        kind = kinds[index % len(kinds)]
        donor = planes[(index + len(planes) // 2) % len(planes)]
        out[index], truth[index] = insert_anomaly(plane, fg[index], kind, rng, donor=donor)
        used.append(kind)
    return out.reshape(values.shape), truth, used
