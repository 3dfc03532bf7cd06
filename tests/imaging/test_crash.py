"""An instance acknowledged by STOW-RS survives a crash (SIGKILL) of the service right after."""

from __future__ import annotations

import tempfile
from pathlib import Path

import requests
from dicomweb_client import DICOMwebClient

from tests.imaging.factory import ct_dataset, new_uid
from tests.support import Issuer, PostgresServer, ServiceProcess, bearer


def test_acknowledged_instances_survive_sigkill(postgres: PostgresServer, issuer: Issuer) -> None:
    database = postgres.create_database("crash_imaging")
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-crash-"))
    storage = str(folder / "storage")
    service = ServiceProcess("imaging", database, issuer.url, folder, settings={"storage_path": storage}).start()
    session = requests.Session()
    session.headers.update(bearer(issuer.token("dicomweb.read", "dicomweb.write")))
    study, series = new_uid(), new_uid()
    datasets = [ct_dataset(study, series, n, size=64) for n in range(1, 4)]
    try:
        response = DICOMwebClient(service.url, session=session).store_instances(datasets)
        acknowledged = {str(item.ReferencedSOPInstanceUID) for item in response.ReferencedSOPSequence}
        assert acknowledged == {ds.SOPInstanceUID for ds in datasets}
        service.kill()  # no shutdown, no flush: only what was committed before the answer counts
        restarted = ServiceProcess(
            "imaging", database, issuer.url, folder, port=service.port, settings={"storage_path": storage}
        )
        restarted.start()
        client = DICOMwebClient(restarted.url, session=session)
        found = client.search_for_instances(study_instance_uid=study)
        assert {item["00080018"]["Value"][0] for item in found} == acknowledged
        for original in datasets:
            stored = client.retrieve_instance(study, series, original.SOPInstanceUID)
            assert stored.pixel_array.tobytes() == original.pixel_array.tobytes()
    finally:
        service.stop()
        if "restarted" in locals():
            restarted.stop()
