"""Jobs end to end on the real suite: imaging (DICOMweb), annotations, Triton, and the job queue.

A reconstruction service shares the imaging service's database (as in ``make run``), so it
receives imaging's series-complete events; proposals go to a real annotation project.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import subprocess
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from oncostruct_reconstruction.app import create_app
from oncostruct_reconstruction.model.regions import find_regions
from oncostruct_reconstruction.model.repository import DEFAULT_MODEL_NAME, SHIPPED_VERSION
from oncostruct_reconstruction.outputs import ResultIdentity, parametric_map, segmentation
from oncostruct_reconstruction.triton_local import LocalTriton
from oncostruct_shared.queue import create_queue_app
from oncostruct_shared.settings import ServiceSettings
from tests.imaging.factory import ct_dataset, new_uid
from tests.reconstruction.brain_series import BrainSeries, brain_series
from tests.support import Issuer, LiveServer, PostgresServer, bearer, free_port

JOBS = "/reconstruction/v1/jobs"
SHIPPED_MODEL = f"{DEFAULT_MODEL_NAME}@{SHIPPED_VERSION}"
PARAMETRIC_MAP, SEGMENTATION = "1.2.840.10008.5.1.4.1.1.30", "1.2.840.10008.5.1.4.1.1.66.4"
SERVICE_SUBJECT = "oncostruct-reconstruction"


@pytest.fixture(scope="module")
def project(annotations_url: str, issuer: Issuer) -> str:
    """An annotation project whose annotators include the reconstruction service's client."""
    headers = bearer(issuer.token("annotations.read", "annotations.write", subject="lead"))
    with httpx.Client(base_url=f"{annotations_url}/annotations/v1", headers=headers, timeout=30) as api:
        created = api.post("/projects", json={"name": "Brain MR anomalies"})
        assert created.status_code == 201, created.text
        project_id: str = created.json()["id"]
        member = api.put(f"/projects/{project_id}/members/{SERVICE_SUBJECT}", json={"role": "annotator"})
        assert member.status_code == 200, member.text
    return project_id


def _start(settings: Callable[..., ServiceSettings], **overrides: Any) -> LiveServer:
    port = free_port()
    values: dict[str, Any] = {
        "base_url": f"http://127.0.0.1:{port}/reconstruction/v1",
        "retry_base_s": 0.5,
        "retry_max_s": 2.0,
        "analysable_modalities": ("MR",),
        "auto_modalities": ("MR",),
        "auto_body_parts": ("BRAIN",),
        **overrides,
    }
    return LiveServer(create_app(settings("reconstruction", **values)), port=port)


@pytest.fixture(scope="module")
def pipeline(
    service_settings: Callable[..., ServiceSettings],
    triton: LocalTriton,
    imaging_url: str,
    annotations_url: str,
    project: str,
) -> Iterator[str]:
    """A reconstruction service on imaging's database (its events), Triton, imaging and annotations."""
    with _start(
        service_settings,
        database="test_imaging",
        triton_url=triton.url,
        imaging_url=f"{imaging_url}/dicomweb",
        annotations_url=f"{annotations_url}/annotations/v1",
        proposals_project_id=project,
    ) as server:
        yield server.url


