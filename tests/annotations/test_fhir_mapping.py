"""Patient-level labels as mCODE resources, parsed strictly by fhirclient's R4 models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from fhirclient.models.condition import Condition
from fhirclient.models.medicationrequest import MedicationRequest
from fhirclient.models.observation import Observation
from fhirclient.models.procedure import Procedure

from oncostruct_annotations.fhir_mapping import PROFILES, mcode_resource, treatment_resources
from oncostruct_annotations.vocabulary import DEFAULT_SCHEMA, SchemaDefinition

SCHEMA = SchemaDefinition.model_validate(DEFAULT_SCHEMA)
WHEN = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def build(label: str, value: object, status: str = "approved", **extra: object) -> dict[str, object]:
    return mcode_resource(
        SCHEMA, annotation_id=str(uuid.uuid4()), label=label, value=value, status=status, patient_id="pat-1",
        recorded=WHEN, author="dr-sato", **extra,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("label", "value", "loinc", "value_code"),
    [
        ("t_category", "t2a", "21905-5", "t2a"),
        ("n_category", "n1", "21906-3", "n1"),
        ("m_category", "m0", "21907-1", "m0"),
        ("disease_status", "stable", "97509-4", "359746009"),
    ],
)
def test_categorical_labels_become_mcode_observations(label: str, value: str, loinc: str, value_code: str) -> None:
    resource = build(label, value)
    parsed = Observation(resource, strict=True)
    assert parsed.meta.profile == [PROFILES[label]]
    assert (parsed.code.coding[0].system, parsed.code.coding[0].code) == ("http://loinc.org", loinc)
    assert parsed.valueCodeableConcept.coding[0].code == value_code
    assert parsed.subject.reference == "Patient/pat-1"
    assert parsed.status == "final"
    assert parsed.id == resource["id"]
    assert parsed.identifier[0].value == resource["id"]


def test_stage_group_links_its_tnm_members() -> None:
    members = {"t_category": "t-id", "n_category": "n-id", "m_category": "m-id"}
    parsed = Observation(build("stage_group", "stage_iiia", members=members), strict=True)
    assert [member.reference for member in parsed.hasMember] == [
        "Observation/t-id",
        "Observation/n-id",
        "Observation/m-id",
    ]
    assert parsed.valueCodeableConcept.text == "Stage IIIA"


def test_deleted_label_is_entered_in_error() -> None:
    assert Observation(build("t_category", "t1", status="deleted"), strict=True).status == "entered-in-error"
    condition = Condition(build("primary_diagnosis", "Adenocarcinoma of the right upper lobe", status="deleted"))
    assert condition.verificationStatus.coding[0].code == "entered-in-error"


def test_primary_diagnosis_becomes_a_primary_cancer_condition() -> None:
    parsed = Condition(build("primary_diagnosis", "Adenocarcinoma of the right upper lobe"), strict=True)
    assert parsed.code.text == "Adenocarcinoma of the right upper lobe"
    assert parsed.meta.profile == [PROFILES["primary_diagnosis"]]
    assert parsed.category[0].coding[0].code == "problem-list-item"


def test_labels_without_a_resource_are_refused() -> None:
    with pytest.raises(ValueError, match="not written through"):
        build("exam_purpose", "staging")
    with pytest.raises(ValueError, match="not written through"):
        build("treatment", ["surgery"])  # several resources: treatment_resources


def test_treatments_are_valid_r4_procedures_and_medication_requests() -> None:
    annotation = str(uuid.uuid4())
    made = treatment_resources(
        SCHEMA, annotation_id=annotation, values=["surgery", "radiotherapy", "immunotherapy"], status="approved",
        patient_id="pat-1", recorded=WHEN, author="dr-sato",
    )  # fmt: skip
    surgery, radiotherapy, drug = (
        Procedure(made[0], strict=True), Procedure(made[1], strict=True), MedicationRequest(made[2], strict=True)
    )  # fmt: skip
    assert surgery.status == "completed"
    assert surgery.category.coding[0].code == "387713003"
    assert radiotherapy.code.coding[0].code == "radiotherapy"
    assert drug.intent == "order"
    assert drug.subject.reference == "Patient/pat-1"
    assert len({r["id"] for r in made}) == 3  # one stable id per value
    again = treatment_resources(
        SCHEMA, annotation_id=annotation, values=["surgery"], status="deleted", patient_id="pat-1",
        recorded=WHEN, author="dr-sato",
    )  # fmt: skip
    assert again[0]["id"] == made[0]["id"]
    assert again[0]["status"] == "entered-in-error"
