"""Running the exported graph with ONNX Runtime in-process (benchmark, tests, the local Triton's Python backend).

The service itself reaches the model only through Triton
(:mod:`oncostruct_reconstruction.clients.triton`); this is for offline work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .preprocess import LEGACY_MR_SCALING, MrScaling
from .repository import INPUT_NAME, MAP_NAME, RECONSTRUCTION_NAME

FloatArray = npt.NDArray[np.float32]


class OnnxAnomalyModel:
    """An exported ``image`` → (``anomaly_map``, ``reconstruction``) graph in an ONNX Runtime session.

    Parameters
    ----------
    path
        The ``model.onnx`` file.
    threads
        Intra-op threads (0: ONNX Runtime's default).
    """

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime  # type: ignore[import-untyped]

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = {key: _json_or_text(value) for key, value in props.items()}
        self.size = int(self.session.get_inputs()[0].shape[-1])

    @property
    def train_config(self) -> dict[str, Any]:
        """The training configuration recorded in the metadata, as plain values (empty if none).

        The command line records it as ``training.config``, the benchmark as ``train_config``.
        """
        training = self.metadata.get("training")
        config = training.get("config") if isinstance(training, dict) else self.metadata.get("train_config")
        return config if isinstance(config, dict) else {}

    @property
    def mr_scaling(self) -> MrScaling:
        """The MR scaling the model was trained with (legacy if its metadata predates the setting)."""
        scaling = self.train_config.get("mr_scaling")
        if not scaling:
            return LEGACY_MR_SCALING
        return MrScaling(tuple(scaling["percentiles"]), tuple(scaling["targets"]))

    def run(self, images: npt.ArrayLike, batch_size: int = 32) -> tuple[FloatArray, FloatArray]:
        """Anomaly maps and reconstructions of ``(n, 1, size, size)`` images, in batches."""
        values = np.ascontiguousarray(images, dtype=np.float32)
        maps, reconstructions = [], []
        for start in range(0, len(values), batch_size):
            anomaly_map, reconstruction = self.session.run(
                [MAP_NAME, RECONSTRUCTION_NAME], {INPUT_NAME: values[start : start + batch_size]}
            )
            maps.append(anomaly_map)
            reconstructions.append(reconstruction)
        return np.concatenate(maps).astype(np.float32), np.concatenate(reconstructions).astype(np.float32)


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
