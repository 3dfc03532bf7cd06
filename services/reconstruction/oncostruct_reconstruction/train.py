"""``python -m oncostruct_reconstruction.train``: train the nearest-normal model and export it to the model repository.

Needs the ``[train]`` extra (torch). Reads normal series from a folder of
NIfTI files and DICOM series (``--data``), or the MNI152 template that
nilearn ships (``--mni152``, offline). Held-out blocks of slices stay out of
training (the benchmark evaluates on them). Writes ``checkpoint.pt``,
``metrics.jsonl``, ``model.onnx`` and ``training_record.json`` under
``--out``, and with ``--repository`` a Triton model version.

Example (the shipped model)::

    python -m oncostruct_reconstruction.train --mni152 --preset cpu --seed 0 \\
        --out .local/train/nearest_normal --repository services/reconstruction/model_repository
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .model.data import block_split, slice_set
from .model.inference import OnnxAnomalyModel
from .model.platform import PlatformSource, platform_volumes
from .model.preprocess import MrScaling
from .model.repository import DEFAULT_MODEL_NAME, ServingConfig, write_model_repository
from .model.scoring import THRESHOLD_QUANTILE, calibrate_residual_threshold, calibrate_threshold
from .model.volumes import folder_volumes, mni152_volume

log = logging.getLogger("oncostruct.reconstruction.train")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m oncostruct_reconstruction.train", description=__doc__.split("\n\n")[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder of normal series (NIfTI files, DICOM MR/CT series)")
    source.add_argument("--mni152", action="store_true", help="the MNI152 2009 template bundled with nilearn (offline)")
    source.add_argument(
        "--platform",
        metavar="PROJECT_ID",
        help="series labelled normal in this annotation project, fetched over DICOMweb "
        "(bearer token from the ONCOSTRUCT_TOKEN environment variable, never the command line)",
    )
    parser.add_argument(
        "--annotations-url", default="http://127.0.0.1:8083/annotations/v1", help="annotation API (--platform)"
    )
    parser.add_argument("--imaging-url", default="http://127.0.0.1:8082/dicomweb", help="DICOMweb root (--platform)")
    parser.add_argument(
        "--label-status",
        action="append",
        choices=("approved", "submitted", "draft"),
        help="annotation statuses that count (--platform; repeatable; default: approved)",
    )
    parser.add_argument("--mni152-resolution", type=int, default=1, choices=(1, 2), help="template voxel size in mm")
    parser.add_argument("--nifti-modality", default="MR", choices=("MR", "CT"), help="modality of NIfTI files")
    parser.add_argument("--preset", default="cpu", help="ci, cpu or gpu (see model.training.PRESETS)")
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoint, metrics log and export")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's, 0)")
    parser.add_argument(
        "--kind",
        choices=("dae", "vae", "ae"),
        help="network: denoising U-Net, variational or plain autoencoder (default: the preset's)",
    )
    parser.add_argument(
        "--corruptions",
        help="comma-separated training corruptions: noise, patch, warp (default: the preset's)",
    )
    parser.add_argument("--focus", type=float, help="extra loss weight of corrupted pixels")
    parser.add_argument(
        "--skip-from", type=int, help="U-Net: finest encoder level passed to the decoder (0: full resolution)"
    )
    parser.add_argument(
        "--mr-scaling",
        help="MR intensity scaling 'p_low,p_high:t_low,t_high': two foreground percentiles and the values they "
        "map to (default 5,95:0.2,0.75); the model is served with it",
    )
    parser.add_argument(
        "--feature-weight",
        type=float,
        help="weight of the feature-level term of the anomaly map (0: pixel level only; its scales are calibrated "
        "on the held-out slices after training)",
    )
    parser.add_argument(
        "--feature-levels",
        help="comma-separated encoder levels the feature-level term averages (0: full resolution; default: all)",
    )
    parser.add_argument(
        "--corruption-head",
        action="store_true",
        help="train a second output that learns where the inputs were corrupted (the U-Net restores warps better "
        "for it)",
    )
    parser.add_argument("--head-loss", type=float, help="weight of the corruption head's loss (default 1)")
    parser.add_argument(
        "--head-weight",
        type=float,
        help="weight of the corruption head's smoothed probability in the anomaly map (default 0: not in the map)",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--kl-weight", type=float)
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--all-slices", action="store_true", help="train on held-out blocks too (no benchmark split)")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    parser.add_argument("--repository", type=Path, help="write the ONNX model into this Triton model repository")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="model name in the repository")
    parser.add_argument("--model-version", type=int, default=1, help="model version in the repository")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, export and record; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # torch is imported here, not at module level: `--help` works without the [train] extra.
    import torch

    from .model.export import export_onnx
    from .model.network import parameter_count
    from .model.training import CORRUPTION_KINDS, PRESETS, calibrate_feature_scales, train

    if args.preset not in PRESETS:
        print(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    config = PRESETS[args.preset]
    overrides = {
        key: getattr(args, key)
        for key in (
            "seed",
            "epochs",
            "steps_per_epoch",
            "batch_size",
            "learning_rate",
            "kl_weight",
            "focus",
            "device",
            "threads",
        )
        if getattr(args, key) is not None
    }
    if args.no_augment:
        overrides["augment"] = False
    if args.corruptions:
        kinds = tuple(part.strip() for part in args.corruptions.split(",") if part.strip())
        unknown = sorted(set(kinds) - set(CORRUPTION_KINDS))
        if unknown or not kinds:
            print(f"--corruptions: unknown {', '.join(unknown) or 'empty'}; known: {', '.join(CORRUPTION_KINDS)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        overrides["corruptions"] = kinds
    if args.mr_scaling:
        try:
            overrides["mr_scaling"] = MrScaling.parse(args.mr_scaling)
        except ValueError as error:
            print(f"--mr-scaling: {error}", file=sys.stderr)
            return 2
    if args.feature_weight is not None:
        if args.feature_weight < 0:
            print("--feature-weight must be 0 or more", file=sys.stderr)
            return 2
        overrides["dissimilarity"] = dataclasses.replace(
            config.dissimilarity, feature_weight=args.feature_weight, feature_scales=()
        )
    network = dataclasses.replace(config.network, kind=args.kind) if args.kind else config.network
    if args.skip_from is not None:
        network = dataclasses.replace(network, skip_from=args.skip_from)
    if args.feature_levels:
        try:
            chosen = tuple(int(part) for part in args.feature_levels.split(",") if part.strip())
            dissimilarity = overrides.get("dissimilarity", config.dissimilarity)
            overrides["dissimilarity"] = dataclasses.replace(dissimilarity, feature_levels=chosen)
        except ValueError as error:
            print(f"--feature-levels: {error}", file=sys.stderr)
            return 2
        if max(chosen, default=0) > network.levels:
            print(f"--feature-levels: the network has levels 0 to {network.levels}", file=sys.stderr)
            return 2
    if args.corruption_head:
        network = dataclasses.replace(network, corruption_head=True)
    if args.head_loss is not None or args.head_weight is not None:
        if not network.corruption_head:
            print("--head-loss and --head-weight need --corruption-head", file=sys.stderr)
            return 2
        if (args.head_loss or 0.0) < 0 or (args.head_weight or 0.0) < 0:
            print("--head-loss and --head-weight must be 0 or more", file=sys.stderr)
            return 2
    if args.head_loss is not None:
        overrides["head_loss"] = args.head_loss
    if args.head_weight is not None:
        dissimilarity = overrides.get("dissimilarity", config.dissimilarity)
        overrides["dissimilarity"] = dataclasses.replace(dissimilarity, head_weight=args.head_weight)
    config = dataclasses.replace(config, network=network, **overrides)

    if args.platform:
        token = os.environ.get("ONCOSTRUCT_TOKEN", "")
        if not token:
            print("--platform needs a bearer token in ONCOSTRUCT_TOKEN (make token)", file=sys.stderr)
            return 2
        normals = PlatformSource(
            args.annotations_url,
            args.imaging_url,
            token,
            args.platform,
            statuses=tuple(args.label_status or ["approved"]),
        )
        volumes = list(platform_volumes(normals))
    elif args.mni152:
        volumes = [mni152_volume(args.mni152_resolution)]
    else:
        volumes = list(folder_volumes(args.data, args.nifti_modality))
    if not volumes:
        where = f"labelled normal in project {args.platform}" if args.platform else f"under {args.data}"
        print(f"no NIfTI files or DICOM MR/CT series {where}", file=sys.stderr)
        return 2
    slices = slice_set(volumes, config.network.size, mr_scaling=config.mr_scaling)
    train_index, heldout_index = block_split(slices.position)
    if args.all_slices:
        train_index = np.arange(len(slices))
    train_set, heldout_set = slices.take(train_index), slices.take(heldout_index)
    log.info("%d volumes, %d training and %d held-out slices", len(volumes), len(train_set), len(heldout_set))

    started = time.perf_counter()
    net = train(config, train_set, heldout_set if len(heldout_set) else None, args.out, resume=args.resume)
    seconds = time.perf_counter() - started
    calibration = heldout_set if len(heldout_set) else train_set
    config = dataclasses.replace(
        config, dissimilarity=calibrate_feature_scales(net, calibration.images, config.dissimilarity)
    )
    metrics = [json.loads(line) for line in (args.out / "metrics.jsonl").read_text().splitlines() if line]
    record = {
        "command": "python -m oncostruct_reconstruction.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": config.seed,
        "config": config.as_dict(),
        "sources": [volume.source for volume in volumes],
        "training_slices": len(train_set),
        "heldout_slices": len(heldout_set),
        "parameters": parameter_count(net),
        # Over every epoch in the log, so that a run continued with --resume counts its earlier epochs too.
        "training_seconds": round(sum(float(epoch.get("seconds", 0.0)) for epoch in metrics), 1),
        "resumed": bool(args.resume),
        "final_epoch": metrics[-1] if metrics else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    onnx_path = export_onnx(net, config.dissimilarity, args.out / "model.onnx", metadata={"training": record})
    threshold, residual = calibrate_model_thresholds(onnx_path, calibration.images, calibration.masks)
    record["anomaly_threshold"] = threshold
    record["residual_threshold"] = residual
    (args.out / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    if args.repository is not None:
        serving = ServingConfig(
            name=args.model_name, size=config.network.size, anomaly_threshold=threshold, mr_scaling=config.mr_scaling,
            residual_threshold=residual,
        )  # fmt: skip
        model_dir = write_model_repository(args.repository, onnx_path, serving, version=args.model_version)
        (model_dir / str(args.model_version) / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
        log.info("exported to %s", model_dir)
    log.info("trained in %.0f s; %s", seconds, record["final_epoch"])  # this invocation
    return 0


def calibrate_model_thresholds(onnx_path: Path, images: npt.ArrayLike, masks: npt.ArrayLike) -> tuple[float, float]:
    """The exported model's voxel threshold (the :data:`THRESHOLD_QUANTILE` of its maps on normal
    foreground) and residual threshold (the
    :data:`~oncostruct_reconstruction.model.scoring.RESIDUAL_QUANTILE` of |input − reconstruction| there)."""
    maps, reconstructions = OnnxAnomalyModel(onnx_path).run(images)
    threshold = calibrate_threshold(maps[:, 0], masks, THRESHOLD_QUANTILE)
    return round(threshold, 6), round(calibrate_residual_threshold(images, reconstructions, masks), 6)


if __name__ == "__main__":
    sys.exit(main())
