"""A DICOMweb client for calls between services (PS3.18): metadata, series retrieve, STOW-RS.

Every transport failure and refusal is mapped once, here, to the suite's
upstream errors (:func:`~oncostruct_shared.http.raise_for_upstream`), so a
caller's job can tell "try again later" from "this will never work".
Retrieved instances are streamed to files (:func:`spool_multipart`), so a
large series never sits in memory as one body.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .errors import UpstreamError
from .http import raise_for_upstream, transport_error
from .multipart import parse_media_type, spool_multipart

if TYPE_CHECKING:
    from pydicom import Dataset

DICOM_JSON = "application/dicom+json"
FAILED_SOP_SEQUENCE, FAILURE_REASON = "00081198", "00081197"


def first_value(attributes: dict[str, Any], tag: str, default: Any = None) -> Any:
    """The first value of ``tag`` in a DICOM JSON object (PS3.18 §F.2), or ``default``."""
    values = attributes.get(tag, {}).get("Value") or [default]
    return values[0]


def stow_body(datasets: Iterable[Dataset], boundary: str) -> bytes:
    """A ``multipart/related; type="application/dicom"`` body of the datasets (Part 10 files)."""
    body = bytearray()
    for dataset in datasets:
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += buffer.getvalue() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body)


class DicomwebClient:
    """A DICOMweb origin reached with an authenticated :class:`httpx.AsyncClient` (base URL = the DICOMweb root).

    Parameters
    ----------
    http
        Client whose base URL is the service's DICOMweb root.
    upstream
        How errors name the peer ("The imaging service").
    """

    def __init__(self, http: httpx.AsyncClient, upstream: str = "The imaging service") -> None:
        self.http = http
        self.upstream = upstream

    async def series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """The series' instance metadata (WADO-RS, PS3.18 §10.4.1.1.2) as DICOM JSON; [] if the series is unknown."""
        try:
            response = await self.http.get(
                f"/studies/{study_uid}/series/{series_uid}/metadata", headers={"Accept": DICOM_JSON}
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.upstream) from exc
        if response.status_code in (204, 404):
            return []
        raise_for_upstream(response, self.upstream)
        items: list[dict[str, Any]] = response.json()
        return items

    async def retrieve_series(
        self, study_uid: str, series_uid: str, folder: Path, transfer_syntax: str | None = None
    ) -> list[Path]:
        """Retrieve every instance of a series (PS3.18 §10.4.1.1.1) into files under ``folder``.

        ``transfer_syntax`` asks for one syntax (the origin transcodes, or answers 406 →
        :class:`UpstreamError`); None takes the origin's default. Returns the files in body order.
        """
        accept = 'multipart/related; type="application/dicom"' + (
            f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
        )
        counter = iter(range(1_000_000))

        def new_file() -> Path:
            return folder / f"{next(counter):06d}.dcm"

        try:
            async with self.http.stream(
                "GET", f"/studies/{study_uid}/series/{series_uid}", headers={"Accept": accept}
            ) as response:
                if response.status_code == 406:
                    raise UpstreamError(
                        f"{self.upstream} cannot send series {series_uid} in transfer syntax {transfer_syntax} "
                        "(406: not decodable or not transcodable)."
                    )
                if not response.is_success:
                    await response.aread()
                raise_for_upstream(response, self.upstream)
                boundary = parse_media_type(response.headers.get("content-type", "")).params.get("boundary", "")
                if not boundary:
                    raise UpstreamError(f"{self.upstream} answered a retrieve without a multipart boundary.")
                parts = await spool_multipart(response.aiter_bytes(), boundary, new_file)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.upstream) from exc
        return [part.path for part in parts]

    async def store(self, study_uid: str, datasets: list[Dataset]) -> dict[str, Any]:
        """STOW-RS the datasets into the study (PS3.18 §10.5); raise unless every instance was stored.

        Returns the STOW-RS response (ReferencedSOPSequence with RetrieveURLs).
        """
        boundary = uuid.uuid4().hex
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        try:
            response = await self.http.post(
                f"/studies/{study_uid}",
                content=stow_body(datasets, boundary),
                headers={"Content-Type": content_type, "Accept": DICOM_JSON},
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, self.upstream) from exc
        if response.status_code in (202, 409):
            failed = response.json().get(FAILED_SOP_SEQUENCE, {}).get("Value", []) if response.content else []
            reasons = [str(first_value(item, FAILURE_REASON)) for item in failed]
            raise UpstreamError(f"{self.upstream} did not store every instance (failure reasons {reasons}).")
        raise_for_upstream(response, self.upstream)
        stored: dict[str, Any] = response.json()
        return stored
