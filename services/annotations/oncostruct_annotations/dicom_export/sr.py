"""DICOM SR Measurement Report (PS3.16 TID 1500) of one series' annotations, and its import.

Content tree (Comprehensive 3D SR, PS3.3 §A.35.13):

- TID 1500 Measurement Report with the observer (TID 1002 with TID 1003 person or TID 1004 device).
- One TID 1410 Planar ROI group per polygon: Image Region (SCOORD closed POLYLINE on the
  source frame, PS3.3 §C.18.6.1.2), Tracking Identifier and UID (the SEG segment's), Finding (the class value's
  concept), Finding Category, qualitative evaluations (category, categories and boolean
  attributes), numeric attributes with UCUM units and the area in mm² from Pixel Spacing.
- One TID 1411 Volumetric ROI group per contours/mask ROI: the SEG segment (Referenced
  Segment) when a SEG is given, else the contours as Image Regions; volume in mm³ when
  the series is a regular stack.
- One TID 1501 group per line (Length in mm, INFERRED FROM SCOORD POLYLINE, the TID 300
  pattern) and per point (numeric attributes inferred from SCOORD POINT).
- One TID 1501 group "Series labels" with the series-level labels as qualitative evaluations.

Free-text values have no coded slot in these templates; they are added to their group as
TEXT content items named by the label's concept (the Comprehensive 3D SR relationship
constraints, PS3.3 §A.35.13, allow CONTAINER CONTAINS TEXT).

Polygons are carried as drawn (SCOORD), not rasterised; SEG masks follow the pixel-centre
rule of :mod:`.grid`, and areas and volumes are computed as documented per function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from oncostruct_shared.errors import Unprocessable

from ..geometry import Contours, Point, Polygon, Polyline, images_of
from ..vocabulary import Concept, Level, SchemaDefinition, ValueType
from .codes import (
    AREA,
    DEFAULT_DESIGNATORS,
    DEFAULT_SYSTEMS,
    IMAGING_PROCEDURE,
    LENGTH,
    VOLUME,
    check_systems,
    coded,
    concept_of,
    declare_private_schemes,
    device_uid,
    series_tracking_uid,
    systems_declared_in,
    unit_code,
)
from .grid import SourceGrid, line_length, polygon_area
from .inputs import LabelValue, LabelValueData, RoiGeometry, RoiInput, model_author
from .schema_match import RoiClass, coded_value, label_named, match_roi_class, merge_values
from .seg import read_segmentation, segment_frames

#: Tracking Identifier of the TID 1501 group that holds the series-level labels.
SERIES_LABELS = "Series labels"

_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS
# Concept names of CODE items in a measurement group that are template structure, not qualitative evaluations.
_STRUCTURAL = {
    ("DCM", "121071"),  # Finding
    ("SCT", "363698007"),  # Finding Site
    ("SRT", "G-C0E3"),  # Finding Site (SNOMED RT, older writers)
    ("SCT", "276214006"),  # Finding category
    ("SCT", "370129005"),  # Measurement Method
    ("DCM", "130400"),  # Geometric purpose of region
    ("DCM", "121058"),  # Procedure reported
}
# TEXT items of the templates themselves: Tracking Identifier, Algorithm Name/Version/Parameters (TID 4019).
_TEMPLATE_TEXTS = {("DCM", "112039"), ("DCM", "111001"), ("DCM", "111003"), ("DCM", "111002")}
_DERIVED = [AREA, LENGTH, VOLUME]  # measurements we compute from geometry; recomputed, not imported


def _concepts(rois: Sequence[RoiInput], labels: Sequence[LabelValue], extra: Sequence[Concept]) -> list[Concept]:
    found = list(extra)
    for item in [*labels, *(a for roi in rois for a in roi.attributes)]:
        found += [item.concept, *item.value_concepts]
    for roi in rois:
        found += [roi.finding, roi.category]
    return found


def build_measurement_report(
    source_images: Sequence[Dataset],
    rois: Sequence[RoiInput],
    series_labels: Sequence[LabelValue] = (),
    seg: hd.seg.Segmentation | None = None,
    *,
    observer: str,
    observer_is_model: bool | None = None,
    procedure_reported: Concept = IMAGING_PROCEDURE,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 9002,
    instance_number: int = 1,
    series_description: str = "OncoStruct measurement report",
    manufacturer: str = "OncoStruct",
    institution_name: str | None = None,
    image_library: bool = True,
    designators: Mapping[str, str] = DEFAULT_DESIGNATORS,
) -> hd.sr.Comprehensive3DSR:
    """Build a TID 1500 Measurement Report of the ROIs and series labels of one series.

    Parameters
    ----------
    source_images
        The series' images (metadata suffices); they are the SR's evidence (SR Document General
        Module, PS3.3 §C.17.2: Current Requested Procedure Evidence Sequence) and its Image Library (TID 1600).
    rois
        ROIs of the series (see the module text for the group each geometry becomes).
    series_labels
        Series-level labels, reported in one TID 1501 group with Tracking Identifier
        :data:`SERIES_LABELS`.
    seg
        The SEG of the same ROIs (:func:`.seg.build_segmentation`); volumetric ROIs then
        reference their segment by Tracking UID (TID 1411 "Referenced Segment") and the SEG
        joins the evidence. Required when a ROI is a mask.
    observer
        Who reports: a person's name, or a model as ``name@version`` (TID 1003 / TID 1004).
    observer_is_model
        Whether ``observer`` is a device; by default when it reads as ``name@version``.
    procedure_reported
        TID 1500 "Procedure reported"; "Imaging procedure" by default.
    series_instance_uid, sop_instance_uid, series_number, instance_number, series_description
        Identity of the new object (new UIDs by default).
    manufacturer, institution_name
        General Equipment module values.
    image_library
        Whether to write the TID 1600 Image Library with an entry per image the groups
        reference. highdicom builds each entry slowly (about 30 ms per image), so a report
        over 200 slices takes seconds with it and about half a second without.
    designators
        System URI → Coding Scheme Designator (see :mod:`.codes`).

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The report, COMPLETE and UNVERIFIED (PS3.3 §C.17.2: a person verifies it in review).

    Raises
    ------
    Unprocessable
        If there is nothing to report, a geometry lies off the series, a mask ROI has no
        SEG segment, or a code system has no designator.
    """
    if not rois and not series_labels:
        raise Unprocessable("Nothing to report: no ROI and no series label.")
    grid = SourceGrid.of(source_images)
    concepts = _concepts(rois, series_labels, [procedure_reported])
    check_systems(concepts, designators)
    segments = _segments_by_tracking_uid(seg) if seg is not None else {}
    groups: list[Any] = [_roi_group(roi, grid, seg, segments, designators) for roi in rois]
    if series_labels:
        groups.append(_series_group(str(source_images[0].SeriesInstanceUID), series_labels, designators))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(observer, observer_is_model),
        procedure_reported=coded(procedure_reported, designators),
        imaging_measurements=groups,
        referenced_images=_referenced_images(source_images, rois) if image_library else None,
    )
    evidence = [*source_images, *([seg] if seg is not None else [])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        institution_name=institution_name,
        is_complete=True,
        series_description=series_description,
    )
    declare_private_schemes(sr, concepts, designators)
    return sr


def _referenced_images(source_images: Sequence[Dataset], rois: Sequence[RoiInput]) -> list[Dataset]:
    used: set[str] = set()
    for roi in rois:
        used.update(uid for uid, _ in images_of(roi.geometry))
        if roi.probabilities is not None:
            used.update(roi.probabilities.sop_instance_uids)
    return [ds for ds in source_images if str(ds.SOPInstanceUID) in used]


def _observation_context(observer: str, observer_is_model: bool | None) -> hd.sr.ObservationContext:
    model = model_author(observer)
    if observer_is_model if observer_is_model is not None else model is not None:
        name, version = model or (observer, "")
        device = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(observer), name=name[:64], model_name=(version or name)[:64]
        )
        context = hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
        return hd.sr.ObservationContext(observer_device_context=context)
    # Person Observer Name is PN: a one-component subject ("dr-ana") gets a trailing "^" so that it reads
    # as a family name on purpose (PS3.5 §6.2.1.2), which also keeps highdicom from warning.
    name = observer if "^" in observer else f"{observer}^"
    person = hd.sr.PersonObserverIdentifyingAttributes(name=name[:64])
    context = hd.sr.ObserverContext(observer_type=codes.DCM.Person, observer_identifying_attributes=person)
    return hd.sr.ObservationContext(observer_person_context=context)


def _segments_by_tracking_uid(seg: hd.seg.Segmentation) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for item in seg.SegmentSequence:
        if "TrackingUID" in item:
            found.setdefault(str(item.TrackingUID), []).append(int(item.SegmentNumber))
    return found


def _source(grid: SourceGrid, sop_instance_uid: str, frame: int, where: str) -> hd.sr.SourceImageForRegion:
    grid.index(sop_instance_uid, frame, where)
    return hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=grid.sop_class_uids[sop_instance_uid],
        referenced_sop_instance_uid=sop_instance_uid,
        referenced_frame_numbers=grid.frame_numbers(frame),
    )


def _closed(points: Sequence[tuple[float, float]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    # 2D SCOORD has no POLYGON: a closed POLYLINE, first vertex repeated last, is one (PS3.3 §C.18.6.1.2).
    vertices = list(points) if tuple(points[0]) == tuple(points[-1]) else [*points, points[0]]
    return np.asarray(vertices, dtype=np.float32)


def _region(polygon: Polygon, grid: SourceGrid, where: str) -> hd.sr.ImageRegion:
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=_closed(polygon.points),
        source_image=_source(grid, polygon.sop_instance_uid, polygon.frame, where),
    )


def _algorithm(roi: RoiInput) -> hd.sr.AlgorithmIdentification | None:
    # TID 4019 Algorithm Identification in the group: the model that drew the ROI.
    if not roi.author_is_model:
        return None
    name, version = model_author(roi.author) or (roi.author, "unknown")
    return hd.sr.AlgorithmIdentification(name=name[:64], version=version[:64])


def _evaluations(values: Sequence[LabelValue], designators: Mapping[str, str]) -> list[hd.sr.QualitativeEvaluation]:
    return [
        hd.sr.QualitativeEvaluation(name=coded(value.concept, designators), value=coded(concept, designators))
        for value in values
        for concept in value.value_concepts
    ]


def _numbers(
    values: Sequence[LabelValue], designators: Mapping[str, str], coordinates: hd.sr.CoordinatesForMeasurement | None
) -> list[hd.sr.Measurement]:
    return [
        hd.sr.Measurement(
            name=coded(value.concept, designators),
            value=float(value.value),  # type: ignore[arg-type]  # number labels hold floats (label_value)
            unit=unit_code(value.unit or "1"),
            referenced_coordinates=[coordinates] if coordinates is not None else None,
        )
        for value in values
        if value.value_type == ValueType.number
    ]


def _add_texts(group: Sequence[Dataset], values: Sequence[LabelValue], designators: Mapping[str, str]) -> None:
    for value in values:
        if value.value_type == ValueType.text:
            item = hd.sr.TextContentItem(
                name=coded(value.concept, designators), value=str(value.value)[:10000], relationship_type=_CONTAINS
            )
            group[0].ContentSequence.append(item)


def _measure(
    name: Concept, value: float, unit: str, designators: Mapping[str, str], **kwargs: Any
) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=coded(name, designators), value=value, unit=unit_code(unit), **kwargs)


def _roi_group(
    roi: RoiInput,
    grid: SourceGrid,
    seg: hd.seg.Segmentation | None,
    segments: dict[str, list[int]],
    designators: Mapping[str, str],
) -> Any:
    where = f"ROI {roi.annotation_id or roi.tracking_id or roi.display_name}"
    common: dict[str, Any] = {
        "tracking_identifier": hd.sr.TrackingIdentifier(
            uid=roi.tracking_uid, identifier=(roi.tracking_id or str(roi.annotation_id or roi.display_name))[:64]
        ),
        "finding_type": coded(roi.finding, designators),
        "finding_category": coded(roi.category, designators),
        "algorithm_id": _algorithm(roi),
        "qualitative_evaluations": _evaluations(roi.attributes, designators),
    }
    geometry = roi.geometry
    group: Any
    if isinstance(geometry, Polygon) and roi.probabilities is None:
        area = polygon_area(
            geometry.points, grid.spacings[grid.index(geometry.sop_instance_uid, geometry.frame, where)]
        )
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=_region(geometry, grid, where),
            measurements=[_measure(AREA, area, "mm2", designators), *_numbers(roi.attributes, designators, None)],
            **common,
        )
    elif isinstance(geometry, Polyline | Point):
        graphic = hd.sr.GraphicTypeValues.POLYLINE if isinstance(geometry, Polyline) else hd.sr.GraphicTypeValues.POINT
        points = geometry.points if isinstance(geometry, Polyline) else [geometry.point]
        coordinates = hd.sr.CoordinatesForMeasurement(
            graphic_type=graphic,
            graphic_data=np.asarray(points, dtype=np.float32),
            source_image=_source(grid, geometry.sop_instance_uid, geometry.frame, where),
        )
        measurements = _numbers(roi.attributes, designators, coordinates)
        if isinstance(geometry, Polyline):
            spacing = grid.spacings[grid.index(geometry.sop_instance_uid, geometry.frame, where)]
            length = line_length(geometry.points, spacing)
            measurements.insert(
                0, _measure(LENGTH, length, "mm", designators, referenced_coordinates=[coordinates])
            )  # TID 300 row "INFERRED FROM SCOORD"
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            measurements=measurements,
            source_images=[
                hd.sr.SourceImageForMeasurementGroup(
                    grid.sop_class_uids[geometry.sop_instance_uid],
                    geometry.sop_instance_uid,
                    grid.frame_numbers(geometry.frame),
                )
            ],
            **common,
        )
    else:
        group = _volumetric_group(roi, grid, seg, segments, designators, where, common)
    _add_texts(group, roi.attributes, designators)
    return group


def _volumetric_group(
    roi: RoiInput,
    grid: SourceGrid,
    seg: hd.seg.Segmentation | None,
    segments: dict[str, list[int]],
    designators: Mapping[str, str],
    where: str,
    common: dict[str, Any],
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    frames = segment_frames(roi, grid)
    measurements = _numbers(roi.attributes, designators, None)
    # Volume: voxels of the rasterised ROI (probability >= 0.5) × pixel area × distance between planes.
    if grid.slice_spacing is not None:
        voxels = sum(
            float(np.count_nonzero(plane >= 0.5)) * grid.spacings[i][0] * grid.spacings[i][1]
            for i, plane in frames.items()
        )
        measurements.insert(0, _measure(VOLUME, voxels * grid.slice_spacing, "mm3", designators))
    if seg is not None:
        numbers = segments.get(roi.tracking_uid)
        if not numbers:
            raise Unprocessable(f"{where}: the SEG has no segment with Tracking UID {roi.tracking_uid}.")
        number = numbers.pop(0) if len(numbers) > 1 else numbers[0]
        reference = hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID),
            sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(str(grid_series(seg))),
        )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=reference, measurements=measurements, **common
        )
    if not isinstance(roi.geometry, Contours):
        raise Unprocessable(f"{where}: a mask is reported by its SEG segment (TID 1411); build the SEG first.")
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        referenced_regions=[_region(polygon, grid, where) for polygon in roi.geometry.polygons],
        measurements=measurements,
        **common,
    )


def grid_series(seg: Dataset) -> UID:
    """The Series Instance UID of the images a SEG was derived from (Referenced Series Sequence)."""
    return UID(str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))


def _series_group(
    series_instance_uid: str, labels: Sequence[LabelValue], designators: Mapping[str, str]
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=series_tracking_uid(series_instance_uid), identifier=SERIES_LABELS
        ),
        qualitative_evaluations=_evaluations(labels, designators),
        measurements=_numbers(labels, designators, None),
    )
    _add_texts(group, labels, designators)
    return group


# --- import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedReport:
    """What a TID 1500 report holds in schema terms; ``skipped`` says what could not become an annotation."""

    rois: list[RoiInput]
    series_labels: list[LabelValue]
    skipped: list[str] = field(default_factory=list)


def read_measurement_report(
    dataset: Dataset,
    schema: SchemaDefinition,
    *,
    segmentation: Dataset | None = None,
    default_class: tuple[str, str] | None = None,
    systems: Mapping[str, str] = DEFAULT_SYSTEMS,
) -> ImportedReport:
    """Turn a TID 1500 Measurement Report made by any tool (OHIF, highdicom …) into annotation inputs.

    Parameters
    ----------
    dataset
        The SR (Enhanced, Comprehensive or Comprehensive 3D SR with a TID 1500 root).
    schema
        The schema to map the concepts to, by system and code.
    segmentation
        The SEG that TID 1411 groups reference; their ROI takes the segment's mask.
    default_class
        ``(label, value)`` for groups without a Finding (OHIF measurements often have
        none); without it such groups are an error.
    systems
        Designator → system URI (the file's declared private schemes are added).

    Returns
    -------
    ImportedReport
        ROIs (polygons from Image Regions or closed SCOORDs, lines from Length
        measurements, masks from SEG segments), the "Series labels" group as series
        labels, and the groups that could not be placed.

    Raises
    ------
    Unprocessable
        Listing every finding and qualitative evaluation the schema does not know.
    """
    root = dataset
    if "ContentTemplateSequence" not in root or root.ContentTemplateSequence[0].TemplateIdentifier != "1500":
        raise Unprocessable("Not a TID 1500 Measurement Report (PS3.16): the root has no template 1500.")
    systems = systems_declared_in(dataset, systems)
    report = hd.sr.MeasurementReport.from_sequence([root], copy=True)
    observer = _observer_name(report)
    masks = _segment_masks(segmentation, schema) if segmentation is not None else {}
    importer = _Importer(schema, systems, default_class, observer)
    for planar in report.get_planar_roi_measurement_groups():
        importer.planar(planar)
    for volumetric in report.get_volumetric_roi_measurement_groups():
        importer.volumetric(volumetric, masks)
    for image in report.get_image_measurement_groups():
        importer.image(image)
    if importer.unknown:
        raise Unprocessable("Concepts not in the schema: " + "; ".join(dict.fromkeys(importer.unknown)))
    return ImportedReport(importer.rois, importer.series, importer.skipped)


def _observer_name(report: hd.sr.MeasurementReport) -> str:
    for context in report.get_observer_contexts():
        attributes = context.observer_identifying_attributes
        name = getattr(attributes, "name", None)
        if name:
            return str(name).rstrip("^")
    return "unknown"


def _segment_masks(segmentation: Dataset, schema: SchemaDefinition) -> dict[tuple[str, int], RoiGeometry]:
    seg = hd.seg.Segmentation.from_dataset(segmentation, copy=True)
    rois = read_segmentation(seg, schema)
    return {
        (str(seg.SOPInstanceUID), number): roi.geometry for number, roi in zip(seg.segment_numbers, rois, strict=True)
    }


def _key(concept: Concept) -> str:
    return f"{concept.system}|{concept.code} ({concept.display})"


class _Importer:
    def __init__(
        self, schema: SchemaDefinition, systems: Mapping[str, str], default_class: tuple[str, str] | None, observer: str
    ) -> None:
        self.schema, self.systems, self.default_class, self.observer = schema, systems, default_class, observer
        self.rois: list[RoiInput] = []
        self.series: list[LabelValue] = []
        self.skipped: list[str] = []
        self.unknown: list[str] = []

    def concept(self, code: Any) -> Concept:
        return concept_of(code, self.systems)

    def roi_class(self, group: Any, where: str) -> RoiClass | None:
        finding = group.finding_type
        if finding is None:
            if self.default_class is None:
                self.unknown.append(f"{where}: no Finding and no default class")
                return None
            label_key, value_key = self.default_class
            label = self.schema.label(label_key)
            value = next((v for v in (label.values if label else []) if v.key == value_key), None)
            if label is None or value is None:
                raise Unprocessable(f"Default class {label_key}={value_key} is not an ROI class value of the schema.")
            return RoiClass(label_key, value_key, value.concept)
        concept = self.concept(finding)
        match = match_roi_class(self.schema, concept)
        if match is None:
            self.unknown.append(f"{where}: finding {_key(concept)}")
        return match

    def labels(self, group: Any, level: Level, where: str) -> list[LabelValue]:
        """Qualitative evaluations, numbers and texts of a group as values of the schema's labels."""
        candidates = [
            label for label in self.schema.labels if label.level == level and (level != Level.roi or label.attribute)
        ]
        found: dict[str, list[tuple[LabelValueData, Concept]]] = {}
        for item in group[0].ContentSequence:
            name = self.concept(item.ConceptNameCodeSequence[0])
            designated = (str(item.ConceptNameCodeSequence[0].CodingSchemeDesignator), name.code)
            if item.ValueType not in ("CODE", "NUM", "TEXT") or designated in _STRUCTURAL:
                continue
            label = label_named(candidates, name)
            if item.ValueType == "NUM":
                if label is not None and label.value_type == ValueType.number:
                    number = float(item.MeasuredValueSequence[0].NumericValue)
                    found.setdefault(label.key, []).append((number, name))
                elif not any(name.code == d.code and name.system == d.system for d in _DERIVED):
                    self.skipped.append(f"{where}: measurement {_key(name)} not imported")
                continue
            if item.ValueType == "TEXT":
                if label is not None and label.value_type == ValueType.text:
                    found.setdefault(label.key, []).append((str(item.TextValue), name))
                elif designated not in _TEMPLATE_TEXTS:
                    self.skipped.append(f"{where}: text {_key(name)} not imported")
                continue
            answer = self.concept(item.ConceptCodeSequence[0])
            matched = coded_value(label, answer) if label is not None else None
            if label is None or matched is None:
                self.unknown.append(f"{where}: evaluation {_key(name)} = {_key(answer)}")
                continue
            found.setdefault(label.key, []).append(matched)
        result = []
        for key, values in found.items():
            label = self.schema.label(key)
            assert label is not None
            result.append(merge_values(label, values))
        return result

    def author(self, group: Any) -> tuple[str, bool]:
        texts = {
            (str(item.ConceptNameCodeSequence[0].CodeValue)): str(item.TextValue)
            for item in group[0].ContentSequence
            if item.ValueType == "TEXT" and "CodeValue" in item.ConceptNameCodeSequence[0]
        }
        if "111001" in texts:  # Algorithm Name / Algorithm Version (TID 4019)
            return f"{texts['111001']}@{texts.get('111003', 'unknown')}", True
        return self.observer, False

    def add(self, group: Any, geometry: RoiGeometry, where: str) -> None:
        match = self.roi_class(group, where)
        attributes = self.labels(group, Level.roi, where)
        if match is None:
            return
        author, is_model = self.author(group)
        self.rois.append(
            RoiInput(
                label=match.label,
                value=match.value,
                finding=match.concept,
                geometry=geometry,
                tracking_uid=str(group.tracking_uid or hd.UID()),
                tracking_id=group.tracking_identifier,
                author=author,
                author_is_model=is_model,
                attributes=tuple(attributes),
            )
        )

    def planar(self, group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> None:
        where = f"group {group.tracking_identifier or group.tracking_uid}"
        region = group.roi
        if not isinstance(region, hd.sr.ImageRegion):
            self.skipped.append(
                f"{where}: planar ROI without a 2D image region (segmentation frame or 3D) not imported"
            )
            return
        geometry = _geometry(region, where)
        if geometry is None:
            self.skipped.append(f"{where}: {region.graphic_type.value} region not imported")
            return
        self.add(group, geometry, where)

    def volumetric(
        self,
        group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations,
        masks: dict[tuple[str, int], RoiGeometry],
    ) -> None:
        where = f"group {group.tracking_identifier or group.tracking_uid}"
        segment = group.referenced_segment
        if segment is not None:
            numbers = segment.referenced_segment_numbers or [0]
            key = (str(segment.referenced_sop_instance_uid), int(numbers[0]))
            if key not in masks:
                self.skipped.append(f"{where}: references segment {key[1]} of a SEG that was not given")
                return
            self.add(group, masks[key], where)
            return
        regions = group.roi
        polygons = [_geometry(r, where) for r in regions] if isinstance(regions, list) else []
        if not polygons or not all(isinstance(p, Polygon) for p in polygons):
            self.skipped.append(f"{where}: volumetric ROI without a segment or polygons not imported")
            return
        self.add(group, Contours(type="contours", polygons=[p for p in polygons if isinstance(p, Polygon)]), where)

    def image(self, group: hd.sr.MeasurementsAndQualitativeEvaluations) -> None:
        where = f"group {group.tracking_identifier or group.tracking_uid}"
        geometry = None
        for measurement in group.get_measurements():
            for coordinates in measurement.referenced_coordinates or []:
                geometry = geometry or _geometry(coordinates, where)
        if geometry is None and group.finding_type is None:
            self.series.extend(self.labels(group, Level.series, where))
            return
        if geometry is None:
            self.skipped.append(f"{where}: finding without image coordinates not imported")
            return
        self.add(group, geometry, where)


def _geometry(item: Any, where: str) -> RoiGeometry | None:
    """A geometry of an SCOORD item (Image Region or INFERRED FROM coordinates), or None if not representable."""
    source = hd.sr.SourceImageForRegion.from_dataset(item.ContentSequence[0])
    uid = str(source.referenced_sop_instance_uid)
    frames = source.referenced_frame_numbers
    frame = int(frames[0]) if frames else 1
    points = [(float(c), float(r)) for c, r in np.asarray(item.value, dtype=np.float64).reshape(-1, 2)]
    graphic = str(item.graphic_type.value)
    try:
        if graphic == "POINT" and len(points) == 1:
            return Point(type="point", sop_instance_uid=uid, frame=frame, point=points[0])
        closed = len(points) >= 4 and points[0] == points[-1]
        if graphic == "POLYLINE" and closed:
            return Polygon(type="polygon", sop_instance_uid=uid, frame=frame, points=points[:-1])
        if graphic == "POLYLINE" and len(points) == 2:
            return Polyline(type="line", sop_instance_uid=uid, frame=frame, points=points)
    except ValueError as error:
        raise Unprocessable(f"{where}: coordinates do not make a valid geometry ({error}).") from None
    return None
