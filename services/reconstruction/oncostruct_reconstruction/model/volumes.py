"""Reading series as ``(z, y, x)`` axial volumes from NIfTI files and DICOM folders (numpy, nibabel, pydicom).

Every reader returns slices along the first axis in radiological display
order (anterior up, patient's right on the image's left), so that one
model sees the same anatomy orientation whatever the file format.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .preprocess import Modality

if TYPE_CHECKING:
    import pydicom

# nibabel and pydicom are imported where used: the GPU benchmark machine
# imports this package's model code without them.

FloatArray = npt.NDArray[np.float32]
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Modalities a training folder can hold; other DICOM series (SR, SEG, PT…) are passed over.
SUPPORTED_MODALITIES: tuple[Modality, ...] = ("MR", "CT")


@dataclass(frozen=True)
class Volume:
    """One series as an axial volume.

    Attributes
    ----------
    voxels
        ``(z, y, x)`` float32 in stored units (HU for CT).
    modality
        ``"MR"`` or ``"CT"``.
    source
        Where it was read from (file or series UID), for logs.
    """

    voxels: FloatArray
    modality: Modality
    source: str


def nifti_volume(path: Path, modality: Modality = "MR") -> Volume:
    """Read a NIfTI file as an axial volume (reoriented to RAS first, then to display order)."""
    import nibabel as nib

    image = nib.funcs.as_closest_canonical(nib.loadsave.load(path))  # type: ignore[no-untyped-call]
    data = np.asarray(image.get_fdata(dtype=np.float32))
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path.name}: expected a 3D image, got {data.ndim} dimensions")
    # RAS (x, y, z) → (z, y, x) with anterior at the top row.
    voxels = np.ascontiguousarray(np.flip(np.transpose(data, (2, 1, 0)), axis=1), dtype=np.float32)
    return Volume(voxels=voxels, modality=modality, source=str(path))


def dicom_volumes(folder: Path) -> list[Volume]:
    """Read every MR/CT image series in a folder tree (one volume per Series Instance UID).

    Slices are ordered along the slice normal (Image Position Patient on the
    normal of Image Orientation Patient, PS3.3 C.7.6.2.1.1), stored values are
    rescaled (Rescale Slope/Intercept), and series of other modalities or
    without pixel data are passed over.
    """
    import pydicom

    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(NIFTI_SUFFIXES)):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=False)
        except (pydicom.errors.InvalidDicomError, OSError):
            continue
        if dataset.get("Modality") not in SUPPORTED_MODALITIES or "PixelData" not in dataset:
            continue
        series[str(dataset.SeriesInstanceUID)].append(dataset)
    volumes = []
    for uid, datasets in sorted(series.items()):
        volumes.append(stack_series(uid, datasets))
    return volumes


def stack_series(uid: str, datasets: list[pydicom.Dataset]) -> Volume:
    """One series' instances as a volume: ordered along the slice normal, stored values rescaled."""

    def position(ds: pydicom.Dataset) -> float:
        orientation = np.asarray(ds.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
        normal = np.cross(orientation[:3], orientation[3:])
        origin = np.asarray(ds.get("ImagePositionPatient", [0, 0, ds.get("InstanceNumber", 0)]), dtype=np.float64)
        return float(origin @ normal)

    ordered = sorted(datasets, key=position)
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in ordered}
    if len(shapes) != 1:
        raise ValueError(f"series {uid}: slices of different sizes {sorted(shapes)}")
    planes = [
        ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        for ds in ordered
    ]
    modality: Modality = "CT" if str(ordered[0].Modality) == "CT" else "MR"
    return Volume(voxels=np.stack(planes).astype(np.float32), modality=modality, source=uid)


def folder_volumes(folder: Path, nifti_modality: Modality = "MR") -> Iterator[Volume]:
    """Every NIfTI file and every DICOM MR/CT series under ``folder``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name.endswith(NIFTI_SUFFIXES):
            yield nifti_volume(path, nifti_modality)
    yield from dicom_volumes(folder)


def mni152_volume(resolution: int = 1) -> Volume:
    """The MNI152 2009 T1 template that nilearn ships in its package data (no download).

    ``nilearn.datasets.load_mni152_template`` reads the NIfTI file bundled
    with nilearn, so this works offline; it is the one normal brain the
    default model is trained on.
    """
    from nilearn import datasets  # type: ignore[import-untyped]

    image = datasets.load_mni152_template(resolution=resolution)
    data = np.asarray(image.get_fdata(), dtype=np.float32)
    voxels = np.ascontiguousarray(np.flip(np.transpose(data, (2, 1, 0)), axis=1), dtype=np.float32)
    return Volume(voxels=voxels, modality="MR", source=f"nilearn MNI152 2009 template, {resolution} mm")
