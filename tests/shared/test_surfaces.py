"""Error renderers, one per surface, as pure functions."""

from __future__ import annotations

import json

import pytest

from oncostruct_shared.errors import (
    ERROR_BY_STATUS,
    Invalid,
    NotFound,
    OncoStructError,
    PreconditionFailed,
    UpstreamUnavailable,
    error_for_status,
)
from oncostruct_shared.surfaces import DicomwebSurface, FhirSurface, ProblemSurface, warning_header


def _body(response: object) -> dict[str, object]:
    return json.loads(response.body)  # type: ignore[attr-defined,no-any-return]


def test_problem_document_has_rfc9457_members() -> None:
    error = Invalid("name is required", expression=["name"], headers={"X-Test": "1"})
    response = ProblemSurface().render(error, instance="/annotations/v1/projects", request_id="r1")
    assert response.status_code == 400
    assert response.media_type == "application/problem+json"
    assert response.headers["x-test"] == "1"
    assert _body(response) == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "name is required",
        "instance": "/annotations/v1/projects",
        "request_id": "r1",
        "errors": [{"location": "name", "detail": "name is required"}],
    }


@pytest.mark.parametrize(
    ("error", "code", "severity"),
    [
        (NotFound("gone fishing"), "not-found", "error"),
        (PreconditionFailed("version 2 is not current"), "conflict", "error"),
        (UpstreamUnavailable("try later"), "transient", "fatal"),
        (OncoStructError("boom"), "exception", "fatal"),
    ],
)
def test_operation_outcome_carries_issue_type(error: OncoStructError, code: str, severity: str) -> None:
    response = FhirSurface().render(error, instance="/fhir/Patient/1", request_id="r")
    assert response.status_code == error.status
    assert response.media_type == "application/fhir+json"
    assert _body(response) == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": error.detail}],
    }


def test_operation_outcome_points_at_elements() -> None:
    error = Invalid("birthDate is not a date", expression=["Patient.birthDate"])
    issue = _body(FhirSurface().render(error, instance="/", request_id="r"))["issue"]
    assert issue == [
        {"severity": "error", "code": "invalid", "diagnostics": error.detail, "expression": ["Patient.birthDate"]}
    ]


def test_dicomweb_error_has_warning_header() -> None:
    response = DicomwebSurface("oncostruct-imaging").render(
        Invalid('StudyDate "2026-13-01" is not a date'), instance="/dicomweb/studies", request_id="r"
    )
    assert response.status_code == 400
    assert response.headers["warning"] == '299 oncostruct-imaging "StudyDate \\"2026-13-01\\" is not a date"'


def test_warning_header_survives_non_latin_text() -> None:
    value = warning_header("agent", "患者名 山田\nline two")
    value.encode("latin-1")  # must not raise: HTTP headers are ISO-8859-1
    assert value.startswith('299 agent "')
    assert "\n" not in value


def test_every_error_class_maps_back_from_its_status() -> None:
    for status, cls in ERROR_BY_STATUS.items():
        assert cls.status == status
        assert error_for_status(status) is cls
    assert error_for_status(418) is Invalid
    assert error_for_status(599) is OncoStructError
