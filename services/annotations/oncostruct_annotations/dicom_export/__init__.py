"""Standard DICOM output and input of annotations: SEG (PS3.3 §A.51) and TID 1500 SR (PS3.16).

Pure builders and readers over :class:`RoiInput` / :class:`SeriesLabelInput`; nothing here
touches the database or the network. Typical export of one series::

    rois, labels = resolve_annotations(schema, annotations, tracking_scope=f"{project_id}/{patient_id}")
    seg = build_segmentation(source_images, rois)
    sr = build_measurement_report(source_images, rois, labels, seg, observer=caller)
"""

from .codes import DEFAULT_DESIGNATORS, DEFAULT_SYSTEMS, designator_of, tracking_uid
from .grid import SourceGrid, rasterize_polygon
from .inputs import (
    AnnotationLike,
    LabelValue,
    ProbabilityMap,
    RoiInput,
    SeriesLabelInput,
    annotation_fields,
    mask_geometry,
    mask_voxels,
    resolve_annotations,
)
from .seg import build_segmentation, read_segmentation
from .sr import SERIES_LABELS, ImportedReport, build_measurement_report, read_measurement_report

__all__ = [
    "DEFAULT_DESIGNATORS",
    "DEFAULT_SYSTEMS",
    "SERIES_LABELS",
    "AnnotationLike",
    "ImportedReport",
    "LabelValue",
    "ProbabilityMap",
    "RoiInput",
    "SeriesLabelInput",
    "SourceGrid",
    "annotation_fields",
    "build_measurement_report",
    "build_segmentation",
    "designator_of",
    "mask_geometry",
    "mask_voxels",
    "rasterize_polygon",
    "read_measurement_report",
    "read_segmentation",
    "resolve_annotations",
    "tracking_uid",
]
