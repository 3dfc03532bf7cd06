"""Pure parts of a job: back to the source grid, threshold calibration, regions, and repeatable DICOM outputs."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless
from scipy import ndimage  # type: ignore[import-untyped]

from oncostruct_reconstruction.model.preprocess import resample_slices, restore_slices
from oncostruct_reconstruction.model.regions import find_regions, growth_slices, proposal_metrics
from oncostruct_reconstruction.model.scoring import calibrate_threshold
from oncostruct_reconstruction.outputs import ResultIdentity, parametric_map, segmentation
from tests.imaging.factory import to_bytes
from tests.reconstruction.brain_series import brain_series


@pytest.mark.parametrize(("rows", "columns", "size"), [(117, 99, 128), (64, 80, 32), (50, 50, 50)])
def test_restore_undoes_resample_on_the_source_grid(rows: int, columns: int, size: int) -> None:
    y, x = np.mgrid[:rows, :columns].astype(np.float32)
    smooth = np.stack([np.sin(y / 9) + np.cos(x / 7), np.cos(y / 11) * np.sin(x / 5)])
    back = restore_slices(resample_slices(smooth, size)[:, :, :], rows, columns)
    assert back.shape == (2, rows, columns)
    interior = (slice(None), slice(3, -3), slice(3, -3))
    assert np.abs(back - smooth)[interior].max() < 0.15


def test_restore_refuses_a_non_square_stack() -> None:
    with pytest.raises(ValueError, match="size, size"):
        restore_slices(np.zeros((2, 8, 9), np.float32), 8, 9)


def test_calibrated_threshold_bounds_the_false_positive_rate() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((10, 32, 32), dtype=np.float32)
    masks = np.zeros((10, 32, 32), bool)
    masks[:, 8:24, 8:24] = True
    maps[~masks] = 5.0  # background never counts
    threshold = calibrate_threshold(maps, masks, quantile=0.99)
    assert np.mean(maps[masks] > threshold) == pytest.approx(0.01, abs=0.002)
    with pytest.raises(ValueError, match="no foreground"):
        calibrate_threshold(maps, np.zeros_like(masks))


def test_regions_are_connected_sized_and_ordered_by_peak() -> None:
    anomaly = np.zeros((8, 40, 40), np.float32)
    anomaly[2:5, 5:10, 5:10] = 0.6  # 75 voxels, peak 0.6
    anomaly[3, 20:30, 20:30] = 0.9  # 100 voxels, peak 0.9
    anomaly[6, 35, 35] = 1.0  # one voxel: noise
    anomaly[0, 0:5, 30:35] = 0.8  # outside the foreground
    foreground = np.ones_like(anomaly, dtype=bool)
    foreground[0] = False
    regions = find_regions(anomaly, foreground, 0.5, spacing_mm=(2.0, 1.0, 1.0), min_volume_mm3=10.0)
    assert [r.peak for r in regions] == pytest.approx([0.9, 0.6])
    assert regions[0].box == (3, 4, 20, 30, 20, 30)
    assert regions[0].voxels == 100
    assert regions[0].volume_mm3 == 200.0
    assert regions[1].mask.shape == (3, 5, 5)
    assert find_regions(anomaly, foreground, 0.5, max_regions=1)[0].peak == pytest.approx(0.9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regions_equal_labelling_the_whole_volume(seed: int) -> None:
    """Labelled inside the candidates' box only: the same components, boxes and values as labelling it all."""
    rng = np.random.default_rng(seed)
    anomaly = ndimage.gaussian_filter(rng.random((12, 48, 40)), 2.0).astype(np.float32)
    foreground = np.zeros(anomaly.shape, bool)
    foreground[1:11, 5:45, 4:36] = True
    threshold = float(np.quantile(anomaly[foreground], 0.9))
    labels, _ = ndimage.label((anomaly > threshold) & foreground, structure=np.ones((3, 3, 3), bool))
    expected = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        inside = labels[where] == index
        if inside.sum() >= 5:
            box = tuple(v for part in where for v in (part.start, part.stop))
            expected.append((box, int(inside.sum()), float(anomaly[where][inside].max())))
    got = find_regions(anomaly, foreground, threshold, min_volume_mm3=5.0, max_regions=1000)
    assert len(got) == len(expected) > 1
    assert sorted((r.box, r.voxels, r.peak) for r in got) == sorted(expected)
    assert find_regions(anomaly, foreground, float(anomaly.max()) + 1) == []