@pytest.fixture(scope="module")
def api(pipeline: str, issuer: Issuer) -> Iterator[httpx.Client]:
    headers = bearer(issuer.token("reconstruction.read", "reconstruction.run"))
    with httpx.Client(base_url=pipeline, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def dicomweb(imaging_url: str, issuer: Issuer) -> DICOMwebClient:
    token = issuer.token("dicomweb.read", "dicomweb.write")
    return DICOMwebClient(f"{imaging_url}/dicomweb", headers={"Authorization": f"Bearer {token}"})


def _store(dicomweb: DICOMwebClient, datasets: list[Dataset]) -> None:
    response = dicomweb.store_instances(datasets)
    assert "FailedSOPSequence" not in response, response


def _wait(
    api: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(f"{JOBS}/{job_id}").json()
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} ({job.get('stage')}): {job}"
        time.sleep(0.3)


def _finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed")


def _submit(api: httpx.Client, study: str, series: str, **extra: Any) -> httpx.Response:
    return api.post(JOBS, json={"study_uid": study, "series_uid": series, **extra})


@pytest.fixture(scope="module")
def lesion_job(api: httpx.Client, dicomweb: DICOMwebClient) -> tuple[BrainSeries, dict[str, Any]]:
    series = brain_series(lesion=True, patient_id="RECON-LESION")
    _store(dicomweb, series.datasets)
    response = _submit(api, series.study_uid, series.series_uid)
    assert response.status_code == 202, response.text
    assert response.headers["Location"].endswith(f"/jobs/{response.json()['id']}")
    assert response.json()["status"] in ("queued", "running")
    return series, _wait(api, response.json()["id"], _finished)


def test_job_succeeds_with_scores_per_slice(lesion_job: tuple[BrainSeries, dict[str, Any]]) -> None:
    series, job = lesion_job
    print("lesion job", {k: job[k] for k in ("timings", "series_score", "result")})
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0
    assert job["trigger"] == "api"
    assert job["result"]["model"] == SHIPPED_MODEL
    uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
    assert sorted(item["sop_instance_uid"] for item in job["slice_scores"]) == sorted(uids)
    assert all(item["score"] >= 0 for item in job["slice_scores"])
    assert {"checking model", "retrieving", "inferring", "storing results", "proposing"} <= set(job["timings"])


def test_a_lesion_scores_above_the_same_anatomy_without_it(
    api: httpx.Client, dicomweb: DICOMwebClient, lesion_job: tuple[BrainSeries, dict[str, Any]]
) -> None:
    normal = brain_series(lesion=False, patient_id="RECON-NORMAL")
    _store(dicomweb, normal.datasets)
    # No POST: the imaging service's series-complete event starts this job.
    deadline = time.monotonic() + 60
    while not (items := api.get(JOBS, params={"series_uid": normal.series_uid}).json()["items"]):
        assert time.monotonic() < deadline, "no job was started by the series-complete event"
        time.sleep(0.3)
    assert items[0]["trigger"] == "event"
    job = _wait(api, items[0]["id"], _finished)
    assert job["status"] == "succeeded", job["error"]
    lesion = lesion_job[1]
    assert lesion["series_score"] > job["series_score"]
    assert len(lesion["result"]["proposals"]) > len(job["result"]["proposals"])
    assert job["result"]["segmentation"] is None  # nothing above threshold: no SEG


def test_the_heads_end_caps_are_not_analysed_and_a_whole_normal_head_gets_no_proposal(
    api: httpx.Client, dicomweb: DICOMwebClient
) -> None:
    # Every axial slice of the template, caps included: the model was trained without the caps.
    series = brain_series(slices=(0, 91), lesion=False, patient_id="RECON-WHOLE-HEAD")
    _store(dicomweb, series.datasets)
    job = _wait(api, _submit(api, series.study_uid, series.series_uid).json()["id"], _finished)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["proposals"] == []
    skipped = job["result"]["slices_not_analysed"]
    assert 10 < skipped < 45
    order = {str(ds.SOPInstanceUID): index for index, ds in enumerate(series.datasets)}
    scores = [0.0] * len(order)
    for item in job["slice_scores"]:
        scores[order[item["sop_instance_uid"]]] = item["score"]
    zero = [index for index, score in enumerate(scores) if score == 0]
    assert len(zero) >= skipped
    # Only the ends are left out: every slice from the first to the last analysed one has a score.
    first, last = min(set(range(91)) - set(zero)), max(set(range(91)) - set(zero))
    assert first > 0
    assert last < 90
    assert all(scores[index] > 0 for index in range(first, last + 1))


def test_proposals_are_in_the_annotation_service_on_the_lesion(
    annotations_url: str, issuer: Issuer, project: str, lesion_job: tuple[BrainSeries, dict[str, Any]]
) -> None:
    series, job = lesion_job
    proposals = job["result"]["proposals"]
    assert proposals
    headers = bearer(issuer.token("annotations.read", subject="lead"))
    listed = httpx.get(
        f"{annotations_url}/annotations/v1/annotations",
        params={"project_id": project, "series_uid": series.series_uid},
        headers=headers,
        timeout=30,
    ).json()["items"]
    assert {item["id"] for item in listed} == {p["annotation_id"] for p in proposals}
    assert {item["status"] for item in listed} == {"proposed"}
    assert {item["author"] for item in listed} == {SHIPPED_MODEL}
    # The best proposal's mask lies on the inserted lesion.
    best = next(item for item in listed if item["id"] == proposals[0]["annotation_id"])
    geometry = best["geometry"]
    mask = np.frombuffer(zlib.decompress(base64.b64decode(geometry["data"])), dtype=np.uint8)
    mask = mask.reshape(len(geometry["sop_instance_uids"]), geometry["rows"], geometry["columns"]).astype(bool)
    order = {str(ds.SOPInstanceUID): index for index, ds in enumerate(series.datasets)}
    truth = series.lesion[[order[uid] for uid in geometry["sop_instance_uids"]]]
    # Grown by the residual over the lesion's flat inside, where the map stays near the threshold.
    assert (mask & truth).sum() >= 0.7 * mask.sum()
    assert (mask & truth).sum() >= 0.8 * series.lesion.sum()
    assert best["scores"]["anomaly_peak"] == pytest.approx(proposals[0]["peak"])


def test_parametric_map_and_seg_are_stored_valid_and_reference_the_source(
    dicomweb: DICOMwebClient, lesion_job: tuple[BrainSeries, dict[str, Any]], tmp_path: Path
) -> None:
    series, job = lesion_job
    for key, sop_class in (("parametric_map", PARAMETRIC_MAP), ("segmentation", SEGMENTATION)):
        stored = job["result"][key]
        instance = dicomweb.retrieve_instance(series.study_uid, stored["series_uid"], stored["sop_instance_uid"])
        assert instance.SOPClassUID == sop_class
        assert instance.Manufacturer == "OncoStruct"
        assert instance.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
        assert SHIPPED_MODEL in str(instance.ManufacturerModelName)
        path = tmp_path / f"{key}.dcm"
        instance.save_as(path, enforce_file_format=True)
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in checked.stderr.splitlines() if line.startswith("Error")]
        assert not errors, errors
        if key == "parametric_map":
            assert int(instance.NumberOfFrames) == len(series.datasets)
            # Stored JPEG-LS lossless; the archive hands it out as stored or decoded, with the same values.
            decoded = dicomweb.retrieve_instance(
                series.study_uid,
                stored["series_uid"],
                stored["sop_instance_uid"],
                media_types=(("application/dicom", ExplicitVRLittleEndian),),
            )
            assert instance.file_meta.TransferSyntaxUID == JPEGLSLossless
            assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert np.array_equal(decoded.pixel_array, instance.pixel_array)
            # Frames too: a viewer asking for uncompressed frames gets the decoded values.
            frames = dicomweb.retrieve_instance_frames(
                series.study_uid,
                stored["series_uid"],
                stored["sop_instance_uid"],
                frame_numbers=[1, 5],
                media_types=(("application/octet-stream", ExplicitVRLittleEndian),),
            )
            for frame, number in zip(frames, (1, 5), strict=True):
                values = np.frombuffer(frame, dtype="<u2").reshape(instance.pixel_array.shape[1:])
                assert np.array_equal(values, instance.pixel_array[number - 1])
        else:
            assert len(instance.SegmentSequence) == len(job["result"]["proposals"])
            assert instance.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_same_series_and_version_is_one_job(api: httpx.Client, lesion_job: tuple[BrainSeries, dict[str, Any]]) -> None:
    series, job = lesion_job
    again = _submit(api, series.study_uid, series.series_uid, model_version=SHIPPED_VERSION)
    assert again.status_code == 200
    assert again.json()["id"] == job["id"]
    assert api.get(JOBS, params={"series_uid": series.series_uid}).json()["items"] == [again.json()]


