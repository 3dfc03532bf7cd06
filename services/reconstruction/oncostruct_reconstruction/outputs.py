"""The DICOM results of a job, made with highdicom on the source series' grid.

- A **Parametric Map** (PS3.3 §A.75) of the anomaly map: 12-bit values (0–4095) in 16-bit
  words with a Real World Value Mapping (slope) back to the map's unitless values, one
  frame per source slice, referencing the source images; JPEG-LS lossless by default
  (a tenth of the uncompressed size for a 300-slice MR series), or uncompressed for
  archives and viewers without JPEG-LS.
- A **Segmentation** (PS3.3 §A.51), BINARY, one segment per ROI proposal (segment k is
  proposal k, with its tracking UID), made by an AUTOMATIC algorithm identified by the
  model name and version.

UIDs are derived from the job id and the dates from the job's creation, so a retried
job makes the very same objects and storing them again is harmless.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from oncostruct_shared.errors import Unprocessable

from . import __version__
from .config import MapEncoding
from .model.regions import Region
from .series import MANUFACTURER

#: The map has no unit (UCUM "1", PS3.16 CID 7181 style unit).
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
#: Stored levels of the map: 1/4095 of its peak is far below any threshold's resolution, and 12 bits of a
#: smooth map compress to half the size 16 bits do (JPEG-LS: 4.0 MB against 7.4 MB for 300 × 256²).
MAP_LEVELS = 4095
#: Transfer syntax of the Parametric Map per encoding: JPEG-LS lossless, or Explicit VR Little Endian.
MAP_TRANSFER_SYNTAXES: dict[str, UID] = {"jpeg-ls": JPEGLSLossless, "none": ExplicitVRLittleEndian}


@dataclass(frozen=True)
class ResultIdentity:
    """Who made a result and which job it belongs to."""

    job_id: uuid.UUID
    model_name: str
    model_version: str
    created_at: datetime

    def uid(self, what: str) -> str:
        """A UID that is always the same for this job and ``what`` (PS3.5 §9, 2.25-free derived root)."""
        return str(generate_uid(entropy_srcs=[str(self.job_id), what]))

    @property
    def model(self) -> str:
        return f"{self.model_name}@{self.model_version}"

    def equipment(self, what: str, series_number: int) -> dict[str, Any]:
        """The identifying and equipment arguments of a highdicom object made for this job."""
        return {
            "series_instance_uid": self.uid(f"{what}-series"),
            "series_number": series_number,
            "sop_instance_uid": self.uid(what),
            "instance_number": 1,
            "manufacturer": MANUFACTURER,
            "manufacturer_model_name": self.model[:64],
            "software_versions": __version__,
            "device_serial_number": self.model_version,
        }


def _stamp(dataset: pydicom.Dataset, when: datetime, dimensions_uid: str) -> None:
    """Make the object the same on every run: dates from the job, and the dimension organization UID
    (highdicom draws a random one) derived from the job too."""
    for item in dataset.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = dimensions_uid
    for item in dataset.get("DimensionIndexSequence", []):
        if "DimensionOrganizationUID" in item:
            item.DimensionOrganizationUID = dimensions_uid
    for item in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S.%f")
    for prefix in ("Content", "Series", "InstanceCreation"):
        if f"{prefix}Date" in dataset:
            setattr(dataset, f"{prefix}Date", when.strftime("%Y%m%d"))
            setattr(dataset, f"{prefix}Time", when.strftime("%H%M%S.%f"))


def parametric_map(
    sources: list[pydicom.Dataset],
    anomaly: npt.NDArray[np.float32],
    identity: ResultIdentity,
    threshold: float,
    encoding: MapEncoding = "jpeg-ls",
) -> pydicom.Dataset:
    """The anomaly map as a Parametric Map on the source grid (``anomaly`` is ``(z, y, x)`` in source order),
    its pixel data encoded as ``encoding`` says (lossless either way)."""
    peak = max(float(anomaly.max()), 1e-6)
    slope = peak / MAP_LEVELS
    stored = np.clip(np.rint(anomaly / slope), 0, MAP_LEVELS).astype(np.uint16)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ANOMALY",
        lut_explanation=f"Dissimilarity to nearest normal ({identity.model})"[:64],
        unit=NO_UNITS,
        value_range=(0, MAP_LEVELS),
        slope=slope,
        intercept=0.0,
    )
    try:
        result = hd.pm.ParametricMap(
            source_images=sources,
            pixel_array=stored,
            **identity.equipment("parametric-map", 9001),
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[
                hd.VOILUTTransformation(window_center=threshold / slope, window_width=2 * threshold / slope)
            ],
            transfer_syntax_uid=MAP_TRANSFER_SYNTAXES[encoding],
            content_label="ANOMALY_MAP",
            content_description=f"Anomaly map by {identity.model}",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise Unprocessable(f"The source series cannot carry a Parametric Map ({exc}).") from None
    result.SeriesDescription = f"Anomaly map ({identity.model})"
    if "Laterality" not in result and not any("ImageLaterality" in source for source in sources):
        # General Series: Type 2C, required (empty when unknown) unless laterality is sent per image or frame.
        result.Laterality = None
    _stamp(result, identity.created_at, identity.uid("parametric-map-dimensions"))
    return result


def segmentation(
    sources: list[pydicom.Dataset], regions: list[Region], identity: ResultIdentity
) -> pydicom.Dataset | None:
    """A BINARY SEG with one segment per region (None when there is no region)."""
    if not regions:
        return None
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    labels = np.zeros((len(sources), rows, columns), dtype=np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=identity.model_name, family=codes.DCM.ArtificialIntelligence, version=identity.model_version
    )
    descriptions = []
    for number, region in enumerate(regions, start=1):
        z0, z1, y0, y1, x0, x1 = region.box
        labels[z0:z1, y0:y1, x0:x1][region.mask] = number
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=f"Proposal {number}",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Lesion,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=identity.uid(f"region-{number}"),
                tracking_id=f"proposal-{number}",
            )
        )
    try:
        result = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=labels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            **identity.equipment("segmentation", 9002),
            content_label="ANOMALIES",
            content_description=f"Regions above threshold by {identity.model}",
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise Unprocessable(f"The source series cannot carry a Segmentation ({exc}).") from None
    result.SeriesDescription = f"Anomaly regions ({identity.model})"
    _stamp(result, identity.created_at, identity.uid("segmentation-dimensions"))
    return result
