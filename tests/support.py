"""Test helpers: real servers on loopback, real databases, real tokens."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.types import ASGIApp

from oncostruct_devtools.postgres import LocalPostgres
from oncostruct_shared.devissuer import mint_token, public_jwk


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveServer:
    """Runs an ASGI app with uvicorn in a thread (lifespan included) on a free port."""

    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in 60 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def docker_answers() -> bool:
    """Whether a Docker engine answers (then PostgreSQL runs in a testcontainer)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@dataclass
class PostgresServer:
    """A PostgreSQL server for the test session: URLs and per-test databases."""

    admin_url: str  # postgresql://… (asyncpg form, no driver suffix)

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database``."""
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{database}"

    def plain_url(self, database: str) -> str:
        """asyncpg URL of ``database``."""
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def create_database(self, name: str) -> str:
        """Create a fresh database (dropping an old one) and return its SQLAlchemy URL."""

        async def create() -> None:
            connection = await asyncpg.connect(self.admin_url)
            try:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        asyncio.run(create())
        return self.url(name)

    def fetch(self, database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run one SQL statement on ``database`` and return its rows."""

        async def run() -> list[asyncpg.Record]:
            connection = await asyncpg.connect(self.plain_url(database))
            try:
                return list(await connection.fetch(sql, *args))
            finally:
                await connection.close()

        return asyncio.run(run())


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL: a testcontainer where Docker answers, else a local cluster."""
    if docker_answers() and not os.environ.get("ONCOSTRUCT_TEST_NO_DOCKER"):
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield PostgresServer(container.get_connection_url())
        return
    root = Path(tempfile.mkdtemp(prefix="oncostruct-test-pg-"))
    root.chmod(0o711)  # the server runs as an unprivileged user when we are root
    cluster = LocalPostgres(root / "pg", free_port())
    cluster.start()
    try:
        yield PostgresServer(cluster.url("postgres", driver="postgresql"))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Issuer:
    """The development issuer running for the test session, plus a way to forge tokens."""

    url: str
    key: rsa.RSAPrivateKey
    audience: str = "oncostruct"

    @property
    def kid(self) -> str:
        return public_jwk(self.key)["kid"]

    def token(self, *scopes: str, subject: str = "tester", ttl: int = 600) -> str:
        """A valid token with ``scopes``."""
        return mint_token(
            self.key, issuer=self.url, audience=self.audience, subject=subject, scopes=scopes, ttl_seconds=ttl
        )

    def forge(
        self, claims: dict[str, Any], *, key: Any = None, algorithm: str = "RS256", kid: str | None = None
    ) -> str:
        """A token with exactly ``claims`` (defaults filled in), signed as told."""
        now = int(time.time())
        body = {"iss": self.url, "aud": self.audience, "sub": "tester", "iat": now, "exp": now + 600, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.key, algorithm=algorithm, headers={"kid": kid or self.kid})


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


SERVICE_PREFIXES = {
    "clinical": "/fhir",
    "imaging": "/dicomweb",
    "annotations": "/annotations/v1",
    "reconstruction": "/reconstruction/v1",
}


class ServiceProcess:
    """One of our services run with uvicorn in its own process (its own GIL), as in production."""

    def __init__(
        self,
        name: str,
        database_url: str,
        issuer_url: str,
        folder: Path,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = self.root + SERVICE_PREFIXES[name]
        prefix = f"ONCOSTRUCT_{name.upper()}_"
        self.environment = {
            **os.environ,
            f"{prefix}DATABASE_URL": database_url,
            f"{prefix}AUTH_ISSUER": issuer_url,
            f"{prefix}BASE_URL": self.url,
            f"{prefix}LOG_LEVEL": "WARNING",
            **{f"{prefix}{key.upper()}": value for key, value in (settings or {}).items()},
        }
        self.log_path = folder / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> ServiceProcess:
        """Start the process and wait for its ``/readyz``."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"oncostruct_{self.name}", "serve", "--port", str(self.port)],
                env=self.environment, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.root}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready in {timeout_s:.0f} s")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the process gracefully if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@contextmanager
def service_process(name: str, database_url: str, issuer_url: str, folder: Path, **env: str) -> Iterator[str]:
    """Run a :class:`ServiceProcess` for the block; yield its API base URL."""
    service = ServiceProcess(name, database_url, issuer_url, folder, settings=env).start()
    try:
        yield service.url
    finally:
        service.stop()
