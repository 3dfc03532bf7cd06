"""The Patient compartment, for SMART ``patient/`` scopes.

A token whose ``patient`` claim names a Patient (the SMART launch context) and whose scopes are
``patient/…`` may reach that Patient and the resources in its compartment — those whose
compartment search parameters (R4 CompartmentDefinition ``patient``,
http://hl7.org/fhir/R4/compartmentdefinition-patient.html) reference it — and nothing else of
those types. Types outside the compartment (Medication, Practitioner, Organization …) hold no
patient data and may be read and searched, not written. Membership is read from the reference
search index, written with each version.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, tuple_

from .models import ReferenceIndexRow
from .repository import Db
from .search.indexing import index_resource

#: Compartment parameters of the served types (R4); Patient is in its own compartment by id.
PATIENT_COMPARTMENT: dict[str, tuple[str, ...]] = {
    "Observation": ("subject", "performer"),
    "Condition": ("patient", "asserter"),
    "Procedure": ("patient", "performer"),
    "MedicationRequest": ("subject",),
    "MedicationAdministration": ("patient", "performer", "subject"),
    "BodyStructure": ("patient",),
    "ImagingStudy": ("patient",),
    "DiagnosticReport": ("subject",),
    "Specimen": ("subject",),
    "Encounter": ("patient",),
    "Provenance": ("patient",),
    "Group": ("member",),
    "FamilyMemberHistory": ("patient",),
    "ServiceRequest": ("subject", "performer"),
}


def in_scope_type(resource_type: str) -> bool:
    """Whether resources of this type may hold patient data (Patient, a compartment type, or Bundle —
    stored documents and collections can hold anyone's data, so patient/ scopes never reach them)."""
    return resource_type in ("Patient", "Bundle") or resource_type in PATIENT_COMPARTMENT


def search_criterion(resource_type: str, patient_id: str) -> tuple[str, str]:
    """The search criterion that keeps a search inside the compartment (the type's first parameter)."""
    if resource_type == "Patient":
        return "_id", patient_id
    return PATIENT_COMPARTMENT[resource_type][0], f"Patient/{patient_id}"


def content_in_compartment(content: dict[str, Any], patient_id: str, base_url: str) -> bool:
    """Whether a body to be written belongs to the launch patient alone: the Patient itself, or a resource
    whose compartment parameters reference that patient and no other patient."""
    resource_type = str(content.get("resourceType", ""))
    if resource_type == "Patient":
        return content.get("id") == patient_id
    params = PATIENT_COMPARTMENT.get(resource_type, ())
    patients = {
        target_id
        for param, target_type, target_id, url in index_resource(content, base_url).reference
        if param in params and (target_type == "Patient" or (url or "").split("/")[-2:-1] == ["Patient"])
    }
    return patients == {patient_id}


async def members(session: Db, resources: list[tuple[str, str]], patient_id: str) -> set[tuple[str, str]]:
    """Which of ``(type, id)`` are in the patient's compartment (stored versions); types outside it pass."""
    allowed = {(t, i) for t, i in resources if not in_scope_type(t) or (t == "Patient" and i == patient_id)}
    candidates = [(t, i) for t, i in resources if t in PATIENT_COMPARTMENT]
    if not candidates:
        return allowed
    table = ReferenceIndexRow.__table__
    pairs = [(t, p) for t in {t for t, _ in candidates} for p in PATIENT_COMPARTMENT[t]]
    query = (
        select(table.c.resource_type, table.c.resource_id)
        .where(
            table.c.target_type == "Patient",
            table.c.target_id == patient_id,
            tuple_(table.c.resource_type, table.c.resource_id).in_(candidates),
            tuple_(table.c.resource_type, table.c.param).in_(pairs),
        )
        .distinct()
    )
    return allowed | {(str(row[0]), str(row[1])) for row in await session.execute(query)}
