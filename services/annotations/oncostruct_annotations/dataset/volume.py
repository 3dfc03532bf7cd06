"""DICOM series → NIfTI volume with the right geometry, and ROI masks on the same grid.

DICOM positions are in the patient's LPS frame (PS3.3 §C.7.6.2.1.1): x to the
patient's left, y to posterior, z to head. NIfTI's affine maps voxel indices
to RAS+ millimetres, so x and y change sign. The voxel axes are (column, row,
slice): column i runs along ImageOrientationPatient's row direction, row j
along its column direction, slice k along their cross product, slices sorted
by their position on that normal.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from ..dicom_export.grid import rasterize_polygon

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class GeometryError(ValueError):
    """The series cannot be stacked into one regular volume (mixed orientation, size, gaps)."""


@dataclass(frozen=True)
class SliceInfo:
    """Where one instance's pixels sit in the volume."""

    sop_instance_uid: str
    index: int


@dataclass(frozen=True)
class Volume:
    """A series as a NIfTI image, with the instance → slice index map for masks."""

    image: nib.Nifti1Image
    slices: dict[str, int]
    rows: int
    columns: int


def _vector(dataset: Any, keyword: str, length: int) -> npt.NDArray[np.float64]:
    value = getattr(dataset, keyword, None)
    if value is None or len(value) != length:
        raise GeometryError(f"instance {getattr(dataset, 'SOPInstanceUID', '?')} lacks {keyword}")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def series_volume(datasets: Sequence[Any], tolerance_mm: float = 0.01) -> Volume:
    """Stack single-frame instances of one series into a NIfTI volume (RAS+ affine, rescaled values).

    Parameters
    ----------
    datasets
        pydicom datasets with pixel data, in any order.
    tolerance_mm
        How far slice spacing and orientation may deviate before the series is refused.
    """
    if not datasets:
        raise GeometryError("the series has no instances")
    orientation = _vector(datasets[0], "ImageOrientationPatient", 6)
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    spacing = _vector(datasets[0], "PixelSpacing", 2)  # (between rows, between columns)
    placed = []
    for dataset in datasets:
        if not np.allclose(_vector(dataset, "ImageOrientationPatient", 6), orientation, atol=1e-4):
            raise GeometryError("the series mixes orientations")
        if (int(dataset.Rows), int(dataset.Columns)) != (rows, columns):
            raise GeometryError("the series mixes image sizes")
        position = _vector(dataset, "ImagePositionPatient", 3)
        placed.append((float(position @ normal), position, dataset))
    placed.sort(key=lambda item: item[0])
    positions = np.asarray([item[0] for item in placed])
    if len(placed) > 1:
        gaps = np.diff(positions)
        if np.any(gaps <= tolerance_mm) or np.ptp(gaps) > max(tolerance_mm, 0.01 * float(np.mean(gaps))):
            raise GeometryError("slices are duplicated or unevenly spaced")
        slice_step = (placed[-1][1] - placed[0][1]) / (len(placed) - 1)
    else:
        slice_step = normal * float(getattr(datasets[0], "SliceThickness", 1.0) or 1.0)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_direction * spacing[1]
    affine_lps[:3, 1] = column_direction * spacing[0]
    affine_lps[:3, 2] = slice_step
    affine_lps[:3, 3] = placed[0][1]
    data = np.empty((columns, rows, len(placed)), dtype=np.float32)
    for index, (_, _, dataset) in enumerate(placed):
        pixels = dataset.pixel_array.astype(np.float32)
        slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
        intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
        data[:, :, index] = (pixels * slope + intercept).T  # (row, column) → (column, row)
    image = nib.Nifti1Image(data, LPS_TO_RAS @ affine_lps)
    image.header.set_xyzt_units("mm")
    slices = {str(dataset.SOPInstanceUID): index for index, (_, _, dataset) in enumerate(placed)}
    return Volume(image=image, slices=slices, rows=rows, columns=columns)


def roi_mask(volume: Volume, geometry: dict[str, Any]) -> npt.NDArray[np.uint8]:
    """The ROI's voxels on the volume grid as a (column, row, slice) uint8 mask (points and lines: empty)."""
    mask = np.zeros(volume.image.shape, dtype=np.uint8)
    polygons: list[dict[str, Any]] = []
    if geometry["type"] == "polygon":
        polygons = [geometry]
    elif geometry["type"] == "contours":
        polygons = list(geometry["polygons"])
    elif geometry["type"] == "mask":
        voxels = np.frombuffer(zlib.decompress(base64.b64decode(geometry["data"])), dtype=np.uint8)
        stack = voxels.reshape(len(geometry["sop_instance_uids"]), geometry["rows"], geometry["columns"])
        for slice_plane, uid in zip(stack, geometry["sop_instance_uids"], strict=True):
            mask[:, :, volume.slices[uid]] |= slice_plane.T
        return mask
    for polygon in polygons:
        inside = rasterize_polygon([tuple(p) for p in polygon["points"]], volume.rows, volume.columns)
        mask[:, :, volume.slices[polygon["sop_instance_uid"]]] |= inside.T.astype(np.uint8)
    return mask
