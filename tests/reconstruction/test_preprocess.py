"""Preprocessing: CT windows, MR normalisation, foreground masks, resampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage  # type: ignore[import-untyped]

from oncostruct_reconstruction.model.preprocess import (
    close_and_fill_slices,
    foreground_mask,
    normalise_mr,
    otsu_threshold,
    pad_to_square,
    prepare_series,
    resample_slices,
    restore_slices,
    window_ct,
)


@pytest.mark.parametrize(
    ("hu", "expected"), [(-1000.0, 0.0), (0.0, 0.0), (40.0, 0.5), (80.0, 1.0), (3000.0, 1.0), (20.0, 0.25)]
)
def test_brain_window_maps_hounsfield_units(hu: float, expected: float) -> None:
    assert window_ct(np.array([hu]), centre=40, width=80)[0] == pytest.approx(expected)


def test_window_width_must_be_positive() -> None:
    with pytest.raises(ValueError, match="width"):
        window_ct(np.zeros(3), centre=40, width=0)


def test_mr_normalisation_uses_foreground_percentiles() -> None:
    rng = np.random.default_rng(0)
    volume = np.zeros((4, 32, 32), np.float32)
    volume[:, 8:24, 8:24] = rng.uniform(100, 200, size=(4, 16, 16))
    volume[0, 10, 10] = 10_000  # one hot voxel must not squash the contrast
    scaled = normalise_mr(volume)
    inside = scaled[:, 8:24, 8:24]
    assert scaled.min() == 0.0
    assert scaled.max() == 1.0
    assert 0.4 < float(np.median(inside)) < 0.6
    assert scaled[1, 0, 0] == 0.0


def test_foreground_mask_fills_holes_and_drops_specks() -> None:
    image = np.zeros((64, 64), np.float32)
    image[10:50, 10:50] = 0.8
    image[25:35, 25:35] = 0.05  # dark ventricle inside the head
    image[2, 60] = 0.9  # a speck of noise outside
    mask = foreground_mask(image)
    assert mask[30, 30]
    assert mask[12, 12]
    assert not mask[2, 60]
    assert not mask[5, 5]


def test_pad_and_resample_keep_aspect_ratio() -> None:
    stack = np.ones((2, 20, 40), np.float32)
    assert pad_to_square(stack).shape == (2, 40, 40)
    resampled = resample_slices(stack, 16)
    assert resampled.shape == (2, 16, 16)
    # A 20×40 slab padded to 40×40 fills the middle half of the rows.
    assert resampled[0, 8, 8] == pytest.approx(1.0)
    assert resampled[0, 1, 8] == pytest.approx(0.0)


def test_prepare_ct_series_windows_and_masks() -> None:
    volume = np.full((3, 48, 48), -1000.0, np.float32)  # air
    volume[:, 8:40, 8:40] = 40.0  # brain tissue at the window centre
    prepared = prepare_series(volume, "CT", 32)
    assert prepared.slices.shape == (3, 1, 32, 32)
    assert prepared.masks.shape == (3, 32, 32)
    assert prepared.slices[:, 0][prepared.masks].mean() == pytest.approx(0.5, abs=0.05)
    assert prepared.slices[:, 0][~prepared.masks].max() == 0.0


def test_prepare_rejects_unsupported_modality() -> None:
    with pytest.raises(ValueError, match="unsupported modality"):
        prepare_series(np.zeros((2, 8, 8)), "PT", 8)  # type: ignore[arg-type]


def _close_and_fill_one_by_one(planes: np.ndarray) -> np.ndarray:
    """The per-slice definition :func:`close_and_fill_slices` must equal."""
    out = []
    for plane in planes:
        closed = ndimage.binary_closing(np.pad(plane, 3), iterations=3)[3:-3, 3:-3]
        out.append(ndimage.binary_fill_holes(closed | plane))
    return np.stack(out)


@pytest.mark.parametrize("density", [0.3, 0.55, 0.8])
@pytest.mark.parametrize("framed", [False, True])
def test_stack_closing_and_filling_equals_the_per_slice_definition(density: float, framed: bool) -> None:
    rng = np.random.default_rng(int(density * 100))
    noise = ndimage.gaussian_filter(rng.random((12, 40, 52)), (0, 1.5, 1.5))  # blobs, holes, bays, edges
    planes = noise > np.quantile(noise, 1 - density)
    planes[3] = False  # an empty slice
    planes[4] = True  # a full one
    if framed:  # foreground inside a smaller box (worked on alone), empty slices at both ends
        planes[4] = False
        planes[[0, 1, -1]] = False
        planes[:, :7, :] = False
        planes[:, :, 40:] = False
        planes[6, 20:30, 10:30] = True
        planes[6, 24:26, 18:22] = False  # a hole that must be filled
    assert np.array_equal(close_and_fill_slices(planes), _close_and_fill_one_by_one(planes))


def test_closing_and_filling_an_empty_stack() -> None:
    assert not close_and_fill_slices(np.zeros((2, 5, 5), dtype=bool)).any()


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize(("rows", "columns"), [(64, 64), (64, 50), (48, 64), (63, 63)])
def test_restoring_slices_equals_scipy_zoom(order: int, rows: int, columns: int) -> None:
    """The doubling fast path gives exactly what ``ndimage.zoom`` gives (and other factors still use it)."""
    slices = np.random.default_rng(order).random((5, 32, 32)).astype(np.float32)
    side = max(rows, columns)
    expected = ndimage.zoom(
        slices, (1.0, side / 32, side / 32), order=order, prefilter=False, grid_mode=True, mode="nearest"
    )[:, :side, :side]
    top, left = (side - rows) // 2, (side - columns) // 2
    expected = expected[:, top : top + rows, left : left + columns]
    assert np.array_equal(restore_slices(slices, rows, columns, order=order), expected)


def test_foreground_mask_equals_its_whole_volume_definition() -> None:
    """Largest component labelled inside the foreground's box only: the same mask as labelling it all."""
    rng = np.random.default_rng(7)
    volume = np.zeros((10, 48, 60))
    volume[1:9, 10:40, 10:40] = 0.6 + 0.4 * rng.random((8, 30, 30))  # the head, inside a smaller box
    volume[4, 20:26, 20:26] = 0.0  # a hole
    volume[3:5, 42:45, 45:50] = 0.9  # a smaller component apart from it
    level = otsu_threshold(volume)
    reference = volume > level
    labels, count = ndimage.label(reference)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    reference = _close_and_fill_one_by_one(labels == int(np.argmax(sizes)))
    assert count > 1
    assert np.array_equal(foreground_mask(volume), reference)


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize(("rows", "columns"), [(64, 64), (64, 50), (47, 64)])
def test_resampling_slices_equals_scipy_zoom(order: int, rows: int, columns: int) -> None:
    """The halving fast path gives exactly what ``ndimage.zoom`` gives."""
    slices = np.random.default_rng(order + rows).random((3, rows, columns)).astype(np.float32)
    square = pad_to_square(slices)
    expected = ndimage.zoom(
        square, (1.0, 32 / square.shape[-1], 32 / square.shape[-1]), order=order, prefilter=False,
        grid_mode=True, mode="grid-constant",
    )[:, :32, :32]  # fmt: skip
    assert np.array_equal(resample_slices(slices, 32, order=order), expected)
