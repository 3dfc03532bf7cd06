"""Measurements in mm from pixel geometry (pure; the live path is in test_series_annotations)."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest

from oncostruct_annotations.geometry import ImageInfo, Mask, Point, Polygon, Polyline, measure

IMAGES = {"1.2.1": ImageInfo(64, 64, 1, (0.5, 0.8), 2.5), "1.2.2": ImageInfo(64, 64, 1, (0.5, 0.8), 2.5)}


def test_anisotropic_pixels_scale_each_axis() -> None:
    # Columns are 0.8 mm apart, rows 0.5 mm: a 10-column, 0-row line is 8 mm, a 0-column, 10-row one 5 mm.
    across = Polyline(type="line", sop_instance_uid="1.2.1", points=[(0, 0), (10, 0)])
    down = Polyline(type="line", sop_instance_uid="1.2.1", points=[(0, 0), (0, 10)])
    assert measure(across, IMAGES) == {"length_mm": pytest.approx(8.0)}
    assert measure(down, IMAGES) == {"length_mm": pytest.approx(5.0)}
    triangle = Polygon(type="polygon", sop_instance_uid="1.2.1", points=[(0, 0), (10, 0), (0, 10)])
    assert measure(triangle, IMAGES)["area_mm2"] == pytest.approx(50 * 0.4)  # type: ignore[index]


def test_mask_volume_is_voxels_times_voxel_size() -> None:
    voxels = np.zeros((2, 64, 64), np.uint8)
    voxels[0, :3, :4] = 1
    voxels[1, :2, :2] = 1
    data = base64.b64encode(zlib.compress(voxels.tobytes())).decode()
    mask = Mask(type="mask", sop_instance_uids=["1.2.1", "1.2.2"], rows=64, columns=64, data=data)
    assert measure(mask, IMAGES) == {"area_mm2": pytest.approx(16 * 0.4), "volume_mm3": pytest.approx(16 * 0.4 * 2.5)}


def test_without_pixel_spacing_there_is_no_measurement() -> None:
    unknown = {"1.2.1": ImageInfo(64, 64, 1)}
    assert measure(Polyline(type="line", sop_instance_uid="1.2.1", points=[(0, 0), (3, 4)]), unknown) is None
    assert measure(Point(type="point", sop_instance_uid="1.2.1", point=(3, 4)), IMAGES) == {}
