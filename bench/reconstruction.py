"""Quality of nearest-normal anomaly detection against classical baselines (``python -m bench reconstruction``).

Normal held-out slices of the MNI152 template (blocks kept out of training,
each given a mild random pose and contrast change, as patients differ),
synthetic anomalies of four kinds with pixel ground truth (MOOD style), and
the same metrics for every method: pixel AUROC, pixel AUPRC, best Dice and
per-slice AUROC, overall and per anomaly kind. Methods:

- ``model``: the model (the shipped ONNX by default, or one trained here with ``--train``);
- ``dae``: the denoising U-Net (skip connections at every level, trained to undo
  coarse noise, foreign patches and local warps), trained here with the preset's
  size, length and seed;
- ``ae``: the plain autoencoder, trained here with the preset;
- ``pca``: PCA reconstruction fitted on the training slices, scored like the networks;
- ``zscore``: per-pixel |z| against the training slices;
- ``threshold``: the intensity itself (hyperintensity detection).

Every method also gets an operating point, as the service would run it: a
threshold at the 99.99th percentile of its maps on the held-out normal slices
(unposed, as the model's own threshold is calibrated) and the proposals made
there (:func:`~oncostruct_reconstruction.model.regions.proposal_metrics`: found
findings, proposal Dice, false proposals per slice), grown by the residual for the
reconstruction methods as the service grows them. The test's normal slices are the
calibration slices posed and re-contrasted, so false proposals on them are a lower bound.

Writes ``results.json``, ``table.md`` and ``figure.png`` (input, reconstruction,
anomaly map, ground truth per kind) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage  # type: ignore[import-untyped]

from oncostruct_reconstruction.model.anomalies import ANOMALY_KINDS, anomalous_set
from oncostruct_reconstruction.model.data import SliceSet, block_split, slice_set
from oncostruct_reconstruction.model.inference import OnnxAnomalyModel
from oncostruct_reconstruction.model.metrics import DetectionMetrics, detection_metrics
from oncostruct_reconstruction.model.preprocess import MrScaling
from oncostruct_reconstruction.model.regions import ProposalMetrics, proposal_metrics
from oncostruct_reconstruction.model.repository import ONNX_FILE, SHIPPED_ONNX
from oncostruct_reconstruction.model.scoring import (
    THRESHOLD_QUANTILE,
    DissimilarityConfig,
    calibrate_residual_threshold,
    calibrate_threshold,
    dissimilarity_map,
    gaussian_blur,
    slice_scores,
)
from oncostruct_reconstruction.model.volumes import mni152_volume

FloatArray = npt.NDArray[np.float32]
#: A method: images ``(n, 1, s, s)`` to anomaly maps and, for reconstruction methods, reconstructions.
Method = Callable[[FloatArray], tuple[FloatArray, FloatArray | None]]
#: Networks the benchmark trains to compare with the evaluated model (leaving out the model's own kind).
COMPARISON_NETWORKS = ("vae", "dae", "ae")


@dataclass
class TestSet:
    """Normal and anomalous held-out slices with ground truth."""

    images: FloatArray  # (n, 1, s, s)
    masks: npt.NDArray[np.bool_]  # (n, s, s)
    truth: npt.NDArray[np.bool_]  # (n, s, s)
    kinds: list[str]  # "normal" or the anomaly kind, per slice


@dataclass
class MethodResult:
    """One method's maps and metrics."""

    maps: FloatArray
    reconstructions: FloatArray | None
    overall: DetectionMetrics
    by_kind: dict[str, DetectionMetrics] = field(default_factory=dict)
    threshold: float | None = None
    proposals: ProposalMetrics | None = None
    proposals_by_kind: dict[str, ProposalMetrics] = field(default_factory=dict)


def perturb(slices: SliceSet, seed: int) -> SliceSet:
    """A mild random rotation, scaling, shift and gamma per slice (patients are not in template space)."""
    rng = np.random.default_rng(seed)
    images = np.empty_like(slices.images)
    masks = np.empty_like(slices.masks)
    size = slices.images.shape[-1]
    centre = np.array([size / 2 - 0.5, size / 2 - 0.5])
    for index in range(len(slices)):
        angle = np.deg2rad(rng.uniform(-6, 6))
        scale = rng.uniform(0.95, 1.05)
        matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
        offset = centre - matrix @ centre + rng.uniform(-0.03, 0.03, size=2) * size
        moved = ndimage.affine_transform(slices.images[index, 0], matrix, offset=offset, order=1, mode="constant")
        images[index, 0] = np.clip(np.clip(moved, 0, 1) ** rng.uniform(0.85, 1.15), 0, 1)
        masks[index] = (
            ndimage.affine_transform(slices.masks[index].astype(np.float32), matrix, offset=offset, order=0) > 0.5
        )
    return SliceSet(images, masks, slices.volume, slices.position)


