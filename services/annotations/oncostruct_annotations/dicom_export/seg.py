"""DICOM Segmentation (PS3.3 §A.51, §C.8.20) of the ROI annotations of one series, and its import.

One segment per ROI that encloses an area (polygon, contours, mask; points and
lines have none). Polygons are rasterised on the source grid by the pixel-centre
rule of :mod:`.grid`. The SEG is BINARY, or FRACTIONAL (PROBABILITY) as soon as
one ROI carries a probability map (PS3.3 §C.8.20.2, Segmentation Type).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from oncostruct_shared.errors import Unprocessable

from .. import __version__
from ..geometry import Contours, Mask, Polygon
from ..vocabulary import SchemaDefinition
from .codes import (
    DEFAULT_DESIGNATORS,
    DEFAULT_SYSTEMS,
    check_systems,
    coded,
    concept_of,
    declare_private_schemes,
    systems_declared_in,
)
from .grid import SourceGrid, rasterize_polygon
from .inputs import ProbabilityMap, RoiInput, mask_geometry, mask_voxels, model_author
from .schema_match import RoiClass, match_roi_class

# Sparse per-ROI mask: frame index on the grid → (rows, columns) values (bool, or float for probabilities).
SegmentFrames = dict[int, NDArray[Any]]


def segment_frames(roi: RoiInput, grid: SourceGrid) -> SegmentFrames:
    """The frames an ROI covers on the source grid, rasterised (pixel-centre rule, see :mod:`.grid`).

    Raises
    ------
    Unprocessable
        If the ROI lies on an image outside the series, has a mask of another size, or
        covers no pixel centre at all.
    """
    where = f"ROI {roi.annotation_id or roi.tracking_id or roi.display_name}"
    frames: SegmentFrames = {}
    if roi.probabilities is not None:
        return _probability_frames(roi.probabilities, grid, where)
    geometry = roi.geometry
    polygons = (
        [geometry] if isinstance(geometry, Polygon) else geometry.polygons if isinstance(geometry, Contours) else []
    )
    for polygon in polygons:
        index = grid.index(polygon.sop_instance_uid, polygon.frame, where)
        plane = rasterize_polygon(polygon.points, grid.rows, grid.columns)
        frames[index] = frames[index] | plane if index in frames else plane
    if isinstance(geometry, Mask):
        if (geometry.rows, geometry.columns) != (grid.rows, grid.columns):
            raise Unprocessable(
                f"{where}: mask is {geometry.rows}×{geometry.columns}, the series {grid.rows}×{grid.columns}."
            )
        for uid, plane in zip(geometry.sop_instance_uids, mask_voxels(geometry), strict=True):
            frames[grid.index(uid, 1, where)] = plane
    frames = {index: plane for index, plane in frames.items() if plane.any()}
    if not frames:
        raise Unprocessable(f"{where}: covers no pixel centre, so it has no segment (PS3.3 §C.8.20.2).")
    return frames


def _probability_frames(probabilities: ProbabilityMap, grid: SourceGrid, where: str) -> SegmentFrames:
    if probabilities.values.shape[1:] != (grid.rows, grid.columns):
        raise Unprocessable(f"{where}: probability map slices must be {grid.rows}×{grid.columns}.")
    frames = {
        grid.index(uid, 1, where): np.asarray(plane, dtype=np.float32)
        for uid, plane in zip(probabilities.sop_instance_uids, probabilities.values, strict=True)
    }
    frames = {index: plane for index, plane in frames.items() if plane.any()}
    if not frames:
        raise Unprocessable(f"{where}: probability map is zero everywhere, so it has no segment.")
    return frames


def segment_description(
    number: int, roi: RoiInput, designators: Mapping[str, str] = DEFAULT_DESIGNATORS
) -> hd.seg.SegmentDescription:
    """The Segment Sequence item of an ROI (PS3.3 §C.8.20.2, Segmentation Image Module).

    Segmented Property Category and Type are the schema's category and the ROI's class
    value concept; a model author (``name@version``) becomes Algorithm Identification
    with Segment Algorithm Type AUTOMATIC, a person MANUAL.
    """
    algorithm: hd.AlgorithmIdentificationSequence | None = None
    model = model_author(roi.author) if roi.author_is_model else None
    if roi.author_is_model:
        name, version = model or (roi.author, "unknown")
        # Algorithm Family (PS3.16 CID 7162): Artificial Intelligence.
        algorithm = hd.AlgorithmIdentificationSequence(
            name=name[:64], family=codes.cid7162.ArtificialIntelligence, version=version[:64]
        )
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=roi.display_name,
        segmented_property_category=coded(roi.category, designators),
        segmented_property_type=coded(roi.finding, designators),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        if algorithm
        else hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        algorithm_identification=algorithm,
        tracking_uid=roi.tracking_uid,
        tracking_id=(roi.tracking_id or str(roi.annotation_id or roi.tracking_uid))[:64],
    )


def build_segmentation(
    source_images: Sequence[Dataset],
    rois: Sequence[RoiInput],
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = 9001,
    instance_number: int = 1,
    series_description: str = "OncoStruct segmentation",
    content_label: str = "ANNOTATIONS",
    content_creator_name: str | None = None,
    manufacturer: str = "OncoStruct",
    manufacturer_model_name: str = "oncostruct-annotations",
    software_versions: str = __version__,
    device_serial_number: str = "0",
    designators: Mapping[str, str] = DEFAULT_DESIGNATORS,
) -> hd.seg.Segmentation:
    """Build a DICOM SEG of the ROI annotations of one series.

    Parameters
    ----------
    source_images
        The series' images (single-frame instances, or one multi-frame instance); only
        their metadata is read (no pixel data needed). The SEG takes their Study, Frame of
        Reference and patient, and references them (PS3.3 §C.8.20: Referenced Series
        Sequence, Derivation Image per frame).
    rois
        ROIs of the series; those without an area (points, lines) are left out.
    series_instance_uid, sop_instance_uid
        UIDs of the new object (new ones by default).
    series_number, instance_number, series_description, content_label, content_creator_name
        General Series and Segmentation Image module values (PS3.3 §C.7.3.1, §C.8.20.2).
    manufacturer, manufacturer_model_name, software_versions, device_serial_number
        Enhanced General Equipment module (PS3.3 §C.7.5.2), Type 1 in the SEG IOD.
    designators
        System URI → Coding Scheme Designator (see :mod:`.codes`).

    Returns
    -------
    highdicom.seg.Segmentation
        BINARY, or FRACTIONAL/PROBABILITY when any ROI has probabilities; segment *n*
        is the *n*-th ROI with an area, in the given order.

    Raises
    ------
    Unprocessable
        If there is no ROI with an area, a geometry lies off the series, or a code
        system has no designator.
    """
    grid = SourceGrid.of(source_images)
    with_area = [roi for roi in rois if roi.has_area]
    if not with_area:
        raise Unprocessable("No ROI encloses an area (polygon, contours, mask): a SEG needs at least one segment.")
    check_systems([c for roi in with_area for c in (roi.category, roi.finding)], designators)
    frames = [segment_frames(roi, grid) for roi in with_area]
    fractional = any(roi.probabilities is not None for roi in with_area)
    pixels = _pixel_array(frames, grid, fractional)
    seg = hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL
        if fractional
        else hd.seg.SegmentationTypeValues.BINARY,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        segment_descriptions=[segment_description(n, roi, designators) for n, roi in enumerate(with_area, start=1)],
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=instance_number,
        manufacturer=manufacturer,
        manufacturer_model_name=manufacturer_model_name,
        software_versions=software_versions,
        device_serial_number=device_serial_number,
        content_label=content_label,
        content_description=series_description[:64],
        content_creator_name=content_creator_name,
        series_description=series_description,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=True,
    )
    declare_private_schemes(seg, [c for roi in with_area for c in (roi.category, roi.finding)], designators)
    return seg


def _pixel_array(frames: list[SegmentFrames], grid: SourceGrid, fractional: bool) -> NDArray[Any]:
    shape = (len(grid.frames), grid.rows, grid.columns)
    if not fractional:
        # Label-map style (one 3D array of segment numbers) when segments do not overlap: one byte per
        # voxel instead of one per voxel and segment; highdicom still writes a BINARY SEG.
        labels = np.zeros(shape, dtype=np.uint8 if len(frames) < 256 else np.uint16)
        overlap = False
        for number, segment in enumerate(frames, start=1):
            for index, plane in segment.items():
                overlap = overlap or bool(np.any(labels[index][plane] != 0))
                labels[index][plane] = number
        if not overlap:
            return labels
    stacked = np.zeros((*shape, len(frames)), dtype=np.float32 if fractional else np.uint8)
    for number, segment in enumerate(frames):
        for index, plane in segment.items():
            stacked[index, :, :, number] = plane
    return stacked


def read_segmentation(
    dataset: Dataset,
    schema: SchemaDefinition,
    *,
    systems: Mapping[str, str] = DEFAULT_SYSTEMS,
) -> list[RoiInput]:
    """Turn a DICOM SEG made by any tool (OHIF, highdicom, 3D Slicer …) back into ROI inputs.

    Each segment becomes a mask ROI on the source instances it references; its
    Segmented Property Type is looked up among the schema's ROI class values by system
    and code. A FRACTIONAL segment keeps its probabilities and becomes a mask where
    the probability is at least one half.

    Parameters
    ----------
    dataset
        The SEG (``pydicom.dcmread`` result or :class:`highdicom.seg.Segmentation`).
    schema
        The schema to map the segments' concepts to.
    systems
        Designator → system URI; private designators declared in the file's Coding Scheme
        Identification Sequence are added (see :func:`.codes.systems_declared_in`).

    Returns
    -------
    list[RoiInput]
        One per segment, in segment number order; ``tracking_uid`` and ``tracking_id`` as
        in the file (a new UID when absent), ``author`` the algorithm (``name@version``)
        or the Content Creator's Name.

    Raises
    ------
    Unprocessable
        Listing every segment whose type is not a class value of the schema.
    """
    seg = dataset if isinstance(dataset, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(dataset, copy=True)
    systems = systems_declared_in(seg, systems)
    source_uids = [str(uid) for _, _, uid in seg.get_source_image_uids()]
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    creator = str(seg.get("ContentCreatorName") or "unknown").rstrip("^")
    rois: list[RoiInput] = []
    unknown: list[str] = []
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        finding = concept_of(description.segmented_property_type, systems)
        match = match_roi_class(schema, finding)
        if match is None:
            unknown.append(f"segment {number} type {finding.system}|{finding.code} ({finding.display})")
            continue
        array = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=source_uids,
            segment_numbers=[number],
            combine_segments=False,
            rescale_fractional=True,
            ignore_spatial_locations=True,
            dtype=np.float32 if fractional else np.uint8,
        )[..., 0]
        covered = [i for i in range(len(source_uids)) if array[i].any()]
        uids = [source_uids[i] for i in covered]
        values = array[covered]
        probabilities = ProbabilityMap(tuple(uids), values) if fractional else None
        rois.append(
            _imported_roi(description, match, mask_geometry(uids, values >= 0.5), creator, systems, probabilities)
        )
    if unknown:
        raise Unprocessable("SEG segments whose type is not an ROI class of the schema: " + "; ".join(unknown))
    return rois


def _imported_roi(
    description: hd.seg.SegmentDescription,
    match: RoiClass,
    geometry: Mask,
    creator: str,
    systems: Mapping[str, str],
    probabilities: ProbabilityMap | None = None,
) -> RoiInput:
    algorithm = description.algorithm_identification
    author = f"{algorithm.name}@{algorithm.version}" if algorithm is not None else creator
    return RoiInput(
        label=match.label,
        value=match.value,
        finding=match.concept,
        geometry=geometry,
        tracking_uid=str(description.tracking_uid or hd.UID()),
        tracking_id=description.tracking_id,
        author=author,
        author_is_model=algorithm is not None,
        category=concept_of(description.segmented_property_category, systems),
        probabilities=probabilities,
    )
