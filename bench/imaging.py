"""Imaging benchmark: this DICOMweb archive vs Orthanc + DICOMweb plugin, same data, same client, same run.

``python -m bench imaging [--quick]`` starts a private PostgreSQL, the development
issuer, the imaging service (its own uvicorn process, so it does not share the
GIL with the client) and Orthanc, generates synthetic CT instances with pydicom
(200 × 128² by default; 40 with ``--quick``) and measures with one httpx client:

- STOW-RS instances/s (batches of 20),
- QIDO-RS latency p50/p99 (study search by PatientID, instance search in a series),
- series metadata latency (median),
- series retrieve MB/s (``transfer-syntax=*``),
- single frames/s (cornerstone's Accept header).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from oncostruct_shared.devissuer import IssuerSettings, create_app, load_or_create_key, mint_token
from tests.imaging.conftest import Orthanc
from tests.imaging.factory import ct_dataset, new_uid, to_bytes
from tests.support import LiveServer, ServiceProcess, free_port, postgres_server

BOUNDARY = "bench-boundary-7f3a"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
SERIES_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _body(parts: list[bytes]) -> bytes:
    chunks = [f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in parts]
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _timed(call: Callable[[], httpx.Response], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = call()
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return times


def _concurrent_stow(base: str, headers: dict[str, str], instances: list[bytes], clients: int) -> float:
    """Instances/s when ``clients`` clients STOW batches of 20 at once."""
    batches = [instances[i : i + 20] for i in range(0, len(instances), 20)]
    bodies = [_body(batch) for batch in batches]

    def send(body: bytes) -> None:
        with httpx.Client(timeout=120, headers=headers) as client:
            client.post(f"{base}/studies", content=body, headers={"Content-Type": STOW_TYPE}).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, bodies))
    return len(instances) / (time.perf_counter() - started)


def measure(
    name: str,
    base: str,
    headers: dict[str, str],
    instances: list[bytes],
    meta: dict[str, str],
    concurrent: list[bytes] | None = None,
) -> dict[str, float]:
    """Run every measurement against one archive and return the figures."""
    figures: dict[str, float] = {}
    with httpx.Client(timeout=120, headers=headers) as client:
        batches = [instances[i : i + 20] for i in range(0, len(instances), 20)]
        started = time.perf_counter()
        for batch in batches:
            response = client.post(f"{base}/studies", content=_body(batch), headers={"Content-Type": STOW_TYPE})
            response.raise_for_status()
        figures["stow_instances_per_s"] = len(instances) / (time.perf_counter() - started)
        if concurrent:
            figures["stow8_instances_per_s"] = _concurrent_stow(base, headers, concurrent, 8)

        study, series, patient = meta["study"], meta["series"], meta["patient"]
        qido = _timed(lambda: client.get(f"{base}/studies", params={"PatientID": patient}), meta_int(meta, "repeat"))
        qido += _timed(
            lambda: client.get(f"{base}/studies/{study}/series/{series}/instances", params={"InstanceNumber": "7"}),
            meta_int(meta, "repeat"),
        )
        figures["qido_p50_ms"] = _percentile(qido, 0.5) * 1000
        figures["qido_p99_ms"] = _percentile(qido, 0.99) * 1000

        metadata = _timed(lambda: client.get(f"{base}/studies/{study}/series/{series}/metadata"), 10)
        figures["series_metadata_ms"] = statistics.median(metadata) * 1000

        started = time.perf_counter()
        total = 0
        for _ in range(3):
            response = client.get(f"{base}/studies/{study}/series/{series}", headers={"Accept": SERIES_ACCEPT})
            response.raise_for_status()
            total += len(response.content)
        figures["retrieve_mb_per_s"] = total / (time.perf_counter() - started) / 1e6

        sops = meta["sops"].split(",")
        started = time.perf_counter()
        for sop in sops:
            response = client.get(
                f"{base}/studies/{study}/series/{series}/instances/{sop}/frames/1", headers={"Accept": FRAME_ACCEPT}
            )
            response.raise_for_status()
        figures["frames_per_s"] = len(sops) / (time.perf_counter() - started)
    print(f"  measured {name}", flush=True)
    return figures


def meta_int(meta: dict[str, str], key: str) -> int:
    """An integer setting of the run."""
    return int(meta[key])


ROWS = [
    ("stow_instances_per_s", "STOW-RS instances/s (batches of 20)", True),
    ("stow8_instances_per_s", "STOW-RS instances/s, 8 clients", True),
    ("qido_p50_ms", "QIDO-RS p50 ms", False),
    ("qido_p99_ms", "QIDO-RS p99 ms", False),
    ("series_metadata_ms", "series metadata ms (median)", False),
    ("retrieve_mb_per_s", "series retrieve MB/s", True),
    ("frames_per_s", "single frames/s", True),
]


def print_table(ours: dict[str, float], orthanc: dict[str, float], count: int) -> None:
    """The comparison table; the ratio is always 'how many times better than Orthanc'."""
    print(f"\nimaging vs Orthanc ({count} × 128² CT, one series)")
    print(f"{'measure':<38}{'oncostruct':>12}{'orthanc':>12}{'ratio':>9}")
    for key, label, higher_is_better in ROWS:
        mine, theirs = ours[key], orthanc[key]
        ratio = mine / theirs if higher_is_better else theirs / mine
        print(f"{label:<38}{mine:>12.1f}{theirs:>12.1f}{ratio:>8.2f}×")


def main(argv: list[str]) -> int:
    """Run the imaging benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench imaging")
    parser.add_argument("--quick", action="store_true", help="40 instances and fewer repeats")
    args = parser.parse_args(argv)
    count = 40 if args.quick else 200
    repeat = 20 if args.quick else 100
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-bench-imaging-"))
    folder.chmod(0o755)
    imaging: ServiceProcess | None = None
    orthanc = Orthanc(folder / "orthanc")
    (folder / "orthanc").mkdir()
    try:
        with postgres_server() as postgres:
            postgres.create_database("bench_imaging")
            issuer_port = free_port()
            issuer_settings = IssuerSettings(url=f"http://127.0.0.1:{issuer_port}", key_file=folder / "key.pem")
            with LiveServer(create_app(issuer_settings), port=issuer_port):
                key = load_or_create_key(issuer_settings.key_file)
                token = mint_token(
                    key,
                    issuer=issuer_settings.url,
                    audience="oncostruct",
                    subject="bench",
                    scopes=["dicomweb.read", "dicomweb.write"],
                    ttl_seconds=3600,
                )
                imaging = ServiceProcess("imaging", postgres.url("bench_imaging"), issuer_settings.url, folder).start()
                imaging_base = imaging.url
                orthanc.start()
                study, series, patient = new_uid(), new_uid(), f"BENCH-{new_uid()[-8:]}"
                datasets = [
                    ct_dataset(study, series, number, size=128, patient_id=patient) for number in range(1, count + 1)
                ]
                # 8-client STOW: one study (and patient) per batch of 20, as several modalities would send.
                studies = [(new_uid(), new_uid(), f"{patient}-{index}") for index in range(count // 20 + 1)]
                others = [
                    ct_dataset(*studies[n // 20][:2], n % 20 + 1, size=128, patient_id=studies[n // 20][2])
                    for n in range(count)
                ]
                for ds in [*datasets, *others]:
                    ds.preamble = b"\0" * 128
                instances = [to_bytes(ds) for ds in datasets]
                concurrent = [to_bytes(ds) for ds in others]
                meta = {
                    "study": study,
                    "series": series,
                    "patient": patient,
                    "repeat": str(repeat),
                    "sops": ",".join(ds.SOPInstanceUID for ds in datasets),
                }
                auth = {"Authorization": f"Bearer {token}"}
                ours = measure("oncostruct", imaging_base, auth, instances, meta, concurrent)
                imaging.stop()  # before its database goes away
                theirs = measure("orthanc", orthanc.dicomweb, {}, instances, meta, concurrent)
                print_table(ours, theirs, count)
    finally:
        if imaging is not None:
            imaging.stop()
        orthanc.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