@pytest.mark.parametrize("key", ["segmentation", "parametric_map"])
def test_the_services_own_results_are_never_analysed(
    api: httpx.Client, lesion_job: tuple[BrainSeries, dict[str, Any]], key: str
) -> None:
    series, job = lesion_job
    result_series = job["result"][key]["series_uid"]
    # Its SEG and map series made no job of their own through the events …
    assert api.get(JOBS, params={"series_uid": result_series}).json()["items"] == []
    # … and asking for one fails with the reason.
    response = _submit(api, series.study_uid, result_series)
    assert response.status_code == 202
    failed = _wait(api, response.json()["id"], _finished)
    assert failed["status"] == "failed"
    assert "result of this service" in failed["error"]


def _event_handled(postgres: PostgresServer, series_uid: str, timeout: float = 60) -> None:
    """Wait until the imaging service's series-complete event for the series has been handled."""
    deadline = time.monotonic() + timeout
    while True:
        rows = postgres.fetch(
            "test_imaging",
            "SELECT status FROM oncostruct_jobs.procrastinate_jobs WHERE task_name = 'series_complete' "
            "AND args->>'series_uid' = $1",
            series_uid,
        )
        if rows and all(row["status"] == "succeeded" for row in rows):
            return
        assert time.monotonic() < deadline, f"series-complete event of {series_uid}: {[r['status'] for r in rows]}"
        time.sleep(0.3)


