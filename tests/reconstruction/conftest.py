"""Reconstruction fixtures: the real local tritonserver serving the shipped model repository."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oncostruct_reconstruction.model.repository import DEFAULT_MODEL_NAME, DEFAULT_REPOSITORY, ONNX_FILE
from oncostruct_reconstruction.triton_local import LocalTriton


@pytest.fixture(scope="session")
def triton() -> Iterator[LocalTriton]:
    """The bundled tritonserver on 127.0.0.1 serving the shipped repository (started once, stopped at the end)."""
    assert (DEFAULT_REPOSITORY / DEFAULT_MODEL_NAME / "1" / ONNX_FILE).exists(), "the shipped model is missing"
    with LocalTriton(DEFAULT_REPOSITORY) as server:
        yield server
