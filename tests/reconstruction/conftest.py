"""Reconstruction fixtures: the real local tritonserver serving the shipped model repository."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from oncostruct_reconstruction.model.repository import DEFAULT_REPOSITORY, SHIPPED_ONNX
from oncostruct_reconstruction.triton_local import LocalTriton


@pytest.fixture(scope="session")
def triton() -> Iterator[LocalTriton]:
    """The bundled tritonserver on 127.0.0.1 serving the shipped repository (started once, stopped at the end)."""
    assert SHIPPED_ONNX.exists(), "the shipped model is missing"
    with LocalTriton(DEFAULT_REPOSITORY) as server:
        yield server
