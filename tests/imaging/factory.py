"""Synthetic DICOM instances for the imaging tests and the benchmark (pydicom, no files on disk)."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

ROOT = "2.25"


def new_uid() -> str:
    """A fresh UID under the 2.25 (UUID) root (PS3.5 §B.2)."""
    return f"{ROOT}.{uuid.uuid4().int}"


def ct_dataset(
    study: str,
    series: str,
    number: int = 1,
    *,
    size: int = 32,
    frames: int = 1,
    patient_id: str = "P-1",
    patient_name: str = "Doe^Jane",
    charset: str | list[str] | None = None,
    sop_instance: str | None = None,
    seed: int | None = None,
    **attributes: Any,
) -> Dataset:
    """A CT Image Storage data set with ``frames`` frames of ``size``×``size`` 16-bit pixels."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance or new_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = "20240301"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC-1"
    ds.StudyID = "S1"
    ds.ReferringPhysicianName = "Who^Doctor"
    ds.StudyDescription = "CT chest"
    ds.Modality = "CT"
    ds.SeriesNumber = 1
    ds.SeriesDescription = "axial"
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = size
    ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.ImagePositionPatient = [0, 0, float(number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    rng = np.random.default_rng(seed if seed is not None else number)
    ds.PixelData = rng.integers(0, 4096, size=(frames, size, size), dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """The PS3.10 file of a data set."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(parts: list[bytes], boundary: str = "test-boundary-42", part_type: str = "application/dicom") -> bytes:
    """A multipart/related body with one part per payload."""
    body = b""
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()
