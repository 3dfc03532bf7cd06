"""What a job analyses: the checks on a series' metadata, and its pixel data as a volume.

A series is analysed only if it is a stack of single-frame CT or MR images of
one size and one orientation, with pixel data. Everything else fails the job at
once with a reason a user can act on, before any pixel is fetched: structured
reports, segmentations, parametric maps (the service's own results among them:
never analyse your own output), other modalities, mixed grids, missing pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom

from oncostruct_shared.dicomweb import first_value
from oncostruct_shared.errors import Unprocessable

from .model.preprocess import Modality

FloatArray = npt.NDArray[np.float32]

#: Image Storage SOP Classes the model takes (PS3.4 Annex B): single-frame CT and MR.
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
}
#: SOP Classes a user may plausibly send, named in errors.
KNOWN_NON_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
}
#: Manufacturer written into every object this service makes.
MANUFACTURER = "OncoStruct"

SOP_CLASS, SOP_INSTANCE, MODALITY_TAG, MANUFACTURER_TAG = "00080016", "00080018", "00080060", "00080070"
ROWS, COLUMNS, PIXEL_DATA = "00280010", "00280011", "7FE00010"
ORIENTATION, POSITION, SPACING, THICKNESS = "00200037", "00200032", "00280030", "00180050"
INSTANCE_NUMBER, PATIENT_ID, BODY_PART = "00200013", "00100020", "00180015"
FLOAT_PIXELS = ("7FE00008", "7FE00009")


@dataclass(frozen=True)
class SeriesPlan:
    """A series that passed the checks, and what the job needs to know before fetching pixels.

    Attributes
    ----------
    modality
        ``CT`` or ``MR``.
    rows, columns, slices
        The grid.
    patient_id
        Patient ID (0010,0020), for the ROI proposals' subject.
    """

    modality: Modality
    rows: int
    columns: int
    slices: int
    patient_id: str | None


def _classes(metadata: list[dict[str, Any]]) -> set[str]:
    return {str(first_value(item, SOP_CLASS, "")) for item in metadata}


def is_own_result(metadata: list[dict[str, Any]]) -> bool:
    """True if the series is one this service made (its Manufacturer), whatever its SOP Class."""
    return any(first_value(item, MANUFACTURER_TAG) == MANUFACTURER for item in metadata)


def check_series(metadata: list[dict[str, Any]], series_uid: str, modalities: tuple[str, ...]) -> SeriesPlan:
    """Check a series' WADO-RS metadata; raise :class:`Unprocessable` with the reason if it cannot be analysed."""
    if not metadata:
        raise Unprocessable(f"Series {series_uid} is not in the imaging service.")
    if is_own_result(metadata):
        raise Unprocessable(
            f"Series {series_uid} is a result of this service ({MANUFACTURER}); results are never analysed."
        )
    classes = _classes(metadata)
    foreign = sorted(classes - IMAGE_SOP_CLASSES.keys())
    if foreign:
        names = ", ".join(f"{KNOWN_NON_IMAGE_CLASSES.get(uid, 'SOP Class')} ({uid})" for uid in foreign)
        raise Unprocessable(
            f"Series {series_uid} holds {names} instances; the model analyses single-frame "
            f"{' and '.join(IMAGE_SOP_CLASSES.values())} series only."
        )
    found = sorted({str(first_value(item, MODALITY_TAG, "")) for item in metadata})
    if len(found) != 1 or found[0] not in modalities:
        raise Unprocessable(
            f"Series {series_uid} has modality {'/'.join(found) or 'none'}; "
            f"this service analyses {', '.join(modalities)}."
        )
    missing = [item for item in metadata if PIXEL_DATA not in item and not any(tag in item for tag in FLOAT_PIXELS)]
    if missing:
        raise Unprocessable(
            f"Series {series_uid}: {len(missing)} of {len(metadata)} instances have no Pixel Data (7FE0,0010)."
        )
    grids = sorted({(int(first_value(item, ROWS, 0)), int(first_value(item, COLUMNS, 0))) for item in metadata})
    if len(grids) != 1 or 0 in grids[0]:
        raise Unprocessable(f"Series {series_uid} mixes image sizes {grids} (rows, columns); one grid is needed.")
    orientations = [
        np.asarray(item.get(ORIENTATION, {}).get("Value") or [1, 0, 0, 0, 1, 0], dtype=np.float64) for item in metadata
    ]
    if any(o.shape != (6,) for o in orientations) or any(
        np.abs(o - orientations[0]).max() > 1e-3 for o in orientations
    ):
        raise Unprocessable(f"Series {series_uid} mixes image orientations (0020,0037); one orientation is needed.")
    modality: Modality = "CT" if found[0] == "CT" else "MR"
    patient = first_value(metadata[0], PATIENT_ID)
    return SeriesPlan(
        modality=modality,
        rows=grids[0][0],
        columns=grids[0][1],
        slices=len(metadata),
        patient_id=str(patient) if patient else None,
    )


@dataclass(frozen=True)
class SourceVolume:
    """The series' pixel data as a volume, with its datasets in the same order.

    Attributes
    ----------
    voxels
        ``(z, y, x)`` float32, stored values rescaled (HU for CT).
    datasets
        The instances ordered along the slice normal (first is ``voxels[0]``).
    spacing_mm
        ``(dz, dy, dx)``.
    """

    voxels: FloatArray
    datasets: list[pydicom.Dataset]
    spacing_mm: tuple[float, float, float]


def _position(dataset: pydicom.Dataset) -> float:
    orientation = np.asarray(dataset.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    origin = dataset.get("ImagePositionPatient")
    if origin is None:
        return float(dataset.get("InstanceNumber", 0) or 0)
    return float(np.asarray(origin, dtype=np.float64) @ normal)


def load_volume(paths: list[Path], plan: SeriesPlan, series_uid: str) -> SourceVolume:
    """Read retrieved instances into a volume ordered along the slice normal (PS3.3 C.7.6.2.1.1).

    Raises :class:`Unprocessable` if an instance's pixel data cannot be decoded or its grid differs.
    """
    datasets: list[pydicom.Dataset] = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
            raise Unprocessable(f"Series {series_uid}: an instance is not readable DICOM ({exc}).") from None
    datasets.sort(key=_position)
    planes = []
    for dataset in datasets:
        try:
            pixels = dataset.pixel_array
        except Exception as exc:  # pydicom raises many types for undecodable pixel data
            raise Unprocessable(
                f"Series {series_uid}: the pixel data of instance {dataset.get('SOPInstanceUID')} "
                f"cannot be decoded ({type(exc).__name__}: {exc})."
            ) from None
        if pixels.shape != (plan.rows, plan.columns):
            raise Unprocessable(
                f"Series {series_uid}: instance {dataset.get('SOPInstanceUID')} has pixel shape "
                f"{pixels.shape}, not one {plan.rows}x{plan.columns} frame."
            )
        slope = float(dataset.get("RescaleSlope", 1) or 1)
        planes.append(pixels.astype(np.float32) * slope + float(dataset.get("RescaleIntercept", 0) or 0))
    positions = [_position(dataset) for dataset in datasets]
    gaps = np.diff(positions)
    dz = float(np.median(np.abs(gaps))) if len(gaps) else float(datasets[0].get("SliceThickness", 1) or 1)
    dy, dx = (float(v) for v in datasets[0].get("PixelSpacing", [1, 1]))
    return SourceVolume(voxels=np.stack(planes).astype(np.float32), datasets=datasets, spacing_mm=(dz or 1.0, dy, dx))
