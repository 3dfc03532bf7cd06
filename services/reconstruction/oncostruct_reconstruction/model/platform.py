"""Normal series from the platform itself: labelled normal in the annotation service, fetched over DICOMweb.

The training command line (``--platform PROJECT``) uses this to train on a hospital's own normal
anatomy: the series-level label ``normality`` = ``normal`` of a project (approved by a reviewer,
by default) names the series; the imaging service's WADO-RS sends their instances. Synchronous
(a command line, not the service), with the real clients: httpx for the annotation API and
dicomweb-client for DICOMweb.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from .volumes import SUPPORTED_MODALITIES, Volume, stack_series


@dataclass(frozen=True)
class PlatformSource:
    """Where and what to fetch.

    Attributes
    ----------
    annotations_url, imaging_url
        Base of the annotation API (``…/annotations/v1``) and DICOMweb root (``…/dicomweb``).
    token
        Bearer token with ``annotations.read`` and ``dicomweb.read``.
    project_id
        The annotation project whose labels count.
    label, value
        The series-level label and the value that means "normal".
    statuses
        Annotation statuses accepted (``approved``: a reviewer confirmed it).
    """

    annotations_url: str
    imaging_url: str
    token: str
    project_id: str
    label: str = "normality"
    value: str = "normal"
    statuses: tuple[str, ...] = ("approved",)


def normal_series(source: PlatformSource) -> list[tuple[str, str]]:
    """``(study_uid, series_uid)`` of every series labelled normal in the project, in label order, once each."""
    found: dict[tuple[str, str], None] = {}
    headers = {"Authorization": f"Bearer {source.token}"}
    with httpx.Client(base_url=source.annotations_url, headers=headers, timeout=60) as client:
        for status in source.statuses:
            params: dict[str, Any] = {
                "project_id": source.project_id, "level": "series", "label": source.label, "status": status,
                "limit": 500,
            }  # fmt: skip
            while True:
                response = client.get("/annotations", params=params)
                response.raise_for_status()
                page = response.json()
                for item in page["items"]:
                    if item["value"] == source.value and item["study_uid"] and item["series_uid"]:
                        found[(item["study_uid"], item["series_uid"])] = None
                if not page.get("next"):
                    break
                params["cursor"] = page["next"]
    return list(found)


def platform_volumes(source: PlatformSource) -> Iterator[Volume]:
    """The volumes of the project's normal series (CT/MR with pixel data; others are passed over)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(source.imaging_url, headers={"Authorization": f"Bearer {source.token}"})
    for study_uid, series_uid in normal_series(source):
        datasets = [
            dataset
            for dataset in client.retrieve_series(study_uid, series_uid)
            if dataset.get("Modality") in SUPPORTED_MODALITIES and "PixelData" in dataset
        ]
        if datasets:
            yield stack_series(series_uid, datasets)
