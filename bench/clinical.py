"""Clinical benchmark: FHIR creates/s, reads/s and patient-scoped search latency with N resources loaded.

``python -m bench clinical [--quick] [--resources=N] [--seconds=S] [--concurrency=C] [--workers=W]``
starts a private PostgreSQL, the development issuer and the clinical service (W server processes,
default 2: one per core of the reference machine); loads N resources (patients with conditions and
TNM observations) through transaction Bundles; then measures creates/s (POST Observation) and
reads/s (GET Observation/id of random loaded ids) for S seconds each with ``wrk`` (a C load
generator, so the client does not eat the server's CPU; C connections), and the latency of
patient-scoped searches with one httpx client (after ``ANALYZE``, as after any bulk load).
Issue #3's targets on this 2-core machine:
≥ 1,000 creates/s, ≥ 3,000 reads/s, patient-scoped search p99 ≤ 20 ms at 1 M resources.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench._services import issuer, percentile, service_process
from tests.support import postgres_server

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
T_CATEGORY = {"system": "http://loinc.org", "code": "21905-5"}


def _patient_entries(index: int, observations: int) -> list[dict[str, Any]]:
    patient = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:bench:mrn", "value": f"MRN-{index}"}],
                "name": [{"family": f"Bench{index}", "given": ["Test"]}],
                "birthDate": f"19{40 + index % 50}-0{1 + index % 9}-1{index % 10}",
            },
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {
                "resourceType": "Condition",
                "subject": {"reference": patient},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007"}]},
            },
            "request": {"method": "POST", "url": "Condition"},
        },
    ]
    for number in range(observations):
        entries.append(
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {
                        "coding": [T_CATEGORY if number % 2 == 0 else {"system": "http://loinc.org", "code": "97509-4"}]
                    },
                    "subject": {"reference": patient},
                    "effectiveDateTime": f"2026-0{1 + number % 9}-01",
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return entries


async def _load(client: httpx.AsyncClient, resources: int, per_patient: int) -> tuple[list[str], list[str], float]:
    patients: list[str] = []
    observations: list[str] = []
    bundles: list[list[dict[str, Any]]] = [[]]
    index = 0
    while index * per_patient < resources:
        entries = _patient_entries(index, per_patient - 2)
        if len(bundles[-1]) + len(entries) > 200:
            bundles.append([])
        bundles[-1] += entries
        index += 1
    started = time.perf_counter()
    semaphore = asyncio.Semaphore(4)

    async def send(entries: list[dict[str, Any]]) -> None:
        async with semaphore:
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            response = await client.post("", json=bundle, headers=FHIR_JSON)
            response.raise_for_status()
            for item in response.json()["entry"]:
                location = item["response"]["location"]
                kind, resource_id = location.split("/_history")[0].split("/")[-2:]
                if kind == "Patient":
                    patients.append(resource_id)
                elif kind == "Observation":
                    observations.append(resource_id)

    await asyncio.gather(*(send(entries) for entries in bundles))
    return patients, observations, time.perf_counter() - started


#: wrk scripts: reads pick a random loaded id per request; creates POST one Observation each.
_READ_LUA = """
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
local auth = "Bearer " .. os.getenv("BENCH_TOKEN")
local prefix = os.getenv("BENCH_PREFIX")
math.randomseed(42)
request = function()
  return wrk.format("GET", prefix .. "/Observation/" .. ids[math.random(#ids)], {["Authorization"] = auth})
end
"""
_CREATE_LUA = """
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PREFIX") .. "/Observation"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Prefer"] = "return=minimal"
wrk.body = os.getenv("BENCH_BODY")
"""


def wrk(url: str, script: Path, env: dict[str, str], seconds: float, connections: int) -> float:
    """Requests/s that ``wrk`` measured; raises if any response was not 2xx or the socket failed."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(script), url]
    output = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise RuntimeError(f"wrk saw failures:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"no rate in wrk's output:\n{output}")
    return float(match[1])


async def _load_and_search(
    base: str, token: str, resources: int, after_load: Callable[[], None]
) -> tuple[dict[str, float], list[str], list[str]]:
    limits = httpx.Limits(max_connections=8)
    headers = {"Authorization": f"Bearer {token}"}
    figures: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300, limits=limits) as client:
        patients, observations, elapsed = await _load(client, resources, per_patient=10)
        figures["loaded"] = len(patients) * 10
        figures["load_per_s"] = figures["loaded"] / elapsed
        await asyncio.to_thread(after_load)
        latencies = []
        for _ in range(500):
            patient = random.choice(patients)
            started = time.perf_counter()
            response = await client.get(
                "/Observation", params={"subject": f"Patient/{patient}", "code": "http://loinc.org|21905-5"}
            )
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            assert response.json()["entry"], "the patient-scoped search found nothing"
        figures["search_p50_ms"] = percentile(latencies, 0.5) * 1000
        figures["search_p99_ms"] = percentile(latencies, 0.99) * 1000
    return figures, patients, observations


def _run(
    base: str, token: str, folder: Path, args: argparse.Namespace, after_load: Callable[[], None]
) -> dict[str, float]:
    figures, patients, observations = asyncio.run(_load_and_search(base, token, args.resources, after_load))
    url = urlsplit(base)
    (folder / "ids.txt").write_text("\n".join(random.sample(observations, min(len(observations), 100_000))))
    (folder / "read.lua").write_text(_READ_LUA)
    (folder / "create.lua").write_text(_CREATE_LUA)
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [T_CATEGORY]},
        "subject": {"reference": f"Patient/{patients[0]}"},
        "effectiveDateTime": "2026-11-26T10:00:00Z",
    }
    env = {
        "BENCH_IDS": str(folder / "ids.txt"),
        "BENCH_TOKEN": token,
        "BENCH_PREFIX": url.path,
        "BENCH_BODY": json.dumps(body),
    }
    root = f"{url.scheme}://{url.netloc}"
    figures["creates_per_s"] = wrk(root, folder / "create.lua", env, args.seconds, args.concurrency)
    figures["reads_per_s"] = wrk(root, folder / "read.lua", env, args.seconds, args.concurrency)
    return figures