def test_events_of_series_outside_the_filters_start_no_job(
    api: httpx.Client, dicomweb: DICOMwebClient, postgres: PostgresServer
) -> None:
    # This service starts jobs for MR of the brain only (AUTO_MODALITIES, AUTO_BODY_PARTS).
    chest = brain_series(slices=(40, 43), lesion=False, patient_id="RECON-CHEST")
    for dataset in chest.datasets:
        dataset.BodyPartExamined = "CHEST"
    _store(dicomweb, chest.datasets)
    study, ct_series = new_uid(), new_uid()
    _store(dicomweb, [ct_dataset(study, ct_series, number, BodyPartExamined="BRAIN") for number in (1, 2)])
    for series_uid in (chest.series_uid, ct_series):
        _event_handled(postgres, series_uid)
        assert api.get(JOBS, params={"series_uid": series_uid}).json()["items"] == []


async def _announce(database_url: str, series: BrainSeries) -> None:
    """Defer the imaging service's series-complete event, as it does, on a database of its own."""
    app = create_queue_app(database_url)
    async with app.open_async():
        await app.configure_task("series_complete", queue="reconstruction").defer_async(
            study_uid=series.study_uid, series_uid=series.series_uid, modality="MR", body_part="BRAIN",
            instances=len(series.datasets), last_change=datetime.now(UTC).isoformat(),
        )  # fmt: skip


def test_an_event_while_the_archive_is_away_makes_a_job_that_waits_for_it(
    own_queue: OwnQueue, dicomweb: DICOMwebClient, postgres: PostgresServer
) -> None:
    series = brain_series(slices=(40, 46), lesion=False, patient_id="RECON-EVENT-AWAY")
    _store(dicomweb, series.datasets)
    away = f"http://127.0.0.1:{free_port()}/dicomweb"  # nothing listens there
    with own_queue.start(imaging_url=away) as server, own_queue.client(server) as api:
        asyncio.run(_announce(postgres.url(own_queue.common["database"]), series))
        deadline = time.monotonic() + 60
        while not (items := api.get(JOBS, params={"series_uid": series.series_uid}).json()["items"]):
            assert time.monotonic() < deadline, "the event made no job while the archive was away"
            time.sleep(0.3)
        assert items[0]["trigger"] == "event"
        waiting = _wait(api, items[0]["id"], lambda job: job["attempts"] >= 1 and bool(job["waiting"]))
        assert "could not be reached" in waiting["waiting"], waiting["waiting"]
        assert waiting["status"] == "queued"
    with own_queue.start() as server, own_queue.client(server) as api:
        done = _wait(api, items[0]["id"], _finished)
    assert done["status"] == "succeeded", done["error"]


def test_unknown_model_version_is_refused(api: httpx.Client, lesion_job: tuple[BrainSeries, dict[str, Any]]) -> None:
    series, _ = lesion_job
    response = _submit(api, series.study_uid, series.series_uid, model_version="99")
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "version 99 is not in Triton's repository" in response.json()["detail"]


def test_unknown_series_is_refused(api: httpx.Client) -> None:
    response = _submit(api, new_uid(), new_uid())
    assert response.status_code == 422
    assert "not in the imaging service" in response.json()["detail"]


def _report(study: str) -> Dataset:
    ds = ct_dataset(study, new_uid(), 1, Modality="SR", SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11")
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation", "RescaleIntercept", "RescaleSlope",
                    "WindowCenter", "WindowWidth", "ImagePositionPatient", "ImageOrientationPatient",
                    "PixelSpacing", "SliceThickness", "ImageType"):  # fmt: skip
        delattr(ds, keyword)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds


