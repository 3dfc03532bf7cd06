"""The model, reached only through tritonclient (KServe v2 over HTTP).

Checks that the server and the exact model version are ready and that the
model takes the tensors this client sends, sends slices in batches (several
in flight, so Triton's dynamic batcher can fill its batches), honours a
timeout, and maps every failure once, here: an unreachable, unready or slow
Triton is :class:`~oncostruct_shared.errors.UpstreamUnavailable` (try
again later); an error Triton answers with is
:class:`~oncostruct_shared.errors.UpstreamError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import numpy as np
import numpy.typing as npt
import tritonclient.http.aio as triton_http  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from oncostruct_shared.errors import Invalid, Unprocessable, UpstreamError, UpstreamUnavailable

from ..model.preprocess import LEGACY_MR_SCALING, MrScaling
from ..model.repository import (
    INPUT_NAME,
    MAP_NAME,
    MR_SCALING_PARAMETER,
    RECONSTRUCTION_NAME,
    RESIDUAL_PARAMETER,
    THRESHOLD_PARAMETER,
    versioned,
)

FloatArray = npt.NDArray[np.float32]
T = TypeVar("T")


@dataclass(frozen=True)
class ModelInfo:
    """The served model as Triton describes it.

    Attributes
    ----------
    name, version
        Model name and the version that answers.
    size
        In-plane size the model takes (input ``[batch, 1, size, size]`` FP32).
    max_batch_size
        Largest batch the model accepts in one request.
    threshold
        The calibrated voxel threshold from the config parameter ``anomaly_threshold`` (None if absent).
    mr_scaling
        The MR scaling the model was trained with, from the config parameter ``mr_scaling``
        (absent: :data:`~oncostruct_reconstruction.model.preprocess.LEGACY_MR_SCALING`, what
        models trained before it was configurable used).
    residual_threshold
        Residual above which a voxel differs from the reconstruction, from the config parameter
        ``residual_threshold`` (None if absent: proposals do not grow by the residual).
    """

    name: str
    version: str
    size: int
    max_batch_size: int
    threshold: float | None = None
    mr_scaling: MrScaling = LEGACY_MR_SCALING
    residual_threshold: float | None = None


@dataclass(frozen=True)
class AnomalyOutput:
    """What the served graph returns for a stack of slices.

    Attributes
    ----------
    maps
        ``(n, 1, size, size)`` anomaly maps.
    reconstructions
        ``(n, 1, size, size)`` nearest-normal reconstructions (empty ``(0,)`` if not asked for).
    """

    maps: FloatArray
    reconstructions: FloatArray


class ModelUnknown(Unprocessable):
    """The requested model or version does not exist on the server (waiting will not help)."""


class TritonModelClient:
    """One model version on one Triton server.

    Parameters
    ----------
    url
        ``host:port`` of Triton's HTTP endpoint (no scheme).
    model_name, model_version
        The model and the exact version to use ("" for the server's latest).
    timeout_s
        Limit of every request, connection included.
    batch_size
        Slices per request (capped by the model's ``max_batch_size``).
    concurrency
        Requests in flight at once.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str = "",
        timeout_s: float = 30.0,
        batch_size: int = 32,
        concurrency: int = 4,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.model_version = model_version
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self.concurrency = concurrency
        self._client = triton_http.InferenceServerClient(url, conn_timeout=timeout_s)
        self._info: ModelInfo | None = None

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one tritonclient call and map its failures (the one place they are mapped)."""
        try:
            return await asyncio.wait_for(call(), timeout=self.timeout_s)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"Triton at {self.url} did not answer {what} within {self.timeout_s:g} s."
            ) from None
        except (aiohttp.ClientError, OSError) as error:
            raise UpstreamUnavailable(f"Triton at {self.url} cannot be reached ({what}): {error}.") from None
        except InferenceServerException as error:
            status = str(error.status() or "")
            message = error.message() or str(error)
            if status in ("503", "StatusCode.UNAVAILABLE") or "unavailable" in message.lower():
                raise UpstreamUnavailable(f"Triton is not ready for {what}: {message}") from None
            raise UpstreamError(f"Triton refused {what}: {message}") from None

    async def check_ready(self) -> ModelInfo:
        """Check server liveness, readiness and the model version; return the model's description.

        Raises
        ------
        UpstreamUnavailable
            The server is down or not ready, or the model version is not loaded.
        UpstreamError
            The model does not take ``image`` FP32 ``[batch, 1, s, s]`` or does not return the map.
        """
        if not await self._call("a liveness check", self._client.is_server_live):
            raise UpstreamUnavailable(f"Triton at {self.url} is not live.")
        if not await self._call("a readiness check", self._client.is_server_ready):
            raise UpstreamUnavailable(f"Triton at {self.url} is not ready.")
        version = self.model_version
        ready = await self._call(
            "a model readiness check", lambda: self._client.is_model_ready(self.model_name, version)
        )
        if not ready:
            label = f"{self.model_name} version {version}" if version else self.model_name
            await self._check_known(label)
            raise UpstreamUnavailable(f"Model {label} is not loaded and ready on Triton at {self.url}.")
        metadata: dict[str, Any] = await self._call(
            "model metadata", lambda: self._client.get_model_metadata(self.model_name, version)
        )
        config: dict[str, Any] = await self._call(
            "model configuration", lambda: self._client.get_model_config(self.model_name, version)
        )
        self._info = _model_info(metadata, config, self.model_name, version)
        return self._info

    async def _check_known(self, label: str) -> None:
        """Raise :class:`ModelUnknown` if the repository has no such model version at all (not merely loading)."""
        index: list[dict[str, Any]] = await self._call(
            "the model repository index", self._client.get_model_repository_index
        )
        versions = sorted(str(entry.get("version", "")) for entry in index if entry.get("name") == self.model_name)
        if not versions or (self.model_version and self.model_version not in versions):
            known = ", ".join(v for v in versions if v) or "none"
            raise ModelUnknown(f"Model {label} is not in Triton's repository (versions of {self.model_name}: {known}).")

    async def infer(self, images: npt.ArrayLike, reconstructions: bool = False) -> AnomalyOutput:
        """Anomaly maps (and optionally reconstructions) of ``(n, 1, size, size)`` preprocessed slices.

        Raises
        ------
        Invalid
            ``images`` is not a stack of the model's size or has non-finite values.
        UpstreamUnavailable, UpstreamError
            See :meth:`check_ready`; also for failed inference requests.
        """
        info = self._info or await self.check_ready()
        values = np.ascontiguousarray(images, dtype=np.float32)
        if values.ndim != 4 or values.shape[1:] != (1, info.size, info.size):
            raise Invalid(f"slices must be [n, 1, {info.size}, {info.size}]; got {list(values.shape)}.")
        if not np.isfinite(values).all():
            raise Invalid("slices have NaN or infinite values.")
        step = max(1, min(self.batch_size, info.max_batch_size or self.batch_size))
        limit = asyncio.Semaphore(self.concurrency)
        outputs = [MAP_NAME, RECONSTRUCTION_NAME] if reconstructions else [MAP_NAME]

        async def one(batch: FloatArray) -> list[FloatArray]:
            request = triton_http.InferInput(INPUT_NAME, list(batch.shape), "FP32")
            request.set_data_from_numpy(batch, binary_data=True)
            wanted = [triton_http.InferRequestedOutput(name, binary_data=True) for name in outputs]
            async with limit:
                result = await self._call(
                    "an inference request",
                    lambda: self._client.infer(self.model_name, [request], model_version=info.version, outputs=wanted),
                )
            return [np.asarray(result.as_numpy(name), dtype=np.float32) for name in outputs]

        parts = await asyncio.gather(*(one(values[i : i + step]) for i in range(0, len(values), step)))
        maps = (
            np.concatenate([part[0] for part in parts]) if parts else np.zeros((0, 1, info.size, info.size), np.float32)
        )
        recon = np.concatenate([part[1] for part in parts]) if parts and reconstructions else np.zeros(0, np.float32)
        return AnomalyOutput(maps=maps, reconstructions=recon)


def _model_info(metadata: dict[str, Any], config: dict[str, Any], name: str, requested: str = "") -> ModelInfo:
    inputs = {tensor["name"]: tensor for tensor in metadata.get("inputs", [])}
    outputs = {tensor["name"] for tensor in metadata.get("outputs", [])}
    tensor = inputs.get(INPUT_NAME)
    if tensor is None or tensor.get("datatype") != "FP32" or MAP_NAME not in outputs:
        raise UpstreamError(
            f"Model {name} on Triton does not take {INPUT_NAME!r} FP32 and return {MAP_NAME!r}: "
            f"inputs {sorted(inputs)}, outputs {sorted(outputs)}."
        )
    shape = [int(d) for d in tensor.get("shape", [])]
    if len(shape) != 4 or shape[1] != 1 or shape[2] != shape[3] or shape[2] <= 0:
        raise UpstreamError(f"Model {name} takes {INPUT_NAME!r} of shape {shape}, not [batch, 1, s, s].")
    # The version asked for; without one, the newest the server lists (it serves every version it has).
    versions = [str(v) for v in metadata.get("versions") or []]
    numbered = [v for v in versions if v.isdigit()]
    version = requested or (max(numbered, key=int) if numbered else (versions[-1] if versions else ""))
    parameters = config.get("parameters") or {}

    # A config from before versioned keys describes its one version with the plain keys; once any key
    # is versioned, a version without keys of its own has no calibration (not another version's).
    legacy = not any("@" in str(key) for key in parameters)

    def parameter(key: str) -> str | None:
        value = parameters.get(versioned(key, version), {}).get("string_value") if version else None
        if value is None and (legacy or not version):
            value = parameters.get(key, {}).get("string_value")
        return None if value is None else str(value)

    def number(key: str) -> float | None:
        text = parameter(key)
        try:
            return float(text) if text is not None else None
        except ValueError:
            raise UpstreamError(f"Model {name}'s {key} parameter {text!r} is not a number.") from None

    threshold, residual_threshold = number(THRESHOLD_PARAMETER), number(RESIDUAL_PARAMETER)
    scaling = parameter(MR_SCALING_PARAMETER)
    try:
        mr_scaling = MrScaling.parse(scaling) if scaling is not None else LEGACY_MR_SCALING
    except ValueError as error:
        raise UpstreamError(f"Model {name}'s {MR_SCALING_PARAMETER} parameter: {error}.") from None
    return ModelInfo(
        name=name,
        version=version,
        size=shape[2],
        max_batch_size=int(config.get("max_batch_size", 0)),
        threshold=threshold,
        mr_scaling=mr_scaling,
        residual_threshold=residual_threshold,
    )


@asynccontextmanager
async def triton_model_client(
    url: str,
    model_name: str,
    model_version: str = "",
    timeout_s: float = 30.0,
    batch_size: int = 32,
    concurrency: int = 4,
) -> AsyncIterator[TritonModelClient]:
    """A :class:`TritonModelClient` that is closed on exit (for the app's lifespan and for scripts)."""
    client = TritonModelClient(url, model_name, model_version, timeout_s, batch_size, concurrency)
    try:
        yield client
    finally:
        await client.close()
