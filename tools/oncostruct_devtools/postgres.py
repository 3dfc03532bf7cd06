"""A private PostgreSQL cluster in a folder of ours, run from the machine's binaries.

Used by ``make run`` (data kept in the project's ``.local/`` folder) and by the
test suite (a throwaway cluster per session). PostgreSQL refuses to run as
root, so when we are root the server runs as an unprivileged system user
(``postgres`` where the Debian package made one, else ``nobody``).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class PostgresError(RuntimeError):
    """The cluster could not be set up or started; the message says why and what to do."""


def find_bindir() -> Path:
    """The folder of ``initdb``/``pg_ctl``: the newest Debian cluster version, else ``$PATH``."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True
    )
    if candidates:
        return candidates[0].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresError(
        "PostgreSQL server binaries not found. Install them (Debian/Ubuntu: `apt-get install postgresql`); "
        "`make deps` does it for you."
    )


def _server_user() -> str | None:
    """The user to run the server as: None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("ONCOSTRUCT_PG_OS_USER", ""), "postgres", "nobody"):
        if not name:
            continue
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresError("Running as root and no unprivileged user (postgres, nobody) exists to run PostgreSQL.")


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster in ``root`` listening on 127.0.0.1:``port``.

    Layout: ``root/data`` (the cluster), ``root/socket`` (its Unix socket),
    ``root/postgres.log``, ``root/password`` (the ``oncostruct`` role's
    generated password, readable by us only).
    """

    root: Path
    port: int
    user: str = "oncostruct"
    database: str = "oncostruct"

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.bindir = find_bindir()
        self.os_user = _server_user()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    def url(self, database: str | None = None, driver: str = "postgresql+asyncpg") -> str:
        """SQLAlchemy URL of ``database`` (default: the cluster's main database)."""
        return f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database or self.database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        result = subprocess.run(
            command, capture_output=True, text=True, user=self.os_user, group=None, env={**os.environ, "LC_ALL": "C"}
        )
        if check and result.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout}")
        return result

    def _give_to_server_user(self, *paths: Path) -> None:
        if self.os_user is None:
            return
        entry = pwd.getpwnam(self.os_user)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        probe = subprocess.run(["test", "-w", str(self.root)], user=self.os_user, capture_output=True)
        if probe.returncode != 0:
            raise PostgresError(
                f"PostgreSQL must run as {self.os_user!r} (not root), and that user cannot reach {self.root}. "
                "Put the project (or ONCOSTRUCT_DATA_DIR) where every folder on the path is traversable "
                "(chmod o+x), e.g. under /srv or /work, not under /root."
            )

    def initialize(self) -> None:
        """Create the cluster (once) with a generated password for the ``oncostruct`` role."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        password_file = self.root / "password"
        if not password_file.exists():
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24))
        pwfile = self.root / "initdb-pwfile"
        pwfile.write_text(self.password)
        pwfile.chmod(0o600)
        self._give_to_server_user(self.root, self.socket_dir, pwfile)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                f"--username={self.user}",
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def is_running(self) -> bool:
        """Whether this cluster's server is up."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self, timeout_s: int = 60) -> None:
        """Start the server (no-op when it already runs) and create the main database."""
        self.initialize()
        if not self.is_running():
            options = (
                f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200 -c shared_buffers=128MB -c fsync=on"
            )
            if self.os_user and not self.log_file.exists():
                self.log_file.touch()
                self._give_to_server_user(self.log_file)
            result = self._run(
                "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                "-w", "-t", str(timeout_s), check=False,
            )  # fmt: skip
            if result.returncode != 0:
                tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
                raise PostgresError(f"PostgreSQL did not start on port {self.port}:\n{tail}")
        self.create_database(self.database)

    def _psql(self, sql: str, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(
            [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database,
             "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str) -> None:
        """Create database ``name`` unless it exists."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise PostgresError(f"{name!r} is not a plain lower-case database name")
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # noqa: S608 (checked above)
        if not exists:
            self._psql(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """Stop the server (fast shutdown: open transactions roll back)."""
        if self.is_running():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")

    def wait_ready(self, timeout_s: float = 30) -> None:
        """Block until the server accepts connections."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise PostgresError(f"PostgreSQL on port {self.port} did not become ready in {timeout_s} s")
