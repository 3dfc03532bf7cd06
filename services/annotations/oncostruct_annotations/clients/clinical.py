"""The clinical service as the annotation service needs it: writing patient-level labels as FHIR resources."""

from __future__ import annotations

from typing import Any

import httpx

from oncostruct_shared.errors import UpstreamError
from oncostruct_shared.http import raise_for_upstream, transport_error

FHIR_JSON = "application/fhir+json"


class ClinicalClient:
    """Writes to the clinical FHIR server with this service's client-credentials token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def update(self, resource: dict[str, Any]) -> dict[str, Any]:
        """PUT the resource under its own id (FHIR update, creating it if new: http://hl7.org/fhir/R4/http.html#update).

        Idempotent, so retried on transient failures; any failure raises and nothing is claimed.
        """
        path = f"/{resource['resourceType']}/{resource['id']}"
        try:
            response = await self.http.put(
                path, json=resource, headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, "The clinical service") from exc
        if response.status_code in (400, 422):
            outcome = response.json() if response.content else {}
            issues = "; ".join(str(issue.get("diagnostics", "")) for issue in outcome.get("issue", []))
            raise UpstreamError(f"The clinical service refused {path}: {issues or response.status_code}.")
        raise_for_upstream(response, "The clinical service")
        stored: dict[str, Any] = response.json() if response.content else resource
        return stored
