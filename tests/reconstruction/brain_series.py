"""Real-anatomy MR series for job tests: slices of nilearn's MNI152 template as MR Image Storage instances.

An optional synthetic lesion (a bright sphere inside the brain) gives the job something to find,
with its voxels known.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage

from oncostruct_reconstruction.model.volumes import mni152_volume
from tests.imaging.factory import ct_dataset, new_uid

SPACING_MM = 2.0


@cache
def _template() -> npt.NDArray[np.float32]:
    return mni152_volume(2).voxels


@dataclass
class BrainSeries:
    """A stored-to-be series and where its lesion is (``(z, y, x)`` boolean, same order as ``datasets``)."""

    study_uid: str
    series_uid: str
    datasets: list[Dataset]
    lesion: npt.NDArray[np.bool_]


def brain_series(
    *, slices: tuple[int, int] = (34, 58), lesion: bool = True, patient_id: str = "RECON-1", modality: str = "MR"
) -> BrainSeries:
    """Axial MNI152 slices ``slices[0]:slices[1]`` (2 mm) as one MR series; a 12 mm bright sphere if ``lesion``."""
    volume = _template()[slices[0] : slices[1]].copy()
    z, y, x = np.indices(volume.shape)
    centre = (volume.shape[0] // 2, 40, 55)
    sphere = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= 8.0**2
    inside = sphere & (volume > 0.3 * volume.max())
    if lesion:
        volume[inside] = volume.max() * 1.2
    stored = np.clip(volume / volume.max() * 2500, 0, 4095).astype(np.uint16)
    study, series, frame_of_reference = new_uid(), new_uid(), new_uid()
    datasets = []
    for index, plane in enumerate(stored):
        ds = ct_dataset(
            study,
            series,
            index + 1,
            size=plane.shape[1],
            patient_id=patient_id,
            Modality=modality,
            SOPClassUID=MRImageStorage,
            Rows=plane.shape[0],
            Columns=plane.shape[1],
            PixelSpacing=[SPACING_MM, SPACING_MM],
            SliceThickness=SPACING_MM,
            ImagePositionPatient=[0.0, 0.0, index * SPACING_MM],
            RescaleIntercept=0,
            BodyPartExamined="BRAIN",
            SeriesDescription="T1 axial",
            FrameOfReferenceUID=frame_of_reference,
        )
        del ds.WindowCenter, ds.WindowWidth
        ds.PixelData = plane.tobytes()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        datasets.append(ds)
    return BrainSeries(study, series, datasets, inside if lesion else np.zeros_like(inside))
