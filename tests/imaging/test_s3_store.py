"""The imaging service on S3-compatible storage.

No S3 service can run here, so the S3 API is served by moto's server (a real HTTP endpoint
speaking the S3 protocol, at the network edge); the service reaches it with boto3 exactly as
it would reach MinIO or AWS.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from dicomweb_client.api import DICOMwebClient
from moto.server import ThreadedMotoServer

from tests.imaging.conftest import PrivateImaging
from tests.imaging.factory import ct_dataset, new_uid, to_bytes
from tests.support import Issuer, free_port

BUCKET = "oncostruct-test"


@pytest.fixture(scope="module")
def s3(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Any]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch_module.setenv(name, value)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    client.create_bucket(Bucket=BUCKET)
    client.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def imaging_s3(s3: Any, private_imaging: PrivateImaging, clinical_url: str) -> Iterator[str]:
    with private_imaging(
        "imaging_s3",
        clinical_url=f"{clinical_url}/fhir",
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_prefix="imaging/",
        s3_endpoint_url=s3.endpoint,
    ) as base_url:
        yield base_url


def test_stow_wado_and_delete_on_s3(imaging_s3: str, s3: Any, issuer: Issuer) -> None:
    token = issuer.token("dicomweb.read", "dicomweb.write", "dicomweb.delete")
    client = DICOMwebClient(imaging_s3, headers={"Authorization": f"Bearer {token}"})
    study, series = new_uid(), new_uid()
    datasets = [ct_dataset(study, series, n, size=64) for n in range(1, 4)]
    stored = client.store_instances(datasets)
    assert "FailedSOPSequence" not in stored
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"imaging/studies/{study}/")["Contents"]]
    assert len(keys) == 3
    assert all(key.endswith(".dcm") for key in keys)
    again = client.store_instances(datasets)  # idempotent: the same content again
    assert "FailedSOPSequence" not in again
    retrieved = {str(ds.SOPInstanceUID): ds for ds in client.retrieve_series(study, series)}
    for original in datasets:
        assert to_bytes(retrieved[str(original.SOPInstanceUID)])[132:] == to_bytes(original)[132:]
    frame = client.retrieve_instance_frames(study, series, str(datasets[0].SOPInstanceUID), frame_numbers=[1])
    assert frame[0] == datasets[0].PixelData
    client.delete_study(study)
    left = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"imaging/studies/{study}/").get("Contents", [])
    assert left == []
