"""Patient-level labels as mCODE resources (HL7 mCODE STU 4, FHIR R4).

An approved patient-level annotation becomes clinical truth: it is written to
the clinical service as the mCODE resource its label stands for, under the
annotation's own id (so writing it again is an idempotent update):

- ``t_category`` / ``n_category`` / ``m_category`` → TNM category Observations,
- ``stage_group`` → TNM stage group Observation with ``hasMember`` the patient's
  approved T, N and M Observations,
- ``disease_status`` → CancerDiseaseStatus Observation,
- ``primary_diagnosis`` → PrimaryCancerCondition (free text: ``code.text``;
  a coded diagnosis needs a coded label, see the README).

- ``treatment`` → one resource per value: surgery and radiotherapy as ``Procedure``, drug
  therapies as ``MedicationRequest`` (mCODE's treatment resources; their mCODE profiles are not
  claimed, since the schema's treatment values are local codes, not the SNOMED CT procedures and
  RxNorm medications those profiles bind).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .vocabulary import LabelDefinition, SchemaDefinition

MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition"
ANNOTATION_SYSTEM = "urn:oncostruct:annotation"
PROFILES = {
    "t_category": f"{MCODE}/mcode-tnm-primary-tumor-category",
    "n_category": f"{MCODE}/mcode-tnm-regional-nodes-category",
    "m_category": f"{MCODE}/mcode-tnm-distant-metastases-category",
    "stage_group": f"{MCODE}/mcode-tnm-stage-group",
    "disease_status": f"{MCODE}/mcode-cancer-disease-status",
    "primary_diagnosis": f"{MCODE}/mcode-primary-cancer-condition",
}
SNOMED_SYSTEM = "http://snomed.info/sct"
OBSERVATION_STATUS = {"approved": "final", "deleted": "entered-in-error"}


#: Treatment values written as a Procedure (category SNOMED CT), the others as a MedicationRequest.
PROCEDURES = {
    "surgery": ("387713003", "Surgical procedure"),
    "radiotherapy": ("108290001", "Radiation oncology AND/OR radiotherapy"),
}


def written_through(label: str) -> bool:
    """Whether a patient-level label is written to the clinical service."""
    return label in PROFILES or label == "treatment"


def treatment_resources(
    schema: SchemaDefinition,
    *,
    annotation_id: str,
    values: list[str],
    status: str,
    patient_id: str,
    recorded: datetime,
    author: str,
) -> list[dict[str, Any]]:
    """The treatment label as one Procedure or MedicationRequest per value, ids derived from the annotation."""
    import uuid

    definition = schema.label("treatment")
    if definition is None:
        raise ValueError("the schema has no treatment label")
    resources = []
    for value in values:
        resource_id = str(uuid.uuid5(uuid.UUID(annotation_id), value))
        common: dict[str, Any] = {
            "id": resource_id,
            "identifier": [{"system": ANNOTATION_SYSTEM, "value": f"{annotation_id}/{value}"}],
            "subject": {"reference": f"Patient/{patient_id}"},
            "note": [{"text": f"Recorded by {author} in OncoStruct annotation {annotation_id}."}],
        }
        code = _coding(definition, value)
        if value in PROCEDURES:
            category_code, category_display = PROCEDURES[value]
            category = {"system": SNOMED_SYSTEM, "code": category_code, "display": category_display}
            resources.append(
                {
                    "resourceType": "Procedure",
                    **common,
                    "status": "entered-in-error" if status == "deleted" else "completed",
                    "category": {"coding": [category]},
                    "code": code,
                    "performedDateTime": recorded.isoformat(timespec="seconds"),
                }
            )
        else:
            resources.append(
                {
                    "resourceType": "MedicationRequest",
                    **common,
                    "status": "entered-in-error" if status == "deleted" else "active",
                    "intent": "order",
                    "medicationCodeableConcept": code,
                    "authoredOn": recorded.isoformat(timespec="seconds"),
                }
            )
    return resources


def _coding(label: LabelDefinition, value_key: str) -> dict[str, Any]:
    value = next(item for item in label.values if item.key == value_key)
    concept = value.concept
    return {
        "coding": [{"system": concept.system, "code": concept.code, "display": concept.display}],
        "text": concept.display,
    }


def _identifier(annotation_id: str) -> list[dict[str, str]]:
    return [{"system": ANNOTATION_SYSTEM, "value": annotation_id}]


def mcode_resource(
    schema: SchemaDefinition,
    *,
    annotation_id: str,
    label: str,
    value: Any,
    status: str,
    patient_id: str,
    recorded: datetime,
    author: str,
    members: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The FHIR resource (JSON) an annotation stands for.

    Parameters
    ----------
    schema
        The annotation's schema version (for the coded concepts).
    annotation_id
        Becomes the resource id and an identifier, so writes are idempotent.
    status
        The annotation's status (``approved`` → final, ``deleted`` → entered-in-error).
    members
        For ``stage_group``: label key (``t_category`` …) → id of the approved member Observation.
    """
    definition = schema.label(label)
    if definition is None or label not in PROFILES:
        raise ValueError(f"label {label!r} is not written through to FHIR as one resource")
    subject = {"reference": f"Patient/{patient_id}"}
    meta = {"profile": [PROFILES[label]]}
    if label == "primary_diagnosis":
        verification = "entered-in-error" if status == "deleted" else "confirmed"
        return {
            "resourceType": "Condition",
            "id": annotation_id,
            "meta": meta,
            "identifier": _identifier(annotation_id),
            "clinicalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
            },
            "verificationStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "problem-list-item",
                        }
                    ]
                }
            ],
            "code": {"text": str(value)},
            "subject": subject,
            "recordedDate": recorded.isoformat(timespec="seconds"),
            "note": [{"text": f"Recorded by {author} in OncoStruct annotation {annotation_id}."}],
        }
    concept = definition.concept
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": annotation_id,
        "meta": meta,
        "identifier": _identifier(annotation_id),
        "status": OBSERVATION_STATUS.get(status, "preliminary"),
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}
        ],
        "code": {"coding": [{"system": concept.system, "code": concept.code, "display": concept.display}]},
        "subject": subject,
        "effectiveDateTime": recorded.isoformat(timespec="seconds"),
        "valueCodeableConcept": _coding(definition, str(value)),
        "note": [{"text": f"Recorded by {author} in OncoStruct annotation {annotation_id}."}],
    }
    if label == "stage_group" and members:
        observation["hasMember"] = [
            {"reference": f"Observation/{members[key]}"}
            for key in ("t_category", "n_category", "m_category")
            if key in members
        ]
    return observation


