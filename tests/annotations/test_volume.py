"""Series → NIfTI geometry and ROI masks, checked against nibabel's own DICOM reader and by hand."""

from __future__ import annotations

import base64
import warnings
import zlib
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from nibabel.nicom import dicomwrappers
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from oncostruct_annotations.dataset.volume import GeometryError, roi_mask, series_volume
from oncostruct_annotations.dicom_export.grid import rasterize_polygon


def ct_slice(
    z: float, orientation: list[float], origin: list[float], value: int, rows: int = 8, columns: int = 10
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, columns
    ds.PixelSpacing = [0.5, 0.8]
    ds.ImageOrientationPatient = orientation
    normal = np.cross(orientation[:3], orientation[3:])
    ds.ImagePositionPatient = list(np.asarray(origin) + z * normal)
    ds.SliceThickness = 2.5
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    pixels = np.full((rows, columns), value, dtype=np.int16)
    pixels[1, 2] = value + 100  # a marker at row 1, column 2
    ds.PixelData = pixels.tobytes()
    return ds


AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
OBLIQUE = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # a sagittal plane


@pytest.mark.parametrize("orientation", [AXIAL, OBLIQUE])
def test_volume_geometry_matches_nibabel_and_dicom(orientation: list[float]) -> None:
    series = [ct_slice(z * 2.5, orientation, [-100.0, 50.0, 30.0], value=1024 + int(z)) for z in range(4)]
    volume = series_volume(list(reversed(series)))  # any order in, sorted out
    assert volume.image.shape == (10, 8, 4)
    assert [volume.slices[ds.SOPInstanceUID] for ds in series] == [0, 1, 2, 3]
    data = volume.image.get_fdata()
    assert data[2, 1, 3] == 3 + 100  # marker: column 2, row 1, rescaled (value - 1024 + 100)
    assert data[0, 0, 0] == 0
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.image.affine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = dicomwrappers.wrapper_from_data(series[0]).affine  # voxel axes (row, column)
    np.testing.assert_allclose(lps[:3, 0], reference[:3, 1])
    np.testing.assert_allclose(lps[:3, 1], reference[:3, 0])
    np.testing.assert_allclose(lps[:3, 3], reference[:3, 3])
    np.testing.assert_allclose(lps[:3, 2], np.cross(orientation[:3], orientation[3:]) * 2.5)
    voxel_sizes = nib.affines.voxel_sizes(volume.image.affine)
    np.testing.assert_allclose(voxel_sizes, [0.8, 0.5, 2.5])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: setattr(s[1], "ImageOrientationPatient", OBLIQUE), "orientations"),
        (lambda s: setattr(s[2], "ImagePositionPatient", s[1].ImagePositionPatient), "duplicated"),
        (lambda s: s.pop(1), "unevenly"),
    ],
)
def test_irregular_series_are_refused(mutate: Any, reason: str) -> None:
    series = [ct_slice(z * 2.5, AXIAL, [0, 0, 0], 1000) for z in range(4)]
    mutate(series)
    with pytest.raises(GeometryError, match=reason):
        series_volume(series)


def test_polygon_fills_pixels_whose_centres_are_inside() -> None:
    # A square from (1, 1) to (4, 3) in SCOORD: pixel centres (1.5..3.5, 1.5..2.5) are inside.
    mask = rasterize_polygon([(1, 1), (4, 1), (4, 3), (1, 3)], rows=5, columns=6)
    expected = np.zeros((5, 6), np.uint8)
    expected[1:3, 1:4] = 1
    np.testing.assert_array_equal(mask.astype(np.uint8), expected)


def test_roi_masks_land_on_their_slices() -> None:
    series = [ct_slice(z * 2.5, AXIAL, [0, 0, 0], 1000) for z in range(3)]
    volume = series_volume(series)
    square = [[2, 2], [6, 2], [6, 5], [2, 5]]
    contours = {
        "type": "contours",
        "polygons": [{"type": "polygon", "sop_instance_uid": series[2].SOPInstanceUID, "frame": 1, "points": square}],
    }
    mask = roi_mask(volume, contours)
    assert mask[:, :, 2].sum() == 4 * 3
    assert mask[:, :, :2].sum() == 0
    assert mask[2:6, 2:5, 2].all()  # (column, row) order
    planes = np.zeros((1, 8, 10), np.uint8)
    planes[0, 1, 2] = 1
    encoded = base64.b64encode(zlib.compress(planes.tobytes())).decode()
    dense = roi_mask(
        volume,
        {"type": "mask", "sop_instance_uids": [series[1].SOPInstanceUID], "rows": 8, "columns": 10, "data": encoded},
    )
    assert np.argwhere(dense).tolist() == [[2, 1, 1]]
