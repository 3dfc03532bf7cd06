"""The clinical service's first FHIR interactions, driven by fhirpy and fhirclient."""

from __future__ import annotations

import httpx
import pytest
from fhirclient import client as fhirclient_client
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from oncostruct_clinical.api.security import smart_permits
from tests.support import Issuer, bearer


@pytest.fixture
def fhir(clinical_url: str, issuer: Issuer) -> SyncFHIRClient:
    return SyncFHIRClient(f"{clinical_url}/fhir", authorization=f"Bearer {issuer.token('system/*.cruds')}")


def test_create_then_read_a_patient_with_fhirpy(fhir: SyncFHIRClient) -> None:
    patient = fhir.resource(
        "Patient",
        identifier=[{"system": "urn:oid:1.2.392.200119.6.102", "value": "P-0001"}],
        name=[{"family": "山田", "given": ["太郎"]}],
        gender="male",
        birthDate="1960-04-01",
    )
    patient.save()
    assert patient.id
    assert patient["meta"]["versionId"] == "1"
    again = fhir.reference("Patient", patient.id).to_resource()
    assert again["name"][0]["family"] == "山田"
    assert again["identifier"][0]["value"] == "P-0001"
    assert again["meta"]["lastUpdated"] == patient["meta"]["lastUpdated"]


def test_reading_an_unknown_patient_is_not_found(fhir: SyncFHIRClient) -> None:
    with pytest.raises(ResourceNotFound):
        fhir.reference("Patient", "no-such-patient").to_resource()


def test_create_answers_location_etag_and_honours_return_minimal(
    clinical_url: str, issuer: Issuer, http: httpx.Client
) -> None:
    headers = {**bearer(issuer.token("system/Condition.c")), "content-type": "application/fhir+json"}
    body = {"resourceType": "Condition", "id": "client-chosen", "subject": {"reference": "Patient/x"}}
    created = http.post(f"{clinical_url}/fhir/Condition", json=body, headers=headers)
    assert created.status_code == 201
    assert created.json()["id"] != "client-chosen"  # create assigns the id
    assert created.headers["etag"] == 'W/"1"'
    location = created.headers["location"]
    assert location == f"{clinical_url}/fhir/Condition/{created.json()['id']}/_history/1"
    minimal = http.post(f"{clinical_url}/fhir/Condition", json=body, headers={**headers, "Prefer": "return=minimal"})
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("application/fhir+json", b'{"resourceType": "Observation"}', 400, "invalid"),
        ("application/fhir+json", b"[1, 2]", 400, "invalid"),
        ("application/fhir+json", b"{oops", 400, "invalid"),
        ("application/fhir+xml", b"<Patient xmlns='http://hl7.org/fhir'/>", 415, "not-supported"),
    ],
)
def test_bad_create_is_an_operation_outcome(
    content_type: str, body: bytes, status: int, code: str, clinical_url: str, issuer: Issuer, http: httpx.Client
) -> None:
    response = http.post(
        f"{clinical_url}/fhir/Patient",
        content=body,
        headers={**bearer(issuer.token("system/*.cruds")), "content-type": content_type},
    )
    assert response.status_code == status
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code


def test_wrong_resource_type_points_at_the_element(fhir: SyncFHIRClient) -> None:
    with pytest.raises(OperationOutcome) as caught:
        fhir.execute("Patient", method="post", data={"resourceType": "Observation", "status": "final"})
    assert "resourceType" in str(caught.value)


def test_unsupported_type_is_not_found(clinical_url: str, issuer: Issuer, http: httpx.Client) -> None:
    response = http.get(f"{clinical_url}/fhir/Spaceship/1", headers=bearer(issuer.token("system/*.cruds")))
    assert response.status_code == 404
    assert response.json()["issue"][0]["code"] == "not-found"


def test_xml_is_not_acceptable(clinical_url: str, issuer: Issuer, http: httpx.Client) -> None:
    response = http.get(f"{clinical_url}/fhir/metadata", params={"_format": "xml"})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"


def test_capability_statement_parses_with_fhirclient(clinical_url: str) -> None:
    smart = fhirclient_client.FHIRClient(settings={"app_id": "oncostruct-tests", "api_base": f"{clinical_url}/fhir/"})
    statement = smart.server.capabilityStatement
    assert isinstance(statement, CapabilityStatement)
    assert statement.fhirVersion == "4.0.1"
    types = {resource.type: resource for resource in statement.rest[0].resource}
    assert {"Patient", "Condition", "Observation", "ImagingStudy", "BodyStructure"} <= set(types)
    assert {i.code for i in types["Patient"].interaction} >= {"read", "vread", "create", "update", "delete"}


def test_smart_configuration_is_public(clinical_url: str, http: httpx.Client, issuer: Issuer) -> None:
    document = http.get(f"{clinical_url}/fhir/.well-known/smart-configuration").json()
    assert document["token_endpoint"] == f"{issuer.url}/token"
    assert "permission-v2" in document["capabilities"]


@pytest.mark.parametrize(
    ("scopes", "resource_type", "interaction", "allowed"),
    [
        (["system/Patient.r"], "Patient", "r", True),
        (["system/Patient.r"], "Patient", "c", False),
        (["system/Patient.rs"], "Observation", "r", False),
        (["system/*.cruds"], "Observation", "d", True),
        (["user/Observation.cu"], "Observation", "u", True),
        (["user/Observation.cu"], "Observation", "r", False),
        (["system/*.read"], "Condition", "s", True),
        (["system/*.read"], "Condition", "c", False),
        (["system/Condition.write"], "Condition", "c", True),
        (["system/*.*"], "Procedure", "d", True),
        (["system/*.rc"], "Patient", "r", False),  # v2 permissions must be in cruds order
        (["patient/*.cruds"], "Patient", "r", False),  # only the launch patient's compartment: test_patient_scopes
        (["system/Observation.rs?category=laboratory"], "Observation", "r", False),
        (["openid", "fhirUser"], "Patient", "r", False),
    ],
)
def test_smart_scope_rules(scopes: list[str], resource_type: str, interaction: str, allowed: bool) -> None:
    assert smart_permits(scopes, resource_type, interaction) is allowed  # type: ignore[arg-type]


def test_read_scope_cannot_create(clinical_url: str, issuer: Issuer, http: httpx.Client) -> None:
    response = http.post(
        f"{clinical_url}/fhir/Patient",
        json={"resourceType": "Patient"},
        headers={**bearer(issuer.token("system/Patient.rs")), "content-type": "application/fhir+json"},
    )
    assert response.status_code == 403
    assert response.json()["issue"][0]["code"] == "forbidden"
