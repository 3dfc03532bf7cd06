"""DICOM SEG and TID 1500 SR export and import of annotations, checked with highdicom and dciodvfy."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from oncostruct_annotations.dicom_export import (
    SERIES_LABELS,
    ProbabilityMap,
    RoiInput,
    annotation_fields,
    build_measurement_report,
    build_segmentation,
    mask_geometry,
    rasterize_polygon,
    read_measurement_report,
    read_segmentation,
    resolve_annotations,
    tracking_uid,
)
from oncostruct_annotations.schemas import AnnotationCreate
from oncostruct_annotations.vocabulary import DEFAULT_SCHEMA, LOCAL, SNOMED, Concept, SchemaDefinition
from oncostruct_shared.errors import Unprocessable

ROWS, COLUMNS, SLICES = 64, 64, 5
SPACING = (0.8, 0.7)  # PixelSpacing: row spacing, column spacing (mm)
THICKNESS = 2.5
SCHEMA = SchemaDefinition.model_validate(DEFAULT_SCHEMA)
SCOPE = "project-1/PAT-1"

POLYGON = [(10.2, 8.7), (30.4, 11.1), (27.9, 26.3), (12.6, 22.8)]
CONTOUR = [(40.0, 40.0), (52.3, 43.1), (46.5, 57.8)]
LINE = [(5.0, 5.0), (8.0, 9.0)]


# --- test data ------------------------------------------------------------------------------


def ct_series(pixel_data: bool = True) -> list[Dataset]:
    """A synthetic axial CT series with the Image Plane module and one Frame of Reference."""
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    images = []
    for number in range(SLICES):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "PAT-1", "19600101", "F"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study, "20260101", "120000", "1"
        ds.ReferringPhysicianName, ds.AccessionNumber = "", "A1"
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "CT", series, 2
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.Manufacturer, ds.InstanceNumber = "Synthetic", number + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelSpacing, ds.SliceThickness = list(SPACING), THICKNESS
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-25.0, -22.0, number * THICKNESS]
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", ROWS, COLUMNS
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP, ds.AcquisitionNumber = 0, 1, 120, 1
        if pixel_data:
            ds.PixelData = np.full((ROWS, COLUMNS), -1000, dtype=np.int16).tobytes()
        images.append(ds)
    return images


@dataclass
class Row:
    """An annotation as the repository stores it (the fields ``resolve_annotations`` reads)."""

    level: str
    label: str
    value: Any
    geometry: dict[str, Any] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    tracking_id: str | None = None
    author: str = "dr-ana"
    id: uuid.UUID = field(default_factory=uuid.uuid4)


def polygon(uid: str, points: Sequence[tuple[float, float]]) -> dict[str, Any]:
    return {"type": "polygon", "sop_instance_uid": uid, "points": [list(p) for p in points]}


def inside(points: Sequence[tuple[float, float]], x: float, y: float) -> bool:
    """Even-odd ray casting for one point: an implementation independent of ``rasterize_polygon``."""
    result = False
    for (x0, y0), (x1, y1) in zip(points, [*points[1:], points[0]], strict=True):
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            result = not result
    return result


def expected_mask(points: Sequence[tuple[float, float]]) -> NDArray[np.bool_]:
    """Pixel-centre rasterisation the slow way: pixel [r, c] is in when (c + 0.5, r + 0.5) is inside."""
    return np.array([[inside(points, c + 0.5, r + 0.5) for c in range(COLUMNS)] for r in range(ROWS)])


def mask_block() -> NDArray[np.uint8]:
    voxels = np.zeros((2, ROWS, COLUMNS), dtype=np.uint8)
    voxels[0, 50:56, 5:12] = 1
    voxels[1, 51:58, 6:10] = 1
    return voxels


def dciodvfy(path: Path) -> tuple[str, list[str], list[str]]:
    """Run dciodvfy; return its output and its Error and Warning lines."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False)
    output = run.stdout + run.stderr
    lines = [line.strip() for line in output.splitlines()]
    return output, [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


def coded_pairs(
    group: hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations,
) -> set[tuple[str, str, str]]:
    """(name code, value code, value designator) of a group's qualitative evaluations."""
    pairs = set()
    for evaluation in group.get_qualitative_evaluations():
        value = evaluation.value
        assert isinstance(value, hd.sr.CodedConcept)
        pairs.add((str(evaluation.name.value), str(value.value), str(value.scheme_designator)))
    return pairs


@dataclass
class Export:
    images: list[Dataset]
    rows: list[Row]
    rois: list[RoiInput]
    seg_path: Path
    sr_path: Path
    seg: hd.seg.Segmentation
    sr: hd.sr.Comprehensive3DSR


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Export:
    images = ct_series()
    uid = [str(ds.SOPInstanceUID) for ds in images]
    attributes = {"margin": "spiculated", "internal_structure": ["solid", "necrosis"], "long_axis": 21.5}
    voxels = mask_block()
    rows = [
        Row("roi", "lesion", "primary_tumour", polygon(uid[2], POLYGON), attributes, tracking_id="lesion-1"),
        Row(
            "roi", "lesion", "metastasis",
            {"type": "contours", "polygons": [polygon(uid[i], CONTOUR) for i in (1, 2, 3)]},
            author="lesionnet@1.4.0",
        ),
        Row("roi", "lesion", "lymph_node", mask_geometry(uid[3:5], voxels).model_dump(mode="json"),
            {"margin": "smooth"}),
        Row("roi", "lesion", "lymph_node", {"type": "line", "sop_instance_uid": uid[0], "points": LINE},
            {"long_axis": 5.0}, tracking_id="node-7"),
        Row("roi", "lesion", "other_lesion", {"type": "point", "sop_instance_uid": uid[4], "point": [33, 33]}),
        Row("series", "exam_purpose", "staging"),
        Row("series", "diffuse_findings", ["emphysema", "fibrosis"]),
        Row("series", "normality", "abnormal"),
        Row("series", "structural_change", "Post-operative changes in the right upper lobe."),
        Row("patient", "t_category", "t2a"),
    ]  # fmt: skip
    rois, labels = resolve_annotations(SCHEMA, rows, tracking_scope=SCOPE)
    seg = build_segmentation(images, rois, content_creator_name="Ana^Doctor")
    sr = build_measurement_report(images, rois, labels, seg, observer="Ana^Doctor")
    folder = tmp_path_factory.mktemp("dicom-export")
    seg.save_as(folder / "seg.dcm")
    sr.save_as(folder / "sr.dcm")
    return Export(images, rows, rois, folder / "seg.dcm", folder / "sr.dcm", seg, sr)


# --- rasterisation and identifiers -----------------------------------------------------------


def test_rasterize_polygon_takes_pixels_whose_centres_are_inside() -> None:
    square = rasterize_polygon([(10, 10), (20, 10), (20, 15), (10, 15)], ROWS, COLUMNS)
    assert np.argwhere(square).min(axis=0).tolist() == [10, 10]
    assert np.argwhere(square).max(axis=0).tolist() == [14, 19]
    assert square.sum() == 5 * 10
    for points in (POLYGON, CONTOUR, [(0.2, 0.1), (63.9, 20.3), (31.7, 63.8), (40.1, 30.2)]):
        assert np.array_equal(rasterize_polygon(points, ROWS, COLUMNS), expected_mask(points))


def test_rasterize_polygon_gives_shared_edges_to_one_side_only() -> None:
    left = rasterize_polygon([(10, 10.5), (20.5, 10.5), (20.5, 20.5), (10, 20.5)], ROWS, COLUMNS)
    right = rasterize_polygon([(20.5, 10.5), (30, 10.5), (30, 20.5), (20.5, 20.5)], ROWS, COLUMNS)
    assert not (left & right).any()
    # Centres on the shared edge x = 20.5 (column 20) go right; on the top edge y = 10.5 (row 10) go in.
    assert left[10:20, 10:20].all()
    assert left.sum() == 10 * 10
    assert right[10:20, 20:30].all()
    assert right.sum() == 10 * 10


def test_tracking_uid_is_stable_per_lesion_and_scope() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    assert tracking_uid("lesion-1", first, SCOPE) == tracking_uid("lesion-1", second, SCOPE)
    assert tracking_uid("lesion-1", first, SCOPE) != tracking_uid("lesion-1", first, "project-1/PAT-2")
    assert tracking_uid(None, first, SCOPE) == f"2.25.{first.int}"
    assert tracking_uid("lesion-1", first, SCOPE).startswith("2.25.")
    assert len(tracking_uid("lesion-1", first, SCOPE)) <= 64


def test_resolve_lists_every_label_and_value_outside_the_schema() -> None:
    uid = generate_uid()
    rows = [
        Row("roi", "lesion", "granuloma", polygon(uid, POLYGON)),
        Row("roi", "lesion", "metastasis", polygon(uid, POLYGON), {"colour": "red"}),
        Row("series", "exam_purpose", "curiosity"),
        Row("series", "margin", "smooth"),
    ]
    with pytest.raises(Unprocessable) as caught:
        resolve_annotations(SCHEMA, rows, tracking_scope=SCOPE)
    for needle in ("'granuloma'", "'colour'", "'curiosity'", "'margin'"):
        assert needle in caught.value.detail


# --- SEG ------------------------------------------------------------------------------------


def test_segmentation_reads_back_with_masks_equal_to_the_polygons(export: Export) -> None:
    seg = hd.seg.segread(export.seg_path)
    images = export.images
    uids = [str(ds.SOPInstanceUID) for ds in images]
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert seg.StudyInstanceUID == images[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == images[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == images[0].SeriesInstanceUID
    assert seg.PatientID == "PAT-1"
    assert seg.segment_numbers == [1, 2, 3]  # the line and the point have no area, so no segment
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2, 3], ignore_spatial_locations=True)
    expected = np.zeros((SLICES, ROWS, COLUMNS, 3), dtype=bool)
    expected[2, :, :, 0] = expected_mask(POLYGON)
    expected[1:4, :, :, 1] = expected_mask(CONTOUR)
    expected[3:5, :, :, 2] = mask_block().astype(bool)
    assert pixels.shape == expected.shape
    assert np.array_equal(pixels.astype(bool), expected)


def test_segments_are_coded_from_the_schema_with_designators(export: Export) -> None:
    seg = pydicom.dcmread(export.seg_path)
    primary, metastasis, node = seg.SegmentSequence
    for item in (primary, metastasis, node):
        category = item.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == ("49755003", "SCT")
    kinds = [item.SegmentedPropertyTypeCodeSequence[0] for item in (primary, metastasis, node)]
    assert [(k.CodeValue, k.CodingSchemeDesignator) for k in kinds] == [
        ("86049000", "SCT"),
        ("14799000", "SCT"),
        ("59441001", "SCT"),
    ]
    assert primary.SegmentAlgorithmType == "MANUAL"
    assert "SegmentationAlgorithmIdentificationSequence" not in primary
    assert metastasis.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = metastasis.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("lesionnet", "1.4.0")
    assert primary.TrackingID == "lesion-1"
    assert [item.TrackingUID for item in seg.SegmentSequence] == [roi.tracking_uid for roi in export.rois[:3]]
    assert primary.TrackingUID == tracking_uid("lesion-1", uuid.uuid4(), SCOPE)


def test_overlapping_segments_keep_their_own_pixels() -> None:
    images = ct_series(pixel_data=False)  # metadata only, as WADO-RS metadata gives it
    uid = str(images[0].SOPInstanceUID)
    first, second = [(5, 5), (30, 5), (30, 30), (5, 30)], [(20, 20), (45, 20), (45, 45), (20, 45)]
    rows = [
        Row("roi", "lesion", "metastasis", polygon(uid, first)),
        Row("roi", "lesion", "lymph_node", polygon(uid, second)),
    ]
    rois, _ = resolve_annotations(SCHEMA, rows, tracking_scope=SCOPE)
    seg = build_segmentation(images, rois)
    pixels = seg.get_pixels_by_source_instance([uid], segment_numbers=[1, 2], ignore_spatial_locations=True)
    assert np.array_equal(pixels[0, :, :, 0].astype(bool), expected_mask(first))
    assert np.array_equal(pixels[0, :, :, 1].astype(bool), expected_mask(second))
    assert (pixels[0, 22, 22] == 1).all()


def test_probability_maps_make_a_fractional_segmentation(tmp_path: Path) -> None:
    images = ct_series()
    uids = tuple(str(ds.SOPInstanceUID) for ds in images[1:3])
    grid = np.linspace(0.0, 1.0, ROWS * COLUMNS, dtype=np.float32).reshape(ROWS, COLUMNS)
    values = np.stack([grid, grid[::-1]])
    proposal = RoiInput(
        label="lesion",
        value="metastasis",
        finding=Concept(system=SNOMED, code="14799000", display="Neoplasm, metastatic"),
        geometry=mask_geometry(uids, values >= 0.5),
        tracking_uid=tracking_uid(None, uuid.uuid4(), SCOPE),
        author="anomalynet@2.0",
        author_is_model=True,
        probabilities=ProbabilityMap(uids, values),
    )
    build_segmentation(images, [proposal]).save_as(tmp_path / "fractional.dcm")
    seg = hd.seg.segread(tmp_path / "fractional.dcm")
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    assert seg.SegmentationFractionalType == "PROBABILITY"
    back = seg.get_pixels_by_source_instance(list(uids), segment_numbers=[1], ignore_spatial_locations=True)
    assert np.abs(back[..., 0] - values).max() <= 1 / 255 / 2 + 1e-6
    _, errors, _ = dciodvfy(tmp_path / "fractional.dcm")
    assert errors == []
    imported = read_segmentation(pydicom.dcmread(tmp_path / "fractional.dcm"), SCHEMA)
    assert imported[0].probabilities is not None
    assert imported[0].author == "anomalynet@2.0"
    assert imported[0].author_is_model


def test_segmentation_refuses_geometry_outside_the_series() -> None:
    images = ct_series(pixel_data=False)
    rows = [Row("roi", "lesion", "metastasis", polygon(generate_uid(), POLYGON))]
    rois, _ = resolve_annotations(SCHEMA, rows, tracking_scope=SCOPE)
    with pytest.raises(Unprocessable, match="not in the series"):
        build_segmentation(images, rois)


def test_local_codes_need_a_designator_and_are_declared(tmp_path: Path) -> None:
    images = ct_series(pixel_data=False)
    finding = Concept(system="http://example.org/lesions", code="blob", display="Blob")
    roi = RoiInput(
        label="lesion",
        value=None,
        finding=finding,
        geometry=mask_geometry([str(images[0].SOPInstanceUID)], np.ones((1, ROWS, COLUMNS))),
        tracking_uid=tracking_uid(None, uuid.uuid4(), SCOPE),
    )
    with pytest.raises(Unprocessable, match=r"http://example\.org/lesions"):
        build_segmentation(images, [roi])
    seg = build_segmentation(images, [roi], designators={"http://example.org/lesions": "99EXAMPLE", SNOMED: "SCT"})
    kind = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (kind.CodeValue, kind.CodingSchemeDesignator) == ("blob", "99EXAMPLE")
    declared = seg.CodingSchemeIdentificationSequence[0]
    assert declared.CodingSchemeDesignator == "99EXAMPLE"
    assert declared.CodingSchemeResourcesSequence[0].CodingSchemeURL == "http://example.org/lesions"
    seg.save_as(tmp_path / "local.dcm")
    _, errors, _ = dciodvfy(tmp_path / "local.dcm")
    assert errors == []


# --- SR -------------------------------------------------------------------------------------


def test_measurement_report_has_one_group_per_roi_sharing_tracking_uids(export: Export) -> None:
    sr = hd.sr.srread(export.sr_path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert sr.StudyInstanceUID == export.images[0].StudyInstanceUID
    report = hd.sr.MeasurementReport.from_sequence([sr])
    planar = report.get_planar_roi_measurement_groups()
    volumetric = report.get_volumetric_roi_measurement_groups()
    image_groups = report.get_image_measurement_groups()
    assert len(planar) == 1
    assert len(volumetric) == 2
    assert len(image_groups) == 3
    seg = pydicom.dcmread(export.seg_path)
    segment_uids = {str(item.TrackingUID): int(item.SegmentNumber) for item in seg.SegmentSequence}
    assert str(planar[0].tracking_uid) in segment_uids
    for group in volumetric:
        reference = group.referenced_segment
        assert reference is not None
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert reference.referenced_segment_numbers == [segment_uids[str(group.tracking_uid)]]
    metastasis = next(g for g in volumetric if g.tracking_uid == export.rois[1].tracking_uid)
    volume = metastasis.get_measurements(name=hd.sr.CodedConcept("118565006", "SCT", "Volume"))[0]
    voxel = SPACING[0] * SPACING[1] * THICKNESS
    assert volume.value == pytest.approx(3 * expected_mask(CONTOUR).sum() * voxel, rel=1e-5)
    assert volume.unit.value == "mm3"
    evidence = {uid for _, _, uid, _ in sr.get_evidence()}
    assert seg.SOPInstanceUID in evidence
    assert {str(ds.SOPInstanceUID) for ds in export.images} <= evidence


def test_planar_group_carries_region_finding_evaluations_and_measurements(export: Export) -> None:
    sr = hd.sr.srread(export.sr_path)
    group = hd.sr.MeasurementReport.from_sequence([sr]).get_planar_roi_measurement_groups()[0]
    assert group.tracking_identifier == "lesion-1"
    assert group.finding_type == hd.sr.CodedConcept("86049000", "SCT", "Malignant neoplasm, primary")
    region = group.roi
    assert isinstance(region, hd.sr.ImageRegion)
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    points = np.asarray(region.value)
    assert np.allclose(points[:-1], POLYGON)
    assert np.allclose(points[-1], points[0])
    source = region.ContentSequence[0].ReferencedSOPSequence[0]
    assert source.ReferencedSOPInstanceUID == export.images[2].SOPInstanceUID
    evaluations = coded_pairs(group)
    assert {("margin", "spiculated", "99ONCO"), ("internal_structure", "solid", "99ONCO")} <= evaluations
    assert ("internal_structure", "necrosis", "99ONCO") in evaluations
    measurements = {m.name.value: m for m in group.get_measurements()}
    area = measurements["42798000"]
    x, y = np.array(POLYGON).T
    expected_area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) * SPACING[0] * SPACING[1]
    assert area.value == pytest.approx(expected_area, rel=1e-5)
    assert (area.unit.value, area.unit.scheme_designator) == ("mm2", "UCUM")
    assert measurements["long_axis"].value == pytest.approx(21.5)
    assert measurements["long_axis"].unit.value == "mm"


def test_line_becomes_a_length_inferred_from_its_coordinates(export: Export) -> None:
    sr = hd.sr.srread(export.sr_path)
    groups = hd.sr.MeasurementReport.from_sequence([sr]).get_image_measurement_groups()
    line = next(g for g in groups if g.tracking_identifier == "node-7")
    length = line.get_measurements(name=hd.sr.CodedConcept("410668003", "SCT", "Length"))[0]
    (dx, dy) = np.subtract(LINE[1], LINE[0])
    assert length.value == pytest.approx(np.hypot(dx * SPACING[1], dy * SPACING[0]), rel=1e-5)
    assert length.unit.value == "mm"
    coordinates = length.referenced_coordinates[0]
    assert coordinates.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert np.allclose(coordinates.value, LINE)


def test_series_labels_are_qualitative_evaluations_of_one_group(export: Export) -> None:
    sr = hd.sr.srread(export.sr_path)
    groups = hd.sr.MeasurementReport.from_sequence([sr]).get_image_measurement_groups()
    series = next(g for g in groups if g.tracking_identifier == SERIES_LABELS)
    assert series.finding_type is None
    pairs = coded_pairs(series)
    assert pairs == {
        ("exam_purpose", "staging", "99ONCO"),
        ("diffuse_findings", "87433001", "SCT"),
        ("diffuse_findings", "fibrosis", "99ONCO"),
        ("normality", "263654008", "SCT"),
    }
    texts = [
        item for item in series[0].ContentSequence if item.ValueType == "TEXT" and item.TextValue.startswith("Post")
    ]
    assert texts
    assert texts[0].ConceptNameCodeSequence[0].LongCodeValue == "structural_change"


def test_report_names_the_observer_and_the_model_of_each_group(export: Export) -> None:
    sr = hd.sr.srread(export.sr_path)
    report = hd.sr.MeasurementReport.from_sequence([sr])
    observer = report.get_observer_contexts()[0]
    assert observer.observer_type == hd.sr.CodedConcept("121006", "DCM", "Person")
    assert str(observer.observer_identifying_attributes.name) == "Ana^Doctor"
    metastasis = next(
        g for g in report.get_volumetric_roi_measurement_groups() if getattr(g.finding_type, "value", "") == "14799000"
    )
    names = {str(i.TextValue) for i in metastasis[0].ContentSequence if i.ValueType == "TEXT"}
    assert {"lesionnet", "1.4.0"} <= names
    declared = {item.CodingSchemeDesignator: item for item in sr.CodingSchemeIdentificationSequence}
    assert declared["99ONCO"].CodingSchemeResourcesSequence[0].CodingSchemeURL == LOCAL


def test_device_observer_for_a_model_report() -> None:
    images = ct_series(pixel_data=False)
    sr = build_measurement_report(images, [], [_label("normality", "normal")], observer="triage@3.1")
    observer = hd.sr.MeasurementReport.from_sequence([sr]).get_observer_contexts()[0]
    assert observer.observer_type == hd.sr.CodedConcept("121007", "DCM", "Device")
    device = observer.observer_identifying_attributes
    assert isinstance(device, hd.sr.DeviceObserverIdentifyingAttributes)
    assert device.name == "triage"
    assert device.uid.startswith("2.25.")


def _label(key: str, value: Any) -> Any:
    _, labels = resolve_annotations(SCHEMA, [Row("series", key, value)], tracking_scope=SCOPE)
    return labels[0]


def test_mask_roi_without_seg_is_refused(export: Export) -> None:
    with pytest.raises(Unprocessable, match="SEG"):
        build_measurement_report(export.images, export.rois, observer="Ana^Doctor")


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "iod"), [("seg", "Segmentation"), ("sr", "Comprehensive3DSR")])
def test_dciodvfy_finds_no_errors(export: Export, name: str, iod: str) -> None:
    output, errors, warnings = dciodvfy(export.seg_path if name == "seg" else export.sr_path)
    print(f"dciodvfy {name}: {len(warnings)} warnings", *sorted(set(warnings)), sep="\n  ")
    assert iod in output  # it recognised the IOD, so it checked the modules
    assert errors == [], output


