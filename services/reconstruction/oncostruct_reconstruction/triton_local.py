"""A real local ``tritonserver`` (the one nvidia-pytriton bundles) serving the model repository.

For tests and ``make run``; clusters use the official Triton image on the
same repository. The bundled Triton (2.45 in nvidia-pytriton 0.5.x) has
only the Python backend, so :func:`prepare_repository` writes, in the
server's own workspace, a copy of each model whose ``config.pbtxt`` names
the Python backend and whose version folders hold ``model.onnx`` plus
:mod:`oncostruct_reconstruction.triton_python_model` as ``model.py``: same
model name, version, tensor names, shapes and batching.

Usage::

    python -m oncostruct_reconstruction.triton_local --http-port 8000 --grpc-port 8001
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from .model.repository import CONFIG_FILE, DEFAULT_REPOSITORY, ONNX_FILE

PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


def bundled_triton() -> Path:
    """The ``tritonserver`` folder inside the installed nvidia-pytriton package."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise RuntimeError("nvidia-pytriton is not installed: it bundles the local tritonserver")
    folder = Path(spec.origin).parent / "tritonserver"
    if not (folder / "bin" / "tritonserver").exists():
        raise RuntimeError(f"no tritonserver binary under {folder}")
    return folder


def bundled_backends() -> list[str]:
    """Names of the backends the bundled Triton carries (``python`` only in nvidia-pytriton 0.5)."""
    return sorted(path.name for path in (bundled_triton() / "backends").iterdir() if path.is_dir())


def server_environment() -> dict[str, str]:
    """Environment of the server: its bundled libraries and this interpreter's ``libpython`` on the loader path.

    The Python backend's stub embeds the interpreter's shared library and
    imports numpy and onnxruntime from this environment, so it must run
    with this interpreter's ``lib`` folder and ``bin`` first on the paths.
    """
    triton = bundled_triton()
    libraries = [str(triton.parent.parent / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR"))]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([*libraries, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def _python_backend_config(text: str) -> str:
    text = re.sub(r'backend:\s*"[^"]*"', 'backend: "python"', text)
    text = re.sub(r'platform:\s*"[^"]*"\n?', "", text)
    text = re.sub(r'default_model_filename:\s*"[^"]*"\n?', "", text)
    return text.replace("KIND_GPU", "KIND_CPU")


def prepare_repository(source: Path, target: Path) -> list[str]:
    """Copy ``source`` to ``target`` for the Python backend (ONNX files are linked, not copied).

    Returns
    -------
    list of str
        The model names prepared.
    """
    names = []
    target.mkdir(parents=True, exist_ok=True)
    for model_dir in sorted(p for p in source.iterdir() if (p / CONFIG_FILE).exists()):
        out = target / model_dir.name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir()
        (out / CONFIG_FILE).write_text(_python_backend_config((model_dir / CONFIG_FILE).read_text()))
        for version in sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()):
            (out / version.name).mkdir()
            (out / version.name / ONNX_FILE).symlink_to((version / ONNX_FILE).resolve())
            shutil.copyfile(PYTHON_MODEL, out / version.name / "model.py")
        names.append(model_dir.name)
    return names


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalTriton:
    """Start, wait for and stop a local ``tritonserver`` bound to 127.0.0.1.

    Parameters
    ----------
    repository
        The model repository to serve (default: the shipped one).
    workspace
        The server's own folder (backends, prepared repository, log); a temporary one if omitted.
    http_port, grpc_port
        Ports on 127.0.0.1 (free ones if omitted).
    metrics_port
        Prometheus metrics port (None: metrics off).
    """

    def __init__(
        self,
        repository: Path = DEFAULT_REPOSITORY,
        workspace: Path | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.repository = repository
        self._temporary = workspace is None
        self.workspace = workspace or Path(tempfile.mkdtemp(prefix="oncostruct-triton-"))
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workspace / "tritonserver.log"

    @property
    def url(self) -> str:
        """``host:port`` of the HTTP endpoint (tritonclient's form, no scheme)."""
        return f"{self.host}:{self.http_port}"

    def command(self) -> list[str]:
        """Prepare the workspace and return the server's command line."""
        triton = bundled_triton()
        backends = self.workspace / "backends"
        if backends.exists():
            shutil.rmtree(backends)
        shutil.copytree(triton / "backends", backends)
        # The stub must match this interpreter's version; nvidia-pytriton ships one per Python version.
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = triton / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
        models = self.workspace / "models"
        prepare_repository(self.repository, models)
        metrics = (
            ["--allow-metrics", "true", "--metrics-address", self.host, "--metrics-port", str(self.metrics_port)]
            if self.metrics_port
            else ["--allow-metrics", "false"]
        )
        return [
            str(triton / "bin" / "tritonserver"),
            "--model-repository", str(models),
            "--backend-directory", str(backends),
            "--cache-directory", str(triton / "caches"),
            "--http-address", self.host, "--http-port", str(self.http_port),
            "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
            *metrics,
            "--model-control-mode", "explicit", "--load-model", "*",
            "--strict-readiness", "true",
            "--exit-timeout-secs", "5",
        ]  # fmt: skip

    def start(self, timeout_s: float = 120.0) -> LocalTriton:
        """Start the server and wait until it and every model are ready."""
        self.workspace.mkdir(parents=True, exist_ok=True)
        command = self.command()
        with self.log_path.open("wb") as log:
            # Own process group: stopping it also ends the Python backend stubs it started.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=server_environment(), start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}; log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tritonserver not ready after {timeout_s:.0f} s; log:\n{self.log_tail()}")
            time.sleep(0.25)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        """The server's error lines and the end of its log (the tables it prints are left out)."""
        if not self.log_path.exists():
            return ""
        text = [
            line for line in self.log_path.read_text(errors="replace").splitlines() if not line.startswith(("+", "|"))
        ]
        errors = [line for line in text if line.startswith("E")]
        return "\n".join([*errors, *text[-lines:]])

    def stop(self) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after 20 s); remove a temporary workspace."""
        if self.process is not None and self.process.poll() is None:
            group = os.getpgid(self.process.pid)
            os.killpg(group, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(group, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self._temporary:
            shutil.rmtree(self.workspace, ignore_errors=True)

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a local Triton in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m oncostruct_reconstruction.triton_local")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="model repository to serve")
    parser.add_argument("--workspace", type=Path, default=Path(".local/triton"), help="the server's own folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    parser.add_argument("--http-port", "--port", type=int, default=8000, help="KServe v2 HTTP port")
    parser.add_argument("--grpc-port", type=int, default=8001, help="KServe v2 gRPC port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port")
    args = parser.parse_args(argv)
    server = LocalTriton(args.repository, args.workspace, args.http_port, args.grpc_port, args.metrics_port, args.host)

    def on_term(signum: int, frame: object) -> None:
        # Leave through the `with` block, so that the server (in its own process group) is stopped too.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    with server:
        print(
            f"Triton ready: http://{server.url} (gRPC 127.0.0.1:{server.grpc_port}); log {server.log_path}", flush=True
        )
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
