"""Preprocessing: CT windows, MR normalisation, foreground masks, resampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage  # type: ignore[import-untyped]

from oncostruct_reconstruction.model.data import enough_foreground
from oncostruct_reconstruction.model.preprocess import (
    LEGACY_MR_SCALING,
    MrScaling,
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
    # 5th percentile (≈ 105) → 0.2, 95th (≈ 195) → 0.75: the median (≈ 150) lands half-way.
    assert float(np.percentile(inside, 5)) == pytest.approx(0.2, abs=1e-3)
    assert float(np.percentile(inside, 95)) == pytest.approx(0.75, abs=1e-3)
    assert float(np.median(inside)) == pytest.approx(0.475, abs=0.02)
    assert scaled[0, 10, 10] == 1.0  # clipped, not stretched to
    assert scaled[1, 0, 0] == 0.0
    legacy = normalise_mr(volume, scaling=LEGACY_MR_SCALING)
    assert legacy.min() == 0.0
    assert legacy.max() == 1.0
    assert 0.4 < float(np.median(legacy[:, 8:24, 8:24])) < 0.6


def _tissue_with_lesion(lesion_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three tissue classes, and a copy with a bright lesion (1.3× the brightest tissue) over some of them."""
    rng = np.random.default_rng(1)
    tissue = rng.choice([300.0, 600.0, 800.0], size=(8, 40, 40)) + rng.normal(0, 20, size=(8, 40, 40))
    lesion = np.zeros(tissue.shape, bool)
    lesion.reshape(-1)[: int(lesion.size * lesion_fraction)] = True
    return tissue.astype(np.float32), np.where(lesion, 1.3 * tissue.max(), tissue).astype(np.float32), lesion


def test_a_bright_lesion_does_not_rescale_the_rest_of_the_series() -> None:
    # A lesion of 3 % of the foreground: with the default scaling normal tissue keeps its values (the
    # model sees the contrast it was trained on); with the legacy 1st-99th percentile it darkens by a tenth.
    normal, with_lesion, lesion = _tissue_with_lesion(0.03)
    mask = np.ones(normal.shape, bool)
    for scaling, bound in ((MrScaling(), 0.02), (LEGACY_MR_SCALING, None)):
        change = np.abs(normalise_mr(with_lesion, mask, scaling) - normalise_mr(normal, mask, scaling))[~lesion]
        if bound is None:
            assert float(np.median(change)) > 0.05
        else:
            assert float(change.max()) < bound
    scaled = normalise_mr(with_lesion, mask)
    assert float(scaled[lesion].min()) > float(np.percentile(scaled[~lesion], 99.9)) + 0.1  # room above tissue


def test_mr_scaling_reads_back_its_text_and_refuses_nonsense() -> None:
    scaling = MrScaling((2.0, 98.0), (0.1, 0.9))
    assert scaling.text() == "2,98:0.1,0.9"
    assert MrScaling.parse(scaling.text()) == scaling
    assert MrScaling.parse(MrScaling().text()) == MrScaling()
    for text in ("5,95", "a,b:c,d", "5,95:0.2", "", "95,5:0.2,0.75", "5,95:0.75,0.2", "5,101:0,1"):
        with pytest.raises(ValueError, match="MR scaling"):
            MrScaling.parse(text)


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


@pytest.mark.parametrize("window", ["brain", "soft_tissue", "lung"])
def test_prepare_a_non_square_ct_series_pads_with_air_and_keeps_the_body_in_place(window: str) -> None:
    # 64 × 128 slices: the model grid pads them to a square. Padding with 0 would be water (0 HU), which
    # the soft-tissue and lung windows show as tissue: a frame the mask would take for body.
    volume = np.full((4, 64, 128), -1000.0, np.float32)
    body = np.zeros(volume.shape, bool)
    body[:, 16:48, 24:104] = True
    volume[body] = 40.0
    prepared = prepare_series(volume, "CT", 32, ct_window=window)
    assert prepared.masks.shape == (4, 32, 32)
    back = restore_slices(prepared.masks.astype(np.float32), 64, 128, order=0) > 0.5
    overlap = (back & body).sum() / (back | body).sum()
    assert overlap > 0.9
    assert prepared.slices[:, 0][~prepared.masks].max() == 0.0
    assert not prepared.masks[:, :8].any()  # the padded rows above the slab


def test_prepare_refuses_an_empty_volume() -> None:
    with pytest.raises(ValueError, match="no voxels"):
        prepare_series(np.zeros((0, 8, 8)), "MR", 8)


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


def _same_as_zoom(got: np.ndarray, expected: np.ndarray, order: int) -> bool:
    """Nearest: exactly zoom's pixels; linear: zoom's float64 arithmetic done in float32 (within 1e-6)."""
    if order == 0:
        return bool(np.array_equal(got, expected))
    return got.shape == expected.shape and bool(np.abs(got - expected).max() < 1e-6)


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize(("rows", "columns"), [(64, 64), (64, 50), (48, 64), (63, 63), (100, 90)])
def test_restoring_slices_equals_scipy_zoom(order: int, rows: int, columns: int) -> None:
    """The fast paths (matrix products for linear, repetition for 2× nearest) give what ``ndimage.zoom`` gives."""
    slices = np.random.default_rng(order).random((5, 32, 32)).astype(np.float32)
    side = max(rows, columns)
    expected = ndimage.zoom(
        slices, (1.0, side / 32, side / 32), order=order, prefilter=False, grid_mode=True, mode="nearest"
    )[:, :side, :side]
    top, left = (side - rows) // 2, (side - columns) // 2
    expected = expected[:, top : top + rows, left : left + columns]
    assert _same_as_zoom(restore_slices(slices, rows, columns, order=order), expected, order)


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
@pytest.mark.parametrize(("rows", "columns"), [(64, 64), (64, 50), (47, 64), (233, 197)])
def test_resampling_slices_equals_scipy_zoom(order: int, rows: int, columns: int) -> None:
    """Shrinking: the fast paths give what ``ndimage.zoom`` gives (233 × 197: the 1 mm template's slices)."""
    slices = np.random.default_rng(order + rows).random((3, rows, columns)).astype(np.float32)
    square = pad_to_square(slices)
    expected = ndimage.zoom(
        square, (1.0, 32 / square.shape[-1], 32 / square.shape[-1]), order=order, prefilter=False,
        grid_mode=True, mode="grid-constant",
    )[:, :32, :32]  # fmt: skip
    assert _same_as_zoom(resample_slices(slices, 32, order=order), expected, order)


def test_slices_with_too_little_foreground_are_the_ones_left_out() -> None:
    masks = np.zeros((5, 10, 10), bool)
    masks[1, :2, :2] = True  # 4 pixels: a cap
    masks[2, :, :] = True  # 100: the largest
    masks[3, :5, :5] = True  # 25: exactly a quarter
    masks[4, :5, :4] = True  # 20
    assert enough_foreground(masks).tolist() == [False, False, True, True, False]
    assert enough_foreground(masks, 0.0).tolist() == [True] * 5  # 0: every slice, even an empty one
    assert enough_foreground(np.zeros((2, 4, 4), bool), 0.25).tolist() == [False, False]