# --- import ---------------------------------------------------------------------------------


def test_segmentation_imports_back_into_the_same_rois(export: Export) -> None:
    imported = read_segmentation(pydicom.dcmread(export.seg_path), SCHEMA)
    assert [(r.label, r.value) for r in imported] == [
        ("lesion", "primary_tumour"),
        ("lesion", "metastasis"),
        ("lesion", "lymph_node"),
    ]
    assert [r.tracking_uid for r in imported] == [r.tracking_uid for r in export.rois[:3]]
    assert imported[0].tracking_id == "lesion-1"
    assert imported[1].author == "lesionnet@1.4.0"
    assert imported[1].author_is_model
    assert imported[0].author == "Ana^Doctor"
    assert not imported[0].author_is_model
    polygon_mask = imported[0].geometry
    assert polygon_mask.type == "mask"
    assert polygon_mask.sop_instance_uids == [str(export.images[2].SOPInstanceUID)]
    assert np.array_equal(
        np.frombuffer(polygon_mask.voxels(), np.uint8).reshape(ROWS, COLUMNS).astype(bool), expected_mask(POLYGON)
    )
    body = {**annotation_fields(imported[2]), "project_id": str(uuid.uuid4()), "study_uid": export.seg.StudyInstanceUID}
    assert AnnotationCreate.model_validate(body).geometry is not None


