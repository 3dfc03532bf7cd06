"""Synthetic anomalies and reading NIfTI / DICOM series."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from oncostruct_reconstruction.model.anomalies import ANOMALY_KINDS, AnomalyKind, insert_anomaly
from oncostruct_reconstruction.model.data import block_split
from oncostruct_reconstruction.model.volumes import dicom_volumes, folder_volumes, nifti_volume


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_each_anomaly_kind_changes_only_its_ground_truth(kind: AnomalyKind) -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64]
    image = (0.5 + 0.3 * np.sin(yy / 1.5) * np.cos(xx / 2.0)).astype(np.float32)  # fine texture: a warp shows
    mask = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
    image[~mask] = 0
    donor = np.roll(image, 7, axis=1)
    changed, truth = insert_anomaly(image, mask, kind, rng, donor=donor)
    assert truth.sum() >= 10
    difference = np.abs(changed - image)
    assert difference[truth].mean() > 0.05
    assert difference[~truth].max() <= 0.05  # outside the truth: at most a sub-threshold fringe


def test_held_out_blocks_are_separated_by_guards() -> None:
    positions = np.arange(64)
    train, heldout = block_split(positions, block=8, every=4, guard=2)
    assert set(heldout) == set(range(24, 32)) | set(range(56, 64))
    assert not set(train) & set(heldout)
    gaps = [min(abs(t - h) for h in heldout) for t in train]
    assert min(gaps) == 3  # two guard slices between any training and held-out slice


def test_nifti_is_read_in_display_orientation(tmp_path: Path) -> None:
    data = np.zeros((8, 10, 6), np.float32)  # RAS (x, y, z)
    data[1, 8, 4] = 1.0  # right-ish, anterior, upper
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "brain.nii.gz")
    volume = nifti_volume(tmp_path / "brain.nii.gz")
    assert volume.voxels.shape == (6, 10, 8)
    z, row, col = np.argwhere(volume.voxels == 1.0)[0]
    assert (z, col) == (4, 1)
    assert row == 10 - 1 - 8


def _dicom(path: Path, series: str, z: float, value: int, modality: str = "MR") -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, series, "1.2.3"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, z], [1, 0, 0, 0, 1, 0]
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleSlope, ds.RescaleIntercept = 2, -10
    ds.PixelData = np.full((4, 4), value, np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_series_sorted_by_position_and_rescaled(tmp_path: Path) -> None:
    for index, (z, value) in enumerate([(5.0, 30), (-5.0, 10), (0.0, 20)]):
        _dicom(tmp_path / f"im{index}.dcm", "1.2.3.4", z, value)
    _dicom(tmp_path / "sr.dcm", "1.2.3.5", 0.0, 1, modality="SR")  # not an image series: passed over
    (volume,) = dicom_volumes(tmp_path)
    assert volume.modality == "MR"
    assert volume.voxels.shape == (3, 4, 4)
    assert volume.voxels[:, 0, 0].tolist() == [10.0, 30.0, 50.0]  # 2 × stored − 10, inferior to superior
    assert len(list(folder_volumes(tmp_path))) == 1