# --- series- and ROI-level findings -------------------------------------------------------------

TRACKING_SYSTEM = "urn:oncostruct:lesion-tracking"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _value(definition: LabelDefinition, value: Any) -> dict[str, Any]:
    """The ``value[x]`` of an Observation (or component) for a label value."""
    if definition.value_type == "category":
        return {"valueCodeableConcept": _coding(definition, str(value))}
    if definition.value_type == "boolean":
        return {"valueBoolean": bool(value)}
    if definition.value_type == "number":
        quantity: dict[str, Any] = {"value": value}
        if definition.unit:
            quantity |= {"unit": definition.unit, "system": "http://unitsofmeasure.org", "code": definition.unit}
        return {"valueQuantity": quantity}
    return {"valueString": str(value)}


def _concept(definition: LabelDefinition) -> dict[str, Any]:
    concept = definition.concept
    return {"coding": [{"system": concept.system, "code": concept.code, "display": concept.display}]}


def tracked_lesion_id(project_id: str, patient_id: str, tracking_id: str) -> str:
    """The BodyStructure id of a tracked lesion: the same for every annotation of it in the project."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"oncostruct:{project_id}:{patient_id}:{tracking_id}"))


def finding_resources(
    schema: SchemaDefinition,
    *,
    annotation_id: str,
    project_id: str,
    label: str,
    value: Any,
    attributes: dict[str, Any],
    tracking_id: str | None,
    status: str,
    patient_id: str,
    imaging_study_id: str,
    series_uid: str,
    recorded: datetime,
    author: str,
) -> list[dict[str, Any]]:
    """A series- or ROI-level finding as an imaging Observation ``derivedFrom`` its ImagingStudy.

    Multi-valued labels become one component per value; ROI attributes (margin, internal structure …)
    become components too. A tracked lesion (``tracking_id``) is a BodyStructure — one per lesion and
    patient in the project, so follow-up studies point at the same one — that the Observation has as
    its ``focus``. Returns the resources in the order they must be written (BodyStructure first).
    """
    definition = schema.label(label)
    if definition is None:
        raise ValueError(f"label {label!r} is not in the schema")
    subject = {"reference": f"Patient/{patient_id}"}
    resources: list[dict[str, Any]] = []
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": annotation_id,
        "identifier": _identifier(annotation_id),
        "status": OBSERVATION_STATUS.get(status, "preliminary"),
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "imaging"}]}],
        "code": _concept(definition),
        "subject": subject,
        "effectiveDateTime": recorded.isoformat(timespec="seconds"),
        "derivedFrom": [{"reference": f"ImagingStudy/{imaging_study_id}", "display": f"series {series_uid}"}],
        "note": [{"text": f"Recorded by {author} in OncoStruct annotation {annotation_id}."}],
    }
    components = []
    if definition.value_type == "categories":
        components += [{"code": _concept(definition), **_value_of_category(definition, v)} for v in value or []]
    elif value is not None:
        observation |= _value(definition, value)
    for key, attribute_value in sorted(attributes.items()):
        attribute = schema.label(key)
        if attribute is None:
            continue
        values = attribute_value if attribute.value_type == "categories" else [attribute_value]
        for item in values:
            components.append(
                {
                    "code": _concept(attribute),
                    **(_value_of_category(attribute, item) if attribute.values else _value(attribute, item)),
                }
            )
    if components:
        observation["component"] = components
    if tracking_id:
        lesion_id = tracked_lesion_id(project_id, patient_id, tracking_id)
        lesion: dict[str, Any] = {
            "resourceType": "BodyStructure",
            "id": lesion_id,
            "identifier": [{"system": TRACKING_SYSTEM, "value": f"{project_id}/{tracking_id}"}],
            "active": True,
            "description": f"Tracked lesion {tracking_id}",
            "patient": subject,
        }
        if definition.values and value is not None and definition.value_type == "category":
            lesion["morphology"] = _coding(definition, str(value))
        resources.append(lesion)
        observation["focus"] = [{"reference": f"BodyStructure/{lesion_id}"}]
    resources.append(observation)
    return resources


def _value_of_category(definition: LabelDefinition, value: Any) -> dict[str, Any]:
    return {"valueCodeableConcept": _coding(definition, str(value))}