def _foreign_result(kind: str) -> Dataset:
    """A SEG or Parametric Map of another vendor's (not this service's own: refused for its SOP Class)."""
    source = brain_series(slices=(40, 43), lesion=True)
    anomaly = source.lesion.astype(np.float32)
    identity = ResultIdentity(uuid.uuid4(), "other_model", "1", datetime(2026, 1, 2, tzinfo=UTC))
    if kind == "seg":
        dataset = segmentation(source.datasets, find_regions(anomaly, np.ones(anomaly.shape, bool), 0.5), identity)
    else:
        dataset = parametric_map(source.datasets, anomaly, identity, 0.5, encoding="none")
    assert dataset is not None
    dataset.Manufacturer = "Another Vendor"
    return dataset


def _bad_series(kind: str) -> tuple[str, str, list[Dataset]]:
    if kind == "report":
        report = _report(new_uid())
        return report.StudyInstanceUID, report.SeriesInstanceUID, [report]
    if kind in ("seg", "parametric_map"):
        result = _foreign_result(kind)
        return result.StudyInstanceUID, result.SeriesInstanceUID, [result]
    if kind == "modality":
        study, series = new_uid(), new_uid()
        return study, series, [ct_dataset(study, series, n) for n in (1, 2, 3)]
    brain = brain_series(slices=(40, 44), lesion=False)
    datasets = brain.datasets
    if kind == "sizes":
        small = brain_series(slices=(10, 11), lesion=False).datasets[0]
        small.Rows, small.Columns = 64, 64
        small.PixelData = np.zeros((64, 64), np.uint16).tobytes()
        small.StudyInstanceUID, small.SeriesInstanceUID = brain.study_uid, brain.series_uid
        datasets.append(small)
    elif kind == "orientation":
        datasets[1].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    elif kind == "no_pixels":
        del datasets[2].PixelData
    return brain.study_uid, brain.series_uid, datasets


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("report", r"holds Basic Text SR \(1\.2\.840\.10008\.5\.1\.4\.1\.1\.88\.11\) instances"),
        ("seg", r"holds Segmentation \(1\.2\.840\.10008\.5\.1\.4\.1\.1\.66\.4\) instances"),
        ("parametric_map", r"holds Parametric Map \(1\.2\.840\.10008\.5\.1\.4\.1\.1\.30\) instances"),
        ("modality", "has modality CT; this service analyses MR"),
        ("sizes", r"mixes image sizes \[\(64, 64\), \(117, 99\)\]"),
        ("orientation", r"mixes image orientations \(0020,0037\)"),
        ("no_pixels", r"1 of 4 instances have no Pixel Data \(7FE0,0010\)"),
    ],
)
def test_series_that_cannot_be_analysed_fail_with_the_reason(
    api: httpx.Client, dicomweb: DICOMwebClient, imaging_url: str, issuer: Issuer, kind: str, reason: str
) -> None:
    study, series, datasets = _bad_series(kind)
    for dataset in datasets:
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    stored = dicomweb.store_instances(datasets)
    assert "FailedSOPSequence" not in stored, f"imaging refused the {kind} series"
    response = _submit(api, study, series)
    assert response.status_code == 202, response.text
    job = _wait(api, response.json()["id"], _finished)
    assert job["status"] == "failed"
    assert job["error"] is not None
    assert re.search(reason, job["error"]), job["error"]
    assert job["result"].get("parametric_map") is None  # nothing written for a series that cannot be analysed


@dataclass
class OwnQueue:
    """A reconstruction service's settings on a database of its own (no other worker takes its jobs)."""

    settings: Callable[..., ServiceSettings]
    common: dict[str, Any]
    triton_url: str
    imaging_url: str
    headers: dict[str, str]

    def start(self, **overrides: Any) -> LiveServer:
        return _start(self.settings, **{**self.common, "triton_url": self.triton_url, **overrides})

    def client(self, server: LiveServer) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers=self.headers, timeout=60)

    @contextlib.contextmanager
    def start_waiting(self, **overrides: Any) -> Iterator[LiveServer]:
        """The service with Triton hung (a listener that accepts and never answers): its jobs wait."""
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)
            hung = f"127.0.0.1:{silent.getsockname()[1]}"
            with self.start(triton_url=hung, triton_timeout_s=1.0, **overrides) as server:
                yield server