def test_a_region_extends_to_a_fraction_of_its_own_peak() -> None:
    # Two smooth findings, one faint and one four times stronger: above a fixed threshold the strong one
    # spreads further; at a fraction of each one's peak both keep about their own size.
    z, y, x = np.indices((30, 60, 60))
    anomaly = np.zeros((30, 60, 60), np.float32)
    for centre, height in (((15, 15, 15), 0.3), ((15, 45, 45), 1.2)):
        distance2 = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2
        anomaly += (height * np.exp(-distance2 / (2 * 3.0**2))).astype(np.float32)
    foreground = np.ones(anomaly.shape, bool)
    plain = find_regions(anomaly, foreground, 0.1, min_volume_mm3=1.0)
    assert plain[0].voxels > 2.5 * plain[1].voxels  # the strong one blooms
    relative = find_regions(anomaly, foreground, 0.1, min_volume_mm3=1.0, peak_fraction=0.3)
    assert [r.peak for r in relative] == pytest.approx([r.peak for r in plain])
    assert relative[1].voxels == plain[1].voxels  # the faint one: 0.3 × peak is below the threshold
    assert relative[0].voxels == pytest.approx(relative[1].voxels, rel=0.25)
    assert relative[0].mean > plain[0].mean
    with pytest.raises(ValueError, match="peak_fraction"):
        find_regions(anomaly, foreground, 0.1, peak_fraction=1.0)


def test_hysteresis_takes_in_the_connected_part_between_the_two_levels_only() -> None:
    # A flat lesion whose map exceeds the threshold at its rim only, a faint patch touching it, and a faint
    # patch apart (between the levels too, but no voxel of it reaches the threshold).
    anomaly = np.zeros((3, 40, 40), np.float32)
    anomaly[1, 10:20, 10:20] = 0.35  # inside: above half the threshold of 0.5
    anomaly[1, 10:20, 10] = anomaly[1, 10:20, 19] = 0.8  # the rim, above the threshold
    anomaly[1, 20:23, 12:16] = 0.3  # touching the lesion
    anomaly[1, 30:36, 30:36] = 0.4  # apart
    foreground = np.ones(anomaly.shape, bool)
    plain = find_regions(anomaly, foreground, 0.5, min_volume_mm3=1.0)
    assert [region.voxels for region in plain] == [10, 10]  # the threshold alone: two rim lines, apart
    (grown,) = find_regions(anomaly, foreground, 0.5, min_volume_mm3=1.0, low_fraction=0.5)
    assert grown.voxels == 100 + 12
    assert grown.box == (1, 2, 10, 23, 10, 20)
    assert grown.peak == pytest.approx(0.8)
    # Hysteresis never finds anything the threshold did not: a map below it everywhere gives no region.
    assert find_regions(np.minimum(anomaly, 0.45), foreground, 0.5, min_volume_mm3=1.0, low_fraction=0.1) == []
    with pytest.raises(ValueError, match="low_fraction"):
        find_regions(anomaly, foreground, 0.5, low_fraction=0.0)


