"""What the DICOM builders read: ROI and series-label inputs with their concepts resolved from the schema.

The builders do not touch the database. :func:`resolve_annotations` turns annotation
rows (or API models) of one series plus the schema they were written with into
:class:`RoiInput` and :class:`SeriesLabelInput`; readers of SEG and SR produce the
same types, which :func:`annotation_fields` turns back into an ``AnnotationCreate`` body.
"""

from __future__ import annotations

import base64
import re
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import numpy as np
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from oncostruct_shared.errors import Unprocessable

from ..geometry import Contours, Geometry, Mask, Point, Polygon, Polyline
from ..vocabulary import Concept, LabelDefinition, Level, SchemaDefinition, ValueType
from .codes import MORPHOLOGICALLY_ABNORMAL_STRUCTURE, NO, YES, tracking_uid

RoiGeometry: TypeAlias = Polygon | Polyline | Point | Contours | Mask
LabelValueData: TypeAlias = str | bool | float | list[str]

_GEOMETRY: TypeAdapter[RoiGeometry] = TypeAdapter(Geometry)
# ``name@version`` where the version starts with a digit or "v<digit>": tells a model from e-mail-like subjects.
_MODEL_AUTHOR = re.compile(r"^(?P<name>[^@\s]+)@(?P<version>v?[0-9][A-Za-z0-9.+\-_]*)$")


