"""ROI geometry: per-slice polygons, points and lines in pixel coordinates, and 3D masks.

Coordinates are DICOM SCOORD image coordinates (PS3.3 §C.18.6.1.1): column
then row, in pixels, origin at the top-left corner of the top-left pixel,
tied to a SOP Instance UID and frame number. Whether an instance belongs to
the series and the coordinates fall inside its image is checked against the
imaging service when the annotation is written.
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Uid = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]
Coordinate = tuple[float, float]
MAX_MASK_VOXELS = 512 * 512 * 1000


class ImageInfo(NamedTuple):
    """What the imaging service says of one instance: its grid and, when present, its spacing in mm."""

    rows: int
    columns: int
    frames: int
    spacing: tuple[float, float] | None = None  # (between rows, between columns): Pixel Spacing order
    thickness: float | None = None


def _finite(points: list[Coordinate]) -> list[Coordinate]:
    for column, row in points:
        if not (math.isfinite(column) and math.isfinite(row)) or column < 0 or row < 0:
            raise ValueError("coordinates must be finite and non-negative (column, row) pixel positions")
    return points


class _OnImage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sop_instance_uid: Uid
    frame: int = Field(1, ge=1, description="Frame number (1-based) in a multi-frame instance.")


class Polygon(_OnImage):
    """A closed polygon on one image (SCOORD POLYGON)."""

    type: Literal["polygon"]
    points: list[Coordinate] = Field(min_length=3, max_length=10000)

    _check = field_validator("points")(_finite)


class Polyline(_OnImage):
    """A line segment on one image, e.g. a diameter measurement (SCOORD POLYLINE)."""

    type: Literal["line"]
    points: list[Coordinate] = Field(min_length=2, max_length=2)

    _check = field_validator("points")(_finite)


class Point(_OnImage):
    """One point on one image (SCOORD POINT)."""

    type: Literal["point"]
    point: Coordinate

    @field_validator("point")
    @classmethod
    def _finite_point(cls, point: Coordinate) -> Coordinate:
        _finite([point])
        return point


class Contours(BaseModel):
    """A lesion drawn as polygons on several slices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["contours"]
    polygons: list[Polygon] = Field(min_length=1, max_length=2000)


class Mask(BaseModel):
    """A 3D binary mask on the series grid: one slice per listed instance, zlib-compressed, base64."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["mask"]
    sop_instance_uids: list[Uid] = Field(min_length=1, max_length=2000)
    rows: int = Field(ge=1, le=4096)
    columns: int = Field(ge=1, le=4096)
    data: str = Field(description="base64 of zlib-compressed uint8 voxels (0 or 1), slice-major, row-major.")

    @model_validator(mode="after")
    def _decodes(self) -> Mask:
        expected = self.rows * self.columns * len(self.sop_instance_uids)
        if expected > MAX_MASK_VOXELS:
            raise ValueError(f"mask larger than {MAX_MASK_VOXELS} voxels")
        voxels = self.voxels()
        if len(voxels) != expected:
            raise ValueError(f"mask data holds {len(voxels)} voxels, expected rows*columns*slices = {expected}")
        if voxels.strip(b"\x00\x01"):
            raise ValueError("mask voxels must be 0 or 1")
        return self

    def voxels(self) -> bytes:
        """The decoded voxels."""
        try:
            decompressor = zlib.decompressobj()
            raw = decompressor.decompress(base64.b64decode(self.data, validate=True), MAX_MASK_VOXELS + 1)
        except (binascii.Error, zlib.error):
            raise ValueError("mask data is not base64 of zlib-compressed bytes") from None
        return raw


Geometry = Annotated[Polygon | Polyline | Point | Contours | Mask, Field(discriminator="type")]


def images_of(geometry: Polygon | Polyline | Point | Contours | Mask) -> list[tuple[str, int]]:
    """The (SOP Instance UID, frame) pairs a geometry lies on."""
    if isinstance(geometry, Contours):
        return [(polygon.sop_instance_uid, polygon.frame) for polygon in geometry.polygons]
    if isinstance(geometry, Mask):
        return [(uid, 1) for uid in geometry.sop_instance_uids]
    return [(geometry.sop_instance_uid, geometry.frame)]


def extent(geometry: Polygon | Polyline | Point | Contours | Mask) -> tuple[float, float] | None:
    """The largest (column, row) the geometry reaches, or None for masks (sized by rows/columns)."""
    if isinstance(geometry, Mask):
        return None
    points: list[Coordinate] = []
    if isinstance(geometry, Contours):
        for polygon in geometry.polygons:
            points += polygon.points
    elif isinstance(geometry, Point):
        points = [geometry.point]
    else:
        points = list(geometry.points)
    return max(p[0] for p in points), max(p[1] for p in points)


def _polygon_area(points: list[Coordinate], column_mm: float, row_mm: float) -> float:
    twice = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, [*points[1:], points[0]], strict=True))
    return abs(twice) / 2.0 * column_mm * row_mm


def _path_length(points: list[Coordinate], column_mm: float, row_mm: float, closed: bool) -> float:
    ends = [*points[1:], points[0]] if closed else points[1:]
    return sum(
        math.hypot((x2 - x1) * column_mm, (y2 - y1) * row_mm) for (x1, y1), (x2, y2) in zip(points, ends, strict=False)
    )


def measure(
    geometry: Polygon | Polyline | Point | Contours | Mask, images: dict[str, ImageInfo]
) -> dict[str, float] | None:
    """Measurements in millimetres from the image geometry (PixelSpacing, PS3.3 §10.7.1.3; SliceThickness).

    ``images`` maps SOP Instance UID → what the imaging service reported of the instance.
    Lines get ``length_mm``; polygons ``area_mm2`` and ``perimeter_mm``; contours and masks
    ``area_mm2`` summed over slices and ``volume_mm3`` (area × slice thickness) when every slice
    has a thickness. None when an image the geometry lies on has no Pixel Spacing.
    """
    spacing = {uid: (info.spacing[0], info.spacing[1], info.thickness) for uid, info in images.items() if info.spacing}
    if any(uid not in spacing for uid, _ in images_of(geometry)):
        return None
    if isinstance(geometry, Point):
        return {}
    if isinstance(geometry, Polyline):
        row_mm, column_mm, _ = spacing[geometry.sop_instance_uid]
        return {"length_mm": round(_path_length(list(geometry.points), column_mm, row_mm, closed=False), 3)}
    if isinstance(geometry, Polygon):
        row_mm, column_mm, _ = spacing[geometry.sop_instance_uid]
        points = list(geometry.points)
        return {
            "area_mm2": round(_polygon_area(points, column_mm, row_mm), 3),
            "perimeter_mm": round(_path_length(points, column_mm, row_mm, closed=True), 3),
        }
    areas: list[tuple[float, float | None]] = []
    if isinstance(geometry, Contours):
        for polygon in geometry.polygons:
            row_mm, column_mm, thickness = spacing[polygon.sop_instance_uid]
            areas.append((_polygon_area(list(polygon.points), column_mm, row_mm), thickness))
    else:
        voxels = geometry.voxels()
        plane = geometry.rows * geometry.columns
        for index, uid in enumerate(geometry.sop_instance_uids):
            row_mm, column_mm, thickness = spacing[uid]
            count = voxels[index * plane : (index + 1) * plane].count(1)
            areas.append((count * row_mm * column_mm, thickness))
    result = {"area_mm2": round(sum(area for area, _ in areas), 3)}
    if all(thickness for _, thickness in areas):
        result["volume_mm3"] = round(sum(area * (thickness or 0.0) for area, thickness in areas), 3)
    return result
