"""Map DICOM concepts read from a SEG or SR back to the schema's labels and values (by system and code)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..vocabulary import Concept, LabelDefinition, Level, SchemaDefinition, ValueType
from .codes import NO, YES, same_concept
from .inputs import LabelValue, LabelValueData


@dataclass(frozen=True, slots=True)
class RoiClass:
    """An ROI class value of the schema: label key, value key and the value's concept."""

    label: str
    value: str
    concept: Concept


def match_roi_class(schema: SchemaDefinition, finding: Concept) -> RoiClass | None:
    """The first ROI class value (ROI-level category label that is not an attribute) coded as ``finding``."""
    for label in schema.labels:
        if label.level != Level.roi or label.attribute or label.value_type != ValueType.category:
            continue
        for value in label.values:
            if same_concept(value.concept, finding):
                return RoiClass(label.key, value.key, value.concept)
    return None


def label_named(labels: Iterable[LabelDefinition], name: Concept) -> LabelDefinition | None:
    """The label whose concept is ``name``."""
    return next((label for label in labels if same_concept(label.concept, name)), None)


def coded_value(label: LabelDefinition, value: Concept) -> tuple[str | bool, Concept] | None:
    """The value key (or boolean) of ``label`` coded as ``value``, with the schema's concept."""
    if label.value_type == ValueType.boolean:
        for flag, concept in ((True, YES), (False, NO)):
            if same_concept(concept, value):
                return flag, concept
        return None
    for item in label.values:
        if same_concept(item.concept, value):
            return item.key, item.concept
    return None


def merge_values(label: LabelDefinition, found: list[tuple[LabelValueData, Concept]]) -> LabelValue:
    """One :class:`LabelValue` of the coded values found for ``label`` (a list for ``categories``)."""
    concepts = tuple(concept for _, concept in found)
    if label.value_type == ValueType.categories:
        keys = [str(key) for key, _ in found]
        return LabelValue(label.key, label.concept, label.value_type, list(dict.fromkeys(keys)), concepts, label.unit)
    coded_type = label.value_type in (ValueType.category, ValueType.boolean)
    return LabelValue(
        label.key, label.concept, label.value_type, found[0][0], concepts[:1] if coded_type else (), label.unit
    )
