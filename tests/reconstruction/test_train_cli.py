"""The training command line: from a folder of NIfTI files to a Triton model version."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from oncostruct_reconstruction.model.preprocess import LEGACY_MR_SCALING, MrScaling
from oncostruct_reconstruction.model.repository import CONFIG_FILE, ONNX_FILE
from oncostruct_reconstruction.model.training import PRESETS, config_from_dict, load_checkpoint
from oncostruct_reconstruction.model.volumes import mni152_volume
from oncostruct_reconstruction.train import main


@pytest.fixture(scope="module")
def normal_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2 mm MNI152 template written as a NIfTI file (RAS affine), as a user's folder would hold."""
    folder = tmp_path_factory.mktemp("normals")
    voxels = mni152_volume(resolution=2).voxels  # (z, y, x) display order → back to RAS (x, y, z)
    ras = np.transpose(np.flip(voxels, axis=1), (2, 1, 0))
    nib.save(nib.Nifti1Image(ras, np.diag([2.0, 2.0, 2.0, 1.0])), folder / "template.nii.gz")
    return folder


def _train(folder: Path, out: Path, seed: int, *extra: str) -> list[dict[str, float]]:
    status = main(
        ["--data", str(folder), "--preset", "ci", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4",
         "--seed", str(seed), "--out", str(out), "--repository", str(out / "repo"), "--model-version", "2", *extra]
    )  # fmt: skip
    assert status == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_from_nifti_folder_writes_checkpoint_log_and_model_version(normal_folder: Path, tmp_path: Path) -> None:
    log = _train(normal_folder, tmp_path / "a", seed=7)
    assert [record["epoch"] for record in log] == [1, 2]
    assert {"loss", "mse", "ssim", "kl", "val_mse", "val_ssim"} <= set(log[0])
    assert (tmp_path / "a" / "checkpoint.pt").exists()
    model_dir = tmp_path / "a" / "repo" / "nearest_normal"
    assert (model_dir / "2" / ONNX_FILE).stat().st_size > 10_000
    config_text = (model_dir / CONFIG_FILE).read_text()
    assert "dims: [ 1, 64, 64 ]" in config_text
    assert 'key: "mr_scaling" value: { string_value: "5,95:0.2,0.75" }' in config_text  # served as trained
    record = json.loads((tmp_path / "a" / "training_record.json").read_text())
    # Both thresholds calibrated on the held-out slices, served under the version's own keys too.
    assert 0 < record["residual_threshold"] < 1
    for key in ("anomaly_threshold", "residual_threshold"):
        assert f'key: "{key}@2" value: {{ string_value: "{record[key]:.6g}" }}' in config_text
    assert record["seed"] == 7
    assert record["training_slices"] > 0
    assert "--seed 7" in record["command"]
    assert record["config"]["network"]["kind"] == "vae"
    assert record["config"]["corruptions"] == list(PRESETS["ci"].corruptions) == ["noise"]


def test_kind_corruptions_focus_and_skips_from_the_command_line(normal_folder: Path, tmp_path: Path) -> None:
    log = _train(normal_folder, tmp_path / "unet", 1, "--kind", "dae", "--corruptions", "patch, warp", "--focus", "2",
                 "--skip-from", "1", "--mr-scaling", "2,98:0.1,0.8", "--feature-weight", "0.5")  # fmt: skip
    assert "kl" not in log[0]  # no latent distribution in the U-Net
    config = json.loads((tmp_path / "unet" / "training_record.json").read_text())["config"]
    assert config["mr_scaling"] == {"percentiles": [2.0, 98.0], "targets": [0.1, 0.8]}
    assert config["dissimilarity"]["feature_weight"] == 0.5
    assert len(config["dissimilarity"]["feature_scales"]) == config["network"]["levels"] + 1  # calibrated
    assert 'string_value: "2,98:0.1,0.8"' in (tmp_path / "unet" / "repo" / "nearest_normal" / CONFIG_FILE).read_text()
    _, loaded = load_checkpoint(tmp_path / "unet" / "checkpoint.pt")
    assert loaded.mr_scaling == MrScaling((2.0, 98.0), (0.1, 0.8))
    assert config["network"]["kind"] == "dae"
    assert config["corruptions"] == ["patch", "warp"]
    assert config["focus"] == 2.0
    assert config["network"]["skip_from"] == 1


def test_corruption_head_from_the_command_line(normal_folder: Path, tmp_path: Path) -> None:
    log = _train(normal_folder, tmp_path / "head", 1, "--kind", "dae", "--corruptions", "patch,warp",
                 "--corruption-head", "--head-loss", "0.5", "--head-weight", "0.2", "--feature-weight", "1",
                 "--feature-levels", "0,1")  # fmt: skip
    assert all(record["head"] > 0 for record in log)  # the head's loss is trained and logged
    config = json.loads((tmp_path / "head" / "training_record.json").read_text())["config"]
    assert config["network"]["corruption_head"] is True
    assert config["head_loss"] == 0.5
    assert config["dissimilarity"]["head_weight"] == 0.2
    assert config["dissimilarity"]["feature_levels"] == [0, 1]
    net, _ = load_checkpoint(tmp_path / "head" / "checkpoint.pt")
    assert net.config.corruption_head


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--head-weight", "0.5"], "need --corruption-head"),
        (["--corruption-head", "--head-loss", "-1"], "must be 0 or more"),
        (["--feature-levels", "0,9"], "the network has levels 0 to 2"),
        (["--feature-levels", "0,x"], "--feature-levels: invalid literal"),
        (["--feature-levels", "1,1"], "feature_levels must be distinct"),
    ],
)
def test_head_options_are_checked(
    normal_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["--data", str(normal_folder), "--preset", "ci", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_malformed_mr_scaling_is_refused(
    normal_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["--data", str(normal_folder), "--preset", "ci", "--mr-scaling", "95,5:0,1", "--out", str(tmp_path)])
    assert status == 2
    assert "--mr-scaling: MR scaling percentiles must satisfy" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("corruptions", ["noise,scratch", ","])
def test_unknown_corruptions_are_refused(
    normal_folder: Path, tmp_path: Path, corruptions: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["--data", str(normal_folder), "--preset", "ci", "--corruptions", corruptions, "--out", str(tmp_path)]
    )
    assert status == 2
    assert "known: noise, patch, warp" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint.pt").exists()


def test_training_is_reproducible_with_a_seed(normal_folder: Path, tmp_path: Path) -> None:
    first = _train(normal_folder, tmp_path / "a", seed=3)
    again = _train(normal_folder, tmp_path / "b", seed=3)
    other = _train(normal_folder, tmp_path / "c", seed=4)
    assert first[-1]["loss"] == pytest.approx(again[-1]["loss"], rel=1e-5)
    assert first[-1]["loss"] != pytest.approx(other[-1]["loss"], rel=1e-5)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    assert main(["--data", str(tmp_path), "--preset", "ci", "--out", str(tmp_path / "out")]) == 2


def test_a_configuration_from_before_mr_scaling_reads_as_the_legacy_scaling() -> None:
    old = {key: value for key, value in PRESETS["ci"].as_dict().items() if key != "mr_scaling"}
    assert config_from_dict(old).mr_scaling == LEGACY_MR_SCALING
    assert config_from_dict(PRESETS["ci"].as_dict()).mr_scaling == MrScaling()