def main(argv: list[str]) -> int:
    """Run the clinical benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench clinical")
    parser.add_argument("--quick", action="store_true", help="2,000 resources, 5 s per measurement")
    parser.add_argument("--resources", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="server processes (the WORKERS setting)")
    args = parser.parse_args(argv)
    if args.quick:
        args.resources, args.seconds = 2_000, 5.0
    if shutil.which("wrk") is None:
        raise SystemExit("the clinical benchmark needs wrk (make bench installs it: apt-get install wrk)")
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-bench-clinical-"))
    try:
        with postgres_server() as postgres, issuer(folder) as dev_issuer:
            database = postgres.create_database("bench_clinical")
            with service_process("clinical", database, dev_issuer.url, folder, workers=str(args.workers)) as base:
                # Planner statistics after the bulk load, as after any bulk load (autovacuum gets
                # there too, within a minute or so; until then searches may plan on stale counts).
                def analyze() -> None:
                    postgres.fetch("bench_clinical", "ANALYZE")

                figures = _run(base, dev_issuer.token("system/*.cruds"), folder, args, analyze)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\nclinical FHIR server, {int(figures['loaded']):,} resources loaded, {args.workers} server processes, "
        f"wrk with {args.concurrency} connections"
    )
    rows = [
        ("load through transaction Bundles, resources/s", figures["load_per_s"], "–"),
        ("creates/s (POST Observation)", figures["creates_per_s"], "≥ 1,000"),
        ("reads/s (GET Observation/id)", figures["reads_per_s"], "≥ 3,000"),
        ("patient-scoped search p50 ms", figures["search_p50_ms"], "–"),
        ("patient-scoped search p99 ms", figures["search_p99_ms"], "≤ 20 (at 1 M)"),
    ]
    print(f"{'measure':<48}{'value':>12}{'target':>16}")
    for label, value, target in rows:
        print(f"{label:<48}{value:>12.1f}{target:>16}")
    return 0
