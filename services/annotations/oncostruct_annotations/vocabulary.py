"""Label schemas: configurable, versioned vocabularies of coded concepts.

A schema lists labels. Each label has a coded concept (SNOMED CT, LOINC,
RadLex or a local system), the level it applies to (patient, series, roi),
a value type and, for categories, the allowed values, each coded too. Labels
marked ``attribute`` describe an ROI further (margin, internal structure)
and are given in an ROI annotation's ``attributes``.

The default oncology schema installed on first start is :data:`DEFAULT_SCHEMA`.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from oncostruct_shared.errors import Unprocessable

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
LOCAL = "urn:oncostruct:codes"
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class Level(StrEnum):
    """The three levels a label applies to."""

    patient = "patient"
    series = "series"
    roi = "roi"


class ValueType(StrEnum):
    """What a label's value is."""

    category = "category"
    categories = "categories"
    boolean = "boolean"
    number = "number"
    text = "text"


class Concept(BaseModel):
    """A coded concept (FHIR Coding / DICOM code sequence item)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(min_length=1, max_length=200, examples=[SNOMED])
    code: str = Field(min_length=1, max_length=64, examples=["86049000"])
    display: str = Field(min_length=1, max_length=200, examples=["Malignant neoplasm, primary"])


class AllowedValue(BaseModel):
    """One allowed value of a category label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=_KEY.pattern)
    concept: Concept


class LabelDefinition(BaseModel):
    """One label of a schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=_KEY.pattern, description="Stable key used in annotations.")
    level: Level
    concept: Concept
    value_type: ValueType
    unit: str | None = Field(None, max_length=32, description="UCUM unit of a number label.")
    values: list[AllowedValue] = Field(default_factory=list, description="Allowed values of category labels.")
    attribute: bool = Field(False, description="An ROI attribute (given in `attributes`), not a label of its own.")

    @model_validator(mode="after")
    def _consistent(self) -> LabelDefinition:
        categorical = self.value_type in (ValueType.category, ValueType.categories)
        if categorical and not self.values:
            raise ValueError(f"label {self.key}: a {self.value_type} label needs allowed values")
        if not categorical and self.values:
            raise ValueError(f"label {self.key}: only category labels have allowed values")
        if self.unit and self.value_type != ValueType.number:
            raise ValueError(f"label {self.key}: only number labels have a unit")
        if self.attribute and self.level != Level.roi:
            raise ValueError(f"label {self.key}: attributes describe ROIs (level roi)")
        keys = [value.key for value in self.values]
        if len(keys) != len(set(keys)):
            raise ValueError(f"label {self.key}: duplicate allowed values")
        return self


class SchemaDefinition(BaseModel):
    """The labels of a schema version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[LabelDefinition] = Field(min_length=1)

    @field_validator("labels")
    @classmethod
    def _unique_keys(cls, labels: list[LabelDefinition]) -> list[LabelDefinition]:
        keys = [label.key for label in labels]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"duplicate label keys: {', '.join(duplicates)}")
        return labels

    def label(self, key: str) -> LabelDefinition | None:
        """The label with ``key``, if the schema has it."""
        return next((label for label in self.labels if label.key == key), None)


def check_value(label: LabelDefinition, value: Any, location: str) -> None:
    """Raise :class:`Unprocessable` unless ``value`` fits ``label``'s type and allowed values."""
    allowed = {item.key for item in label.values}

    def fail(reason: str) -> Unprocessable:
        return Unprocessable(f"{location}: {reason} (label {label.key!r}).", expression=[location])

    match label.value_type:
        case ValueType.category:
            if not isinstance(value, str) or value not in allowed:
                raise fail(f"must be one of {sorted(allowed)}")
        case ValueType.categories:
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise fail("must be a non-empty list of allowed values")
            unknown = sorted(set(value) - allowed)
            if unknown or len(set(value)) != len(value):
                raise fail(f"values must be distinct and among {sorted(allowed)}")
        case ValueType.boolean:
            if not isinstance(value, bool):
                raise fail("must be true or false")
        case ValueType.number:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise fail("must be a finite number" + (f" in {label.unit}" if label.unit else ""))
        case ValueType.text:
            if not isinstance(value, str) or not value.strip() or len(value) > 10000:
                raise fail("must be non-empty text of at most 10,000 characters")


