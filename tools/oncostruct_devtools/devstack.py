"""``make run``: the whole suite on one machine, on embedded defaults.

Starts a private PostgreSQL cluster in the data folder (default ``.local/``),
the development token issuer, and every service as its own uvicorn process;
waits for each ``/readyz``; prints the URLs and a token. Ctrl-C (SIGINT) or
SIGTERM (``make stop``) stops everything it started, PostgreSQL included.
Data survives restarts; running it while it already runs only reports.

    python -m oncostruct_devtools.devstack run [--port-offset N]
    python -m oncostruct_devtools.devstack start      (the same, detached; returns when ready)
    python -m oncostruct_devtools.devstack stop
    python -m oncostruct_devtools.devstack token [--scopes "..."]
    python -m oncostruct_devtools.devstack migrate
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from .postgres import LocalPostgres, PostgresError


@dataclass(frozen=True)
class Component:
    """One process of the suite."""

    name: str
    port: int
    module_args: tuple[str, ...]
    health_path: str
    prefix: str = ""


SERVICES = ("clinical", "imaging", "annotations", "reconstruction")
PREFIXES = {
    "clinical": "/fhir",
    "imaging": "/dicomweb",
    "annotations": "/annotations/v1",
    "reconstruction": "/reconstruction/v1",
}
BASE_PORTS = {
    "issuer": 8090,
    "triton": 8000,
    "clinical": 8081,
    "imaging": 8082,
    "annotations": 8083,
    "reconstruction": 8084,
}
POSTGRES_PORT = 55432


class Stack:
    """The processes of one running suite and the folders they use."""

    def __init__(self, data_dir: Path, port_offset: int = 0) -> None:
        self.data_dir = data_dir.resolve()
        self.port_offset = port_offset
        self.ports = {name: port + port_offset for name, port in BASE_PORTS.items()}
        self.postgres = LocalPostgres(self.data_dir / "postgres", POSTGRES_PORT + port_offset)
        self.logs = self.data_dir / "logs"
        self.run_dir = self.data_dir / "run"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_handles: list[IO[bytes]] = []

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "devstack.pid"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def _client_secrets(self) -> dict[str, str]:
        path = self.data_dir / "issuer" / "clients.json"
        if path.exists():
            stored: dict[str, str] = json.loads(path.read_text())
            return stored
        path.parent.mkdir(parents=True, exist_ok=True)
        clients = {f"oncostruct-{name}": secrets.token_urlsafe(24) for name in SERVICES}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(clients, handle)
        return clients

    def environment(self) -> dict[str, str]:
        """Environment of every process: each service's settings, by its prefix."""
        issuer = self.url("issuer")
        clients = self._client_secrets()
        env = {
            **os.environ,
            "ONCOSTRUCT_ISSUER_URL": issuer,
            "ONCOSTRUCT_ISSUER_KEY_FILE": str(self.data_dir / "issuer" / "signing-key.pem"),
            "ONCOSTRUCT_ISSUER_CLIENTS_FILE": str(self.data_dir / "issuer" / "clients.json"),
        }
        for name in SERVICES:
            prefix = f"ONCOSTRUCT_{name.upper()}_"
            env.update(
                {
                    f"{prefix}DATABASE_URL": self.postgres.url(),
                    f"{prefix}AUTH_ISSUER": issuer,
                    f"{prefix}AUTH_CLIENT_SECRET": clients[f"oncostruct-{name}"],
                    f"{prefix}BASE_URL": self.url(name) + PREFIXES[name],
                }
            )
            if name in ("imaging", "reconstruction"):
                env[f"{prefix}STORAGE_PATH"] = str(self.data_dir / "storage" / name)
            if name in ("imaging", "annotations"):
                env[f"{prefix}CLINICAL_URL"] = self.url("clinical") + PREFIXES["clinical"]
            if name in ("annotations", "reconstruction"):
                env[f"{prefix}IMAGING_URL"] = self.url("imaging") + PREFIXES["imaging"]
            if name == "reconstruction":
                env[f"{prefix}ANNOTATIONS_URL"] = self.url("annotations") + PREFIXES["annotations"]
                env[f"{prefix}TRITON_URL"] = f"127.0.0.1:{self.ports['triton']}"
        return env

    def components(self) -> list[Component]:
        issuer = Component(
            "issuer",
            self.ports["issuer"],
            ("uvicorn", "--factory", "oncostruct_shared.devissuer:create_app", "--no-access-log"),
            "/healthz",
        )
        # The shipped model on a real tritonserver (nvidia-pytriton's), same tensor names as in clusters.
        triton = Component(
            "triton",
            self.ports["triton"],
            (
                "oncostruct_reconstruction.triton_local",
                "--workspace",
                str(self.data_dir / "triton"),
                "--grpc-port",
                str(self.ports["triton"] + 1),
                "--metrics-port",
                str(self.ports["triton"] + 2),
            ),
            "/v2/health/ready",
        )
        services = [
            Component(name, self.ports[name], (f"oncostruct_{name}", "serve"), "/readyz", PREFIXES[name])
            for name in SERVICES
        ]
        return [issuer, triton, *services]

    def _spawn(self, component: Component, env: dict[str, str]) -> None:
        log = (self.logs / f"{component.name}.log").open("ab")
        self._log_handles.append(log)
        command = [sys.executable, "-m", *component.module_args, "--host", "127.0.0.1", "--port", str(component.port)]
        self.processes[component.name] = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir.parent, start_new_session=True
        )

    def _wait_ready(self, components: list[Component], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(components)
        with httpx.Client(timeout=2) as client:
            while pending:
                for component in list(pending):
                    process = self.processes[component.name]
                    if process.poll() is not None:
                        tail = (self.logs / f"{component.name}.log").read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"{component.name} exited with {process.returncode}:\n{tail}")
                    try:
                        response = client.get(self.url(component.name) + component.health_path)
                    except httpx.HTTPError:
                        continue
                    if response.status_code == 200:
                        pending.remove(component)
                if pending and time.monotonic() > deadline:
                    names = ", ".join(c.name for c in pending)
                    raise RuntimeError(f"not ready after {timeout_s:.0f} s: {names} (see {self.logs})")
                time.sleep(0.3)

    def _check_ports_free(self) -> None:
        import socket

        extra = [("triton gRPC", self.ports["triton"] + 1), ("triton metrics", self.ports["triton"] + 2)]
        for name, port in [*self.ports.items(), *extra, ("postgres", self.postgres.port)]:
            if name == "postgres" and self.postgres.is_running():
                continue
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    raise RuntimeError(
                        f"port {port} (for {name}) is already in use; stop what uses it or --port-offset"
                    )

    def start(self, timeout_s: float = 90) -> None:
        """Start PostgreSQL, the issuer and the services, and wait until all are ready."""
        for folder in (self.logs, self.run_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._check_ports_free()
        self.postgres.start()
        env = self.environment()
        components = self.components()
        for component in components[:2]:  # the issuer and Triton first: services reach them at start
            self._spawn(component, env)
        self._wait_ready(components[:2], timeout_s)
        for component in components[2:]:
            self._spawn(component, env)
        self._wait_ready(components[2:], timeout_s)
        self.pid_file.write_text(str(os.getpid()))

    def stop(self) -> None:
        """Stop every process this stack started, then PostgreSQL."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for name, process in self.processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in 15 s; killing it", file=sys.stderr)
                process.kill()
        for handle in self._log_handles:
            handle.close()
        self.pid_file.unlink(missing_ok=True)
        try:
            self.postgres.stop()
        except PostgresError as exc:
            print(f"stopping PostgreSQL: {exc}", file=sys.stderr)

    def token(self, scopes: str = "") -> str:
        """A development token (every scope unless ``scopes`` names some)."""
        env = self.environment()
        return subprocess.run(
            [sys.executable, "-m", "oncostruct_shared.devissuer", "token", "--scopes", scopes],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def banner(self) -> str:
        lines = ["OncoStruct is running:"]
        for name in SERVICES:
            base = self.url(name)
            lines.append(f"  {name:<15} {base}{PREFIXES[name]}   (OpenAPI: {base}{PREFIXES[name]}/docs)")
        lines.append(f"  {'token issuer':<15} {self.url('issuer')}")
        lines.append(f"  {'triton':<15} {self.url('triton')}/v2   (model nearest_normal, KServe v2)")
        lines.append(f"  {'postgresql':<15} 127.0.0.1:{self.postgres.port} (data: {self.postgres.data_dir})")
        lines.append(f"  logs: {self.logs}")
        lines.append("")
        lines.append("Development token (all scopes, 1 h; `make token` prints a new one):")
        lines.append(self.token())
        return "\n".join(lines)


def _running_pid(stack: Stack) -> int | None:
    try:
        pid = int(stack.pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def run(stack: Stack) -> int:
    """Start the stack and block until SIGINT/SIGTERM."""
    pid = _running_pid(stack)
    if pid is not None:
        print(f"OncoStruct already runs (pid {pid}); `make stop` stops it.")
        return 0
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        started = time.monotonic()
        stack.start()
        print(stack.banner())
        print(f"\nReady in {time.monotonic() - started:.1f} s. Ctrl-C stops everything.", flush=True)
        while True:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping (see {stack.logs})", file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping OncoStruct …", file=sys.stderr)
        return 0
    except (RuntimeError, PostgresError) as exc:
        print(f"make run failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


def start_background(stack: Stack, argv: list[str], timeout_s: float = 120) -> int:
    """Run the stack detached (output in ``logs/devstack.log``) and return once it is ready."""
    pid = _running_pid(stack)
    if pid is not None:
        print(f"OncoStruct already runs (pid {pid}); `make stop` stops it.")
        return 0
    stack.logs.mkdir(parents=True, exist_ok=True)
    log_path = stack.logs / "devstack.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "oncostruct_devtools.devstack", "run", *argv],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        output = log_path.read_text(errors="replace")
        if "Ready in" in output:
            print(output.replace("Ctrl-C stops everything.", "`make stop` stops everything."))
            return 0
        if process.poll() is not None:
            print(output, file=sys.stderr)
            return 1
        time.sleep(0.3)
    print(f"not ready after {timeout_s:.0f} s; see {log_path}", file=sys.stderr)
    return 1


def stop(stack: Stack, timeout_s: float = 30) -> int:
    """Stop a stack started in the background."""
    pid = _running_pid(stack)
    if pid is None:
        print("OncoStruct is not running.")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("OncoStruct stopped.")
            return 0
        time.sleep(0.2)
    print(f"process {pid} did not stop in {timeout_s:.0f} s", file=sys.stderr)
    return 1


def migrate(stack: Stack) -> int:
    """Apply every service's migrations to the local cluster (started for the purpose if it is down)."""
    was_running = stack.postgres.is_running()
    stack.postgres.start()
    env = stack.environment()
    try:
        for name in SERVICES:
            result = subprocess.run([sys.executable, "-m", f"oncostruct_{name}", "migrate"], env=env)
            if result.returncode != 0:
                return result.returncode
    finally:
        if not was_running:
            stack.postgres.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line of the dev stack."""
    parser = argparse.ArgumentParser(prog="python -m oncostruct_devtools.devstack")
    parser.add_argument("command", choices=["run", "start", "stop", "token", "migrate"])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("ONCOSTRUCT_DATA_DIR", ".local")), help="data folder"
    )
    parser.add_argument("--port-offset", type=int, default=int(os.environ.get("ONCOSTRUCT_PORT_OFFSET", "0")))
    parser.add_argument("--scopes", default="", help="with `token`: space-separated scopes (default: all)")
    args = parser.parse_args(argv)
    stack = Stack(args.data_dir, args.port_offset)
    if args.command == "run":
        return run(stack)
    if args.command == "start":
        return start_background(stack, ["--data-dir", str(args.data_dir), "--port-offset", str(args.port_offset)])
    if args.command == "migrate":
        return migrate(stack)
    if args.command == "token":
        print(stack.token(args.scopes))
        return 0
    return stop(stack)


if __name__ == "__main__":
    sys.exit(main())
