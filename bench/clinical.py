"""Clinical benchmark: FHIR creates/s, reads/s and patient-scoped search latency with N resources loaded.

``python -m bench clinical [--quick] [--resources N] [--seconds S] [--concurrency C]`` starts a private
PostgreSQL, the development issuer and the clinical service in its own process; loads N resources
(patients with conditions and TNM observations) through transaction Bundles; then measures, with C
concurrent httpx clients, creates/s (POST Observation) and reads/s (GET Observation/id) for S
seconds each, and the latency of patient-scoped searches. Issue #3's targets on this 2-core machine:
≥ 1,000 creates/s, ≥ 3,000 reads/s, patient-scoped search p99 ≤ 20 ms at 1 M resources.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

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


async def _throughput(client: httpx.AsyncClient, call: Any, seconds: float, concurrency: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            response = await call()
            response.raise_for_status()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def _run(base: str, token: str, resources: int, seconds: float, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency + 4)
    headers = {"Authorization": f"Bearer {token}"}
    figures: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as client:
        patients, observations, elapsed = await _load(client, resources, per_patient=10)
        figures["loaded"] = len(patients) * 10
        figures["load_per_s"] = figures["loaded"] / elapsed
        subject = {"reference": f"Patient/{patients[0]}"}

        async def create() -> httpx.Response:
            body = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [T_CATEGORY]},
                "subject": subject,
            }
            return await client.post("/Observation", json=body, headers={**FHIR_JSON, "Prefer": "return=minimal"})

        async def read() -> httpx.Response:
            return await client.get(f"/Observation/{random.choice(observations)}")

        figures["creates_per_s"] = await _throughput(client, create, seconds, concurrency)
        figures["reads_per_s"] = await _throughput(client, read, seconds, concurrency)
        latencies = []
        for _ in range(200):
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
    return figures


def main(argv: list[str]) -> int:
    """Run the clinical benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench clinical")
    parser.add_argument("--quick", action="store_true", help="2,000 resources, 5 s per measurement")
    parser.add_argument("--resources", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    resources, seconds = (2_000, 5.0) if args.quick else (args.resources, args.seconds)
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-bench-clinical-"))
    try:
        with postgres_server() as postgres, issuer(folder) as dev_issuer:
            database = postgres.create_database("bench_clinical")
            with service_process("clinical", database, dev_issuer.url, folder) as base:
                figures = asyncio.run(
                    _run(base, dev_issuer.token("system/*.cruds"), resources, seconds, args.concurrency)
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nclinical FHIR server, {int(figures['loaded']):,} resources loaded, {args.concurrency} concurrent clients")
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