def test_measurement_report_imports_back_into_annotations(export: Export) -> None:
    imported = read_measurement_report(
        pydicom.dcmread(export.sr_path), SCHEMA, segmentation=pydicom.dcmread(export.seg_path)
    )
    by_uid = {roi.tracking_uid: roi for roi in imported.rois}
    assert set(by_uid) == {roi.tracking_uid for roi in export.rois if roi.geometry.type != "point"}
    primary = by_uid[export.rois[0].tracking_uid]
    assert primary.geometry.type == "polygon"
    assert np.allclose(primary.geometry.points, POLYGON, atol=1e-4)
    assert annotation_fields(primary)["attributes"] == {
        "margin": "spiculated",
        "internal_structure": ["solid", "necrosis"],
        "long_axis": pytest.approx(21.5),
    }
    line = by_uid[export.rois[3].tracking_uid]
    assert (line.geometry.type, line.value, line.tracking_id) == ("line", "lymph_node", "node-7")
    metastasis = by_uid[export.rois[1].tracking_uid]
    assert metastasis.geometry.type == "mask"
    assert metastasis.author == "lesionnet@1.4.0"
    assert {label.key: label.value for label in imported.series_labels} == {
        "exam_purpose": "staging",
        "diffuse_findings": ["emphysema", "fibrosis"],
        "normality": "abnormal",
        "structural_change": "Post-operative changes in the right upper lobe.",
    }
    assert any("without image coordinates" in note for note in imported.skipped)  # the point


