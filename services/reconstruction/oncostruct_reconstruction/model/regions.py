"""ROI proposals: connected regions of an anomaly map above the model's threshold (numpy/scipy only).

A proposal is what an annotator is asked to confirm: one 3D connected component
(26-connectivity, so a lesion seen on touching slices is one region) of voxels
inside the body/brain mask, seeded where the map exceeds the calibrated
threshold and grown by hysteresis over connected voxels above a lower level,
large enough to matter, with its bounding box, mask and scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage  # type: ignore[import-untyped]

BoolArray = npt.NDArray[np.bool_]

#: Default extent rules of a proposal (the service's ``REGION_PEAK_FRACTION`` and ``REGION_LOW_FRACTION``,
#: the latter with growth gated by the reconstruction residual). Measured in MODEL.md ("Proposal extent"):
#: on the benchmark's findings, proposal Dice 0.36 → 0.40; on the job tests' sphere 0.58 → 0.88; on the
#: jobs benchmark's 300-slice series 0.65 → 0.62; no proposal on normal slices or series either way.
PEAK_FRACTION = 0.3
LOW_FRACTION = 0.5


@dataclass(frozen=True)
class Region:
    """One connected abnormal region on the series grid.

    Attributes
    ----------
    box
        ``(z0, z1, y0, y1, x0, x1)``, end-exclusive, in voxels of the ``(z, y, x)`` grid.
    mask
        The region's voxels inside ``box`` (shape ``(z1-z0, y1-y0, x1-x0)``).
    voxels, volume_mm3
        Its size.
    peak, mean
        Highest and mean map value inside it.
    """

    box: tuple[int, int, int, int, int, int]
    mask: BoolArray
    voxels: int
    volume_mm3: float
    peak: float
    mean: float


def find_regions(
    anomaly: npt.ArrayLike,
    foreground: npt.ArrayLike,
    threshold: float,
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    min_volume_mm3: float = 20.0,
    max_regions: int = 20,
    peak_fraction: float = 0.0,
    low_fraction: float = 1.0,
    grow: npt.ArrayLike | None = None,
) -> list[Region]:
    """Connected regions of the map within ``foreground`` that exceed ``threshold``, highest peak first.

    A region is found where the map exceeds the threshold over at least ``min_volume_mm3`` (only
    there: a normal series stays without proposals whatever the lower level). With ``low_fraction``
    below 1 it then extends, by hysteresis as in Canny's edge detector, over the connected voxels
    above ``low_fraction × threshold``, and only over those in ``grow`` where that is given (voxels
    that differ from the reconstruction in the image itself): a finding whose contrast is flat
    inside lifts the smooth map above the threshold mainly at its rim, and the part of it between
    the two levels is still the finding. Its extent is then where the map also reaches
    ``peak_fraction`` of the region's own peak, voxels in ``grow`` excepted: the map is smooth, so a
    strong finding spreads above a fixed threshold well beyond its edge (further the stronger it
    is), and a contour at a fraction of the peak keeps the extent independent of contrast, as
    delineation at a percentage of the maximum does in PET.

    Parameters
    ----------
    anomaly
        ``(z, y, x)`` map on the series grid.
    foreground
        ``(z, y, x)`` body/brain mask; voxels outside it are never proposed.
    threshold
        The model's calibrated threshold.
    spacing_mm
        Voxel size ``(dz, dy, dx)``.
    min_volume_mm3
        Regions (before growing) smaller than this are noise and dropped.
    max_regions
        At most this many, by peak value.
    peak_fraction
        In [0, 1): the part of each region kept is where the map reaches this fraction of its peak
        (0: all of it).
    low_fraction
        In (0, 1]: the hysteresis level as a fraction of ``threshold`` (1: no growth).
    grow
        ``(z, y, x)`` voxels a region may grow into (None: any above the hysteresis level).
    """
    if not 0.0 <= peak_fraction < 1.0:
        raise ValueError(f"peak_fraction must be in [0, 1), got {peak_fraction}")
    if not 0.0 < low_fraction <= 1.0:
        raise ValueError(f"low_fraction must be in (0, 1], got {low_fraction}")
    values = np.asarray(anomaly, dtype=np.float32)
    mask = np.asarray(foreground, dtype=bool)
    if values.shape != mask.shape or values.ndim != 3:
        raise ValueError(f"map {values.shape} and foreground {mask.shape} must be the same (z, y, x) shape")
    seeds = (values > threshold) & mask
    allowed = np.ones_like(seeds) if grow is None else np.asarray(grow, dtype=bool)
    if allowed.shape != values.shape:
        raise ValueError(f"grow {allowed.shape} must be the map's shape {values.shape}")
    growable = np.zeros_like(seeds)
    if low_fraction < 1.0:
        growable = (values > low_fraction * threshold) & mask & ~seeds & allowed
    # Voxels that differ in the image itself are the finding whatever the map's level there.
    kept = allowed if grow is not None else np.zeros_like(seeds)
    candidates = seeds | growable
    hits = [np.flatnonzero(np.any(candidates, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if hits[0].size == 0:
        return []
    # Labelled inside the candidates' bounding box only (the same components, a fraction of the work).
    origin = tuple(int(axis_hits[0]) for axis_hits in hits)
    box = tuple(slice(int(axis_hits[0]), int(axis_hits[-1]) + 1) for axis_hits in hits)
    structure = np.ones((3, 3, 3), dtype=bool)
    labels, _ = ndimage.label(candidates[box], structure=structure)
    inner, inner_seeds, inner_kept = values[box], seeds[box], kept[box]
    voxel_mm3 = float(np.prod(spacing_mm))
    if growable.any():
        # Only regions large enough at the threshold grow: small ones must not grow into proposals.
        seed_labels, count = ndimage.label(inner_seeds, structure=structure)
        sizes = np.bincount(seed_labels.ravel(), minlength=count + 1)[1:]
        inner_seeds = np.isin(seed_labels, np.flatnonzero(sizes * voxel_mm3 >= min_volume_mm3) + 1)
    regions = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        inside = labels[where] == index
        found = inside & inner_seeds[where]
        if not found.any() or found.sum() * voxel_mm3 < min_volume_mm3:  # grown from nothing, or too small
            continue
        peak = float(inner[where][found].max())
        if peak_fraction > 0:
            inside &= (inner[where] >= peak_fraction * peak) | inner_kept[where]
        voxels = int(inside.sum())
        if voxels * voxel_mm3 < min_volume_mm3:
            continue
        region_values = inner[where][inside]
        z, y, x = (slice(part.start + start, part.stop + start) for part, start in zip(where, origin, strict=True))
        regions.append(
            Region(
                box=(z.start, z.stop, y.start, y.stop, x.start, x.stop),
                mask=inside,
                voxels=voxels,
                volume_mm3=round(voxels * voxel_mm3, 3),
                peak=float(region_values.max()),
                mean=float(region_values.mean()),
            )
        )
    regions.sort(key=lambda region: region.peak, reverse=True)
    return regions[:max_regions]


def growth_slices(
    maps: npt.ArrayLike, foreground: npt.ArrayLike, threshold: float, low_fraction: float, margin: int = 1
) -> npt.NDArray[np.int64]:
    """The slices a region could grow over: those of the connected parts of ``maps > low_fraction × threshold``
    (within ``foreground``) that reach the threshold somewhere, ``margin`` slices wider each way.

    ``maps`` and ``foreground`` are ``(z, y, x)`` on the model's grid; the service fetches the
    reconstruction (for the residual) of these slices only. A normal series has none.
    """
    values = np.asarray(maps, dtype=np.float32)
    mask = np.asarray(foreground, dtype=bool)
    labels, _ = ndimage.label((values > low_fraction * threshold) & mask, structure=np.ones((3, 3, 3), dtype=bool))
    reaching = np.unique(labels[(values > threshold) & mask])
    planes = np.flatnonzero(np.isin(labels, reaching[reaching > 0]).any(axis=(1, 2)))
    if planes.size == 0:
        return planes.astype(np.int64)
    near = (planes[:, None] + np.arange(-margin, margin + 1)[None, :]).ravel()
    return np.unique(near[(near >= 0) & (near < len(values))]).astype(np.int64)


@dataclass(frozen=True)
class ProposalMetrics:
    """What an annotator is shown at a threshold: the proposals of :func:`find_regions`, slice by slice.

    Attributes
    ----------
    detected
        Fraction of anomalous slices with a proposal that touches the ground truth.
    dice
        Mean over anomalous slices of the Dice of all proposals together with the ground truth.
    false_per_slice
        Proposals that touch no ground truth, per slice (normal and anomalous).
    """

    detected: float
    dice: float
    false_per_slice: float

    def as_dict(self) -> dict[str, float]:
        """The metrics by name."""
        return {"detected": self.detected, "dice": self.dice, "false_per_slice": self.false_per_slice}


def proposal_metrics(
    maps: npt.ArrayLike,
    truth: npt.ArrayLike,
    masks: npt.ArrayLike,
    threshold: float,
    grow: npt.ArrayLike | None = None,
    min_pixels: int = 4,
    peak_fraction: float = PEAK_FRACTION,
    low_fraction: float = LOW_FRACTION,
) -> ProposalMetrics:
    """Score the proposals made on each ``(y, x)`` slice of ``maps`` (2D regions, 8-connected).

    Unlike the threshold-free pixel metrics this measures the operating point: one threshold, the
    extent rules, and the smallest region (``min_pixels``) as the service applies them. ``grow``
    (``(n, y, x)``, residual above its threshold) gates growth as the service's ``residual`` rule
    does; without it regions do not grow.
    """
    values = np.asarray(maps, dtype=np.float32)
    labels = np.asarray(truth, dtype=bool)
    foreground = np.asarray(masks, dtype=bool)
    if values.shape != labels.shape or values.shape != foreground.shape or values.ndim != 3:
        raise ValueError(f"maps {values.shape}, truth {labels.shape} and masks {foreground.shape} must match (n, y, x)")
    growth = None if grow is None else np.asarray(grow, dtype=bool)
    if growth is not None and growth.shape != values.shape:
        raise ValueError(f"grow {growth.shape} must match maps {values.shape}")
    anomalous: list[bool] = [bool(labels[index].any()) for index in range(len(labels))]
    detected, dice, false = 0, 0.0, 0
    for index, (plane, plane_truth, plane_mask) in enumerate(zip(values, labels, foreground, strict=True)):
        proposed = np.zeros(plane.shape, dtype=bool)
        extent: dict[str, Any] = {"peak_fraction": peak_fraction, "low_fraction": 1.0}
        if growth is not None:
            extent.update(low_fraction=low_fraction, grow=growth[index][None])
        for region in find_regions(
            plane[None], plane_mask[None], threshold, (1.0, 1.0, 1.0), min_pixels, 1000, **extent
        ):
            _, _, y0, y1, x0, x1 = region.box
            hit = bool((region.mask[0] & plane_truth[y0:y1, x0:x1]).any())
            false += not hit
            proposed[y0:y1, x0:x1] |= region.mask[0]
        if anomalous[index]:
            overlap = int((proposed & plane_truth).sum())
            detected += overlap > 0
            dice += 2 * overlap / (int(proposed.sum()) + int(plane_truth.sum()))
    findings = max(sum(anomalous), 1)
    return ProposalMetrics(detected / findings, dice / findings, false / max(len(values), 1))
