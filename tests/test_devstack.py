"""``make run`` end to end: the dev stack as a user starts it, in a folder of its own, on shifted ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import bearer

PREFIXES = {
    "clinical": "/fhir",
    "imaging": "/dicomweb",
    "annotations": "/annotations/v1",
    "reconstruction": "/reconstruction/v1",
}
BASE_PORTS = {"clinical": 8081, "imaging": 8082, "annotations": 8083, "reconstruction": 8084}
PROBES = {
    "clinical": "/fhir/Patient/none",
    "imaging": "/dicomweb/studies",
    "annotations": "/annotations/v1/projects",
    "reconstruction": "/reconstruction/v1/jobs",
}


def _free_offset() -> int:
    """A port offset at which every port of the stack (services, issuer, PostgreSQL) is free."""
    for offset in range(1100 + os.getpid() % 50 * 10, 4000, 7):
        ports = [port + offset for port in (*BASE_PORTS.values(), 8090, 8000, 8001, 8002, 55432)]
        if all(_port_free(port) for port in ports):
            return offset
    raise RuntimeError("no free port range for the dev stack")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


OFFSET = _free_offset()


class Stack:
    """A ``devstack run`` process and what it printed."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "oncostruct_devtools.devstack", "run", "--data-dir", str(data_dir),
             "--port-offset", str(OFFSET)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        self.output = ""

    def wait_ready(self, timeout_s: float = 90) -> float:
        started = time.monotonic()
        assert self.process.stdout is not None
        while "Ready in" not in self.output:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                pytest.fail(f"devstack exited {self.process.returncode}:\n{self.output}")
            self.output += line
            if time.monotonic() - started > timeout_s:
                pytest.fail(f"not ready in {timeout_s} s:\n{self.output}")
        return time.monotonic() - started

    @property
    def token(self) -> str:
        match = re.search(r"^(eyJ[\w-]+\.[\w-]+\.[\w-]+)$", self.output, re.MULTILINE)
        assert match, self.output
        return match.group(1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.stdout:
                self.output += self.process.stdout.read()
                self.process.stdout.close()


def url(service: str) -> str:
    return f"http://127.0.0.1:{BASE_PORTS[service] + OFFSET}"


def _stack_processes(data_dir: Path) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in listing if str(data_dir) in line or f"--port {BASE_PORTS['clinical'] + OFFSET}" in line]


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-devstack-"))
    folder.chmod(0o711)
    return folder / ".local"


def test_make_run_serves_every_service_then_stops_everything(data_dir: Path) -> None:
    stack = Stack(data_dir)
    try:
        elapsed = stack.wait_ready()
        assert elapsed < 90
        with httpx.Client(timeout=10) as http:
            triton = f"http://127.0.0.1:{8000 + OFFSET}/v2"
            assert http.get(f"{triton}/health/ready").status_code == 200
            assert http.get(f"{triton}/models/nearest_normal/ready").status_code == 200
            for service, path in PROBES.items():
                assert http.get(url(service) + "/readyz").status_code == 200
                anonymous = http.get(url(service) + path)
                assert anonymous.status_code == 401, service
                authorised = http.get(url(service) + path, headers=bearer(stack.token))
                assert authorised.status_code == (404 if service == "clinical" else 200), service
            created = http.post(
                url("clinical") + "/fhir/Patient",
                json={"resourceType": "Patient", "name": [{"family": "Persist"}]},
                headers={**bearer(stack.token), "content-type": "application/fhir+json"},
            )
            assert created.status_code == 201
            (data_dir / "patient-id").write_text(created.json()["id"])
        assert "already runs" in subprocess.run(
            [sys.executable, "-m", "oncostruct_devtools.devstack", "run", "--data-dir", str(data_dir),
             "--port-offset", str(OFFSET)],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
    finally:
        assert stack.stop() == 0
    assert _stack_processes(data_dir) == []


def test_data_survives_a_restart(data_dir: Path) -> None:
    patient_id = (data_dir / "patient-id").read_text()
    stack = Stack(data_dir)
    try:
        stack.wait_ready()
        response = httpx.get(url("clinical") + f"/fhir/Patient/{patient_id}", headers=bearer(stack.token))
        assert response.status_code == 200
        assert response.json()["name"][0]["family"] == "Persist"
    finally:
        assert stack.stop() == 0


def test_logs_are_json_with_request_ids_and_no_tokens(data_dir: Path) -> None:
    log_lines = []
    for service in PREFIXES:
        log_lines += (data_dir / "logs" / f"{service}.log").read_text().splitlines()
    import json

    access = [json.loads(line) for line in log_lines if '"oncostruct.access"' in line]
    assert access, "no access log lines"
    assert all(re.fullmatch(r"[0-9a-f]{32}", entry["request_id"]) for entry in access)
    assert {entry["status"] for entry in access} >= {200, 201, 401}
    everything = "\n".join(log_lines)
    assert "eyJ" not in everything
    assert "Bearer" not in everything
    assert "Persist" not in everything  # no patient data
    assert "/fhir/Patient/" not in everything  # routes are logged as templates, not raw paths


def test_start_in_background_is_idempotent_and_stop_stops_it(data_dir: Path) -> None:
    def devstack(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "oncostruct_devtools.devstack", command, "--data-dir", str(data_dir),
             "--port-offset", str(OFFSET)],
            capture_output=True, text=True, timeout=150,
        )  # fmt: skip

    started = devstack("start")
    assert started.returncode == 0, started.stderr
    assert "Ready in" in started.stdout
    try:
        assert httpx.get(url("annotations") + "/readyz").status_code == 200
        again = devstack("start")
        assert again.returncode == 0
        assert "already runs" in again.stdout
    finally:
        stopped = devstack("stop")
    assert stopped.returncode == 0
    assert "stopped" in stopped.stdout
    assert _stack_processes(data_dir) == []
