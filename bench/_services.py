"""What the benchmarks share: a service of ours in its own process, a token issuer, percentiles."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from oncostruct_shared.devissuer import IssuerSettings, create_app, load_or_create_key, mint_token
from tests.support import LiveServer, free_port

PREFIXES = {"clinical": "/fhir", "imaging": "/dicomweb", "annotations": "/annotations/v1"}


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Issuer:
    """A development issuer running in this process."""

    url: str
    settings: IssuerSettings

    def token(self, *scopes: str) -> str:
        key = load_or_create_key(self.settings.key_file)
        return mint_token(key, issuer=self.url, audience="oncostruct", subject="bench", scopes=scopes, ttl_seconds=7200)


@contextmanager
def issuer(folder: Path) -> Iterator[Issuer]:
    """Run the development issuer on a free port for the block."""
    port = free_port()
    settings = IssuerSettings(url=f"http://127.0.0.1:{port}", key_file=folder / "issuer-key.pem")
    with LiveServer(create_app(settings), port=port):
        yield Issuer(settings.url, settings)


@contextmanager
def service_process(name: str, database_url: str, issuer_url: str, folder: Path, **env: str) -> Iterator[str]:
    """Run one of our services with uvicorn in its own process (its own GIL); yield its API base URL."""
    port = free_port()
    prefix = f"ONCOSTRUCT_{name.upper()}_"
    environment = {
        **os.environ,
        f"{prefix}DATABASE_URL": database_url,
        f"{prefix}AUTH_ISSUER": issuer_url,
        f"{prefix}BASE_URL": f"http://127.0.0.1:{port}{PREFIXES[name]}",
        f"{prefix}LOG_LEVEL": "WARNING",
        **{f"{prefix}{key.upper()}": value for key, value in env.items()},
    }
    log_path = folder / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", f"oncostruct_{name}", "serve", "--port", str(port)],
            env=environment, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{root}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not become ready in 60 s")
            time.sleep(0.2)
        yield root + PREFIXES[name]
    finally:
        process.terminate()
        process.wait(timeout=30)
