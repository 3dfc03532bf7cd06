"""An instance acknowledged by STOW-RS survives a crash (SIGKILL) of the service right after."""

from __future__ import annotations

import os
import signal
import tempfile
import time
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
        assert service.process is not None
        parsers = _children(service.process.pid)
        assert len(parsers) == 2  # PARSE_PROCESSES defaults to 2
        service.kill()  # no shutdown, no flush: only what was committed before the answer counts
        _wait_until_gone(parsers)  # the parse workers do not outlive a killed server
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
        # A parse worker that dies (out of memory, killed) costs no store: the pool is rebuilt.
        assert restarted.process is not None
        os.kill(_children(restarted.process.pid)[0], signal.SIGKILL)
        more = [ct_dataset(study, series, n, size=64) for n in range(4, 7)]
        response = client.store_instances(more)
        assert len(response.ReferencedSOPSequence) == 3
        assert len(client.search_for_instances(study_instance_uid=study)) == 6
    finally:
        service.stop()
        if "restarted" in locals():
            restarted.stop()


def _children(pid: int) -> list[int]:
    """The parse worker processes whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in _cmdline(entry):
                children.append(int(entry.name))
    return sorted(children)


def _wait_until_gone(pids: list[int], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} still run"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _cmdline(entry: Path) -> bytes:
    try:
        return (entry / "cmdline").read_bytes()
    except OSError:
        return b""
