"""The Dockerfiles and docker/compose.yaml agree with the chart on users, ports, commands and settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "docker"
SUBCHARTS = REPO_ROOT / "charts" / "oncostruct" / "charts"
SERVICES = ("clinical", "imaging", "annotations", "reconstruction")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    last_from = max(index for index, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def chart_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((SUBCHARTS / name / "values.yaml").read_text(encoding="utf-8"))
    return values


@pytest.mark.parametrize("name", [*SERVICES, "devissuer"])
def test_image_is_multi_stage_and_non_root(name: str) -> None:
    dockerfile = DOCKER / f"Dockerfile.{name}"
    steps = instructions(dockerfile)
    final = final_stage(dockerfile)
    port = chart_values(name)["containerPorts"]["http"]

    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert [args for keyword, args in steps if keyword == "FROM"] == ["${BASE_IMAGE} AS builder", "${BASE_IMAGE}"]
    assert ("USER", "10001:10001") in final
    assert ("EXPOSE", str(port)) in final
    assert any(keyword == "COPY" and args == "--from=builder /opt/venv /opt/venv" for keyword, args in final)
    command = json.loads(dict(final)["CMD"])
    assert command[:2] == ["uvicorn", "--factory"]
    assert command[command.index("--port") + 1] == str(port)


@pytest.mark.parametrize("name", SERVICES)
def test_image_runs_the_service_factory_like_the_chart(name: str) -> None:
    steps = instructions(DOCKER / f"Dockerfile.{name}")
    command = json.loads(dict(final_stage(DOCKER / f"Dockerfile.{name}"))["CMD"])
    installs = [args for keyword, args in steps if keyword == "RUN" and args.startswith("pip install")]

    assert command[2] == f"oncostruct_{name}.app:create_app"
    assert "--proxy-headers" in command
    assert "--no-access-log" in command
    assert installs
    assert installs[0].startswith(f"pip install ./shared ./services/{name} ")
    assert "-e " not in installs[0]
    assert "[train]" not in installs[0]


def test_reconstruction_image_refuses_torch() -> None:
    text = (DOCKER / "Dockerfile.reconstruction").read_text(encoding="utf-8")

    assert "pip show torch" in text
    assert "torch" not in text.split("pip install", 1)[1].split("\n", 1)[0]


def test_compose_wires_every_service() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]

    assert services["postgres"]["image"] == "postgres:16"
    assert services["triton"]["profiles"] == ["gpu"]
    for name in SERVICES:
        service = services[name]
        port = chart_values(name)["containerPorts"]["http"]
        prefix = f"ONCOSTRUCT_{name.upper()}_"
        assert service["build"] == {"context": "..", "dockerfile": f"docker/Dockerfile.{name}"}
        assert all(key.startswith(prefix) for key in service["environment"])
        assert service["environment"][prefix + "DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        peers = {
            key.removeprefix(prefix).removesuffix("_URL").lower()
            for key in service["environment"]
            if key.endswith("_URL")
        }
        peers -= {"database", "auth_jwks", "base"}
        expected_peers = set(chart_values(name).get("upstreams") or {})
        assert peers == expected_peers
        assert set(service["depends_on"]) >= {"postgres", "devissuer"} | (expected_peers - {"triton"})
