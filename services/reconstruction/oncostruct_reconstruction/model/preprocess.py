"""Modality-aware preprocessing of a series into model-ready slices (numpy/scipy only).

A series becomes a stack of 2D axial slices, each scaled to [0, 1], with
background set to 0, padded to a square and resampled to the model's
in-plane size. The same function serves training, the benchmark and the
jobs, so the model always sees what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

#: Modalities the model can be given (DICOM Modality attribute values, PS3.3 C.7.3.1.1.1).
Modality = Literal["MR", "CT"]

#: CT windows by name: (centre, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "soft_tissue": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


@dataclass(frozen=True)
class PreparedSeries:
    """A series ready for the model.

    Attributes
    ----------
    slices
        ``(n, 1, size, size)`` float32 in [0, 1], background 0.
    masks
        ``(n, size, size)`` foreground (body/brain) masks on the same grid.
    """

    slices: FloatArray
    masks: BoolArray


def window_ct(hounsfield: npt.ArrayLike, centre: float, width: float) -> FloatArray:
    """Map Hounsfield units through a display window to [0, 1].

    Parameters
    ----------
    hounsfield
        CT values in HU (after Rescale Slope/Intercept).
    centre, width
        The window (DICOM Window Center/Width semantics, linear).

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1]: 0 at ``centre - width/2`` and below, 1 at ``centre + width/2`` and above.
    """
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    values = np.asarray(hounsfield, dtype=np.float32)
    low = centre - width / 2.0
    return np.asarray(np.clip((values - low) / width, 0.0, 1.0), dtype=np.float32)


def normalise_mr(
    volume: npt.ArrayLike, mask: npt.ArrayLike | None = None, percentiles: tuple[float, float] = (1.0, 99.0)
) -> FloatArray:
    """Scale MR intensities to [0, 1] by robust percentiles of the foreground.

    MR intensities have no physical unit and vary by scanner and sequence,
    so the scale is taken from the image itself; percentiles (not min/max)
    keep a few hot voxels from squashing the contrast.

    Parameters
    ----------
    volume
        Raw MR intensities, any shape.
    mask
        Foreground to take the percentiles from (default: voxels above 0).
    percentiles
        Lower and upper percentile mapped to 0 and 1.

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1], same shape as ``volume``.
    """
    values = np.asarray(volume, dtype=np.float32)
    region = np.asarray(mask, dtype=bool) if mask is not None else values > 0
    sample = values[region] if region.any() else values.ravel()
    low, high = np.percentile(sample, percentiles)
    if high <= low:
        return np.zeros_like(values)
    return np.asarray(np.clip((values - low) / (high - low), 0.0, 1.0), dtype=np.float32)


def foreground_mask(volume: npt.ArrayLike, threshold: float | None = None) -> BoolArray:
    """Foreground (body or head) mask of a volume or slice.

    Threshold (Otsu's by default), keep the largest connected component and
    fill holes slice by slice, so dark structures inside the head (CSF,
    ventricles) stay in the mask while air and noise outside it do not.

    Parameters
    ----------
    volume
        2D slice or 3D ``(z, y, x)`` volume, already scaled (e.g. to [0, 1]).
    threshold
        Intensity threshold; ``None`` picks Otsu's threshold.

    Returns
    -------
    numpy.ndarray
        Boolean mask, same shape as ``volume``.
    """
    values = np.asarray(volume, dtype=np.float32)
    level = otsu_threshold(values) if threshold is None else threshold
    mask = values > level
    if not mask.any():
        return mask
    planes = mask if mask.ndim == 3 else mask[None]
    box = _bounding_box(planes, margin=0)  # labelled inside the foreground's box only: the same components
    assert box is not None
    labels, count = ndimage.label(planes[box])
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        planes = np.zeros_like(planes)
        planes[box] = labels == int(np.argmax(sizes))
    # Closing first: sulci open to the outside would otherwise stay out of the mask.
    filled = close_and_fill_slices(planes)
    return np.asarray(filled if mask.ndim == 3 else filled[0], dtype=bool)


#: The 2D cross (4-connectivity) as a 3D structure with no extent across slices: operations with it
#: on a ``(z, y, x)`` stack act on each slice alone, in one call for the whole stack.
_IN_PLANE_CROSS = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)


def close_and_fill_slices(planes: BoolArray, iterations: int = 3) -> BoolArray:
    """Per slice of a ``(z, y, x)`` stack: binary closing by the cross ``iterations`` times, then holes filled.

    The same as ``binary_fill_holes(binary_closing(plane, iterations=…) | plane)`` slice by slice (the
    closing on a plane padded by ``iterations``), done for the whole stack at once: the closing with
    an in-plane structure, the filling as "not the background that reaches a slice's edge" from one
    labelling of the background (``binary_fill_holes`` grows that background pixel by pixel).
    """
    stack = np.asarray(planes, dtype=bool)
    box = _bounding_box(stack, margin=iterations + 1)
    if box is None:
        return np.zeros_like(stack)
    if any(part.start > 0 or part.stop < size for part, size in zip(box, stack.shape, strict=True)):
        # Outside the foreground's box (with a margin the closing cannot cross) nothing changes, and a
        # background component reaches the box's edge exactly when it reaches the image's.
        result = np.zeros_like(stack)
        result[box] = close_and_fill_slices(stack[box], iterations)
        return result
    pad = ((0, 0), (iterations, iterations), (iterations, iterations))
    closed = ndimage.binary_closing(np.pad(stack, pad), structure=_IN_PLANE_CROSS, iterations=iterations)
    merged = closed[:, iterations:-iterations, iterations:-iterations] | stack
    background, count = ndimage.label(~merged, structure=_IN_PLANE_CROSS)
    reaches_edge = np.zeros(count + 1, dtype=bool)
    for edge in (background[:, 0, :], background[:, -1, :], background[:, :, 0], background[:, :, -1]):
        reaches_edge[edge] = True
    reaches_edge[0] = False  # label 0 is the foreground itself
    return np.asarray(~reaches_edge[background], dtype=bool)


def otsu_threshold(values: npt.ArrayLike, bins: int = 256) -> float:
    """Otsu's threshold: the level that maximises the between-class variance of the histogram."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    histogram, edges = np.histogram(flat, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def pad_to_square(plane: npt.ArrayLike) -> FloatArray:
    """Pad a 2D image (or ``(n, y, x)`` stack) with zeros, centred, to a square in-plane shape."""
    values = np.asarray(plane, dtype=np.float32)
    rows, cols = values.shape[-2:]
    side = max(rows, cols)
    before_r, before_c = (side - rows) // 2, (side - cols) // 2
    pad = [(0, 0)] * (values.ndim - 2) + [(before_r, side - rows - before_r), (before_c, side - cols - before_c)]
    return np.pad(values, pad).astype(np.float32)


def resample_slices(slices: npt.ArrayLike, size: int, order: int = 1) -> FloatArray:
    """Resample a ``(n, y, x)`` stack in-plane to ``(n, size, size)`` (pads to a square first: no distortion).

    Parameters
    ----------
    slices
        Stack of 2D slices.
    size
        The model's in-plane size.
    order
        Spline order (1: linear for images; 0: nearest for masks).
    """
    square = pad_to_square(slices)
    if square.ndim != 3:
        raise ValueError(f"expected a (n, y, x) stack, got shape {square.shape}")
    factor = size / square.shape[-1]
    if factor == 1.0:
        return square
    if square.shape[-1] == 2 * size and order in (0, 1):  # the usual case (256² series, 128² model)
        return _halve(square, order)
    resampled = ndimage.zoom(
        square, (1.0, factor, factor), order=order, prefilter=False, grid_mode=True, mode="grid-constant"
    )
    return np.asarray(resampled[:, :size, :size], dtype=np.float32)


def restore_slices(slices: npt.ArrayLike, rows: int, columns: int, order: int = 1) -> FloatArray:
    """Bring ``(n, size, size)`` model-grid slices back to the ``(n, rows, columns)`` source grid.

    The inverse of :func:`resample_slices`: resample to the padded square, then cut the padding off.
    """
    values = np.asarray(slices, dtype=np.float32)
    if values.ndim != 3 or values.shape[1] != values.shape[2]:
        raise ValueError(f"expected a (n, size, size) stack, got shape {values.shape}")
    side = max(rows, columns)
    factor = side / values.shape[-1]
    if factor == 1.0:
        square = values
    elif factor == 2.0 and order in (0, 1):  # the usual case (a 256² series, a 128² model): 4× faster
        square = _double(values, order)
    else:
        square = ndimage.zoom(
            values, (1.0, factor, factor), order=order, prefilter=False, grid_mode=True, mode="nearest"
        )
    square = square[:, :side, :side]
    top, left = (side - rows) // 2, (side - columns) // 2
    return np.ascontiguousarray(square[:, top : top + rows, left : left + columns], dtype=np.float32)


def _bounding_box(stack: BoolArray, margin: int) -> tuple[slice, slice, slice] | None:
    """The slices with foreground, and the in-plane box of all foreground grown by ``margin`` (clipped)."""
    in_plane = np.any(stack, axis=0)
    rows, columns = np.flatnonzero(np.any(in_plane, axis=1)), np.flatnonzero(np.any(in_plane, axis=0))
    if rows.size == 0:
        return None
    planes = np.flatnonzero(np.any(stack, axis=(1, 2)))
    return (
        slice(int(planes[0]), int(planes[-1]) + 1),
        slice(max(0, int(rows[0]) - margin), min(stack.shape[1], int(rows[-1]) + 1 + margin)),
        slice(max(0, int(columns[0]) - margin), min(stack.shape[2], int(columns[-1]) + 1 + margin)),
    )


def _halve(values: FloatArray, order: int) -> FloatArray:
    """``ndimage.zoom(values, (1, ½, ½), order=order, prefilter=False, grid_mode=True, mode="grid-constant")``.

    On the halved grid, output pixel ``i`` samples input coordinate ``2i + ½``: linear is the mean of
    each 2×2 block (exact in float64 for float32 input); nearest rounds the half up, to the block's
    last pixel.
    """
    if order == 0:
        return np.ascontiguousarray(values[:, 1::2, 1::2], dtype=np.float32)
    blocks = values.astype(np.float64)
    total = blocks[:, 0::2, 0::2] + blocks[:, 0::2, 1::2] + blocks[:, 1::2, 0::2] + blocks[:, 1::2, 1::2]
    return np.asarray(0.25 * total, dtype=np.float32)


def _double(values: FloatArray, order: int) -> FloatArray:
    """``ndimage.zoom(values, (1, 2, 2), order=order, prefilter=False, grid_mode=True, mode="nearest")``.

    On the doubled grid, output pixel ``i`` samples input coordinate ``i / 2 - 1/4``: nearest is
    each pixel twice; linear weighs the pixel ¾ and its neighbour on that side ¼ (edges clamped).
    """
    if order == 0:
        return np.repeat(np.repeat(values, 2, axis=1), 2, axis=2)
    result = values.astype(np.float64)
    for axis in (1, 2):
        source = np.moveaxis(result, axis, -1)
        doubled = np.empty((*source.shape[:-1], source.shape[-1] * 2), dtype=np.float64)
        even, odd = doubled[..., 0::2], doubled[..., 1::2]
        np.multiply(source, 0.75, out=even)
        np.copyto(odd, even)
        even[..., 1:] += 0.25 * source[..., :-1]
        even[..., 0] += 0.25 * source[..., 0]
        odd[..., :-1] += 0.25 * source[..., 1:]
        odd[..., -1] += 0.25 * source[..., -1]
        result = np.moveaxis(doubled, -1, axis)
    return np.ascontiguousarray(result, dtype=np.float32)


def scale_intensities(volume: npt.ArrayLike, modality: Modality, ct_window: str = "brain") -> FloatArray:
    """Scale a volume to [0, 1] the way its modality needs (CT: HU window; MR: foreground percentiles)."""
    if modality == "CT":
        centre, width = CT_WINDOWS[ct_window]
        return window_ct(volume, centre, width)
    if modality == "MR":
        values = np.asarray(volume, dtype=np.float32)
        return normalise_mr(values, foreground_mask(values / max(float(values.max()), 1e-6)))
    raise ValueError(f"unsupported modality {modality!r}; the model takes {', '.join(('MR', 'CT'))}")


def prepare_series(volume: npt.ArrayLike, modality: Modality, size: int, ct_window: str = "brain") -> PreparedSeries:
    """Turn a ``(z, y, x)`` volume into model-ready axial slices and their foreground masks.

    Parameters
    ----------
    volume
        The series as a volume, slices along the first axis, in stored units
        (HU for CT after rescale; raw for MR).
    modality
        ``"MR"`` or ``"CT"``.
    size
        The model's in-plane size.
    ct_window
        Name of the CT window in :data:`CT_WINDOWS`.

    Returns
    -------
    PreparedSeries
        Slices ``(z, 1, size, size)`` with background 0, and masks ``(z, size, size)``.
    """
    values = np.asarray(volume, dtype=np.float32)
    if values.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {values.shape}")
    scaled = scale_intensities(values, modality, ct_window)
    mask = foreground_mask(scaled)
    slices = resample_slices(np.where(mask, scaled, 0.0), size)
    masks = resample_slices(mask.astype(np.float32), size, order=0) > 0.5
    return PreparedSeries(slices=np.clip(slices, 0.0, 1.0)[:, None], masks=masks)