def test_growth_gated_by_the_residual_follows_the_image_not_the_maps_halo() -> None:
    # A smooth map around a flat finding: above the threshold on part of it, its halo above half the
    # threshold far beyond it. The residual marks the finding itself (and a speck apart from it).
    z, y, x = np.indices((5, 60, 60))
    finding = (z == 2) & ((y - 30) ** 2 + (x - 30) ** 2 <= 8**2)
    anomaly = (0.9 * np.exp(-((y - 30) ** 2 + (x - 30) ** 2) / (2 * 6.0**2)) * (z == 2)).astype(np.float32)
    residual = finding.copy()
    residual[2, 5, 5] = True
    foreground = np.ones(anomaly.shape, bool)
    (plain,) = find_regions(anomaly, foreground, 0.5, min_volume_mm3=4.0)
    (halo,) = find_regions(anomaly, foreground, 0.5, min_volume_mm3=4.0, low_fraction=0.3)
    (gated,) = find_regions(anomaly, foreground, 0.5, min_volume_mm3=4.0, low_fraction=0.3, grow=residual)
    inside = {}
    for name, region in (("plain", plain), ("halo", halo), ("gated", gated)):
        z0, z1, y0, y1, x0, x1 = region.box
        on = int((region.mask & finding[z0:z1, y0:y1, x0:x1]).sum())
        inside[name] = (on / region.voxels, on / int(finding.sum()))  # precision, coverage
    # (precision, coverage): on it, but two thirds of it; all of it and as much beside; it and nothing else
    assert inside["plain"][0] > 0.99 > 0.7 > inside["plain"][1]
    assert inside["halo"][1] > 0.99 > 0.6 > inside["halo"][0]
    assert min(inside["gated"]) > 0.99
    # The peak-fraction trim spares what the residual marks: the finding stays whole.
    (trimmed,) = find_regions(
        anomaly, foreground, 0.5, min_volume_mm3=4.0, peak_fraction=0.9, low_fraction=0.3, grow=residual
    )
    assert trimmed.voxels == gated.voxels
    # A finding too small at the threshold does not grow into a proposal.
    assert find_regions(anomaly, foreground, 0.85, min_volume_mm3=40.0, low_fraction=0.1, grow=residual) == []
    with pytest.raises(ValueError, match="grow"):
        find_regions(anomaly, foreground, 0.5, low_fraction=0.5, grow=residual[:2])
    # No smallest size: a part between the levels that reaches no voxel above the threshold is still no region.
    apart = np.zeros((1, 8, 8), np.float32)
    apart[0, 1, 1], apart[0, 5, 5] = 0.6, 2.0
    assert [
        r.voxels for r in find_regions(apart, np.ones(apart.shape, bool), 1.0, min_volume_mm3=0.0, low_fraction=0.5)
    ] == [1]


def test_growth_slices_are_those_a_found_region_could_grow_over() -> None:
    maps = np.zeros((16, 20, 20), np.float32)
    maps[3:8, 5:10, 5:10] = 0.3  # between the levels on slices 3-7 …
    maps[5, 6:8, 6:8] = 0.9  # … reaching the threshold on slice 5
    maps[10:13, 5:10, 5:10] = 0.3  # between the levels only: nothing found there
    maps[14, 0:3, 0:3] = 0.9  # found, but outside the foreground
    foreground = np.ones(maps.shape, bool)
    foreground[14] = False
    assert growth_slices(maps, foreground, 0.5, 0.5).tolist() == [2, 3, 4, 5, 6, 7, 8]
    assert growth_slices(maps, foreground, 0.5, 0.5, margin=0).tolist() == [3, 4, 5, 6, 7]
    assert growth_slices(maps, foreground, 0.5, 1.0, margin=0).tolist() == [5]
    assert growth_slices(maps, foreground, 1.0, 0.5).size == 0  # a normal series: nothing to fetch


def test_proposal_metrics_score_the_operating_point_slice_by_slice() -> None:
    maps = np.zeros((3, 30, 30), np.float32)
    truth = np.zeros(maps.shape, bool)
    maps[0, 5:10, 5:10] = 0.9  # a normal slice with a false proposal
    truth[1, 10:20, 10:20] = True  # found, over twice its size: Dice 2·100 / (200 + 100)
    maps[1, 10:20, 10:30] = 0.9
    truth[2, 0:4, 0:4] = True  # missed
    masks = np.ones(maps.shape, bool)
    got = proposal_metrics(maps, truth, masks, threshold=0.5)
    assert got.detected == pytest.approx(0.5)
    assert got.dice == pytest.approx((2 * 100 / 300 + 0.0) / 2)
    assert got.false_per_slice == pytest.approx(1 / 3)
    assert proposal_metrics(maps, truth, masks, threshold=0.95).as_dict() == {
        "detected": 0.0,
        "dice": 0.0,
        "false_per_slice": 0.0,
    }
    with pytest.raises(ValueError, match="must match"):
        proposal_metrics(maps[:2], truth, masks, 0.5)
    # Grown where the residual says so: the missed finding's slice gets nothing (no seed there); the
    # found one's proposal spreads only over marked voxels above half the threshold.
    faint = maps.copy()
    faint[1, 20:25, 10:30] = 0.3
    grow = np.zeros(maps.shape, bool)
    grow[1, 20:25, 10:20] = True
    grown = proposal_metrics(faint, truth, masks, 0.5, grow, low_fraction=0.5)
    assert grown.dice == pytest.approx((2 * 100 / (250 + 100) + 0.0) / 2)
    with pytest.raises(ValueError, match="grow"):
        proposal_metrics(maps, truth, masks, 0.5, grow[:2])