@pytest.fixture
def own_queue(
    service_settings: Callable[..., ServiceSettings],
    triton: LocalTriton,
    imaging_url: str,
    annotations_url: str,
    issuer: Issuer,
    postgres: PostgresServer,
) -> OwnQueue:
    database = f"test_reconstruction_{uuid.uuid4().hex[:12]}"
    postgres.create_database(database)
    common = {"database": database, "imaging_url": f"{imaging_url}/dicomweb",
              "annotations_url": f"{annotations_url}/annotations/v1"}  # fmt: skip
    headers = bearer(issuer.token("reconstruction.read", "reconstruction.run"))
    return OwnQueue(service_settings, common, triton.url, imaging_url, headers)


def _submit_and_see_it_wait(api: httpx.Client, series: BrainSeries, reason: str) -> str:
    """Submit a job for the series and wait until it has been tried twice, waiting for ``reason``."""
    response = _submit(api, series.study_uid, series.series_uid)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    waiting = _wait(api, job_id, lambda job: job["attempts"] >= 2, timeout=90)
    assert waiting["status"] in ("queued", "running")
    assert reason in waiting["waiting"], waiting["waiting"]
    assert waiting["error"] is None
    return job_id


def test_a_job_waits_while_triton_is_away_and_finishes_when_it_is_back(
    own_queue: OwnQueue, dicomweb: DICOMwebClient
) -> None:
    series = brain_series(slices=(40, 46), lesion=False, patient_id="RECON-WAIT")
    _store(dicomweb, series.datasets)
    with own_queue.start_waiting() as server, own_queue.client(server) as api:
        job_id = _submit_and_see_it_wait(api, series, "did not answer")
    # The service restarts with Triton reachable: the same job, from the queue, finishes.
    with own_queue.start() as server, own_queue.client(server) as api:
        done = _wait(api, job_id, _finished)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] >= 2
    assert done["waiting"] is None
    assert done["result"]["proposals_note"].startswith("No annotation project")


