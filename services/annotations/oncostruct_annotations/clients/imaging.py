"""The imaging service as the annotation service needs it: series contents, metadata, and storing SEG/SR."""

from __future__ import annotations

from typing import Any

import httpx
from pydicom import Dataset

from oncostruct_shared.dicomweb import DicomwebClient
from oncostruct_shared.errors import Unprocessable
from oncostruct_shared.http import raise_for_upstream, transport_error

from ..geometry import ImageInfo, measure
from ..repository import check_geometry_fits
from ..schemas import AnnotationCreate
from ..vocabulary import Level

ROWS, COLUMNS, FRAMES, SOP_INSTANCE_UID = "00280010", "00280011", "00280008", "00080018"
PIXEL_SPACING, SLICE_THICKNESS = "00280030", "00180050"


def _first(dataset: dict[str, Any], tag: str, default: Any = None) -> Any:
    values = dataset.get(tag, {}).get("Value") or [default]
    return values[0]


class ImagingClient:
    """Reads the imaging service over DICOMweb (QIDO-RS, PS3.18 §10.6) with this service's client token."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def series_images(self, study_uid: str, series_uid: str) -> dict[str, ImageInfo]:
        """SOP Instance UID → grid and spacing of every instance in the series.

        Pages through QIDO-RS (``limit``/``offset``), since an origin cuts long answers.
        Raises :class:`Unprocessable` when the imaging service does not know the series.
        """
        images: dict[str, ImageInfo] = {}
        page = 1000
        while True:
            params: list[tuple[str, str | int | float | bool | None]] = [
                *(("includefield", tag) for tag in (ROWS, COLUMNS, FRAMES, PIXEL_SPACING, SLICE_THICKNESS)),
                ("limit", page),
                ("offset", len(images)),
            ]
            try:
                response = await self.http.get(
                    f"/studies/{study_uid}/series/{series_uid}/instances",
                    params=params,
                    headers={"Accept": "application/dicom+json"},
                )
            except httpx.HTTPError as exc:
                raise transport_error(exc, "The imaging service") from exc
            if response.status_code == 404:
                break
            raise_for_upstream(response, "The imaging service")
            datasets: list[dict[str, Any]] = response.json() if response.status_code != 204 and response.content else []
            before = len(images)
            for item in datasets:
                spacing = item.get(PIXEL_SPACING, {}).get("Value") or []
                thickness = _first(item, SLICE_THICKNESS)
                images[str(_first(item, SOP_INSTANCE_UID))] = ImageInfo(
                    int(_first(item, ROWS, 0)),
                    int(_first(item, COLUMNS, 0)),
                    int(_first(item, FRAMES, 1) or 1),
                    (float(spacing[0]), float(spacing[1])) if len(spacing) == 2 else None,
                    float(thickness) if thickness else None,
                )
            if len(images) == before or (len(datasets) < page and "warning" not in response.headers):
                break
        if not images:
            raise Unprocessable(f"Series {series_uid} of study {study_uid} is not in the imaging service.")
        return images

    async def series_metadata(self, study_uid: str, series_uid: str) -> list[Dataset]:
        """The series' instance metadata (WADO-RS, PS3.18 §10.4.1.1.2) as pydicom datasets without bulk data."""
        try:
            response = await self.http.get(
                f"/studies/{study_uid}/series/{series_uid}/metadata", headers={"Accept": "application/dicom+json"}
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, "The imaging service") from exc
        if response.status_code == 404:
            raise Unprocessable(f"Series {series_uid} of study {study_uid} is not in the imaging service.")
        raise_for_upstream(response, "The imaging service")
        return [Dataset.from_json(item, bulk_data_uri_handler=lambda *_: b"") for item in response.json()]

    async def store_instances(self, study_uid: str, datasets: list[Dataset]) -> dict[str, Any]:
        """STOW-RS the datasets into the study (PS3.18 §10.5); raise unless every instance was stored."""
        return await DicomwebClient(self.http).store(study_uid, datasets)

    async def check(
        self, data: AnnotationCreate, cache: dict[tuple[str, str], Any] | None = None
    ) -> dict[str, float] | None:
        """Check that a series or ROI annotation names a stored series and its geometry fits the images;
        return the geometry's measurements in mm (None without geometry or pixel spacing).

        ``cache`` (one per request) keeps each series' images, so a bulk request asks once per series.
        """
        if data.level == Level.patient or data.study_uid is None or data.series_uid is None:
            return None
        key = (data.study_uid, data.series_uid)
        if cache is not None and key in cache:
            images = cache[key]
        else:
            images = await self.series_images(data.study_uid, data.series_uid)
            if cache is not None:
                cache[key] = images
        if data.level == Level.roi and data.geometry is not None:
            check_geometry_fits(data.geometry, images)
            return measure(data.geometry, images)
        return None
