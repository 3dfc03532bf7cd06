"""End-to-end analysis time of one series: WADO-RS fetch → Triton → Parametric Map, SEG and proposals stored.

``python -m bench jobs [--slices 300] [--size 256] [--repeat 3]`` starts the suite as separate
processes on one private PostgreSQL (as ``make run`` does) — clinical, imaging, annotations,
reconstruction — and the shipped model on a local ``tritonserver``; stores a brain MR series
of ``--slices`` slices of ``--size``² (the MNI152 template resampled, a synthetic lesion in it),
submits a job per repeat (each on a fresh copy of the series: jobs are idempotent per series)
and prints the time per stage as the job records it, and the wall time from POST to
``succeeded`` as a client sees it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from dicomweb_client.api import DICOMwebClient
from scipy import ndimage  # type: ignore[import-untyped]

from bench._services import suite
from oncostruct_reconstruction.model.repository import DEFAULT_REPOSITORY
from oncostruct_reconstruction.model.volumes import mni152_volume
from oncostruct_reconstruction.triton_local import LocalTriton
from tests.imaging.factory import ct_dataset, new_uid, to_bytes

STAGES = ("checking model", "checking series", "retrieving", "inferring", "scoring", "storing results", "proposing")


def brain_volume(slices: int, size: int) -> np.ndarray[Any, np.dtype[np.uint16]]:
    """The 1 mm MNI152 template resampled to ``slices`` × ``size`` × ``size``, with a bright 15 mm sphere."""
    voxels = mni152_volume(1).voxels
    side = max(voxels.shape[1:])
    square = np.zeros((voxels.shape[0], side, side), np.float32)
    top, left = (side - voxels.shape[1]) // 2, (side - voxels.shape[2]) // 2
    square[:, top : top + voxels.shape[1], left : left + voxels.shape[2]] = voxels
    volume = ndimage.zoom(square, (slices / square.shape[0], size / side, size / side), order=1)
    z, y, x = np.indices(volume.shape)
    centre = (slices // 2, size // 3, size // 2)
    radius = 7.5 * size / side
    sphere = (z - centre[0]) ** 2 * (square.shape[0] / slices) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2
    volume[(sphere <= radius**2) & (volume > 0.3 * volume.max())] = volume.max() * 1.2
    return np.clip(volume / volume.max() * 2500, 0, 4095).astype(np.uint16)


def series_datasets(volume: np.ndarray[Any, np.dtype[np.uint16]], spacing_z: float) -> list[Any]:
    """One MR series (fresh UIDs) of ``volume``."""
    study, series, frame = new_uid(), new_uid(), new_uid()
    datasets = []
    for index, plane in enumerate(volume):
        ds = ct_dataset(
            study, series, index + 1, size=plane.shape[0], patient_id="BENCH-JOBS", Modality="MR",
            SOPClassUID="1.2.840.10008.5.1.4.1.1.4", PixelSpacing=[1.0, 1.0], SliceThickness=spacing_z,
            ImagePositionPatient=[0.0, 0.0, index * spacing_z], RescaleIntercept=0, FrameOfReferenceUID=frame,
            BodyPartExamined="BRAIN",
        )  # fmt: skip
        ds.PixelData = plane.tobytes()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        datasets.append(ds)
    return datasets


def main(argv: list[str]) -> int:
    """Run the end-to-end job benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench jobs")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="60 slices, 1 repeat")
    args = parser.parse_args(argv)
    slices, repeat = (60, 1) if args.quick else (args.slices, args.repeat)
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-bench-jobs-"))
    folder.chmod(0o755)
    names = ("clinical", "imaging", "annotations", "reconstruction")
    scopes = ("dicomweb.read", "dicomweb.write", "reconstruction.read", "reconstruction.run", "annotations.write")
    with LocalTriton(DEFAULT_REPOSITORY) as triton:
        # Jobs come from POST here, not from the series-complete events.
        reconstruction = {"triton_url": triton.url, "auto_jobs": "false"}
        with suite(names, folder, {"reconstruction": reconstruction}) as services:
            rows = run(services.urls, services.token(*scopes), slices, args.size, repeat)
    print(
        f"\nOne {slices}-slice {args.size}x{args.size} MR series per job, {repeat} job(s); CPU Triton (Python backend)"
    )
    print(f"{'stage':<18}" + "".join(f"{'job ' + str(i + 1):>10}" for i in range(len(rows))))
    for stage in (*STAGES, "job total", "client wall"):
        print(f"{stage:<18}" + "".join(f"{row.get(stage, float('nan')):>9.2f}s" for row in rows))
    return 0


def run(urls: dict[str, str], token: str, slices: int, size: int, repeat: int) -> list[dict[str, float]]:
    """Store a fresh series and time one job on it, ``repeat`` times."""
    headers = {"Authorization": f"Bearer {token}"}
    dicomweb = DICOMwebClient(urls["imaging"], headers=headers)
    volume = brain_volume(slices, size)
    rows = []
    with httpx.Client(base_url=urls["annotations"], headers=headers, timeout=60) as annotations:
        project = annotations.post("/projects", json={"name": "bench"}).json()["id"]
        member = annotations.put(f"/projects/{project}/members/oncostruct-reconstruction", json={"role": "annotator"})
        member.raise_for_status()
    with httpx.Client(base_url=urls["reconstruction"], headers=headers, timeout=120) as api:
        for _ in range(repeat):
            datasets = series_datasets(volume, 182.0 / slices)
            for start in range(0, len(datasets), 50):
                dicomweb.store_instances(datasets[start : start + 50])
            began = time.perf_counter()
            job = api.post(
                "/jobs",
                json={
                    "study_uid": datasets[0].StudyInstanceUID,
                    "series_uid": datasets[0].SeriesInstanceUID,
                    "project_id": project,
                },
            ).json()
            while job["status"] not in ("succeeded", "failed"):
                time.sleep(0.05)
                job = api.get(f"/jobs/{job['id']}").json()
            wall = time.perf_counter() - began
            if job["status"] != "succeeded":
                raise RuntimeError(f"job failed: {job['error']}")
            row = {stage: float(job["timings"].get(stage, float("nan"))) for stage in STAGES}
            row["job total"] = sum(row.values())
            row["client wall"] = wall
            rows.append(row)
            stored_map = job["result"]["parametric_map"]
            size_mb = _stored_megabytes(
                dicomweb, datasets[0].StudyInstanceUID, stored_map["series_uid"], stored_map["sop_instance_uid"]
            )
            print(
                f"job {job['id']}: {len(job['result']['proposals'])} proposals, wall {wall:.2f} s, "
                f"Parametric Map {size_mb:.1f} MB as stored",
                flush=True,
            )
    return rows


def _stored_megabytes(dicomweb: DICOMwebClient, study: str, series: str, instance: str) -> float:
    """Size of an instance as the archive stores it (retrieved in its stored transfer syntax)."""
    dataset = dicomweb.retrieve_instance(study, series, instance, media_types=(("application/dicom", "*"),))
    return len(to_bytes(dataset)) / 1e6
