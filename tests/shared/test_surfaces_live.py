"""Every service, live: errors in its surface's format, auth, health, metrics, request ids."""

from __future__ import annotations

import importlib
import re
import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Issuer, bearer

# service → (a GET route needing a token, the scope it needs, a scope that is not enough)
READ_ROUTES = {
    "clinical": ("/fhir/Patient/does-not-exist", "system/Patient.r", "system/Observation.r"),
    "imaging": ("/dicomweb/studies", "dicomweb.read", "dicomweb.write"),
    "annotations": ("/annotations/v1/projects", "annotations.read", "annotations.write"),
    "reconstruction": ("/reconstruction/v1/jobs", "reconstruction.read", "reconstruction.run"),
}
PREFIXES = {
    "clinical": "/fhir",
    "imaging": "/dicomweb",
    "annotations": "/annotations/v1",
    "reconstruction": "/reconstruction/v1",
}
SERVICES = sorted(READ_ROUTES)


def send_headers_only(base_url: str, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    """Send a request head without its body and read the answer (what a server that checks early sees)."""
    url = httpx.URL(base_url)
    head = f"{method} {path} HTTP/1.1\r\nHost: {url.host}\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection((url.host, url.port), timeout=10) as connection:
        connection.sendall(head.encode("latin-1"))
        raw = b""
        while chunk := connection.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    header_block, _, body = rest.partition(b"\r\n\r\n")
    parsed = [line.decode("latin-1").split(":", 1) for line in header_block.split(b"\r\n") if line]
    return httpx.Response(
        int(status_line.split()[1]), headers=[(k.strip(), v.strip()) for k, v in parsed], content=body
    )


def assert_error_format(service: str, response: httpx.Response, status: int) -> None:
    """The response is ``status`` rendered the way ``service``'s standard asks."""
    assert response.status_code == status, response.text
    media_type = response.headers["content-type"].split(";")[0]
    if service == "clinical":
        assert media_type == "application/fhir+json"
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["severity"] in ("error", "fatal")
        assert body["issue"][0]["diagnostics"]
        return
    assert media_type == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    if service == "imaging":
        assert re.match(r'^299 oncostruct-imaging ".+"', response.headers["warning"])


@pytest.mark.parametrize("service", SERVICES)
def test_request_without_token_is_unauthorized(service: str, service_urls: dict[str, str], http: httpx.Client) -> None:
    path, _, _ = READ_ROUTES[service]
    response = http.get(service_urls[service] + path)
    assert_error_format(service, response, 401)
    assert response.headers["www-authenticate"] == 'Bearer realm="oncostruct"'


@pytest.mark.parametrize("service", SERVICES)
def test_request_with_scope_is_served(
    service: str, service_urls: dict[str, str], issuer: Issuer, http: httpx.Client
) -> None:
    path, scope, _ = READ_ROUTES[service]
    response = http.get(service_urls[service] + path, headers=bearer(issuer.token(scope)))
    # clinical's probe reads an id that does not exist: authorised, then 404.
    expected = 404 if service == "clinical" else 200
    assert response.status_code == expected, response.text


@pytest.mark.parametrize("service", SERVICES)
def test_request_lacking_scope_is_forbidden(
    service: str, service_urls: dict[str, str], issuer: Issuer, http: httpx.Client
) -> None:
    path, needed, other = READ_ROUTES[service]
    response = http.get(service_urls[service] + path, headers=bearer(issuer.token(other)))
    assert_error_format(service, response, 403)
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert needed.split("/")[-1].split(".")[0] in challenge


@pytest.mark.parametrize("service", SERVICES)
def test_unknown_route_is_not_found(service: str, service_urls: dict[str, str], http: httpx.Client) -> None:
    response = http.get(service_urls[service] + PREFIXES[service] + "/no/such/route/here")
    assert_error_format(service, response, 404)


@pytest.mark.parametrize("service", SERVICES)
def test_wrong_method_is_not_allowed(service: str, service_urls: dict[str, str], http: httpx.Client) -> None:
    path, _, _ = READ_ROUTES[service]
    response = http.request("PATCH", service_urls[service] + path.rsplit("/does-not-exist", 1)[0])
    assert_error_format(service, response, 405)
    assert response.headers["allow"]


@pytest.mark.parametrize("service", SERVICES)
def test_body_over_limit_is_rejected_before_reading(
    service: str, service_urls: dict[str, str], issuer: Issuer, http: httpx.Client
) -> None:
    # imaging's limit is 4 GiB: claim more than that in Content-Length; others 10 MiB.
    claimed = 5 * 1024**3 if service == "imaging" else 11 * 1024 * 1024
    path = PREFIXES[service] + "/anything"
    response = send_headers_only(service_urls[service], "POST", path, {"Content-Length": str(claimed)})
    assert_error_format(service, response, 413)


def test_streamed_body_over_limit_is_rejected(annotations_url: str, issuer: Issuer, http: httpx.Client) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        chunk = b" " * (1024 * 1024)
        for _ in range(12):  # 12 MiB, chunked: no Content-Length to reject up front
            yield chunk

    response = http.post(
        annotations_url + "/annotations/v1/projects",
        content=chunks(),
        headers={**bearer(issuer.token("annotations.write")), "content-type": "application/json"},
    )
    assert_error_format("annotations", response, 413)


@pytest.mark.parametrize("service", ["clinical", "annotations"])
def test_malformed_json_body_is_bad_request(
    service: str, service_urls: dict[str, str], issuer: Issuer, http: httpx.Client
) -> None:
    path = {"clinical": "/fhir/Patient", "annotations": "/annotations/v1/projects"}[service]
    scope = {"clinical": "system/Patient.c", "annotations": "annotations.write"}[service]
    media = {"clinical": "application/fhir+json", "annotations": "application/json"}[service]
    response = http.post(
        service_urls[service] + path,
        content=b'{"name": ',
        headers={**bearer(issuer.token(scope)), "content-type": media},
    )
    assert_error_format(service, response, 400)


@pytest.mark.parametrize("service", SERVICES)
def test_health_ready_and_metrics_need_no_token(service: str, service_urls: dict[str, str], http: httpx.Client) -> None:
    base = service_urls[service]
    assert http.get(base + "/healthz").json() == {"status": "ok"}
    ready = http.get(base + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    metrics = http.get(base + "/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "oncostruct_http_requests_total" in metrics.text


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_count_requests_by_route_template(
    service: str, service_urls: dict[str, str], http: httpx.Client
) -> None:
    base = service_urls[service]
    path, _, _ = READ_ROUTES[service]

    def unauthorised_count() -> float:
        total = 0.0
        for family in text_string_to_metric_families(http.get(base + "/metrics").text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name != "oncostruct_http_requests_total" or labels.get("service") != service:
                    continue
                assert "does-not-exist" not in labels["route"]  # templates, never raw ids
                assert labels["route"] in ("<unmatched>", "/healthz", "/readyz", "/metrics") or labels[
                    "route"
                ].startswith(PREFIXES[service])
                if labels["status"] == "401" and labels["method"] == "GET":
                    total += sample.value
        return total

    before = unauthorised_count()
    for _ in range(3):
        http.get(base + path)
    assert unauthorised_count() == before + 3


@pytest.mark.parametrize("service", SERVICES)
def test_request_id_is_echoed_or_generated(service: str, service_urls: dict[str, str], http: httpx.Client) -> None:
    base = service_urls[service]
    assert http.get(base + "/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = http.get(base + "/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


@pytest.mark.parametrize("service", SERVICES)
def test_openapi_document_lives_under_the_prefix(
    service: str, service_urls: dict[str, str], http: httpx.Client
) -> None:
    document = http.get(service_urls[service] + PREFIXES[service] + "/openapi.json").json()
    paths = document["paths"]
    assert paths
    assert all(path.startswith(PREFIXES[service]) for path in paths)
    assert "/healthz" not in paths
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


PUBLIC = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
          "/fhir/metadata", "/fhir/.well-known/smart-configuration")  # fmt: skip


@pytest.mark.parametrize("service", ["clinical", "imaging", "annotations", "reconstruction"])
def test_every_route_but_the_public_ones_needs_a_token(
    service: str, service_urls: dict[str, str], http: httpx.Client
) -> None:
    module = importlib.import_module(f"oncostruct_{service}.app")
    checked = 0
    for path, operations in module.create_app().openapi()["paths"].items():
        if path.endswith(PUBLIC):
            continue
        concrete = re.sub(r"\{resource_type\}", "Patient", path)
        concrete = re.sub(r"\{[^}]*(id|_id)\}", "6f1c2b1e-4a55-4c47-9b8e-0f4f5c2a9d10", concrete)
        concrete = re.sub(r"\{[^}]+\}", "1.2.3", concrete)
        for method in operations:
            response = http.request(method.upper(), service_urls[service] + concrete)
            assert response.status_code == 401, (method, path, response.status_code)
            checked += 1
    assert checked >= 3
