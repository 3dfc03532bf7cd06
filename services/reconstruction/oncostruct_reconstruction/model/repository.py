"""The Triton model repository of the reconstruction model (no torch, no Triton needed).

Layout (Triton model repository conventions): ``<repository>/<model>/config.pbtxt``
and ``<repository>/<model>/<version>/model.onnx``. The shipped ``config.pbtxt``
is for the ONNX Runtime backend of the official Triton image; the local
server (:mod:`oncostruct_reconstruction.triton_local`) serves the same file
with the same tensor names through the Python backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .preprocess import MrScaling

#: Tensor names, identical in the exporter, the config and the client.
INPUT_NAME = "image"
MAP_NAME = "anomaly_map"
RECONSTRUCTION_NAME = "reconstruction"
ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"

#: The shipped repository (next to the package in the source tree).
DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
DEFAULT_MODEL_NAME = "nearest_normal"
#: The shipped model's version. Results name it.
SHIPPED_VERSION = "3"
#: The shipped model's ONNX file.
SHIPPED_ONNX = DEFAULT_REPOSITORY / DEFAULT_MODEL_NAME / SHIPPED_VERSION / ONNX_FILE


@dataclass(frozen=True)
class ServingConfig:
    """What ``config.pbtxt`` says about a model.

    Attributes
    ----------
    name
        Model name in the repository.
    size
        In-plane size; tensors are ``[batch, 1, size, size]`` FP32.
    max_batch_size
        Largest batch one request (or a dynamic batch) may have.
    preferred_batch_sizes, max_queue_delay_us
        Dynamic batching: sizes the scheduler aims for, and how long it may hold a request.
    instance_kind, instance_count
        ``KIND_GPU`` or ``KIND_CPU`` instances and how many.
    backend
        ``onnxruntime`` (official image) or ``python`` (the local server).
    anomaly_threshold
        Map value above which a voxel is called abnormal, calibrated on held-out normal slices
        (:func:`~oncostruct_reconstruction.model.scoring.calibrate_threshold`); travels with the
        model as the config parameter ``anomaly_threshold`` so that clients read it from Triton.
    mr_scaling
        The MR intensity scaling the model was trained with (config parameter ``mr_scaling``;
        a model without it is served with
        :data:`~oncostruct_reconstruction.model.preprocess.LEGACY_MR_SCALING`).
    """

    name: str
    size: int
    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (16, 32)
    max_queue_delay_us: int = 2000
    instance_kind: str = "KIND_GPU"
    instance_count: int = 1
    backend: str = "onnxruntime"
    anomaly_threshold: float | None = None
    mr_scaling: MrScaling | None = None


#: Name of the config parameter that carries the calibrated threshold.
THRESHOLD_PARAMETER = "anomaly_threshold"
#: Name of the config parameter that carries the MR scaling (:meth:`MrScaling.text`).
MR_SCALING_PARAMETER = "mr_scaling"


def config_pbtxt(config: ServingConfig) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ModelConfig)."""
    dims = f"[ 1, {config.size}, {config.size} ]"
    # Triton refuses a preferred size above max_batch_size.
    sizes = [size for size in config.preferred_batch_sizes if size <= config.max_batch_size] or [config.max_batch_size]
    preferred = ", ".join(str(size) for size in sizes)
    default_model = f'default_model_filename: "{ONNX_FILE}"\n' if config.backend == "onnxruntime" else ""
    return (
        f'name: "{config.name}"\n'
        f'backend: "{config.backend}"\n'
        f"{default_model}"
        f"max_batch_size: {config.max_batch_size}\n"
        f'input [\n  {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: {dims} }}\n]\n'
        f"output [\n"
        f'  {{ name: "{MAP_NAME}" data_type: TYPE_FP32 dims: {dims} }},\n'
        f'  {{ name: "{RECONSTRUCTION_NAME}" data_type: TYPE_FP32 dims: {dims} }}\n'
        f"]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {config.max_queue_delay_us}\n}}\n"
        f"instance_group [\n  {{ count: {config.instance_count} kind: {config.instance_kind} }}\n]\n"
        f"version_policy: {{ latest: {{ num_versions: 1 }} }}\n" + _parameters(config)
    )


def _parameters(config: ServingConfig) -> str:
    """The ``parameters`` entries: the calibrated threshold and the MR scaling, where known."""
    values = {
        THRESHOLD_PARAMETER: f"{config.anomaly_threshold:.6g}" if config.anomaly_threshold is not None else None,
        MR_SCALING_PARAMETER: config.mr_scaling.text() if config.mr_scaling is not None else None,
    }
    return "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
        for key, value in values.items()
        if value is not None
    )


def write_model_repository(repository: Path, onnx_file: Path, config: ServingConfig, version: int = 1) -> Path:
    """Put an exported model into a repository as ``<model>/<version>/model.onnx`` with its config.

    Returns
    -------
    pathlib.Path
        The model's folder.
    """
    model_dir = repository / config.name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / ONNX_FILE
    if onnx_file.resolve() != target.resolve():
        target.write_bytes(onnx_file.read_bytes())
    (model_dir / CONFIG_FILE).write_text(config_pbtxt(config))
    return model_dir
