"""The clinical side of a dataset: cohort criteria as a FHIR search, and each patient's mCODE summary.

A series reaches its patient through the FHIR ImagingStudy the imaging service keeps in the clinical
service (identifier ``urn:dicom:uid|urn:oid:<Study Instance UID>``, ``subject`` the Patient).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from oncostruct_shared.errors import Unprocessable, UpstreamError
from oncostruct_shared.http import raise_for_upstream, transport_error

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition"
#: LOINC codes of the TNM categories and stage group (clinical and pathological; mCODE STU 4 value sets).
TNM_CODES = {
    "t_category": {"21905-5", "21899-0"},
    "n_category": {"21906-3", "21900-6"},
    "m_category": {"21907-1", "21901-4"},
    "stage_group": {"21908-9", "21902-2"},
}
DISEASE_STATUS = "97509-4"
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})$")


def parse_criteria(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``Type?param=value&…`` → (type, params); :class:`Unprocessable` if it is not a FHIR search."""
    parts = urlsplit(text.strip())
    resource_type = parts.path.strip("/")
    if parts.scheme or parts.netloc or not _TYPE.match(resource_type):
        raise Unprocessable(
            f"fhir_query {text!r} is not a FHIR search such as 'Condition?code=http://snomed.info/sct|254637007'.",
            expression=["fhir_query"],
        )
    return resource_type, parse_qsl(parts.query, keep_blank_values=True)


class ClinicalReader:
    """Reads the clinical FHIR server with the service's client token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        try:
            query = httpx.QueryParams(tuple(params or ()))
            response = await self.http.get(path, params=query, headers={"Accept": FHIR_JSON})
        except httpx.HTTPError as exc:
            raise transport_error(exc, "The clinical service") from exc
        if response.status_code == 400:
            issues = "; ".join(i.get("diagnostics", "") for i in response.json().get("issue", []))
            raise UpstreamError(f"The clinical service refused the search {path}: {issues}")
        raise_for_upstream(response, "The clinical service")
        body: dict[str, Any] = response.json()
        return body

    async def search(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Every match of a search (following ``next`` links)."""
        return await self._all(f"/{resource_type}", [*params, ("_count", "500")])

    async def _all(self, path: str, params: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        bundle = await self._get(path, params)
        resources: list[dict[str, Any]] = []
        while True:
            resources += [entry["resource"] for entry in bundle.get("entry", []) if "resource" in entry]
            following = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None)
            if following is None:
                return resources
            parts = urlsplit(following)
            bundle = await self._get(parts.path.split("/fhir", 1)[-1], parse_qsl(parts.query))

    async def cohort(self, criteria: str) -> set[str]:
        """Ids of the Patients a FHIR search names (the Patients themselves, or its matches' subject/patient)."""
        resource_type, params = parse_criteria(criteria)
        patients = set()
        for resource in await self.search(resource_type, params):
            if resource.get("resourceType") == "Patient":
                patients.add(str(resource["id"]))
                continue
            for field in ("subject", "patient"):
                match = _PATIENT_REF.search(str((resource.get(field) or {}).get("reference", "")))
                if match:
                    patients.add(match.group(1))
        return patients

    async def imaging_study(self, study_uid: str) -> tuple[str, str] | None:
        """(ImagingStudy id, Patient id) of a study, or None while the imaging service has not linked it."""
        studies = await self.search("ImagingStudy", [("identifier", f"urn:dicom:uid|urn:oid:{study_uid}")])
        for study in studies:
            match = _PATIENT_REF.search(str((study.get("subject") or {}).get("reference", "")))
            if match:
                return str(study["id"]), match.group(1)
        return None

    async def study_patient(self, study_uid: str) -> str | None:
        """The Patient id of a study's ImagingStudy, or None while the study is not linked."""
        found = await self.imaging_study(study_uid)
        return found[1] if found else None

    async def everything(self, patient_id: str) -> list[dict[str, Any]]:
        """The patient's compartment (``Patient/{id}/$everything``)."""
        return await self._all(f"/Patient/{patient_id}/$everything")


def _concept_text(concept: dict[str, Any] | None) -> str | None:
    if not concept:
        return None
    codings = concept.get("coding") or []
    for coding in codings:
        if coding.get("display"):
            return str(coding["display"])
    if concept.get("text"):
        return str(concept["text"])
    return str(codings[0].get("code")) if codings else None


def _codes(resource: dict[str, Any]) -> set[str]:
    return {str(c.get("code")) for c in (resource.get("code") or {}).get("coding", []) if c.get("system") == LOINC}


def _when(resource: dict[str, Any]) -> str:
    return str(resource.get("effectiveDateTime") or (resource.get("meta") or {}).get("lastUpdated") or "")


def patient_summary(resources: list[dict[str, Any]]) -> dict[str, str | None]:
    """Diagnosis, T, N, M, stage group and the latest disease status from a patient's FHIR resources (mCODE)."""
    summary: dict[str, str | None] = dict.fromkeys(
        ("diagnosis", "t_category", "n_category", "m_category", "stage_group", "disease_status")
    )
    conditions = [r for r in resources if r.get("resourceType") == "Condition"]
    primary = [
        c for c in conditions if any("primary-cancer-condition" in p for p in (c.get("meta") or {}).get("profile", []))
    ]
    if primary or conditions:
        summary["diagnosis"] = _concept_text((primary or conditions)[0].get("code"))
    observations = sorted(
        (r for r in resources if r.get("resourceType") == "Observation" and r.get("status") != "entered-in-error"),
        key=_when,
    )
    for observation in observations:  # oldest first: the latest of each kind wins
        codes = _codes(observation)
        value = _concept_text(observation.get("valueCodeableConcept"))
        for key, wanted in TNM_CODES.items():
            if codes & wanted:
                summary[key] = value
        if DISEASE_STATUS in codes:
            summary["disease_status"] = value
    return summary
