"""Training on the platform's normal series: labelled normal (approved) in annotations, fetched over DICOMweb."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from oncostruct_reconstruction.model.platform import PlatformSource, normal_series
from oncostruct_reconstruction.train import main
from tests.annotations.fhir_link import approve as approve_annotation
from tests.reconstruction.brain_series import BrainSeries, brain_series
from tests.support import Issuer, bearer

SCOPES = ("annotations.read", "annotations.write", "annotations.review", "dicomweb.read", "dicomweb.write")


@pytest.fixture(scope="module")
def labelled(annotations_url: str, imaging_url: str, issuer: Issuer) -> tuple[PlatformSource, dict[str, BrainSeries]]:
    """Three stored series: one labelled normal and approved, one normal but only a draft, one abnormal."""
    token = issuer.token(*SCOPES, subject="radiologist")
    dicomweb = DICOMwebClient(f"{imaging_url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
    series = {name: brain_series(slices=(36, 56), lesion=False, patient_id=f"TRAIN-{name}") for name in ("a", "b", "c")}
    base = f"{annotations_url}/annotations/v1"
    with httpx.Client(base_url=base, headers=bearer(token), timeout=60) as api:
        project = api.post("/projects", json={"name": "Normal brains"}).json()["id"]
        for name, value, approve in (("a", "normal", True), ("b", "normal", False), ("c", "abnormal", True)):
            dicomweb.store_instances(series[name].datasets)
            body = {"project_id": project, "level": "series", "label": "normality", "value": value,
                    "study_uid": series[name].study_uid, "series_uid": series[name].series_uid}  # fmt: skip
            if approve:
                approve_annotation(api, body)
            else:
                assert api.post("/annotations", json=body).status_code == 201
    return PlatformSource(base, f"{imaging_url}/dicomweb", token, project), series


def test_only_approved_normal_labels_name_training_series(
    labelled: tuple[PlatformSource, dict[str, BrainSeries]],
) -> None:
    source, series = labelled
    assert normal_series(source) == [(series["a"].study_uid, series["a"].series_uid)]
    drafts_too = PlatformSource(**{**source.__dict__, "statuses": ("approved", "draft")})
    assert set(normal_series(drafts_too)) == {(series[n].study_uid, series[n].series_uid) for n in ("a", "b")}


def test_train_cli_from_the_platform(
    labelled: tuple[PlatformSource, dict[str, BrainSeries]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, series = labelled
    monkeypatch.setenv("ONCOSTRUCT_TOKEN", source.token)
    status = main(
        ["--platform", source.project_id, "--annotations-url", source.annotations_url, "--imaging-url",
         source.imaging_url, "--preset", "ci", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4",
         "--all-slices", "--out", str(tmp_path)]
    )  # fmt: skip
    assert status == 0
    record = json.loads((tmp_path / "training_record.json").read_text())
    assert record["sources"] == [series["a"].series_uid]
    assert record["training_slices"] > 0
    assert "--platform" in record["command"]
    assert source.token not in record["command"]
    assert record["anomaly_threshold"] > 0


def test_platform_training_needs_a_token_from_the_environment(
    labelled: tuple[PlatformSource, dict[str, BrainSeries]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ONCOSTRUCT_TOKEN", raising=False)
    assert main(["--platform", labelled[0].project_id, "--out", str(tmp_path)]) == 2


def test_a_project_without_normal_series_is_refused(
    annotations_url: str, issuer: Issuer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issuer.token(*SCOPES, subject="radiologist")
    base = f"{annotations_url}/annotations/v1"
    project = httpx.post(f"{base}/projects", json={"name": "Empty"}, headers=bearer(token), timeout=30).json()["id"]
    monkeypatch.setenv("ONCOSTRUCT_TOKEN", token)
    assert main(["--platform", project, "--annotations-url", base, "--preset", "ci", "--out", str(tmp_path)]) == 2
