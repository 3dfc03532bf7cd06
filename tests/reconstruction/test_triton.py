"""The shipped model on a real local tritonserver, reached through the client layer (tritonclient HTTP)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http

from oncostruct_reconstruction.clients.triton import ModelUnknown, TritonModelClient, _model_info, triton_model_client
from oncostruct_reconstruction.model.inference import OnnxAnomalyModel
from oncostruct_reconstruction.model.preprocess import LEGACY_MR_SCALING, MrScaling
from oncostruct_reconstruction.model.repository import (
    DEFAULT_MODEL_NAME,
    DEFAULT_REPOSITORY,
    SHIPPED_ONNX,
    SHIPPED_VERSION,
    ServingConfig,
    write_model_repository,
)
from oncostruct_reconstruction.triton_local import LocalTriton, bundled_backends, free_port
from oncostruct_shared.errors import Invalid, UpstreamError, UpstreamUnavailable

SHIPPED = SHIPPED_ONNX


def test_bundled_triton_has_the_python_backend() -> None:
    assert "python" in bundled_backends()


async def test_server_and_model_version_are_checked(triton: LocalTriton) -> None:
    client = TritonModelClient(triton.url, DEFAULT_MODEL_NAME, SHIPPED_VERSION)
    try:
        info = await client.check_ready()
    finally:
        await client.close()
    assert info.version == SHIPPED_VERSION
    assert info.size == OnnxAnomalyModel(SHIPPED).size
    assert info.max_batch_size >= 16


async def test_slices_are_batched_and_match_onnx_runtime(triton: LocalTriton) -> None:
    reference = OnnxAnomalyModel(SHIPPED)
    images = np.random.default_rng(5).random((37, 1, reference.size, reference.size), dtype=np.float32)
    client = TritonModelClient(triton.url, DEFAULT_MODEL_NAME, SHIPPED_VERSION, batch_size=16, concurrency=3)
    try:
        output = await client.infer(images, reconstructions=True)
    finally:
        await client.close()
    expected_map, expected_reconstruction = reference.run(images)
    assert output.maps.shape == (37, 1, reference.size, reference.size)
    assert np.abs(output.maps - expected_map).max() < 1e-5
    assert np.abs(output.reconstructions - expected_reconstruction).max() < 1e-5


async def test_unknown_model_version_is_a_permanent_error(triton: LocalTriton) -> None:
    # Not "unavailable" (a job would wait for ever): the repository has no such version at all.
    client = TritonModelClient(triton.url, DEFAULT_MODEL_NAME, "99")
    try:
        with pytest.raises(
            ModelUnknown,
            match=rf"version 99 is not in Triton's repository \(versions of nearest_normal: {SHIPPED_VERSION}\)",
        ):
            await client.check_ready()
    finally:
        await client.close()


async def test_calibrated_threshold_and_scaling_travel_with_the_model_config(triton: LocalTriton) -> None:
    async with triton_model_client(triton.url, DEFAULT_MODEL_NAME, SHIPPED_VERSION) as client:
        info = await client.check_ready()
    config = (DEFAULT_REPOSITORY / DEFAULT_MODEL_NAME / "config.pbtxt").read_text()
    assert info.threshold is not None
    assert f'string_value: "{info.threshold:g}"' in config
    trained_with = OnnxAnomalyModel(SHIPPED).metadata["training"]["config"]["mr_scaling"]
    assert info.mr_scaling == MrScaling(tuple(trained_with["percentiles"]), tuple(trained_with["targets"]))
    assert f'key: "mr_scaling" value: {{ string_value: "{info.mr_scaling.text()}" }}' in config
    record = json.loads((SHIPPED.parent / "training_record.json").read_text())
    assert (info.threshold, info.residual_threshold) == (record["anomaly_threshold"], record["residual_threshold"])


def test_model_config_parameters_are_read_or_refused() -> None:
    metadata = {
        "versions": ["3"],
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 64, 64]}],
        "outputs": [{"name": "anomaly_map"}],
    }
    plain = _model_info(metadata, {"max_batch_size": 8}, "m")
    assert (plain.version, plain.size, plain.threshold) == ("3", 64, None)
    assert plain.mr_scaling == LEGACY_MR_SCALING  # a model from before the scaling was recorded
    given = {"anomaly_threshold": {"string_value": "0.25"}, "mr_scaling": {"string_value": "2,98:0.1,0.8"}}
    info = _model_info(metadata, {"parameters": given}, "m")
    assert (info.threshold, info.mr_scaling) == (0.25, MrScaling((2.0, 98.0), (0.1, 0.8)))
    # Each version's own calibration where the config has it; the version asked for, or the newest listed.
    both = {**given, "anomaly_threshold@3": {"string_value": "0.3"}, "anomaly_threshold@10": {"string_value": "0.5"}}
    listed = {**metadata, "versions": ["3", "10"]}
    assert _model_info(listed, {"parameters": both}, "m", "3").threshold == 0.3
    assert _model_info(listed, {"parameters": both}, "m").threshold == 0.5  # 10, not "3" (the last as text)
    assert _model_info(listed, {"parameters": both}, "m").version == "10"
    assert _model_info(listed, {"parameters": given}, "m", "3").threshold == 0.25  # a config from before versions
    # Once keys are versioned, a version without its own has no calibration rather than another version's.
    others = {"anomaly_threshold": {"string_value": "0.5"}, "anomaly_threshold@10": {"string_value": "0.5"}}
    bare = _model_info(listed, {"parameters": others}, "m", "3")
    assert (bare.threshold, bare.mr_scaling) == (None, LEGACY_MR_SCALING)
    assert _model_info(metadata, {"parameters": given}, "m").residual_threshold is None  # no growth by residual
    residual = {"residual_threshold@3": {"string_value": "0.16"}}
    assert _model_info(listed, {"parameters": residual}, "m", "3").residual_threshold == 0.16
    for key, value, reason in (
        ("mr_scaling", "2,98", "MR scaling"),
        ("anomaly_threshold", "high", "not a number"),
        ("residual_threshold", "", "not a number"),
    ):
        with pytest.raises(UpstreamError, match=f"Model m's {key} parameter.*{reason}"):
            _model_info(metadata, {"parameters": {key: {"string_value": value}}}, "m")


async def test_wrong_slice_size_is_refused_before_sending(triton: LocalTriton) -> None:
    client = TritonModelClient(triton.url, DEFAULT_MODEL_NAME, SHIPPED_VERSION)
    try:
        with pytest.raises(Invalid, match="slices must be"):
            await client.infer(np.zeros((2, 1, 8, 8), np.float32))
    finally:
        await client.close()


def test_bad_request_is_answered_per_request_and_server_keeps_serving(triton: LocalTriton) -> None:
    size = OnnxAnomalyModel(SHIPPED).size
    client = triton_http.InferenceServerClient(triton.url)
    bad = triton_http.InferInput("image", [1, 1, size, size], "FP32")
    bad.set_data_from_numpy(np.full((1, 1, size, size), np.nan, np.float32))
    with pytest.raises(Exception, match="NaN"):
        client.infer(DEFAULT_MODEL_NAME, [bad])
    good = triton_http.InferInput("image", [2, 1, size, size], "FP32")
    good.set_data_from_numpy(np.zeros((2, 1, size, size), np.float32))
    assert client.infer(DEFAULT_MODEL_NAME, [good]).as_numpy("anomaly_map").shape == (2, 1, size, size)
    client.close()


async def test_triton_error_becomes_upstream_error(triton: LocalTriton) -> None:
    client = TritonModelClient(triton.url, "no_such_model", "")
    try:
        with pytest.raises(ModelUnknown, match="no_such_model is not in Triton's repository"):
            await client.check_ready()
        # The model is named in a request Triton answers with an error status.
        with pytest.raises(UpstreamError, match="Triton refused"):
            await client._call("model metadata", lambda: client._client.get_model_metadata("no_such_model"))
    finally:
        await client.close()


async def test_unreachable_triton_is_unavailable() -> None:
    client = TritonModelClient(f"127.0.0.1:{free_port()}", DEFAULT_MODEL_NAME, SHIPPED_VERSION, timeout_s=5)
    try:
        with pytest.raises(UpstreamUnavailable, match="cannot be reached"):
            await client.check_ready()
    finally:
        await client.close()


async def test_slow_triton_times_out_as_unavailable() -> None:
    # A listener that accepts connections but never answers: the client must give up at its timeout.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):  # read the request, never answer; ends when the client hangs up
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = TritonModelClient(f"127.0.0.1:{port}", DEFAULT_MODEL_NAME, SHIPPED_VERSION, timeout_s=0.5)
    try:
        with pytest.raises(UpstreamUnavailable, match="did not answer"):
            await client.check_ready()
    finally:
        await client.close()
        server.close()


async def test_two_versions_are_served_each_with_its_own_calibration_and_an_unloaded_model_is_waited_for(
    tmp_path: Path,
) -> None:
    reference = OnnxAnomalyModel(SHIPPED)
    repository = tmp_path / "repo"
    for version, threshold in ((1, 0.25), (2, 0.4)):
        serving = ServingConfig(
            name="twin", size=reference.size, instance_kind="KIND_CPU", anomaly_threshold=threshold,
            mr_scaling=reference.mr_scaling,
        )  # fmt: skip
        write_model_repository(repository, SHIPPED, serving, version)
    images = np.random.default_rng(2).random((3, 1, reference.size, reference.size), dtype=np.float32)
    with LocalTriton(repository, workspace=tmp_path / "server") as server:
        for version, threshold in (("1", 0.25), ("2", 0.4)):
            async with triton_model_client(server.url, "twin", version) as client:
                info = await client.check_ready()
                assert (info.version, info.threshold) == (version, threshold)
                assert np.abs((await client.infer(images)).maps - reference.run(images)[0]).max() < 1e-5
        async with triton_model_client(server.url, "twin") as latest:
            assert (await latest.check_ready()).version == "2"
        # Unloaded (an operator, or a model that failed to load): the strictly ready server is not, and a job waits.
        admin = triton_http.InferenceServerClient(server.url)
        admin.unload_model("twin")
        try:
            async with triton_model_client(server.url, "twin", "1") as client:
                with pytest.raises(UpstreamUnavailable, match=rf"Triton at {server.url} is not ready"):
                    await client.check_ready()
            admin.load_model("twin")
            async with triton_model_client(server.url, "twin", "1") as client:
                assert (await client.check_ready()).threshold == 0.25
        finally:
            admin.close()
