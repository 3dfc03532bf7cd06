"""The Triton model repository of the reconstruction model (no torch, no Triton needed).

Layout (Triton model repository conventions): ``<repository>/<model>/config.pbtxt``
and ``<repository>/<model>/<version>/model.onnx``. The shipped ``config.pbtxt``
is for the ONNX Runtime backend of the official Triton image; the local
server (:mod:`oncostruct_reconstruction.triton_local`) serves the same file
with the same tensor names through the Python backend.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
    residual_threshold
        Residual |input − reconstruction| above which a voxel differs from its nearest normal image,
        calibrated on the same slices (:func:`~oncostruct_reconstruction.model.scoring.calibrate_residual_threshold`;
        config parameter ``residual_threshold``): where proposals may grow.
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
    residual_threshold: float | None = None


#: Name of the config parameter that carries the calibrated threshold.
THRESHOLD_PARAMETER = "anomaly_threshold"
#: Name of the config parameter that carries the MR scaling (:meth:`MrScaling.text`).
MR_SCALING_PARAMETER = "mr_scaling"
#: Name of the config parameter that carries the residual threshold.
RESIDUAL_PARAMETER = "residual_threshold"
#: The calibrated parameters, which differ between versions of one model.
VERSIONED_PARAMETERS = (THRESHOLD_PARAMETER, MR_SCALING_PARAMETER, RESIDUAL_PARAMETER)


def versioned(key: str, version: str | int) -> str:
    """The config parameter holding ``key`` for one model version (``anomaly_threshold@3``).

    Triton has one ``config.pbtxt`` per model, whatever its versions; each version's calibration is
    kept under its own key, and the plain key holds the version written last (for clients that ask
    for no version).
    """
    return f"{key}@{version}"


def config_pbtxt(config: ServingConfig, versions: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ModelConfig).

    ``versions`` maps each model version to its calibrated parameters (:data:`VERSIONED_PARAMETERS`),
    written as :func:`versioned` keys beside the plain ones of ``config``. Every version in the
    repository is served (``version_policy: all``): a job names its version, and a rerun of an older
    job finds it.
    """
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
        f"version_policy: {{ all: {{ }} }}\n" + _parameters(config, versions or {})
    )


def calibrated_parameters(config: ServingConfig) -> dict[str, str]:
    """The calibrated thresholds and MR scaling of ``config``, where known, as parameter strings."""
    values = {
        THRESHOLD_PARAMETER: f"{config.anomaly_threshold:.6g}" if config.anomaly_threshold is not None else None,
        MR_SCALING_PARAMETER: config.mr_scaling.text() if config.mr_scaling is not None else None,
        RESIDUAL_PARAMETER: f"{config.residual_threshold:.6g}" if config.residual_threshold is not None else None,
    }
    return {key: value for key, value in values.items() if value is not None}


def _parameters(config: ServingConfig, versions: Mapping[str, Mapping[str, str]]) -> str:
    """The ``parameters`` entries: the plain calibrated values, then each version's."""
    values = dict(calibrated_parameters(config))
    for version in sorted(versions, key=int):
        values.update({versioned(key, version): value for key, value in versions[version].items()})
    return "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n' for key, value in values.items()
    )


_PARAMETER = re.compile(r'parameters\s*\{\s*key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"\s*\}\s*\}')
_DIMS = re.compile(r'name:\s*"' + INPUT_NAME + r'"[^}]*dims:\s*\[\s*1\s*,\s*(\d+)\s*,')


def read_version_parameters(text: str, versions: list[str]) -> dict[str, dict[str, str]]:
    """Each listed version's calibrated parameters in a ``config.pbtxt`` text.

    A config from before versioned keys holds one version's values under the plain keys: they are
    taken as the highest listed version's, which is the one that config was written for.
    """
    found = _PARAMETER.findall(text)
    result: dict[str, dict[str, str]] = {}
    for key, value in found:
        name, _, version = key.partition("@")
        if version in versions and name in VERSIONED_PARAMETERS:
            result.setdefault(version, {})[name] = value
    plain = {key: value for key, value in found if key in VERSIONED_PARAMETERS}
    if plain and versions and not result:
        result[max(versions, key=int)] = plain
    return result


def write_model_repository(repository: Path, onnx_file: Path, config: ServingConfig, version: int = 1) -> Path:
    """Put an exported model into a repository as ``<model>/<version>/model.onnx`` with its config.

    The other versions already there keep their calibrated parameters. Versions of one Triton model
    share their tensor shapes, so a model of another size needs another name.

    Returns
    -------
    pathlib.Path
        The model's folder.

    Raises
    ------
    ValueError
        The model is already in the repository with another slice size.
    """
    model_dir = repository / config.name
    config_file = model_dir / CONFIG_FILE
    existing = sorted((p.name for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()), key=int)
    others = [name for name in existing if name != str(version)]
    kept: dict[str, dict[str, str]] = {}
    if config_file.exists():
        text = config_file.read_text()
        dims = _DIMS.search(text)
        if others and dims and int(dims.group(1)) != config.size:
            raise ValueError(
                f"model {config.name} in {repository} takes {dims.group(1)}² slices (versions {', '.join(others)}); "
                f"a {config.size}² model needs another model name"
            )
        # Read over every version there, this one too, so that a legacy config's plain keys go to the
        # version they were written for; this version's then give way to its new values.
        kept = read_version_parameters(text, existing)
        kept.pop(str(version), None)
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / ONNX_FILE
    if onnx_file.resolve() != target.resolve():
        target.write_bytes(onnx_file.read_bytes())
    config_file.write_text(config_pbtxt(config, {**kept, str(version): calibrated_parameters(config)}))
    return model_dir