class AnnotationLike(Protocol):
    """The fields of an annotation row (``AnnotationRow``) or ``AnnotationPublic`` the resolver reads."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def level(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def value(self) -> Any: ...
    @property
    def attributes(self) -> dict[str, Any]: ...
    @property
    def geometry(self) -> dict[str, Any] | None: ...
    @property
    def tracking_id(self) -> str | None: ...
    @property
    def author(self) -> str: ...


@dataclass(frozen=True, slots=True)
class LabelValue:
    """One label's value with the schema's concepts: a series label or an ROI attribute.

    ``value_concepts`` holds the concept of each chosen value (category, categories) or
    SNOMED Yes/No (boolean); it is empty for numbers and text.
    """

    key: str
    concept: Concept
    value_type: ValueType
    value: LabelValueData
    value_concepts: tuple[Concept, ...] = ()
    unit: str | None = None
    author: str | None = None
    annotation_id: uuid.UUID | None = None


#: A series-level label (exam purpose, condition at exam, diffuse findings, normality …).
SeriesLabelInput: TypeAlias = LabelValue


@dataclass(frozen=True, slots=True)
class ProbabilityMap:
    """Per-pixel probabilities in [0, 1] of one ROI (e.g. a model's anomaly map), one slice per instance."""

    sop_instance_uids: tuple[str, ...]
    values: NDArray[np.floating[Any]]  # (slices, rows, columns)

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or self.values.shape[0] != len(self.sop_instance_uids):
            raise Unprocessable("A probability map needs one (rows, columns) slice per listed SOP Instance UID.")
        if not np.all(np.isfinite(self.values)) or self.values.min() < 0 or self.values.max() > 1:
            raise Unprocessable("Probabilities must lie in [0, 1] (PS3.3 §C.8.20.2, FRACTIONAL PROBABILITY).")


@dataclass(frozen=True, slots=True)
class RoiInput:
    """One ROI annotation with its concepts resolved.

    ``finding`` is the class value's concept: the SEG segment's Segmented Property
    Type and the SR group's Finding (PS3.16 TID 1410/1411/1501). ``tracking_uid`` is
    shared by the segment and the SR measurement group.
    """

    label: str
    value: str | None
    finding: Concept
    geometry: RoiGeometry
    tracking_uid: str
    tracking_id: str | None = None
    annotation_id: uuid.UUID | None = None
    author: str = "unknown"
    author_is_model: bool = False
    attributes: tuple[LabelValue, ...] = ()
    category: Concept = MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    probabilities: ProbabilityMap | None = field(default=None, compare=False)

    @property
    def has_area(self) -> bool:
        """Whether the ROI encloses an area (polygon, contours, mask) and so becomes a SEG segment."""
        return isinstance(self.geometry, Polygon | Contours | Mask) or self.probabilities is not None

    @property
    def display_name(self) -> str:
        """A short name for the ROI (Segment Label, LO: at most 64 characters)."""
        name = self.finding.display if not self.tracking_id else f"{self.tracking_id} {self.finding.display}"
        return name[:64]


def model_author(author: str) -> tuple[str, str] | None:
    """``(name, version)`` if ``author`` names a model as ``name@version`` (version starting with a digit)."""
    match = _MODEL_AUTHOR.match(author)
    return (match["name"], match["version"]) if match else None


def parse_geometry(data: dict[str, Any], location: str = "geometry") -> RoiGeometry:
    """The geometry model of a stored geometry dict; :class:`Unprocessable` if it is not one."""
    try:
        return _GEOMETRY.validate_python(data)
    except ValidationError as error:
        raise Unprocessable(f"{location}: not a valid ROI geometry ({error.error_count()} errors).") from None


def mask_geometry(sop_instance_uids: Sequence[str], voxels: NDArray[Any]) -> Mask:
    """A :class:`~oncostruct_annotations.geometry.Mask` of a (slices, rows, columns) binary array."""
    array = np.ascontiguousarray(voxels, dtype=np.uint8)
    _, rows, columns = array.shape
    data = base64.b64encode(zlib.compress(array.tobytes(), 6)).decode("ascii")
    return Mask(type="mask", sop_instance_uids=list(sop_instance_uids), rows=rows, columns=columns, data=data)


def mask_voxels(mask: Mask) -> NDArray[np.bool_]:
    """The (slices, rows, columns) boolean array of a mask geometry."""
    raw = np.frombuffer(mask.voxels(), dtype=np.uint8)
    return raw.reshape(len(mask.sop_instance_uids), mask.rows, mask.columns).astype(bool)


def label_value(label: LabelDefinition, value: Any, location: str) -> LabelValue:
    """A label's value with its concepts; :class:`Unprocessable` if the value is not allowed."""
    by_key = {item.key: item.concept for item in label.values}
    concepts: tuple[Concept, ...] = ()
    match label.value_type:
        case ValueType.category:
            if not isinstance(value, str) or value not in by_key:
                raise Unprocessable(f"{location}: {value!r} is not a value of label {label.key!r}.")
            concepts = (by_key[value],)
        case ValueType.categories:
            values = value if isinstance(value, list) else [value]
            unknown = [v for v in values if not isinstance(v, str) or v not in by_key]
            if unknown:
                raise Unprocessable(f"{location}: {unknown} are not values of label {label.key!r}.")
            concepts = tuple(by_key[v] for v in values)
            value = list(values)
        case ValueType.boolean:
            if not isinstance(value, bool):
                raise Unprocessable(f"{location}: label {label.key!r} needs true or false.")
            concepts = (YES if value else NO,)
        case ValueType.number:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Unprocessable(f"{location}: label {label.key!r} needs a number.")
            value = float(value)
        case ValueType.text:
            if not isinstance(value, str):
                raise Unprocessable(f"{location}: label {label.key!r} needs text.")
    return LabelValue(label.key, label.concept, label.value_type, value, concepts, label.unit)


def resolve_annotations(
    schema: SchemaDefinition,
    annotations: Iterable[AnnotationLike],
    *,
    tracking_scope: str,
    is_model: Callable[[str], bool] = lambda author: model_author(author) is not None,
    category: Concept = MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
) -> tuple[list[RoiInput], list[SeriesLabelInput]]:
    """Resolve the ROI and series annotations of one series against their schema.

    Parameters
    ----------
    schema
        The schema version the annotations were written with.
    annotations
        Annotation rows or ``AnnotationPublic`` models of one series, already filtered by
        status (e.g. without ``rejected`` ones). Patient-level annotations are skipped.
    tracking_scope
        What makes a tracking id unique, e.g. ``"<project id>/<patient id>"``; see
        :func:`~.codes.tracking_uid`.
    is_model
        Whether an author is a model (``name@version``); models become algorithm
        identification in the SEG and SR.
    category
        Segmented Property Category of every ROI (PS3.16 CID 7150); by default
        "Morphologically abnormal structure".

    Returns
    -------
    tuple[list[RoiInput], list[SeriesLabelInput]]
        ROIs and series labels in the given order.

    Raises
    ------
    Unprocessable
        Listing every label, value or geometry the schema does not allow.
    """
    rois: list[RoiInput] = []
    series: list[SeriesLabelInput] = []
    problems: list[str] = []
    for annotation in annotations:
        where = f"annotation {annotation.id}"
        label = schema.label(annotation.label)
        if annotation.level == Level.patient:
            continue
        if label is None or label.level != annotation.level or label.attribute:
            problems.append(f"{where}: label {annotation.label!r} is not a {annotation.level} label of the schema")
            continue
        try:
            resolved = label_value(label, annotation.value, where) if annotation.value is not None else None
            if annotation.level == Level.series:
                if resolved is None:
                    raise Unprocessable(f"{where}: a series label needs a value.")
                series.append(_with_provenance(resolved, annotation))
                continue
            if annotation.geometry is None:
                raise Unprocessable(f"{where}: an ROI annotation needs a geometry.")
            attributes = []
            for key, value in sorted(annotation.attributes.items()):
                attribute = schema.label(key)
                if attribute is None or not attribute.attribute:
                    raise Unprocessable(f"{where}: {key!r} is not an attribute label of the schema.")
                attributes.append(label_value(attribute, value, f"{where}.attributes.{key}"))
            categorical = resolved is not None and label.value_type == ValueType.category
            finding = resolved.value_concepts[0] if resolved and categorical else label.concept
            rois.append(
                RoiInput(
                    label=label.key,
                    value=annotation.value if isinstance(annotation.value, str) else None,
                    finding=finding,
                    geometry=parse_geometry(annotation.geometry, f"{where}.geometry"),
                    tracking_uid=tracking_uid(annotation.tracking_id, annotation.id, tracking_scope),
                    tracking_id=annotation.tracking_id,
                    annotation_id=annotation.id,
                    author=annotation.author,
                    author_is_model=is_model(annotation.author),
                    attributes=tuple(attributes),
                    category=category,
                )
            )
        except Unprocessable as error:
            problems.append(error.detail)
    if problems:
        raise Unprocessable("Annotations do not fit their schema: " + "; ".join(problems))
    return rois, series


def _with_provenance(value: LabelValue, annotation: AnnotationLike) -> LabelValue:
    return LabelValue(
        value.key, value.concept, value.value_type, value.value, value.value_concepts, value.unit,
        annotation.author, annotation.id,
    )  # fmt: skip


def annotation_fields(item: RoiInput | LabelValue) -> dict[str, Any]:
    """The ``AnnotationCreate`` fields (without ``project_id`` and ``study_uid``/``series_uid``) of an import."""
    if isinstance(item, LabelValue):
        return {"level": "series", "label": item.key, "value": item.value}
    return {
        "level": "roi",
        "label": item.label,
        "value": item.value,
        "attributes": {attribute.key: attribute.value for attribute in item.attributes},
        "geometry": item.geometry.model_dump(mode="json"),
        "tracking_id": item.tracking_id,
    }
