"""Export the served graph to ONNX with a dynamic batch axis (torch; the ``[train]`` extra)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import onnx
import torch

from .network import AnomalyGraph, ReconstructionNet
from .repository import INPUT_NAME, MAP_NAME, RECONSTRUCTION_NAME
from .scoring import DissimilarityConfig

#: ONNX opset: supported by the ONNX Runtime of Triton 24.x images and by TensorRT 10.
OPSET = 17


def export_onnx(
    net: ReconstructionNet,
    dissimilarity: DissimilarityConfig,
    path: Path,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write ``image`` → (``anomaly_map``, ``reconstruction``) as an ONNX file with a dynamic batch axis.

    Parameters
    ----------
    net
        The trained network (exported in eval mode: batch norm folded into running statistics).
    dissimilarity
        How the graph computes the anomaly map.
    path
        Where to write the ``.onnx`` file.
    metadata
        Extra key/values stored in the model's ``metadata_props`` (JSON-encoded unless strings).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    graph = AnomalyGraph(net, dissimilarity).eval().cpu()
    size = net.config.size
    example = torch.rand(2, 1, size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.name + ".raw")
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated but needs no onnxscript, and gives a plain, portable graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            raw,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[MAP_NAME, RECONSTRUCTION_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, MAP_NAME: {0: "batch"}, RECONSTRUCTION_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    model = onnx.load(raw)
    raw.unlink()
    properties = {
        "network": json.dumps(net.config.as_dict()),
        "dissimilarity": json.dumps(dissimilarity.__dict__),
        **{key: value if isinstance(value, str) else json.dumps(value) for key, value in (metadata or {}).items()},
    }
    onnx.helper.set_model_props(model, properties)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path
