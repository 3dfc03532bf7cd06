"""Training corruptions (coarse noise, foreign patches, local warps), the focused loss and the U-Net."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from oncostruct_reconstruction.model.network import Dissimilarity, NetworkConfig, ReconstructionNet
from oncostruct_reconstruction.model.training import (
    CLEAN_FRACTION,
    PRESETS,
    TrainConfig,
    corrupt,
    corrupt_batch,
    paste_patches,
    reconstruction_loss,
    warp_locally,
)


def _brains(n: int = 8, size: int = 48) -> torch.Tensor:
    """Discs with stripes: foreground in the middle, structure to move around, black background."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((rows - size / 2 + 0.5) ** 2 + (cols - size / 2 + 0.5) ** 2) < (size * 0.4) ** 2
    images = []
    for index in range(n):
        stripes = 0.5 + 0.3 * torch.sin((rows + 2 * cols + 3 * index).float() / (2 + index % 3))
        images.append(torch.where(disc, stripes, torch.zeros(())).float())
    return torch.stack(images).unsqueeze(1)


def _generator(seed: int = 0) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def test_patch_changes_only_its_region_and_takes_another_slices_tissue() -> None:
    batch = _brains()
    out, weight = paste_patches(batch, _generator())
    outside = weight == 0
    assert torch.equal(out[outside], batch[outside])
    assert (weight > 0).flatten(1).any(dim=1).all()  # every slice got a patch
    assert float(weight.max()) <= 1.0
    inside = weight > 0.5
    assert float((out - batch).abs()[inside].mean()) > 0.05


def test_warp_moves_tissue_inside_its_region_only() -> None:
    batch = _brains()
    out, region = warp_locally(batch, _generator(1))
    assert torch.allclose(out[region == 0], batch[region == 0], atol=1e-5)
    moved = ((out - batch).abs() * region).flatten(1).amax(dim=1)
    assert (moved > 0.05).sum() >= 6  # a push or pull visibly moves the stripes in nearly every slice


def test_corrupt_batch_marks_what_it_changed_and_leaves_clean_slices() -> None:
    batch = _brains(64)
    config = dataclasses.replace(TrainConfig(), denoise=0.2, corruptions=("noise", "patch", "warp"))
    inputs, region = corrupt_batch(batch, _generator(2), config)
    changed = (inputs - batch).abs().flatten(1).amax(dim=1) > 1e-6
    marked = region.flatten(1).amax(dim=1) > 0
    assert torch.equal(changed & ~marked, torch.zeros_like(changed))  # nothing changed outside a marked region
    clean = (~marked).float().mean()
    assert 0.05 < float(clean) < 0.45  # about CLEAN_FRACTION
    assert pytest.approx(0.2) == CLEAN_FRACTION
    again, _ = corrupt_batch(batch, _generator(2), config)
    assert torch.equal(inputs, again)  # seeded


def test_noise_only_config_is_the_earlier_training_input() -> None:
    """Presets trained with coarse noise only keep their exact inputs (their models stay reproducible)."""
    batch = _brains()
    config = dataclasses.replace(TrainConfig(), denoise=0.2)
    inputs, region = corrupt_batch(batch, _generator(3), config)
    assert torch.equal(inputs, corrupt(batch, _generator(3), 0.2))
    assert torch.equal(region > 0, (region > 0) & (batch > 0.01))


def test_focus_weights_the_corrupted_region() -> None:
    torch.manual_seed(0)
    net = ReconstructionNet(NetworkConfig(kind="ae", size=48, base_channels=4, levels=2, latent_channels=4)).eval()
    ssim = Dissimilarity(PRESETS["ci"].dissimilarity)
    batch = _brains(4)
    plain = dataclasses.replace(TrainConfig(), focus=0.0)
    focused = dataclasses.replace(TrainConfig(), focus=10.0)
    none = torch.zeros_like(batch)
    with torch.no_grad():
        base, _ = reconstruction_loss(net, ssim, batch, plain)
        same, _ = reconstruction_loss(net, ssim, batch, focused, batch, none)
        assert float(same) == pytest.approx(float(base), rel=1e-5)  # no region: the plain loss
        reconstruction = net.reconstruct(batch)
        error = (reconstruction - batch).pow(2)
        worst = (error >= error.flatten(1).quantile(0.9, dim=1).view(-1, 1, 1, 1)).float()
        best = (error <= error.flatten(1).quantile(0.1, dim=1).view(-1, 1, 1, 1)).float()
        on_worst, _ = reconstruction_loss(net, ssim, batch, focused, batch, worst)
        on_best, _ = reconstruction_loss(net, ssim, batch, focused, batch, best)
    assert float(on_worst) > float(base) > float(on_best)


@pytest.mark.parametrize("skip_from", [0, 1])
def test_unet_passes_encoder_levels_to_the_decoder(skip_from: int) -> None:
    config = NetworkConfig(kind="dae", size=32, base_channels=4, levels=2, latent_channels=4, skip_from=skip_from)
    torch.manual_seed(0)
    net = ReconstructionNet(config).eval()
    plain = ReconstructionNet(dataclasses.replace(config, kind="ae")).eval()
    assert sum(p.numel() for p in net.parameters()) > sum(p.numel() for p in plain.parameters())
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        reconstruction, mean, log_var = net(image)
        assert log_var is None
        assert reconstruction.shape == image.shape
        assert mean.shape == (2, 4, 8, 8)
        # The decoder sees more than the latent grid: the same latent with other skips gives another image.
        features = net._levels(image)
        other = [torch.zeros_like(f) for f in features[:-1]]
        assert not torch.allclose(net.decode(mean, features[:-1]), net.decode(mean, other))
        with pytest.raises(ValueError, match="levels"):
            net.decode(mean)


def test_corruption_head_learns_where_inputs_were_corrupted() -> None:
    """150 steps on striped discs: the head's probability is higher inside corrupted regions
    than in clean tissue, and it is trained by the head's loss (its part is logged)."""
    torch.manual_seed(0)
    network = NetworkConfig(kind="dae", size=48, base_channels=8, levels=2, latent_channels=4, skip_from=1,
                            corruption_head=True)  # fmt: skip
    net = ReconstructionNet(network)
    ssim = Dissimilarity(PRESETS["ci"].dissimilarity)
    config = dataclasses.replace(TrainConfig(), denoise=0.2, corruptions=("noise", "patch", "warp"), focus=3.0)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    generator = _generator(5)
    batch = _brains(16)
    first = None
    for _ in range(150):
        inputs, region = corrupt_batch(batch, generator, config)
        loss, parts = reconstruction_loss(net, ssim, batch, config, inputs, region)
        first = parts["head"] if first is None else first
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    assert parts["head"] < 0.5 * first
    net.eval()
    inputs, region = corrupt_batch(batch, _generator(99), config)
    with torch.no_grad():
        _, _, logits = net.analyse(inputs)
    assert logits is not None
    probability = torch.sigmoid(logits)
    tissue = batch > 0.01
    inside = probability[(region > 0.5) & tissue]
    outside = probability[(region == 0) & tissue]
    assert float(inside.mean()) > 3 * float(outside.mean())
    assert ReconstructionNet(dataclasses.replace(network, corruption_head=False)).analyse(inputs)[2] is None
