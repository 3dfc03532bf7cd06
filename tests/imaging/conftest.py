"""Imaging fixtures: DICOMweb clients with tokens, and a real Orthanc (+ DICOMweb plugin) as a peer."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from dicomweb_client import DICOMwebClient

from oncostruct_imaging.app import create_app
from oncostruct_shared.settings import ServiceSettings
from tests.support import Issuer, LiveServer, PostgresServer, bearer, free_port

#: Runs an imaging service of its own for a block: ``with private_imaging("db", **settings) as base_url``.
PrivateImaging = Callable[..., AbstractContextManager[str]]

ALL_SCOPES = ("dicomweb.read", "dicomweb.write", "dicomweb.delete")
ORTHANC = Path("/usr/sbin/Orthanc")
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@pytest.fixture(scope="session")
def private_imaging(postgres: PostgresServer, service_settings: Callable[..., ServiceSettings]) -> PrivateImaging:
    """An imaging service on a database of its own (created here) with settings overrides; yields its
    DICOMweb base URL. Its queue worker serves only that database's jobs."""

    @contextmanager
    def run(database: str, **overrides: Any) -> Iterator[str]:
        postgres.create_database(database)
        port = free_port()
        settings = service_settings(
            "imaging", database=database, base_url=f"http://127.0.0.1:{port}/dicomweb", **overrides
        )
        with LiveServer(create_app(settings), port=port) as server:
            yield f"{server.url}/dicomweb"

    return run


@pytest.fixture(scope="session")
def dicomweb_url(imaging_url: str) -> str:
    """The DICOMweb base of the live imaging service."""
    return f"{imaging_url}/dicomweb"


@pytest.fixture(scope="session")
def auth(issuer: Issuer) -> dict[str, str]:
    """An Authorization header with every DICOMweb scope."""
    return bearer(issuer.token(*ALL_SCOPES, ttl=3600))


@pytest.fixture
def client(dicomweb_url: str, auth: dict[str, str]) -> Iterator[DICOMwebClient]:
    """dicomweb-client against the imaging service, with read, write and delete scopes."""
    session = requests.Session()
    session.headers.update(auth)
    yield DICOMwebClient(dicomweb_url, session=session)
    session.close()


@pytest.fixture
def http(auth: dict[str, str]) -> Iterator[httpx.Client]:
    """A raw httpx client (header variants) with every DICOMweb scope."""
    with httpx.Client(timeout=30, headers=auth) as raw:
        yield raw


class Orthanc:
    """A running Orthanc with its DICOMweb plugin on a loopback port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, object]:
        """The Orthanc configuration (DICOM port off, loopback only, no auth, storage in the temp folder)."""
        return {
            "Name": "oncostruct-test-peer",
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.port}", "Ssl": False},
            "HttpTimeout": 60,
            "HttpThreadsCount": 16,
        }

    def start(self) -> Orthanc:
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self.config()))
        log = open(self.folder / "orthanc.log", "wb")  # noqa: SIM115 (kept open for the process's life)
        self.process = subprocess.Popen([str(ORTHANC), str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/system", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("Orthanc did not answer in 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def orthanc() -> Iterator[Orthanc]:
    """A real Orthanc with the DICOMweb plugin (Debian packages orthanc, orthanc-dicomweb)."""
    if not ORTHANC.exists() or not ORTHANC_DICOMWEB_PLUGIN.exists():
        pytest.fail("Orthanc and its DICOMweb plugin are needed: apt-get install orthanc orthanc-dicomweb")
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-test-orthanc-"))
    server = Orthanc(folder)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def orthanc_client(orthanc: Orthanc) -> Iterator[DICOMwebClient]:
    """dicomweb-client against the Orthanc peer."""
    session = requests.Session()
    yield DICOMwebClient(orthanc.dicomweb, session=session)
    session.close()
