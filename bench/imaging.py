"""Imaging benchmark: this DICOMweb archive vs Orthanc + DICOMweb plugin, same data, same client, same run.

``python -m bench imaging [--quick] [--index=N]`` starts a private PostgreSQL, the
development issuer, the imaging service (its own uvicorn process, so it does not share the
GIL with the client) and Orthanc, generates synthetic CT instances with pydicom (200 × 128²
by default; 40 with ``--quick``) and measures with httpx clients, each operation once
unmeasured first (connections and caches warm, as in use):

- STOW-RS instances/s (batches of 20; one client storing the series, then 8 clients with their own
  connections each storing as many instances, after one unmeasured batch each),
- QIDO-RS latency p50/p99 (study search by PatientID, instance search in a series; 500 each), with
  ``--index=N`` after N more instances (16² CT, 100 per series, one patient per study) were
  stored in both archives (the issue's figure: ``--index=100000``),
- series metadata latency (median) for series of 60 and 500 instances,
- series retrieve MB/s (``transfer-syntax=*``; the median of 21 retrieves),
- single frames/s (cornerstone's Accept header), one request after the other, every frame of the
  200-instance series: the median of five passes, and the first pass alone (the series' frame
  locations not yet cached).
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom

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


#: Concurrent STOW-RS clients.
CLIENTS = 8


def _concurrent_stow(base: str, headers: dict[str, str], instances: list[bytes], clients: int) -> float:
    """Instances/s when ``clients`` clients, each with its own connection, STOW batches of 20 at once.

    The clients are made before the clock starts: making one loads the CA bundle (tens of
    milliseconds of CPU), which a modality does once, not per batch.
    """
    batches = [instances[i : i + 20] for i in range(0, len(instances), 20)]
    bodies = [_body(batch) for batch in batches]
    connections = [httpx.Client(timeout=120, headers=headers) for _ in range(clients)]

    def send(index: int) -> None:
        client = connections[index]
        for body in bodies[index::clients]:
            client.post(f"{base}/studies", content=body, headers={"Content-Type": STOW_TYPE}).raise_for_status()

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, range(clients)))
        return len(instances) / (time.perf_counter() - started)
    finally:
        for client in connections:
            client.close()


_TEMPLATE_UIDS = ("2.25.1" + "0" * 38, "2.25.1" + "1" * 38, "2.25.1" + "2" * 38)


def _bulk_uid(kind: int, number: int) -> bytes:
    return f"2.25.{kind}{number:038d}".encode()


def _bulk_batches(count: int, per_series: int = 100) -> list[tuple[int, bytes]]:
    """(instances, multipart body) of ``count`` small instances: a template's UIDs and Patient ID replaced
    byte for byte (same lengths), so making 100 k of them takes seconds, not minutes."""
    study_t, series_t, sop_t = _TEMPLATE_UIDS
    template = ct_dataset(study_t, series_t, 1, size=16, patient_id="BULK-00000000", sop_instance=sop_t)
    template.preamble = b"\0" * 128
    data = to_bytes(template)
    batches = []
    for series_number in range(0, max(count, 0) // per_series):
        study, series = _bulk_uid(3, series_number), _bulk_uid(4, series_number)
        patient = f"BULK-{series_number:08d}".encode()
        parts = []
        for index in range(per_series):
            sop = _bulk_uid(5, series_number * per_series + index)
            parts.append(
                data.replace(study_t.encode(), study)
                .replace(series_t.encode(), series)
                .replace(sop_t.encode(), sop)
                .replace(b"BULK-00000000", patient)
            )
        batches.append((per_series, _body(parts)))
    return batches


def _load(base: str, headers: dict[str, str], batches: list[tuple[int, bytes]], clients: int = 8) -> float:
    """Store the bulk batches with ``clients`` connections; instances/s."""
    connections = [httpx.Client(timeout=600, headers=headers) for _ in range(clients)]

    def send(index: int) -> None:
        for _, body in batches[index::clients]:
            response = connections[index].post(f"{base}/studies", content=body, headers={"Content-Type": STOW_TYPE})
            response.raise_for_status()

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, range(clients)))
        return sum(count for count, _ in batches) / (time.perf_counter() - started)
    finally:
        for client in connections:
            client.close()


def _store(client: httpx.Client, base: str, instances: list[bytes]) -> None:
    for start in range(0, len(instances), 50):
        body = _body(instances[start : start + 50])
        client.post(f"{base}/studies", content=body, headers={"Content-Type": STOW_TYPE}).raise_for_status()


def measure(
    name: str,
    base: str,
    headers: dict[str, str],
    instances: list[bytes],
    meta: dict[str, str],
    concurrent: list[bytes],
    metadata_series: dict[int, tuple[str, str, list[bytes]]],
    bulk: list[tuple[int, bytes]],
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
        _concurrent_stow(base, headers, concurrent[: 20 * CLIENTS], CLIENTS)  # warm: connections, pools
        figures["stow8_instances_per_s"] = _concurrent_stow(base, headers, concurrent[20 * CLIENTS :], CLIENTS)
        for _, _, series_instances in metadata_series.values():
            _store(client, base, series_instances)
        if bulk:
            rate = _load(base, headers, bulk)
            print(f"  {name}: {sum(count for count, _ in bulk)} more instances stored ({rate:.0f}/s)", flush=True)

        study, series, patient = meta["study"], meta["series"], meta["patient"]
        qido = _timed(lambda: client.get(f"{base}/studies", params={"PatientID": patient}), meta_int(meta, "repeat"))
        qido += _timed(
            lambda: client.get(f"{base}/studies/{study}/series/{series}/instances", params={"InstanceNumber": "7"}),
            meta_int(meta, "repeat"),
        )
        qido = qido[1:]  # the first request warmed the connection and caches
        figures["qido_p50_ms"] = _percentile(qido, 0.5) * 1000
        figures["qido_p99_ms"] = _percentile(qido, 0.99) * 1000

        for size, (meta_study, meta_series, _) in metadata_series.items():
            url = f"{base}/studies/{meta_study}/series/{meta_series}/metadata"
            metadata = _timed(functools.partial(client.get, url), 11)[1:]
            figures[f"series_metadata_{size}_ms"] = statistics.median(metadata) * 1000

        client.get(f"{base}/studies/{study}/series/{series}", headers={"Accept": SERIES_ACCEPT}).raise_for_status()
        rates = []
        for _ in range(21):  # the median retrieve: steady against a background hiccup in a 15 ms request
            started = time.perf_counter()
            response = client.get(f"{base}/studies/{study}/series/{series}", headers={"Accept": SERIES_ACCEPT})
            response.raise_for_status()
            rates.append(len(response.content) / (time.perf_counter() - started) / 1e6)
        figures["retrieve_mb_per_s"] = statistics.median(rates)

        sops = meta["sops"].split(",")
        client.get(  # a frame of another series first: the connection is warm, this series not
            f"{base}/studies/{metadata_series[60][0]}/series/{metadata_series[60][1]}/instances/"
            f"{_sop_of(metadata_series[60][2][0])}/frames/1",
            headers={"Accept": FRAME_ACCEPT},
        ).raise_for_status()
        rates = []
        for _ in range(5):  # a viewer scrolling through the series five times; the median pass counts
            started = time.perf_counter()
            for sop in sops:
                response = client.get(
                    f"{base}/studies/{study}/series/{series}/instances/{sop}/frames/1",
                    headers={"Accept": FRAME_ACCEPT},
                )
                response.raise_for_status()
            rates.append(len(sops) / (time.perf_counter() - started))
        figures["frames_per_s"] = statistics.median(rates)
        figures["frames_first_pass_per_s"] = rates[0]
    print(f"  measured {name}", flush=True)
    return figures


def _sop_of(instance: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(instance), stop_before_pixels=True).SOPInstanceUID)


def meta_int(meta: dict[str, str], key: str) -> int:
    """An integer setting of the run."""
    return int(meta[key])


ROWS = [
    ("stow_instances_per_s", "STOW-RS instances/s (batches of 20)", True),
    ("stow8_instances_per_s", "STOW-RS instances/s, 8 clients", True),
    ("qido_p50_ms", "QIDO-RS p50 ms", False),
    ("qido_p99_ms", "QIDO-RS p99 ms", False),
    ("series_metadata_60_ms", "series metadata ms, 60 instances", False),
    ("series_metadata_500_ms", "series metadata ms, 500 instances", False),
    ("retrieve_mb_per_s", "series retrieve MB/s (median of 21)", True),
    ("frames_per_s", "single frames/s (median of 5 passes)", True),
    ("frames_first_pass_per_s", "single frames/s, first pass", True),
]


def print_table(ours: dict[str, float], orthanc: dict[str, float], count: int, indexed: int) -> None:
    """The comparison table; the ratio is always 'how many times better than Orthanc'."""
    print(f"\nimaging vs Orthanc ({count} × 128² CT, one series; QIDO with {indexed:,} instances stored)")
    print(f"{'measure':<40}{'oncostruct':>12}{'orthanc':>12}{'ratio':>9}")
    for key, label, higher_is_better in ROWS:
        mine, theirs = ours[key], orthanc[key]
        ratio = mine / theirs if higher_is_better else theirs / mine
        print(f"{label:<40}{mine:>12.1f}{theirs:>12.1f}{ratio:>8.2f}×")


def main(argv: list[str]) -> int:
    """Run the imaging benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench imaging")
    parser.add_argument("--quick", action="store_true", help="40 instances and fewer repeats")
    parser.add_argument("--index", type=int, default=0, help="store this many more instances before QIDO")
    args = parser.parse_args(argv)
    count = 40 if args.quick else 200
    repeat = 50 if args.quick else 500  # each of the two QIDO-RS searches: p99 of 1,000, not the 2nd worst of 200
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
                # Orthanc has no clinical service to link studies to (and none runs here): linking off.
                imaging = ServiceProcess(
                    "imaging",
                    postgres.url("bench_imaging"),
                    issuer_settings.url,
                    folder,
                    settings={"link_studies": "false"},
                ).start()
                imaging_base = imaging.url
                orthanc.start()
                study, series, patient = new_uid(), new_uid(), f"BENCH-{new_uid()[-8:]}"
                datasets = [
                    ct_dataset(study, series, number, size=128, patient_id=patient) for number in range(1, count + 1)
                ]
                # 8-client STOW: each client stores `count` instances, one study (and patient) per batch of
                # 20, as several modalities would send; one batch per client first, unmeasured.
                total = count * CLIENTS + 20 * CLIENTS
                studies = [(new_uid(), new_uid(), f"{patient}-{index}") for index in range(total // 20 + 1)]
                others = [
                    ct_dataset(*studies[n // 20][:2], n % 20 + 1, size=128, patient_id=studies[n // 20][2])
                    for n in range(total)
                ]
                for ds in [*datasets, *others]:
                    ds.preamble = b"\0" * 128
                instances = [to_bytes(ds) for ds in datasets]
                concurrent = [to_bytes(ds) for ds in others]
                metadata_series = {}
                for size in (60, 500):
                    meta_study, meta_series = new_uid(), new_uid()
                    members = [ct_dataset(meta_study, meta_series, n, size=64) for n in range(1, size + 1)]
                    for ds in members:
                        ds.preamble = b"\0" * 128
                    metadata_series[size] = (meta_study, meta_series, [to_bytes(ds) for ds in members])
                bulk = _bulk_batches(args.index)
                stored = count + len(others) + 560 + sum(number for number, _ in bulk)
                meta = {
                    "study": study,
                    "series": series,
                    "patient": patient,
                    "repeat": str(repeat),
                    "sops": ",".join(ds.SOPInstanceUID for ds in datasets),
                }
                auth = {"Authorization": f"Bearer {token}"}
                # The data sets and bodies made above live to the end: out of the client's full collections,
                # which otherwise pause a timed request now and then (one of 77 ms in a QIDO-RS p99).
                gc.collect()
                gc.freeze()
                ours = measure("oncostruct", imaging_base, auth, instances, meta, concurrent, metadata_series, bulk)
                imaging.stop()  # before its database goes away
                theirs = measure("orthanc", orthanc.dicomweb, {}, instances, meta, concurrent, metadata_series, bulk)
                print_table(ours, theirs, count, stored)
    finally:
        if imaging is not None:
            imaging.stop()
        orthanc.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