def test_set(heldout: SliceSet, seed: int) -> TestSet:
    """Each held-out slice once normal and once per anomaly kind."""
    normal = perturb(heldout, seed)
    images, masks, truth, kinds = (
        [normal.images],
        [normal.masks],
        [np.zeros_like(normal.masks)],
        ["normal"] * len(normal),
    )
    for offset, kind in enumerate(ANOMALY_KINDS):
        changed, kind_truth, _ = anomalous_set(normal.images, normal.masks, [kind], seed=seed + 1 + offset)
        images.append(changed)
        masks.append(normal.masks)
        truth.append(kind_truth)
        kinds += [kind] * len(normal)
    return TestSet(np.concatenate(images), np.concatenate(masks), np.concatenate(truth), kinds)


def pca_reconstruct(train: FloatArray, images: FloatArray, components: int) -> FloatArray:
    """Project ``images`` on the first principal components of ``train`` (both ``(n, 1, s, s)``)."""
    flat = train.reshape(len(train), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    _, _, basis = np.linalg.svd(flat - mean, full_matrices=False)
    basis = basis[:components]
    centred = images.reshape(len(images), -1).astype(np.float64) - mean
    return np.clip((centred @ basis.T) @ basis + mean, 0, 1).reshape(images.shape).astype(np.float32)


def evaluate(
    maps: FloatArray,
    data: TestSet,
    reconstructions: FloatArray | None = None,
    threshold: float | None = None,
    grow: npt.NDArray[np.bool_] | None = None,
) -> MethodResult:
    """Metrics overall and per kind (each kind's anomalous slices against all normal slices).

    With a ``threshold``, also the proposals made at it, overall and per kind (growing into
    ``grow``, ``(n, s, s)``, where given).
    """
    planes = maps.reshape(len(maps), *maps.shape[-2:])
    scores = slice_scores(planes, data.masks)
    kinds = np.asarray(data.kinds)
    result = MethodResult(planes, reconstructions, detection_metrics(planes, data.truth, data.masks, scores))
    if threshold is not None:
        result.threshold = threshold
        result.proposals = proposal_metrics(planes, data.truth, data.masks, threshold, grow)
    for kind in ANOMALY_KINDS:
        chosen = (kinds == kind) | (kinds == "normal")
        result.by_kind[kind] = detection_metrics(planes[chosen], data.truth[chosen], data.masks[chosen], scores[chosen])
        if threshold is not None:
            result.proposals_by_kind[kind] = proposal_metrics(
                planes[chosen],
                data.truth[chosen],
                data.masks[chosen],
                threshold,
                None if grow is None else grow[chosen],
            )
    return result


def run_method(method: Method, heldout: SliceSet, data: TestSet) -> MethodResult:
    """Evaluate ``method`` on ``data`` at its own thresholds, calibrated on the held-out normal slices.

    A reconstruction method's proposals grow by its residual, as the service's do (``REGION_GROWTH``
    ``residual``); the others' do not grow.
    """
    normal_maps, normal_reconstructions = method(heldout.images)
    threshold = calibrate_threshold(normal_maps.reshape(heldout.masks.shape), heldout.masks, THRESHOLD_QUANTILE)
    maps, reconstructions = method(data.images)
    grow = None
    if normal_reconstructions is not None and reconstructions is not None:
        residual = calibrate_residual_threshold(heldout.images, normal_reconstructions, heldout.masks)
        grow = np.abs(data.images - reconstructions)[:, 0] > residual
    return evaluate(maps, data, reconstructions, threshold, grow)


def train_onnx(
    name: str, preset: str, seed: int, train: SliceSet, heldout: SliceSet, out: Path, mr_scaling: MrScaling
) -> Path:
    """Train ``"model"`` (the preset as it is) or a comparison network, export it (needs the ``[train]`` extra).

    ``"vae"`` and ``"ae"`` are the preset with the residual VAE and the plain
    autoencoder; ``"dae"`` the preset as the denoising U-Net
    (:func:`~oncostruct_reconstruction.model.training.unet_config`); all with
    ``mr_scaling``, the scaling the test slices were made with.
    A model this function exported before under ``out`` with the same
    configuration is reused: comparison networks are trained once per output folder.
    """
    import dataclasses

    from oncostruct_reconstruction.model.export import export_onnx
    from oncostruct_reconstruction.model.training import PRESETS, calibrate_feature_scales, unet_config
    from oncostruct_reconstruction.model.training import train as train_network

    config = dataclasses.replace(PRESETS[preset], seed=seed, mr_scaling=mr_scaling)
    if name == "dae":
        config = unet_config(config)
    elif name != "model":
        config = dataclasses.replace(config, network=dataclasses.replace(config.network, kind=name))  # type: ignore[arg-type]
    folder = out / f"train-{name}"
    path = folder / ONNX_FILE
    wanted = json.loads(json.dumps(config.as_dict()))  # as it reads back from the ONNX metadata
    if path.exists() and _same_config(OnnxAnomalyModel(path).metadata.get("train_config"), config):
        return path
    if folder.exists():
        shutil.rmtree(folder)
    net = train_network(config, train, heldout, folder)
    # The configuration as asked for is the cache key; the calibrated map settings go in as "dissimilarity".
    dissimilarity = calibrate_feature_scales(net, heldout.images, config.dissimilarity)
    return export_onnx(net, dissimilarity, path, metadata={"train_config": wanted})


def _same_config(recorded: Any, config: Any) -> bool:
    """Whether a cached model was trained with ``config`` (settings added since read as their defaults)."""
    from oncostruct_reconstruction.model.training import config_from_dict

    try:
        return bool(isinstance(recorded, dict) and config_from_dict(recorded) == config)
    except (TypeError, ValueError, KeyError):
        return False


def figure(data: TestSet, result: MethodResult, path: Path) -> None:
    """One row per anomaly kind: input, reconstruction, anomaly map, ground truth."""
    kinds = np.asarray(data.kinds)
    rows = []
    scale = float(np.percentile(result.maps[data.masks], 99.5)) or 1.0
    for kind in ANOMALY_KINDS:
        chosen = np.flatnonzero(kinds == kind)
        index = int(chosen[len(chosen) // 2])  # a mid-brain slice, not the first (lowest) one
        recon = (
            result.reconstructions[index, 0]
            if result.reconstructions is not None
            else np.zeros_like(result.maps[index])
        )
        tiles = [
            data.images[index, 0],
            recon,
            np.clip(result.maps[index] / scale, 0, 1),
            data.truth[index].astype(np.float32),
        ]
        rows.append(np.concatenate([np.pad(tile, 2, constant_values=1.0) for tile in tiles], axis=1))
    picture = (np.concatenate(rows, axis=0) * 255).astype(np.uint8)
    side = max(1, 512 // picture.shape[1] + 1)
    Image.fromarray(picture).resize((picture.shape[1] * side, picture.shape[0] * side), Image.Resampling.NEAREST).save(
        path
    )


def table(results: dict[str, MethodResult], labels: dict[str, str] | None = None) -> str:
    """Markdown tables: overall metrics and AUPRC per kind, slice AUROC per kind, then proposals at each method's
    threshold (``labels`` rename rows)."""
    header = (
        "| method | pixel AUROC | pixel AUPRC | best Dice | slice AUROC | "
        + " | ".join(f"AUPRC {k}" for k in ANOMALY_KINDS)
        + " |"
    )
    lines = [header, "|" + "---|" * (5 + len(ANOMALY_KINDS))]
    for name, result in results.items():
        m = result.overall
        per_kind = " | ".join(f"{result.by_kind[k].pixel_auprc:.3f}" for k in ANOMALY_KINDS)
        overall = f"{m.pixel_auroc:.3f} | {m.pixel_auprc:.3f} | {m.best_dice:.3f} | {m.slice_auroc:.3f}"
        lines.append(f"| {(labels or {}).get(name, name)} | {overall} | {per_kind} |")
    lines += ["", "| method | " + " | ".join(f"slice AUROC {k}" for k in ANOMALY_KINDS) + " |"]
    lines.append("|" + "---|" * (1 + len(ANOMALY_KINDS)))
    for name, result in results.items():
        per_kind = " | ".join(f"{result.by_kind[k].slice_auroc:.3f}" for k in ANOMALY_KINDS)
        lines.append(f"| {(labels or {}).get(name, name)} | {per_kind} |")
    lines += [
        "",
        "| method | threshold | false proposals / slice | proposal Dice | "
        + " | ".join(f"found / Dice {k}" for k in ANOMALY_KINDS)
        + " |",
        "|" + "---|" * (4 + len(ANOMALY_KINDS)),
    ]
    for name, result in results.items():
        if result.proposals is None or result.threshold is None:
            continue
        p = result.proposals
        per_kind = " | ".join(
            f"{result.proposals_by_kind[k].detected:.2f} / {result.proposals_by_kind[k].dice:.3f}"
            for k in ANOMALY_KINDS
        )
        row = f"{result.threshold:.4g} | {p.false_per_slice:.3f} | {p.dice:.3f} | {per_kind}"
        lines.append(f"| {(labels or {}).get(name, name)} | {row} |")
    return "\n".join(lines)


def run_benchmark(
    out: Path,
    preset: str = "cpu",
    seed: int = 0,
    model: Path | None = None,
    train_model: bool = False,
    resolution: int = 1,
    pca_components: int = 16,
    with_networks: bool = True,
) -> dict[str, MethodResult]:
    """Run every method on the same test set; write results, table and figure under ``out``.

    Parameters
    ----------
    out
        Output folder.
    preset
        Training preset of the networks trained here (and so the image size when training).
    seed
        Seeds training, the test perturbations and the anomalies.
    model
        The model's ONNX file (default: the shipped repository's); ignored with ``train_model``.
    train_model
        Train the model here too, with ``preset`` and ``seed``.
    resolution
        MNI152 template resolution in mm.
    pca_components
        Components of the PCA baseline.
    with_networks
        Train and evaluate the U-Net and plain-autoencoder comparisons (the slow ones).
    """
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if train_model:
        from oncostruct_reconstruction.model.training import PRESETS

        size, scaling = PRESETS[preset].network.size, PRESETS[preset].mr_scaling
        model_path = None
    else:
        model_path = model or SHIPPED_ONNX
        given = OnnxAnomalyModel(model_path)
        size, scaling = given.size, given.mr_scaling
    # The test slices are scaled the way the evaluated model was trained; the comparisons are trained so too.
    slices = slice_set([mni152_volume(resolution)], size, mr_scaling=scaling)
    train_index, heldout_index = block_split(slices.position)
    train, heldout = slices.take(train_index), slices.take(heldout_index)
    data = test_set(heldout, seed)
    if model_path is None:
        model_path = train_onnx("model", preset, seed, train, heldout, out, scaling)
    model_onnx = OnnxAnomalyModel(model_path)
    config = DissimilarityConfig(**model_onnx.metadata.get("dissimilarity", {}))
    networks = [("model", model_onnx)]
    kind = model_onnx.metadata.get("network", {}).get("kind", "model")
    if with_networks:
        networks += [
            (name, OnnxAnomalyModel(train_onnx(name, preset, seed, train, heldout, out, scaling)))
            for name in COMPARISON_NETWORKS
            if name != kind
        ]

    methods: dict[str, Method] = {name: network.run for name, network in networks}
    mean, std = train.images.mean(axis=0), train.images.std(axis=0)

    def blurred(images: FloatArray) -> FloatArray:
        return gaussian_blur(images, config.smooth_sigma, config.smooth_radius)

    def pca(images: FloatArray) -> tuple[FloatArray, FloatArray | None]:
        reconstructions = pca_reconstruct(train.images, images, pca_components)
        return dissimilarity_map(images, reconstructions, config), reconstructions

    methods["pca"] = pca
    methods["zscore"] = lambda images: (blurred(np.abs(images - mean) / np.maximum(std, 0.05)), None)
    methods["threshold"] = lambda images: (blurred(images), None)
    results = {name: run_method(method, heldout, data) for name, method in methods.items()}

    labels = {"model": f"{kind} ({'trained here' if train_model else 'shipped'})"}
    text = table(results, labels)
    (out / "table.md").write_text(text + "\n")
    figure(data, results["model"], out / "figure.png")
    summary = {
        "preset": preset,
        "seed": seed,
        "model": str(model_path),
        "size": size,
        "training_slices": len(train),
        "test_slices": len(data.kinds),
        "labels": labels,
        "seconds": round(time.perf_counter() - started, 1),
        "methods": {
            name: {
                "overall": r.overall.as_dict(),
                "by_kind": {k: m.as_dict() for k, m in r.by_kind.items()},
                "threshold": r.threshold,
                "proposals": r.proposals.as_dict() if r.proposals else None,
                "proposals_by_kind": {k: m.as_dict() for k, m in r.proposals_by_kind.items()},
            }
            for name, r in results.items()
        },
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return results


def main(argv: list[str]) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench reconstruction")
    parser.add_argument("--out", type=Path, default=Path("bench-results/reconstruction"))
    parser.add_argument("--preset", default="cpu", help="training preset of the AE baseline (and --train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="model.onnx to evaluate (default: the shipped one)")
    parser.add_argument("--train", action="store_true", help="train the model here instead of loading it")
    parser.add_argument(
        "--no-network-baselines",
        action="store_true",
        help="leave out the U-Net and plain-autoencoder comparisons (each trains for minutes on a CPU)",
    )
    args = parser.parse_args([arg for arg in argv if arg != "reconstruction"])
    run_benchmark(args.out, args.preset, args.seed, args.model, args.train, with_networks=not args.no_network_baselines)
    print((args.out / "table.md").read_text())
    print(f"\nfigure, table and results.json in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