def test_import_of_a_length_measurement_without_finding_needs_a_default_class() -> None:
    images = ct_series(pixel_data=False)
    source = hd.sr.SourceImageForRegion(CTImageStorage, str(images[1].SOPInstanceUID))
    coordinates = hd.sr.CoordinatesForMeasurement(hd.sr.GraphicTypeValues.POLYLINE, np.array(LINE), source)
    length = hd.sr.Measurement(
        name=hd.sr.CodedConcept("410668003", "SCT", "Length"),
        value=3.5,
        unit=hd.sr.CodedConcept("mm", "UCUM", "millimeter"),
        referenced_coordinates=[coordinates],
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Measurement 1"), measurements=[length]
    )
    person = hd.sr.PersonObserverIdentifyingAttributes(name="Viewer^User")
    context = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(hd.sr.CodedConcept("121006", "DCM", "Person"), person)
    )
    report = hd.sr.MeasurementReport(context, hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure"), [group])
    sr = hd.sr.Comprehensive3DSR(images, report, hd.UID(), 1, hd.UID(), 1, manufacturer="Viewer")
    with pytest.raises(Unprocessable, match="no Finding"):
        read_measurement_report(sr, SCHEMA)
    imported = read_measurement_report(sr, SCHEMA, default_class=("lesion", "other_lesion"))
    assert [(r.value, r.geometry.type, r.author, r.tracking_id) for r in imported.rois] == [
        ("other_lesion", "line", "Viewer^User", "Measurement 1")
    ]


def test_import_lists_concepts_the_schema_does_not_know(export: Export) -> None:
    seg = pydicom.dcmread(export.seg_path)
    seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue = "999999"
    with pytest.raises(Unprocessable) as caught:
        read_segmentation(seg, SCHEMA)
    assert "segment 2" in caught.value.detail
    assert "http://snomed.info/sct|999999" in caught.value.detail
    sr = pydicom.dcmread(export.sr_path)
    margin = SchemaDefinition.model_validate(
        {"labels": [label for label in DEFAULT_SCHEMA["labels"] if label["key"] != "margin"]}
    )
    with pytest.raises(Unprocessable, match=re.escape("evaluation urn:oncostruct:codes|margin (Margin)")):
        read_measurement_report(sr, margin, segmentation=pydicom.dcmread(export.seg_path))
