"""Annotation service benchmark: bulk ROI create, list/filter latency, SEG+SR export, dataset export.

``python -m bench annotations [--quick] [--rois N] [--series K]`` starts a private PostgreSQL, the
development issuer and the clinical, imaging and annotation services as separate processes, stores
a 300-slice 256² MR series and K small series, and measures (issue #5's targets in brackets):

- bulk ROI create, polygons in batches of 1,000 through ``POST /annotations/bulk`` [≥ 5,000 ROIs/s];
- list/filter latency with N annotations stored (project + series + label + status, 100 per page);
- SEG + SR export of the 300-slice series with 20 lesions of 5 slices each [≤ 2 s];
- dataset export of K series (NIfTI + masks + manifest), from POST to the archive ready.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from dicomweb_client.api import DICOMwebClient

from bench._services import percentile, suite
from bench.jobs import brain_volume, series_datasets

CLIENTS = 2
SCOPES = [
    "dicomweb.read", "dicomweb.write", "annotations.read", "annotations.write", "annotations.review",
    "system/*.cruds",
]  # fmt: skip


def _square(sop: str, x: float, y: float, side: float) -> dict[str, Any]:
    points = [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]
    return {"type": "polygon", "sop_instance_uid": sop, "points": points}


def _store(dicomweb: DICOMwebClient, datasets: list[Any]) -> None:
    for start in range(0, len(datasets), 50):
        dicomweb.store_instances(datasets[start : start + 50])


def measure(urls: dict[str, str], token: str, rois: int, series_count: int) -> list[tuple[str, str, str]]:
    """Run the measurements; rows of (measure, value, target)."""
    headers = {"Authorization": f"Bearer {token}"}
    dicomweb = DICOMwebClient(urls["imaging"], headers=headers)
    big = series_datasets(brain_volume(300, 256), 182.0 / 300)
    _store(dicomweb, big)
    study, series = str(big[0].StudyInstanceUID), str(big[0].SeriesInstanceUID)
    sops = [str(ds.SOPInstanceUID) for ds in big]
    rows: list[tuple[str, str, str]] = []
    rng = random.Random(0)
    with httpx.Client(base_url=urls["annotations"], headers=headers, timeout=300) as api:
        project = api.post("/projects", json={"name": "bench-bulk"}).json()["id"]
        base = {"project_id": project, "level": "roi", "label": "lesion", "value": "other_lesion",
                "study_uid": study, "series_uid": series, "status": "proposed"}  # fmt: skip
        api.post("/annotations/bulk", json={"items": [{**base, "geometry": _square(sops[0], 1, 1, 4)}]})  # warm
        batches = [
            [
                {**base, "geometry": _square(rng.choice(sops), rng.uniform(0, 200), rng.uniform(0, 200), 20)}
                for _ in range(min(1000, rois - start))
            ]
            for start in range(0, rois, 1000)
        ]
        bodies = [json.dumps({"items": items}).encode() for items in batches]

        def send(body: bytes) -> None:
            response = api.post("/annotations/bulk", content=body, headers={"Content-Type": "application/json"})
            if response.status_code != 200:
                raise RuntimeError(f"bulk create: {response.status_code} {response.text[:500]}")

        began = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:  # clients posting at once, as model jobs and importers do
            list(pool.map(send, bodies))
        seconds = time.perf_counter() - began
        rows.append(
            (f"bulk ROI create (batches of 1,000, {CLIENTS} clients), ROIs/s", f"{rois / seconds:,.0f}", "≥ 5,000")
        )

        params = {"project_id": project, "series_uid": series, "label": "lesion", "status": "proposed", "limit": 100}
        latencies = []
        for _ in range(200):
            t0 = time.perf_counter()
            api.get("/annotations", params=params).raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1e3)
        rows.append(
            (f"list/filter p50 / p99 ms ({rois + 1:,} stored)",
             f"{percentile(latencies, 0.5):.1f} / {percentile(latencies, 0.99):.1f}", "p99 at 1 M")
        )  # fmt: skip

        export_project = api.post("/projects", json={"name": "bench-export"}).json()["id"]
        lesions = []
        for index in range(20):
            first = 20 + index * 12
            polygons = [_square(sops[first + k], 30 + 9 * index, 60 + 5 * index, 15) for k in range(5)]
            lesions.append({**base, "project_id": export_project, "status": "draft", "tracking_id": f"lesion-{index}",
                            "geometry": {"type": "contours", "polygons": polygons}})  # fmt: skip
        api.post("/annotations/bulk", json={"items": lesions}).raise_for_status()
        t0 = time.perf_counter()
        exported = api.post(
            "/exports/dicom",
            json={"project_id": export_project, "study_uid": study, "series_uid": series, "statuses": ["draft"]},
        )
        exported.raise_for_status()
        rows.append(("SEG + SR export, 300 slices, 20 lesions, s", f"{time.perf_counter() - t0:.2f}", "≤ 2"))

        dataset_project = api.post("/projects", json={"name": "bench-dataset"}).json()["id"]
        volume = brain_volume(20, 64)
        labels = []
        for _ in range(series_count):
            datasets = series_datasets(volume, 2.0)
            _store(dicomweb, datasets)
            labels.append({"project_id": dataset_project, "level": "series", "label": "normality", "value": "normal",
                           "study_uid": str(datasets[0].StudyInstanceUID), "status": "draft",
                           "series_uid": str(datasets[0].SeriesInstanceUID)})  # fmt: skip
        api.post("/annotations/bulk", json={"items": labels}).raise_for_status()
        t0 = time.perf_counter()
        job = api.post("/exports/datasets", json={"project_id": dataset_project, "statuses": ["draft"]}).json()
        while job["status"] in ("queued", "running"):
            time.sleep(0.1)
            job = api.get(f"/exports/datasets/{job['id']}").json()
        if job["status"] != "succeeded":
            raise RuntimeError(f"dataset export failed: {job['error']}")
        rows.append((f"dataset export, {series_count} series of 20 × 64², s", f"{time.perf_counter() - t0:.2f}", "–"))
    return rows


def main(argv: list[str]) -> int:
    """Run the annotation benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench annotations")
    parser.add_argument("--rois", type=int, default=20_000)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="5,000 ROIs, 10 series")
    args = parser.parse_args(argv)
    rois, series_count = (5_000, 10) if args.quick else (args.rois, args.series)
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-bench-annotations-"))
    folder.chmod(0o755)
    names = ("clinical", "imaging", "annotations")
    with suite(names, folder, {"annotations": {"storage_path": str(folder / "annotations")}}) as services:
        rows = measure(services.urls, services.token(*SCOPES), rois, series_count)
    print(f"\n{'measure':<52}{'value':>16}  target")
    for label, value, target in rows:
        print(f"{label:<52}{value:>16}  {target}")

    return 0
