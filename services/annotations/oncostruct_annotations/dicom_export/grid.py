"""The source series' pixel grid: which frame is which, pixel spacing, and polygon rasterisation.

Coordinates follow SCOORD image coordinates (PS3.3 §C.18.6.1.1): ``(column, row)``,
``(0, 0)`` the top-left corner of the top-left pixel, so the centre of pixel
``[r, c]`` is ``(c + 0.5, r + 0.5)``.

Rasterisation convention (**pixel centre**): a pixel belongs to a polygon when its
centre lies inside the polygon by the even-odd rule. A centre exactly on an edge
counts as inside for left/top edges and outside for right/bottom ones (half-open
spans), so two polygons sharing an edge never both claim a pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from oncostruct_shared.errors import Unprocessable

Frame = tuple[str, int]  # (SOP Instance UID, frame number, 1-based)


def rasterize_polygon(points: Sequence[tuple[float, float]], rows: int, columns: int) -> NDArray[np.bool_]:
    """The pixels whose centres lie inside a polygon (even-odd rule), as a (rows, columns) mask.

    Parameters
    ----------
    points
        Vertices as SCOORD ``(column, row)`` pairs; the polygon is closed implicitly.
    rows, columns
        Size of the image.

    Returns
    -------
    numpy.ndarray
        Boolean mask; pixel ``[r, c]`` is set when ``(c + 0.5, r + 0.5)`` is inside.
    """
    mask = np.zeros((rows, columns), dtype=bool)
    vertices = np.asarray(points, dtype=np.float64)
    if len(vertices) < 3:
        return mask
    x0, y0 = vertices[:, 0], vertices[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    top = max(0, int(np.floor(vertices[:, 1].min() - 0.5)))
    bottom = min(rows - 1, int(np.ceil(vertices[:, 1].max() - 0.5)))
    for row in range(top, bottom + 1):
        y = row + 0.5
        # Edges crossing the scanline, half-open in y so a vertex on the line counts once.
        crossing = (y0 <= y) != (y1 <= y)
        if not crossing.any():
            continue
        xs = x0[crossing] + (y - y0[crossing]) * (x1[crossing] - x0[crossing]) / (y1[crossing] - y0[crossing])
        xs.sort()
        for start, end in zip(xs[0::2], xs[1::2], strict=True):
            # Centres c + 0.5 with start <= c + 0.5 < end.
            first = max(0, int(np.ceil(start - 0.5)))
            last = min(columns, int(np.ceil(end - 0.5)))
            if last > first:
                mask[row, first:last] = True
    return mask


def polygon_area(points: Sequence[tuple[float, float]], spacing: tuple[float, float]) -> float:
    """Area in mm² of a polygon in pixel coordinates (shoelace), given (row, column) spacing in mm."""
    vertices = np.asarray(points, dtype=np.float64)
    x, y = vertices[:, 0], vertices[:, 1]
    pixels = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return pixels * spacing[0] * spacing[1]


def line_length(points: Sequence[tuple[float, float]], spacing: tuple[float, float]) -> float:
    """Length in mm of a polyline in pixel coordinates, given (row, column) spacing in mm."""
    vertices = np.asarray(points, dtype=np.float64)
    steps = np.diff(vertices, axis=0) * np.array([spacing[1], spacing[0]])
    return float(np.sum(np.hypot(steps[:, 0], steps[:, 1])))


@dataclass(frozen=True)
class SourceGrid:
    """The frames of the source images in the order highdicom expects SEG frames (PS3.3 §C.8.20)."""

    frames: tuple[Frame, ...]
    rows: int
    columns: int
    spacings: tuple[tuple[float, float], ...]  # PixelSpacing (row, column) in mm, per frame
    slice_spacing: float | None  # distance between adjacent planes in mm, if the series is a regular stack
    sop_class_uids: dict[str, str]
    multiframe: bool

    @classmethod
    def of(cls, source_images: Sequence[Dataset]) -> SourceGrid:
        """The grid of a series of single-frame images or of one multi-frame image.

        Raises
        ------
        Unprocessable
            If the images are not one series on one grid (one Study, Series and Frame of Reference).
        """
        if not source_images:
            raise Unprocessable("No source images: a SEG and an SR need the series they describe.")
        first = source_images[0]
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
            values = {str(ds.get(key)) for ds in source_images}
            if len(values) != 1 or "None" in values:
                raise Unprocessable(f"Source images must share one {key} (PS3.3 §C.8.20: SEG of one series).")
        frames: list[Frame] = []
        spacings: list[tuple[float, float]] = []
        positions: list[NDArray[np.float64]] = []
        multiframe = int(first.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in first
        if multiframe:
            if len(source_images) > 1:
                raise Unprocessable("Give one multi-frame source image or a series of single-frame images.")
            shared = first.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
            for number, per_frame in enumerate(first.PerFrameFunctionalGroupsSequence, start=1):
                frames.append((str(first.SOPInstanceUID), number))
                spacings.append(_spacing(_group(per_frame, shared, "PixelMeasuresSequence")))
                plane = _group(per_frame, shared, "PlanePositionSequence")
                if "ImagePositionPatient" in plane:
                    positions.append(np.asarray(plane.ImagePositionPatient, dtype=np.float64))
            orientation = _group(first.PerFrameFunctionalGroupsSequence[0], shared, "PlaneOrientationSequence")
        else:
            for ds in source_images:
                frames.append((str(ds.SOPInstanceUID), 1))
                spacings.append(_spacing(ds))
                if "ImagePositionPatient" in ds:
                    positions.append(np.asarray(ds.ImagePositionPatient, dtype=np.float64))
            orientation = first
        if len(set(frames)) != len(frames):
            raise Unprocessable("Source images repeat a SOP Instance UID.")
        return cls(
            frames=tuple(frames),
            rows=int(first.Rows),
            columns=int(first.Columns),
            spacings=tuple(spacings),
            slice_spacing=_slice_spacing(positions, orientation) if len(positions) == len(frames) else None,
            sop_class_uids={str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in source_images},
            multiframe=multiframe,
        )

    def frame_numbers(self, frame: int) -> list[int] | None:
        """Referenced Frame Number of a reference to ``frame``: given for multi-frame images only."""
        return [frame] if self.multiframe else None

    def index(self, sop_instance_uid: str, frame: int, where: str) -> int:
        """Position of a frame in :attr:`frames`; :class:`Unprocessable` if it is not in the series."""
        try:
            return self.frames.index((sop_instance_uid, frame))
        except ValueError:
            raise Unprocessable(
                f"{where}: frame {frame} of instance {sop_instance_uid} is not in the series."
            ) from None


def _group(per_frame: Dataset, shared: Dataset, name: str) -> Dataset:
    for groups in (per_frame, shared):
        if name in groups and len(groups[name].value):
            item: Dataset = groups[name].value[0]
            return item
    return Dataset()


def _spacing(ds: Dataset) -> tuple[float, float]:
    spacing: Any = ds.get("PixelSpacing")
    if not spacing or len(spacing) != 2:
        raise Unprocessable("Source images need Pixel Spacing (PS3.3 §C.7.6.2) to measure in mm.")
    return float(spacing[0]), float(spacing[1])


def _slice_spacing(positions: list[NDArray[np.float64]], orientation: Dataset) -> float | None:
    cosines: Any = orientation.get("ImageOrientationPatient")
    if len(positions) < 2 or not cosines or len(cosines) != 6:
        return None
    normal = np.cross(np.asarray(cosines[:3], dtype=np.float64), np.asarray(cosines[3:], dtype=np.float64))
    distances = np.sort(np.array([float(np.dot(p, normal)) for p in positions]))
    gaps = np.diff(distances)
    if gaps.size == 0 or gaps.min() <= 0 or not np.allclose(gaps, gaps[0], rtol=1e-3, atol=1e-3):
        return None
    return float(gaps[0])
