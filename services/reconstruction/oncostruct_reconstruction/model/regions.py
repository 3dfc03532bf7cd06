"""ROI proposals: connected regions of an anomaly map above the model's threshold (numpy/scipy only).

A proposal is what an annotator is asked to confirm: one 3D connected component
(26-connectivity, so a lesion seen on touching slices is one region) of voxels
whose map value exceeds the calibrated threshold inside the body/brain mask,
large enough to matter, with its bounding box, mask and scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage  # type: ignore[import-untyped]

BoolArray = npt.NDArray[np.bool_]


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
) -> list[Region]:
    """Connected regions of ``anomaly > threshold`` within ``foreground``, highest peak first.

    A region is found where the map exceeds the threshold; its extent is where it also reaches
    ``peak_fraction`` of the region's own peak. The map is smooth, so a strong finding spreads
    above a fixed threshold well beyond its edge (further the stronger it is); a contour at a
    fraction of the peak keeps the extent independent of contrast, as delineation at a percentage
    of the maximum does in PET.

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
        Smaller regions are noise and dropped.
    max_regions
        At most this many, by peak value.
    peak_fraction
        In [0, 1): the part of each region kept is where the map reaches this fraction of its peak
        (0: all of it).
    """
    if not 0.0 <= peak_fraction < 1.0:
        raise ValueError(f"peak_fraction must be in [0, 1), got {peak_fraction}")
    values = np.asarray(anomaly, dtype=np.float32)
    mask = np.asarray(foreground, dtype=bool)
    if values.shape != mask.shape or values.ndim != 3:
        raise ValueError(f"map {values.shape} and foreground {mask.shape} must be the same (z, y, x) shape")
    candidates = (values > threshold) & mask
    hits = [np.flatnonzero(np.any(candidates, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if hits[0].size == 0:
        return []
    # Labelled inside the candidates' bounding box only (the same components, a fraction of the work).
    origin = tuple(int(axis_hits[0]) for axis_hits in hits)
    box = tuple(slice(int(axis_hits[0]), int(axis_hits[-1]) + 1) for axis_hits in hits)
    labels, _ = ndimage.label(candidates[box], structure=np.ones((3, 3, 3), dtype=bool))
    inner = values[box]
    voxel_mm3 = float(np.prod(spacing_mm))
    regions = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        inside = labels[where] == index
        peak = float(inner[where][inside].max())
        if peak_fraction > 0:
            inside &= inner[where] >= peak_fraction * peak
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