def _c(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _values(*items: tuple[str, dict[str, str]]) -> list[dict[str, Any]]:
    return [{"key": key, "concept": concept} for key, concept in items]


def _local(key: str, display: str) -> tuple[str, dict[str, str]]:
    return key, _c(LOCAL, key, display)


_T = ["tx", "t0", "tis", "t1", "t1a", "t1b", "t1c", "t2", "t2a", "t2b", "t3", "t4"]
_N = ["nx", "n0", "n1", "n2", "n3"]
_M = ["mx", "m0", "m1", "m1a", "m1b", "m1c"]
_STAGE = ["0", "ia", "ib", "iia", "iib", "iiia", "iiib", "iiic", "iva", "ivb"]

#: The oncology schema installed on first start (name ``oncology``, version 1).
DEFAULT_SCHEMA: dict[str, Any] = {
    "labels": [
        # --- patient level (written through to clinical as mCODE) -------------------------
        {
            "key": "primary_diagnosis", "level": "patient", "value_type": "text",
            "concept": _c(SNOMED, "372087000", "Primary malignant neoplasm"),
        },
        {
            "key": "t_category", "level": "patient", "value_type": "category",
            "concept": _c(LOINC, "21905-5", "Primary tumor.clinical [Class] Cancer"),
            "values": _values(*(_local(code, code[0].upper() + code[1:]) for code in _T)),
        },
        {
            "key": "n_category", "level": "patient", "value_type": "category",
            "concept": _c(LOINC, "21906-3", "Regional lymph nodes.clinical [Class] Cancer"),
            "values": _values(*(_local(code, code[0].upper() + code[1:]) for code in _N)),
        },
        {
            "key": "m_category", "level": "patient", "value_type": "category",
            "concept": _c(LOINC, "21907-1", "Distant metastases.clinical [Class] Cancer"),
            "values": _values(*(_local(code, code[0].upper() + code[1:]) for code in _M)),
        },
        {
            "key": "stage_group", "level": "patient", "value_type": "category",
            "concept": _c(LOINC, "21908-9", "Stage group.clinical Cancer"),
            "values": _values(*(_local(f"stage_{code}", f"Stage {code.upper()}") for code in _STAGE)),
        },
        {
            "key": "treatment", "level": "patient", "value_type": "categories",
            "concept": _c(LOCAL, "treatment", "Cancer-related treatment"),
            "values": _values(
                _local("surgery", "Surgery"), _local("radiotherapy", "Radiotherapy"),
                _local("chemotherapy", "Chemotherapy"), _local("immunotherapy", "Immunotherapy"),
                _local("targeted_therapy", "Targeted therapy"), _local("hormone_therapy", "Hormone therapy"),
            ),
        },
        {
            "key": "disease_status", "level": "patient", "value_type": "category",
            "concept": _c(LOINC, "97509-4", "Cancer disease progression"),
            "values": _values(
                ("improved", _c(SNOMED, "268910001", "Patient's condition improved")),
                ("stable", _c(SNOMED, "359746009", "Patient's condition stable")),
                ("worsened", _c(SNOMED, "271299001", "Patient's condition worsened")),
                ("undetermined", _c(SNOMED, "709137006", "Patient condition undetermined")),
            ),
        },
        # --- series level ---------------------------------------------------------------
        {
            "key": "exam_purpose", "level": "series", "value_type": "category",
            "concept": _c(LOCAL, "exam_purpose", "Purpose of the examination"),
            "values": _values(
                _local("screening", "Screening"), _local("diagnosis", "Diagnosis"), _local("staging", "Staging"),
                _local("treatment_planning", "Treatment planning"), _local("follow_up", "Follow-up"),
                _local("response_assessment", "Treatment response assessment"),
            ),
        },
        {
            "key": "condition_at_exam", "level": "series", "value_type": "category",
            "concept": _c(LOCAL, "condition_at_exam", "Condition at examination"),
            "values": _values(
                _local("pre_treatment", "Before treatment"), _local("on_treatment", "During treatment"),
                _local("post_treatment", "After treatment"),
            ),
        },
        {
            "key": "diffuse_findings", "level": "series", "value_type": "categories",
            "concept": _c(LOCAL, "diffuse_findings", "Findings without a region"),
            "values": _values(
                ("emphysema", _c(SNOMED, "87433001", "Pulmonary emphysema")),
                ("fatty_liver", _c(SNOMED, "197321007", "Steatosis of liver")),
                ("atrophy", _c(LOCAL, "atrophy", "Atrophy")),
                ("fibrosis", _c(LOCAL, "fibrosis", "Fibrosis")),
            ),
        },
        {
            "key": "structural_change", "level": "series", "value_type": "text",
            "concept": _c(LOCAL, "structural_change", "Structural change"),
        },
        {
            "key": "normality", "level": "series", "value_type": "category",
            "concept": _c(LOCAL, "normality", "Normal or abnormal"),
            "values": _values(
                ("normal", _c(SNOMED, "17621005", "Normal")), ("abnormal", _c(SNOMED, "263654008", "Abnormal"))
            ),
        },
        # --- ROI level ------------------------------------------------------------------
        {
            "key": "lesion", "level": "roi", "value_type": "category",
            "concept": _c(SNOMED, "52988006", "Lesion"),
            "values": _values(
                ("primary_tumour", _c(SNOMED, "86049000", "Malignant neoplasm, primary")),
                ("lymph_node", _c(SNOMED, "59441001", "Structure of lymph node")),
                ("metastasis", _c(SNOMED, "14799000", "Neoplasm, metastatic")),
                ("other_lesion", _c(SNOMED, "52988006", "Lesion")),
            ),
        },
        {
            "key": "margin", "level": "roi", "value_type": "category", "attribute": True,
            "concept": _c(LOCAL, "margin", "Margin"),
            "values": _values(
                _local("smooth", "Smooth"), _local("lobulated", "Lobulated"),
                _local("spiculated", "Spiculated"), _local("ill_defined", "Ill-defined"),
            ),
        },
        {
            "key": "internal_structure", "level": "roi", "value_type": "categories", "attribute": True,
            "concept": _c(LOCAL, "internal_structure", "Internal structure"),
            "values": _values(
                _local("solid", "Solid"), _local("part_solid", "Part-solid"), _local("ground_glass", "Ground-glass"),
                _local("cystic", "Cystic"), _local("necrosis", "Necrosis"), _local("calcification", "Calcification"),
            ),
        },
        {
            "key": "long_axis", "level": "roi", "value_type": "number", "unit": "mm", "attribute": True,
            "concept": _c(LOCAL, "long_axis", "Long axis diameter"),
        },
    ]
}  # fmt: skip
