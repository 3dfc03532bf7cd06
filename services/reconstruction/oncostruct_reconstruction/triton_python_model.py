"""Triton Python-backend model that runs the exported ONNX graph with ONNX Runtime.

The Triton bundled with nvidia-pytriton has only the Python backend, so the
local server (:mod:`oncostruct_reconstruction.triton_local`) copies this file
as ``<model>/<version>/model.py`` next to ``model.onnx``; the tensor names
and shapes are the ones in ``config.pbtxt``, the same as under the ONNX
Runtime backend of the official image. It needs numpy and onnxruntime only
(it runs inside Triton's Python stub, not in the service).

Tensors cross the stub through DLPack: the bundled stub was built against
numpy 1.x and reads numpy 2 arrays as empty through ``as_numpy``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime  # type: ignore[import-untyped]
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


class _Capsule:
    """Adapts a DLPack capsule to the ``__dlpack__`` protocol that ``numpy.from_dlpack`` takes."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule

    def __dlpack__(self, stream: Any = None, **_: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU


class TritonPythonModel:
    """Serves ``image`` → (``anomaly_map``, ``reconstruction``) from ``model.onnx``."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the ONNX Runtime session of this model version."""
        config = json.loads(args["model_config"])
        self.input = config["input"][0]
        self.outputs = [output["name"] for output in config["output"]]
        self.dims = [int(d) for d in self.input["dims"]]
        threads = int(config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _read(self, request: Any) -> np.ndarray[Any, Any]:
        tensor = pb_utils.get_input_tensor_by_name(request, self.input["name"])
        if tensor is None:
            raise ValueError(f"input {self.input['name']!r} is missing")
        values = np.from_dlpack(_Capsule(tensor.to_dlpack()))
        if values.dtype != np.float32 or list(values.shape[1:]) != self.dims:
            raise ValueError(f"input must be FP32 [batch, {', '.join(map(str, self.dims))}], got {list(values.shape)}")
        if not np.isfinite(values).all():
            raise ValueError("input has NaN or infinite values")
        return values

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run all valid requests of a dynamic batch in one session call; answer bad ones with an error each."""
        inputs: dict[int, np.ndarray[Any, Any]] = {}
        responses: list[Any] = [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                inputs[index] = self._read(request)
            except ValueError as error:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
        if inputs:
            batch = np.ascontiguousarray(np.concatenate(list(inputs.values())), dtype=np.float32)
            results = self.session.run(self.outputs, {self.input["name"]: batch})
            start = 0
            for index, values in inputs.items():
                stop = start + len(values)
                tensors = [
                    pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(result[start:stop]).__dlpack__())
                    for name, result in zip(self.outputs, results, strict=True)
                ]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start = stop
        return responses

    def finalize(self) -> None:
        """Release the session."""
        self.session = None
