"""Rendered and thumbnail images (PS3.18 §8.3.5.1, §10.4.1.1.3): pure numpy + Pillow functions.

Pipeline (PS3.3 §C.11): stored values → Modality LUT (Rescale Slope/Intercept)
→ VOI LUT window (query ``window`` or the instance's Window Center/Width, else
the frame's range; LINEAR, LINEAR_EXACT or SIGMOID) → MONOCHROME1 inverted →
8-bit → scaled to fit the viewport, aspect ratio kept → JPEG or PNG.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from oncostruct_shared.errors import Invalid

RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")


@dataclass(frozen=True)
class PixelDescription:
    """The Image Pixel Module attributes rendering needs (PS3.3 §C.7.6.3)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int
    rescale_slope: float
    rescale_intercept: float
    window_center: float | None
    window_width: float | None

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> PixelDescription:
        """Read the description from an instance's DICOM JSON."""

        def first(tag: str, default: Any = None) -> Any:
            values = metadata.get(tag, {}).get("Value")
            return values[0] if values else default

        rows, columns = first("00280010"), first("00280011")
        if not rows or not columns:
            raise Invalid("This instance has no image pixel data to render.")
        center, width = first("00281050"), first("00281051")
        return cls(
            rows=int(rows),
            columns=int(columns),
            samples_per_pixel=int(first("00280002", 1)),
            bits_allocated=int(first("00280100", 16)),
            bits_stored=int(first("00280101", first("00280100", 16))),
            pixel_representation=int(first("00280103", 0)),
            photometric_interpretation=str(first("00280004", "MONOCHROME2")),
            planar_configuration=int(first("00280006", 0)),
            rescale_slope=float(first("00281053", 1.0)),
            rescale_intercept=float(first("00281052", 0.0)),
            window_center=float(center) if center is not None else None,
            window_width=float(width) if width is not None else None,
        )


@dataclass(frozen=True)
class RenderOptions:
    """Query parameters of a rendered request (PS3.18 §8.3.5.1)."""

    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int | None = None

    @classmethod
    def parse(cls, query: dict[str, str]) -> RenderOptions:
        """Parse ``window``, ``viewport`` and ``quality``; 400 when they are malformed."""
        window = None
        if query.get("window"):
            parts = query["window"].split(",")
            try:
                center, width = float(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                raise Invalid("window must be center,width[,function] (PS3.18 §8.3.5.1.4).") from None
            function = parts[2].strip().upper() if len(parts) > 2 else "LINEAR"
            if width <= 0 or function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
                raise Invalid("window width must be positive and function LINEAR, LINEAR_EXACT or SIGMOID.")
            window = (center, width, function)
        viewport = None
        if query.get("viewport"):
            parts = query["viewport"].split(",")
            try:
                viewport = (int(parts[0]), int(parts[1]))
            except (ValueError, IndexError):
                raise Invalid("viewport must be vw,vh[,sx,sy,sw,sh] (PS3.18 §8.3.5.1.3).") from None
            if not (0 < viewport[0] <= 8192 and 0 < viewport[1] <= 8192):
                raise Invalid("viewport dimensions must be between 1 and 8192.")
        quality = None
        if query.get("quality"):
            raw = query["quality"]
            if not raw.isdigit() or not 1 <= int(raw) <= 100:
                raise Invalid("quality must be an integer from 1 to 100 (PS3.18 §8.3.5.1.2).")
            quality = int(raw)
        return cls(window, viewport, quality)


def native_frame_array(data: bytes, pixels: PixelDescription) -> NDArray[Any]:
    """A native (uncompressed, little endian) frame's bytes as an array (rows, columns[, samples])."""
    if pixels.bits_allocated == 8:
        dtype: Any = np.int8 if pixels.pixel_representation else np.uint8
    elif pixels.bits_allocated == 16:
        dtype = np.dtype("<i2") if pixels.pixel_representation else np.dtype("<u2")
    elif pixels.bits_allocated == 32:
        dtype = np.dtype("<i4") if pixels.pixel_representation else np.dtype("<u4")
    else:
        raise Invalid(f"Rendering {pixels.bits_allocated}-bit pixel data is not supported.")
    array = np.frombuffer(data, dtype=dtype)
    samples = pixels.samples_per_pixel
    count = pixels.rows * pixels.columns * samples
    array = array[:count]
    if samples == 1:
        return array.reshape(pixels.rows, pixels.columns)
    if pixels.planar_configuration == 1:
        return array.reshape(samples, pixels.rows, pixels.columns).transpose(1, 2, 0)
    return array.reshape(pixels.rows, pixels.columns, samples)


def _windowed(values: NDArray[Any], center: float, width: float, function: str) -> NDArray[np.uint8]:
    # PS3.3 §C.11.2.1.2 (LINEAR), §C.11.2.1.3.1 (LINEAR_EXACT), §C.11.2.1.3.2 (SIGMOID).
    if function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    elif function == "LINEAR_EXACT":
        out = ((values - center) / width + 0.5) * 255.0
    else:
        out = ((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def to_display(array: NDArray[Any], pixels: PixelDescription, options: RenderOptions) -> Image.Image:
    """Apply the grayscale pipeline (or pass colour through) and return an 8-bit image."""
    if array.ndim == 3 and array.shape[2] == 3:
        if array.dtype != np.uint8:
            array = (array.astype(np.float64) / max(float(array.max()), 1.0) * 255).astype(np.uint8)
        return Image.fromarray(array, mode="RGB")
    values = array.astype(np.float64) * pixels.rescale_slope + pixels.rescale_intercept
    if options.window is not None:
        center, width, function = options.window
    elif pixels.window_center is not None and pixels.window_width:
        center, width, function = pixels.window_center, pixels.window_width, "LINEAR"
    else:
        low, high = float(values.min()), float(values.max())
        center, width, function = (low + high) / 2, max(high - low, 1.0), "LINEAR_EXACT"
    image = _windowed(values, center, width, function)
    if pixels.photometric_interpretation == "MONOCHROME1":
        image = 255 - image
    return Image.fromarray(image, mode="L")


def fit(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    """Scale to fit ``box`` (width, height), keeping the aspect ratio (PS3.18 §8.3.5.1.3)."""
    width, height = image.size
    scale = min(box[0] / width, box[1] / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)


def encode(image: Image.Image, media_type: str, quality: int) -> bytes:
    """Encode as JPEG, PNG or GIF."""
    buffer = io.BytesIO()
    if media_type == "image/png":
        image.save(buffer, format="PNG")
    elif media_type == "image/gif":
        image.save(buffer, format="GIF")
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
