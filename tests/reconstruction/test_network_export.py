"""The networks, the served graph, ONNX export against PyTorch, and the model repository."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from oncostruct_reconstruction.model.export import export_onnx
from oncostruct_reconstruction.model.inference import OnnxAnomalyModel
from oncostruct_reconstruction.model.network import AnomalyGraph, Dissimilarity, NetworkConfig, ReconstructionNet
from oncostruct_reconstruction.model.preprocess import MrScaling
from oncostruct_reconstruction.model.repository import (
    CONFIG_FILE,
    INPUT_NAME,
    MAP_NAME,
    RECONSTRUCTION_NAME,
    ServingConfig,
    config_pbtxt,
    read_version_parameters,
    write_model_repository,
)
from oncostruct_reconstruction.model.scoring import DissimilarityConfig, dissimilarity_map
from oncostruct_reconstruction.model.training import calibrate_feature_scales

CONFIG = NetworkConfig(size=32, base_channels=4, levels=2, latent_channels=4)
DISSIMILARITY = DissimilarityConfig(ssim_radius=3, smooth_sigma=1.0, smooth_radius=3)


@pytest.fixture(scope="module", params=["vae", "dae"])
def net(request: pytest.FixtureRequest) -> ReconstructionNet:
    torch.manual_seed(0)
    model = ReconstructionNet(dataclasses.replace(CONFIG, kind=request.param))
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("kind", ["vae", "ae", "dae"])
def test_network_shapes_and_range(kind: str) -> None:
    model = ReconstructionNet(NetworkConfig(kind=kind, size=32, base_channels=4, levels=2, latent_channels=4))  # type: ignore[arg-type]
    reconstruction, mean, log_var = model(torch.rand(3, 1, 32, 32))
    assert reconstruction.shape == (3, 1, 32, 32)
    assert mean.shape == (3, 4, 8, 8)
    assert (log_var is None) == (kind != "vae")
    assert float(reconstruction.detach().min()) >= 0.0
    assert float(reconstruction.detach().max()) <= 1.0


def test_size_must_fit_the_levels() -> None:
    with pytest.raises(ValueError, match="multiple"):
        ReconstructionNet(NetworkConfig(size=30, levels=2))


def test_torch_map_equals_numpy_map() -> None:
    rng = np.random.default_rng(4)
    image = rng.random((3, 1, 32, 32), dtype=np.float32)
    reconstruction = np.clip(image + rng.normal(0, 0.1, image.shape).astype(np.float32), 0, 1)
    expected = dissimilarity_map(image, reconstruction, DISSIMILARITY)
    got = Dissimilarity(DISSIMILARITY)(torch.from_numpy(image), torch.from_numpy(reconstruction)).numpy()
    assert np.abs(got - expected).max() < 1e-5


def test_onnx_matches_pytorch_at_any_batch_size(net: ReconstructionNet, tmp_path: Path) -> None:
    path = export_onnx(net, DISSIMILARITY, tmp_path / "model.onnx", metadata={"seed": 0})
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    assert [o.name for o in model.graph.output] == [MAP_NAME, RECONSTRUCTION_NAME]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = OnnxAnomalyModel(path)
    assert session.metadata["network"]["size"] == 32
    assert session.metadata["seed"] == 0
    graph = AnomalyGraph(net, DISSIMILARITY).eval()
    for batch in (1, 5):
        images = torch.rand(batch, 1, 32, 32)
        with torch.no_grad():
            expected_map, expected_reconstruction = graph(images)
        got_map, got_reconstruction = session.run(images.numpy(), batch_size=batch)
        assert np.abs(got_reconstruction - expected_reconstruction.numpy()).max() < 1e-5
        assert np.abs(got_map - expected_map.numpy()).max() < 1e-5


def test_feature_level_term_is_calibrated_exported_and_adds_to_the_pixel_map(
    net: ReconstructionNet, tmp_path: Path
) -> None:
    normals = torch.rand(6, 1, 32, 32)
    weighted = dataclasses.replace(DISSIMILARITY, feature_weight=0.5)
    config = calibrate_feature_scales(net, normals.numpy(), weighted)
    assert len(config.feature_scales) == CONFIG.levels + 1  # the stem and each level
    assert calibrate_feature_scales(net, normals.numpy(), DISSIMILARITY) == DISSIMILARITY  # weight 0: unchanged
    # On the calibration slices every level's 99th percentile, divided by its scale, is the pixel map's.
    dissimilarity = Dissimilarity(config)
    with torch.no_grad():
        reconstruction, features = net.reconstruct_with_features(normals)
        pixel = dissimilarity(normals, reconstruction)
        levels = dissimilarity.feature_levels(features, net.features(reconstruction))
    for level, scale in zip(levels, config.feature_scales, strict=True):
        assert float(torch.quantile(level.flatten(), 0.99)) / scale == pytest.approx(
            float(torch.quantile(pixel.flatten(), 0.99)), rel=1e-4
        )
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        plain_map, _ = AnomalyGraph(net, DISSIMILARITY).eval()(images)
        feature_map, _ = AnomalyGraph(net, config).eval()(images)
    assert float((feature_map - plain_map).min()) >= 0.0
    assert float((feature_map - plain_map).mean()) > 0.01 * float(plain_map.mean())
    path = export_onnx(net, config, tmp_path / "features.onnx")
    exported = OnnxAnomalyModel(path)
    assert tuple(exported.metadata["dissimilarity"]["feature_scales"]) == config.feature_scales
    got_map, _ = exported.run(images.numpy())
    assert np.abs(got_map - feature_map.numpy()).max() < 1e-5


def test_corruption_head_adds_its_smoothed_probability_and_is_exported(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = ReconstructionNet(dataclasses.replace(CONFIG, kind="dae", skip_from=1, corruption_head=True)).eval()
    images = torch.rand(3, 1, 32, 32)
    weighted = dataclasses.replace(DISSIMILARITY, head_weight=0.5)
    with torch.no_grad():
        reconstruction, _, logits = net.analyse(images)
        assert logits is not None
        assert logits.shape == images.shape
        assert torch.equal(reconstruction, net.reconstruct(images))  # the head leaves the image alone
        plain_map, _ = AnomalyGraph(net, DISSIMILARITY).eval()(images)
        head_map, _ = AnomalyGraph(net, weighted).eval()(images)
        smoothed = Dissimilarity(weighted).head_map(logits)
    assert torch.allclose(head_map - plain_map, 0.5 * smoothed, atol=1e-6)
    assert float(smoothed.min()) > 0.0
    exported = OnnxAnomalyModel(export_onnx(net, weighted, tmp_path / "head.onnx"))
    assert exported.metadata["network"]["corruption_head"] is True
    got_map, got_reconstruction = exported.run(images.numpy())
    assert np.abs(got_map - head_map.numpy()).max() < 1e-5
    assert np.abs(got_reconstruction - reconstruction.numpy()).max() < 1e-5


def test_feature_term_averages_only_the_chosen_levels(net: ReconstructionNet) -> None:
    normals = torch.rand(6, 1, 32, 32)
    config = calibrate_feature_scales(net, normals.numpy(), dataclasses.replace(DISSIMILARITY, feature_weight=1.0))
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        reconstruction, features = net.reconstruct_with_features(images)
        again = net.features(reconstruction)
        maps = {
            chosen: Dissimilarity(dataclasses.replace(config, feature_levels=chosen)).feature_map(
                features, again, (32, 32)
            )
            for chosen in [(), (0,), (1,), (0, 1), (0, 1, 2)]
        }
    assert torch.allclose(maps[(0, 1)], (maps[(0,)] + maps[(1,)]) / 2, atol=1e-6)
    assert torch.allclose(maps[()], maps[(0, 1, 2)], atol=1e-6)  # empty: every level
    assert not torch.allclose(maps[(0,)], maps[(1,)])
    with pytest.raises(ValueError, match="feature level 5"), torch.no_grad():
        Dissimilarity(dataclasses.replace(config, feature_levels=(0, 5))).feature_map(features, again, (32, 32))


def test_feature_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="feature_weight"):
        DissimilarityConfig(feature_weight=-1.0)
    with pytest.raises(ValueError, match="feature_scales"):
        DissimilarityConfig(feature_weight=1.0, feature_scales=(1.0, 0.0))
    with pytest.raises(ValueError, match="head_weight"):
        DissimilarityConfig(head_weight=-0.1)
    for levels in [(0, 0), (-1,)]:
        with pytest.raises(ValueError, match="feature_levels"):
            DissimilarityConfig(feature_levels=levels)
    graph = AnomalyGraph(
        ReconstructionNet(CONFIG).eval(), DissimilarityConfig(feature_weight=1.0, feature_scales=(1.0,))
    )
    with pytest.raises(ValueError, match="3 encoder levels but 1 feature scales"), torch.no_grad():
        graph(torch.rand(1, 1, 32, 32))


def test_each_version_keeps_its_calibration_in_the_shared_config(tmp_path: Path) -> None:
    onnx_file = tmp_path / "exported.onnx"
    onnx_file.write_bytes(b"onnx")
    repository = tmp_path / "repo"
    first = ServingConfig(name="m", size=32, anomaly_threshold=0.25, mr_scaling=MrScaling((5.0, 95.0), (0.2, 0.75)))
    write_model_repository(repository, onnx_file, first, 3)
    second = ServingConfig(name="m", size=32, anomaly_threshold=0.4, mr_scaling=MrScaling((1.0, 99.0), (0.0, 1.0)))
    folder = write_model_repository(repository, onnx_file, second, 4)
    config = (folder / CONFIG_FILE).read_text()
    assert read_version_parameters(config, ["3", "4"]) == {
        "3": {"anomaly_threshold": "0.25", "mr_scaling": "5,95:0.2,0.75"},
        "4": {"anomaly_threshold": "0.4", "mr_scaling": "1,99:0,1"},
    }
    assert 'parameters { key: "anomaly_threshold" value: { string_value: "0.4" } }' in config  # the newest
    assert "version_policy: { all: { } }" in config
    # Writing version 3 again replaces its own values only.
    write_model_repository(repository, onnx_file, dataclasses.replace(first, anomaly_threshold=0.3), 3)
    again = read_version_parameters((folder / CONFIG_FILE).read_text(), ["3", "4"])
    assert (again["3"]["anomaly_threshold"], again["4"]["anomaly_threshold"]) == ("0.3", "0.4")
    with pytest.raises(ValueError, match=r"takes 32² slices .* a 64² model needs another model name"):
        write_model_repository(repository, onnx_file, dataclasses.replace(second, size=64), 5)
    assert not (folder / "5").exists()


def test_a_config_from_before_versioned_keys_belongs_to_its_newest_version() -> None:
    text = (
        'parameters { key: "anomaly_threshold" value: { string_value: "0.18" } }\n'
        'parameters { key: "mr_scaling" value: { string_value: "5,95:0.2,0.75" } }\n'
    )
    assert read_version_parameters(text, ["2", "10"]) == {
        "10": {"anomaly_threshold": "0.18", "mr_scaling": "5,95:0.2,0.75"}
    }
    assert read_version_parameters(text, []) == {}


def test_rewriting_the_version_a_legacy_config_describes_does_not_give_its_values_to_another(tmp_path: Path) -> None:
    onnx_file = tmp_path / "exported.onnx"
    onnx_file.write_bytes(b"onnx")
    folder = tmp_path / "repo" / "m"
    for version in ("2", "3"):
        (folder / version).mkdir(parents=True)
    legacy = ServingConfig(name="m", size=32, anomaly_threshold=0.18)
    (folder / CONFIG_FILE).write_text(config_pbtxt(legacy))  # plain keys only: version 3's
    write_model_repository(tmp_path / "repo", onnx_file, dataclasses.replace(legacy, anomaly_threshold=0.2), 3)
    assert read_version_parameters((folder / CONFIG_FILE).read_text(), ["2", "3"]) == {
        "3": {"anomaly_threshold": "0.2"}
    }


def test_model_repository_layout(tmp_path: Path) -> None:
    onnx_file = tmp_path / "exported.onnx"
    onnx_file.write_bytes(b"onnx")
    folder = write_model_repository(
        tmp_path / "repo", onnx_file, ServingConfig(name="m", size=32, max_batch_size=16), 3
    )
    assert (folder / "3" / "model.onnx").read_bytes() == b"onnx"
    config = (folder / CONFIG_FILE).read_text()
    assert 'name: "m"' in config
    assert "max_batch_size: 16" in config
    assert "dims: [ 1, 32, 32 ]" in config
    assert "preferred_batch_size: [ 16 ]" in config  # 32 is above max_batch_size: dropped
    assert "KIND_GPU" in config
    assert 'backend: "onnxruntime"' in config
