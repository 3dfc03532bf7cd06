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

``treatment`` has no single mCODE resource (surgery, radiotherapy and drugs are
different resources) and is not written through yet.
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
OBSERVATION_STATUS = {"approved": "final", "deleted": "entered-in-error"}


def written_through(label: str) -> bool:
    """Whether a patient-level label is written to the clinical service."""
    return label in PROFILES


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
    if definition is None or not written_through(label):
        raise ValueError(f"label {label!r} is not written through to FHIR")
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