def test_a_waiting_job_can_be_cancelled_and_is_started_again_when_submitted_again(
    own_queue: OwnQueue, dicomweb: DICOMwebClient, issuer: Issuer
) -> None:
    series = brain_series(slices=(40, 46), lesion=False, patient_id="RECON-CANCEL")
    _store(dicomweb, series.datasets)
    # Its next attempt is five minutes away: cancelling withdraws it, or the job submitted again would wait for it.
    with own_queue.start_waiting(retry_base_s=300, retry_max_s=300) as server, own_queue.client(server) as api:
        response = _submit(api, series.study_uid, series.series_uid)
        job_id = response.json()["id"]
        _wait(api, job_id, lambda job: job["attempts"] >= 1 and "did not answer" in (job["waiting"] or ""))
        reader = bearer(issuer.token("reconstruction.read"))
        assert httpx.post(f"{server.url}{JOBS}/{job_id}/cancel", headers=reader).status_code == 403
        cancelled = api.post(f"{JOBS}/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["waiting"] is None
        assert cancelled.json()["finished_at"] is not None
        later = api.get(f"{JOBS}/{job_id}").json()
        assert (later["status"], later["attempts"]) == ("cancelled", cancelled.json()["attempts"])
        assert api.post(f"{JOBS}/{job_id}/cancel").json()["status"] == "cancelled"  # again: unchanged
        assert api.post(f"{JOBS}/{uuid.uuid4()}/cancel").status_code == 404
    with own_queue.start() as server, own_queue.client(server) as api:
        again = _submit(api, series.study_uid, series.series_uid)
        assert again.status_code == 202, again.text
        assert again.json()["id"] == job_id
        done = _wait(api, job_id, _finished, timeout=120)  # well before the withdrawn attempt's time
        assert done["status"] == "succeeded", done["error"]
        finished = api.post(f"{JOBS}/{job_id}/cancel")
    assert finished.status_code == 409
    assert finished.headers["content-type"].startswith("application/problem+json")
    assert "has succeeded; only a queued or running job can be cancelled" in finished.json()["detail"]


class _PostGate:
    """An ASGI proxy to a service that answers every POST (STOW-RS, bulk create) with 503 while ``closed``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.closed = True
        self.refused = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST" and self.closed:
            self.refused += 1
            status, headers, content = 503, [(b"content-type", b"application/problem+json")], b'{"status": 503}'
        else:
            query = scope["query_string"].decode()
            url = f"{self.upstream}{scope['path']}" + (f"?{query}" if query else "")
            forwarded = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"host", b"content-length")]
            async with httpx.AsyncClient(timeout=60) as client:
                answer = await client.request(scope["method"], url, headers=forwarded, content=body)
            content = answer.content
            skip = {"content-length", "transfer-encoding", "content-encoding", "connection"}
            headers = [(k.encode(), v.encode()) for k, v in answer.headers.items() if k.lower() not in skip]
            status = answer.status_code
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _run_behind_a_gate(
    own_queue: OwnQueue, series: BrainSeries, upstream: str, setting: str, prefix: str, name: str, **overrides: Any
) -> dict[str, Any]:
    """Run a job with ``upstream`` behind a :class:`_PostGate`: see it wait on 503s, open the gate, finish."""
    gate = _PostGate(upstream)
    with (
        LiveServer(gate) as proxy,  # type: ignore[arg-type]
        own_queue.start(**{setting: f"{proxy.url}{prefix}"}, **overrides) as server,
        own_queue.client(server) as api,
    ):
        job_id = _submit_and_see_it_wait(api, series, f"The {name} service answered 503")
        assert gate.refused >= 2
        gate.closed = False
        return _wait(api, job_id, _finished)


def test_a_job_waits_while_the_archive_refuses_results_and_stores_them_once_when_it_takes_them(
    own_queue: OwnQueue, dicomweb: DICOMwebClient
) -> None:
    series = brain_series(lesion=True, patient_id="RECON-STOW")
    _store(dicomweb, series.datasets)
    done = _run_behind_a_gate(own_queue, series, own_queue.imaging_url, "imaging_url", "/dicomweb", "imaging")
    assert done["status"] == "succeeded", done["error"]
    assert done["waiting"] is None
    found = dicomweb.search_for_series(series.study_uid, search_filters={"Modality": "SEG"})
    found += dicomweb.search_for_series(series.study_uid, search_filters={"SOPClassUID": PARAMETRIC_MAP})
    uids = {item["0020000E"]["Value"][0] for item in found}
    assert done["result"]["segmentation"]["series_uid"] in uids
    instances = dicomweb.search_for_instances(series.study_uid, done["result"]["parametric_map"]["series_uid"])
    assert len(instances) == 1  # stored once, not once per attempt


def test_a_job_waits_while_the_annotation_service_refuses_proposals_and_creates_them_once(
    own_queue: OwnQueue, dicomweb: DICOMwebClient, annotations_url: str, issuer: Issuer, project: str
) -> None:
    series = brain_series(lesion=True, patient_id="RECON-PROPOSE")
    _store(dicomweb, series.datasets)
    done = _run_behind_a_gate(
        own_queue, series, annotations_url, "annotations_url", "/annotations/v1", "annotation",
        proposals_project_id=project,
    )  # fmt: skip
    job_id = done["id"]
    assert done["status"] == "succeeded", done["error"]
    proposals = done["result"]["proposals"]
    listed = httpx.get(
        f"{annotations_url}/annotations/v1/annotations",
        params={"project_id": project, "series_uid": series.series_uid},
        headers=bearer(issuer.token("annotations.read", subject="lead")),
        timeout=30,
    ).json()["items"]
    # (The suite's event-started job may have proposed on the same series too: only this job's count.)
    ours = [item for item in listed if item["client_key"].startswith(f"reconstruction:{job_id}:")]
    assert proposals
    assert sorted(item["id"] for item in ours) == sorted(p["annotation_id"] for p in proposals)  # once each


def test_submitting_needs_the_run_scope(api: httpx.Client, pipeline: str, issuer: Issuer) -> None:
    body = {"study_uid": new_uid(), "series_uid": new_uid()}
    reader = bearer(issuer.token("reconstruction.read"))
    assert httpx.post(f"{pipeline}{JOBS}", json=body, headers=reader).status_code == 403
    assert httpx.post(f"{pipeline}{JOBS}", json=body).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"study_uid": "1.2.3"},
        {"study_uid": "1.2.3", "series_uid": "not a uid"},
        {"study_uid": "1.2.3", "series_uid": "1.2.4", "model_version": "latest"},
        {"study_uid": "1.2.3", "series_uid": "1.2.4", "colour": "blue"},
    ],
)
def test_bad_requests_are_problem_details(api: httpx.Client, body: dict[str, Any]) -> None:
    response = api.post(JOBS, json=body)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