def test_outputs_are_the_same_objects_when_a_job_runs_again() -> None:
    series = brain_series(slices=(40, 44), lesion=True)
    anomaly = np.zeros((4, int(series.datasets[0].Rows), int(series.datasets[0].Columns)), np.float32)
    anomaly[1:3, 30:40, 40:50] = 0.8
    identity = ResultIdentity(uuid.uuid4(), "nearest_normal", "1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    regions = find_regions(anomaly, np.ones(anomaly.shape, bool), 0.5)
    first = (parametric_map(series.datasets, anomaly, identity, 0.5), segmentation(series.datasets, regions, identity))
    second = (parametric_map(series.datasets, anomaly, identity, 0.5), segmentation(series.datasets, regions, identity))
    for one, two in zip(first, second, strict=True):
        assert one is not None
        assert two is not None
        assert one.SOPInstanceUID == two.SOPInstanceUID
        assert one.ContentDate == "20260102"
        assert one.PixelData == two.PixelData
        assert to_bytes(one) == to_bytes(two)  # byte for byte: storing it again is an idempotent STOW
    other = ResultIdentity(uuid.uuid4(), "nearest_normal", "1", identity.created_at)
    assert parametric_map(series.datasets, anomaly, other, 0.5).SOPInstanceUID != first[0].SOPInstanceUID
    assert segmentation(series.datasets, [], identity) is None


def test_the_parametric_map_is_lossless_jpeg_ls_and_maps_back_to_the_anomaly_values() -> None:
    series = brain_series(slices=(36, 48))
    rows, columns = int(series.datasets[0].Rows), int(series.datasets[0].Columns)
    rng = np.random.default_rng(3)
    anomaly = ndimage.gaussian_filter(rng.random((12, rows, columns), dtype=np.float32), 2.0) * 0.2
    anomaly[4:8, 20:40, 30:50] += 1.5
    identity = ResultIdentity(uuid.uuid4(), "nearest_normal", "2", datetime(2026, 1, 2, tzinfo=UTC))
    compressed = parametric_map(series.datasets, anomaly, identity, 0.5)
    plain = parametric_map(series.datasets, anomaly, identity, 0.5, encoding="none")
    assert compressed.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert plain.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    # Lossless: the same stored values after decoding, in a third of the bytes or less.
    decoded = pydicom.dcmread(io.BytesIO(to_bytes(compressed))).pixel_array
    assert np.array_equal(decoded, plain.pixel_array)
    assert len(to_bytes(compressed)) < len(to_bytes(plain)) / 3
    # Stored values × the Real World Value Mapping's slope give the map back within half a step.
    mapping = compressed.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    slope = float(mapping.RealWorldValueSlope)
    assert int(mapping.RealWorldValueLastValueMapped) == int(decoded.max()) == 4095
    # (highdicom orders frames along the slice normal: each frame's plane position names its source slice).
    by_position = {float(ds.ImagePositionPatient[2]): index for index, ds in enumerate(series.datasets)}
    frames = compressed.PerFrameFunctionalGroupsSequence
    order = [by_position[float(frame.PlanePositionSequence[0].ImagePositionPatient[2])] for frame in frames]
    assert sorted(order) == list(range(len(series.datasets)))
    assert np.abs(decoded * slope - anomaly[order]).max() <= slope / 2 + 1e-6
