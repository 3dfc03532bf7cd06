"""Training the reconstruction network on normal slices (torch; the ``[train]`` extra).

Fixed seeds, on-the-fly augmentation (small affine transforms, left-right
flips, intensity gamma and gain), SSIM + L2 reconstruction loss plus the KL
term for the VAE, a checkpoint after every epoch and a JSON-lines metrics log.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from .data import SliceSet
from .network import Dissimilarity, NetworkConfig, ReconstructionNet
from .preprocess import LEGACY_MR_SCALING, MrScaling
from .scoring import DissimilarityConfig

log = logging.getLogger("oncostruct.reconstruction.training")

CHECKPOINT_NAME = "checkpoint.pt"
CorruptionKind = Literal["noise", "patch", "warp"]
CORRUPTION_KINDS: tuple[CorruptionKind, ...] = get_args(CorruptionKind)
#: Fraction of training slices left uncorrupted when corruption is on.
CLEAN_FRACTION = 0.2
METRICS_NAME = "metrics.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes
    ----------
    epochs, steps_per_epoch, batch_size
        Length of training (an epoch is a fixed number of sampled batches:
        the slice set is small, augmentation makes every batch new).
    learning_rate
        Adam's initial rate (cosine decay to 5 % of it).
    ssim_weight, kl_weight
        Weights of ``1 − SSIM`` and of the KL term (per latent element, over
        pixels) beside the mean squared error.
    augment
        Apply augmentation to training batches.
    denoise
        Standard deviation of the coarse noise added to inputs (0: off); the
        target stays the clean slice, so the network learns to replace what
        is unlike normal anatomy instead of copying it (Kascenas et al. 2022).
    corruptions
        What is done to training inputs when ``denoise`` is on, one kind per
        slice chosen at random (a fifth of the slices stay clean):
        ``"noise"`` (the coarse noise), ``"patch"`` (tissue of another slice
        pasted in with a soft edge, after foreign patch interpolation, Tan et
        al. 2020) and ``"warp"`` (a local smooth displacement: mass effect).
        The U-Net (``dae``) needs all three: its skip connections would copy
        anything it was not taught to replace.
    focus
        Extra loss weight of corrupted pixels (see :func:`reconstruction_loss`).
    head_loss
        Weight of the corruption head's loss (binary cross-entropy against where the
        inputs were corrupted) for a network with ``corruption_head``.
    seed
        Seeds python, numpy and torch.
    device
        ``"cpu"`` or ``"cuda"``.
    threads
        Torch CPU threads (the development machine has two cores, shared).
    mr_scaling
        How MR training series are scaled; the model is served with the same
        (:class:`~oncostruct_reconstruction.model.preprocess.MrScaling`).
    """

    epochs: int = 20
    steps_per_epoch: int = 40
    batch_size: int = 16
    learning_rate: float = 2e-3
    ssim_weight: float = 1.0
    kl_weight: float = 0.005
    augment: bool = True
    denoise: float = 0.0
    corruptions: tuple[CorruptionKind, ...] = ("noise",)
    focus: float = 0.0
    head_loss: float = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int = 2
    network: NetworkConfig = field(default_factory=NetworkConfig)
    dissimilarity: DissimilarityConfig = field(default_factory=DissimilarityConfig)
    mr_scaling: MrScaling = field(default_factory=MrScaling)

    def as_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able values."""
        return asdict(self)


#: The denoising U-Net's corruptions: a warp for half of the corrupted slices (listed twice: drawn twice as
#: often), as displaced tissue is the hardest to learn to restore; coarse noise and foreign patches share the rest.
UNET_CORRUPTIONS: tuple[CorruptionKind, ...] = ("noise", "patch", "warp", "warp")
#: The U-Net's extra loss weight on corrupted pixels.
UNET_FOCUS = 3.0
#: The U-Net's feature-level term in the anomaly map (on the benchmark: pixel AUPRC 0.597 → 0.609,
#: slice AUROC 0.865 → 0.882 for the shipped model's training run).
UNET_FEATURE_WEIGHT = 1.0
#: The U-Net's finest skip: half resolution. Without the full-resolution skip the decoder cannot copy
#: single-pixel detail through (slice AUROC 0.853 → 0.882, pixel AUPRC 0.561 → 0.609 with the feature term).
UNET_SKIP_FROM = 1
#: The U-Net learns where its inputs were corrupted beside restoring them (a corruption head, loss weight 1,
#: not in the map): on the benchmark, slice AUROC 0.882 → 0.913 (local deformations 0.566 → 0.699) for seed 0;
#: seeds 1 and 2 of the same recipe reach 0.904 and 0.878.
UNET_CORRUPTION_HEAD = True
#: The feature-level term from the two finest levels (full and half resolution): with the coarser two as
#: well, pixel AUPRC was 0.540 instead of 0.599 at the same slice AUROC (0.913) on the shipped run.
UNET_FEATURE_LEVELS = (0, 1)

#: Named configurations: ``ci`` for tests, ``cpu`` for the shipped model, ``gpu`` for the full size (all the
#: residual VAE). :func:`unet_config` turns any of them into the denoising U-Net of the same size and length.
PRESETS: dict[str, TrainConfig] = {
    "ci": TrainConfig(
        epochs=10, steps_per_epoch=25, batch_size=16, kl_weight=0.005, denoise=0.2,
        network=NetworkConfig(size=64, base_channels=8, levels=2, latent_channels=8),
        dissimilarity=DissimilarityConfig(ssim_radius=3, smooth_sigma=1.0, smooth_radius=3),
    ),
    "cpu": TrainConfig(
        epochs=20, steps_per_epoch=40, batch_size=16, kl_weight=0.005, denoise=0.2,
        network=NetworkConfig(size=128, base_channels=16, levels=3, latent_channels=8),
    ),
    "gpu": TrainConfig(
        epochs=40, steps_per_epoch=100, batch_size=64, kl_weight=0.005, denoise=0.2, device="cuda",
        network=NetworkConfig(size=256, base_channels=32, levels=4, latent_channels=16),
        dissimilarity=DissimilarityConfig(smooth_sigma=2.0, smooth_radius=6),
    ),
}  # fmt: skip


def unet_config(config: TrainConfig) -> TrainConfig:
    """``config`` as the denoising U-Net: skips from half resolution down, all corruptions, focused loss,
    corruption head, feature term (the shipped model's recipe).

    The command line equivalent: ``--kind dae --corruptions noise,patch,warp,warp --focus 3 --skip-from 1
    --feature-weight 1 --feature-levels 0,1 --corruption-head``.
    """
    network = replace(config.network, kind="dae", skip_from=UNET_SKIP_FROM, corruption_head=UNET_CORRUPTION_HEAD)
    dissimilarity = replace(
        config.dissimilarity, feature_weight=UNET_FEATURE_WEIGHT, feature_levels=UNET_FEATURE_LEVELS, feature_scales=()
    )
    return replace(config, network=network, corruptions=UNET_CORRUPTIONS, focus=UNET_FOCUS, dissimilarity=dissimilarity)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for the augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def augment(batch: Tensor, generator: torch.Generator) -> Tensor:
    """Random small affine transform, left-right flip and intensity change of a ``(n, 1, h, w)`` batch.

    The ranges are what differs between patients and scanners after
    preprocessing (head position, size, contrast), not what differs between
    normal and abnormal: a lesion must stay unlike anything augmented.
    """
    n = batch.shape[0]

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-math.pi / 18, math.pi / 18)
    scale = uniform(0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    shift = torch.stack([uniform(-0.05, 0.05), uniform(-0.05, 0.05)], dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], dim=1), torch.stack([sin * flip, cos, shift[:, 1]], dim=1)], dim=1
    ).to(batch)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    moved = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = uniform(0.8, 1.25).to(batch).view(n, 1, 1, 1)
    gain = uniform(0.9, 1.1).to(batch).view(n, 1, 1, 1)
    return torch.clamp(moved.clamp(min=0.0) ** gamma * gain, 0.0, 1.0)


def corrupt(batch: Tensor, generator: torch.Generator, strength: float, cells: int = 16) -> Tensor:
    """Add coarse (low-resolution, upsampled) Gaussian noise inside the foreground of a batch."""
    return add_coarse_noise(batch, generator, strength, cells)[0]


def add_coarse_noise(
    batch: Tensor, generator: torch.Generator, strength: float, cells: int = 16
) -> tuple[Tensor, Tensor]:
    """:func:`corrupt`, and the ``(n, 1, h, w)`` weight of the changed region (1 where noised)."""
    n, _, height, width = batch.shape
    noise = torch.randn(n, 1, cells, cells, generator=generator).to(batch) * strength
    noise = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    # A random sub-region only, so that the network also sees clean tissue next to changed tissue.
    keep = F.interpolate(
        (torch.rand(n, 1, 4, 4, generator=generator) < 0.5).to(batch), size=(height, width), mode="nearest"
    )
    region = keep * (batch > 0.01)
    return torch.clamp(batch + noise * region, 0.0, 1.0), region


def _foreground_centres(batch: Tensor, generator: torch.Generator) -> Tensor:
    """One random foreground pixel per slice, in ``grid_sample`` coordinates ``(x, y)`` in [-1, 1]."""
    n, _, height, width = batch.shape
    weights = (batch[:, 0] > 0.05).reshape(n, -1).float().cpu() + 1e-6
    flat = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    rows, cols = (flat // width).float(), (flat % width).float()
    return torch.stack([(cols + 0.5) / width * 2 - 1, (rows + 0.5) / height * 2 - 1], dim=1).to(batch)


def _regions(batch: Tensor, generator: torch.Generator, radius: tuple[float, float]) -> tuple[Tensor, Tensor, Tensor]:
    """Random elliptical regions around foreground pixels.

    Returns the identity sampling grid ``(n, h, w, 2)``, each pixel's offset
    from its slice's centre ``(n, h, w, 2)`` and the squared normalised
    elliptical distance ``(n, 1, h, w)`` (< 1 inside).
    """
    n, _, height, width = batch.shape
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=batch.device)
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=batch.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(n, height, width, 2)
    offset = grid - _foreground_centres(batch, generator).view(n, 1, 1, 2)
    radii = (radius[0] + (radius[1] - radius[0]) * torch.rand(n, 2, generator=generator)).to(batch) * 2
    distance = (offset / radii.view(n, 1, 1, 2)).pow(2).sum(dim=-1).unsqueeze(1)
    return grid, offset, distance


def paste_patches(batch: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Paste a soft-edged region of another slice of the batch, moved elsewhere, into each slice.

    Returns the changed batch and the region's blending weight ``(n, 1, h, w)``.
    """
    n = batch.shape[0]
    grid, _, distance = _regions(batch, generator, (0.04, 0.16))
    shift = (0.15 + 0.45 * torch.rand(n, 2, generator=generator)) * torch.where(
        torch.rand(n, 2, generator=generator) < 0.5, -1.0, 1.0
    )
    donor = F.grid_sample(
        batch.roll(1, dims=0), grid + shift.to(batch).view(n, 1, 1, 2), padding_mode="zeros", align_corners=False
    )
    alpha = (0.5 + 0.5 * torch.rand(n, generator=generator)).to(batch).view(n, 1, 1, 1)
    weight = torch.clamp((1.0 - distance) * 4.0, 0.0, 1.0) * alpha
    return batch * (1.0 - weight) + donor * weight, weight


def warp_locally(batch: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Displace the tissue around a random point: radial push or pull plus a smooth random field.

    Returns the changed batch and the displaced region ``(n, 1, h, w)`` (1 inside).
    """
    n, _, height, width = batch.shape
    grid, offset, distance = _regions(batch, generator, (0.05, 0.15))
    window = torch.clamp(1.0 - distance, 0.0, 1.0).pow(2).squeeze(1).unsqueeze(-1)
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    radial = ((0.3 + 0.5 * torch.rand(n, generator=generator)) * sign).to(batch).view(n, 1, 1, 1)
    swirl = F.interpolate(torch.randn(n, 2, 4, 4, generator=generator).to(batch) * 0.05, size=(height, width),
                          mode="bilinear", align_corners=False).permute(0, 2, 3, 1)  # fmt: skip
    sample = grid + (offset * radial + swirl) * window
    return F.grid_sample(batch, sample, padding_mode="zeros", align_corners=False), (distance < 1.0).to(batch)


def corrupt_batch(batch: Tensor, generator: torch.Generator, config: TrainConfig) -> tuple[Tensor, Tensor]:
    """The training inputs, each slice clean or corrupted by one of ``config.corruptions``, and where they changed.

    Returns the inputs and the ``(n, 1, h, w)`` weight of the corrupted
    region of each (0 for clean slices).
    """
    if tuple(config.corruptions) == ("noise",):  # every slice noised: the presets trained before the other kinds
        return add_coarse_noise(batch, generator, config.denoise)
    n = batch.shape[0]
    makers: dict[str, Callable[[], tuple[Tensor, Tensor]]] = {
        "noise": lambda: add_coarse_noise(batch, generator, config.denoise),
        "patch": lambda: paste_patches(batch, generator),
        "warp": lambda: warp_locally(batch, generator),
    }
    choice = torch.randint(len(config.corruptions), (n,), generator=generator)
    clean = torch.rand(n, generator=generator) < CLEAN_FRACTION
    out, region = batch, torch.zeros_like(batch)
    for index, kind in enumerate(config.corruptions):
        chosen = ((choice == index) & ~clean).to(batch.device).view(n, 1, 1, 1)
        changed, where = makers[kind]()
        out, region = torch.where(chosen, changed, out), torch.where(chosen, where, region)
    return torch.clamp(out, 0.0, 1.0), region


def reconstruction_loss(
    net: ReconstructionNet,
    ssim: Dissimilarity,
    batch: Tensor,
    config: TrainConfig,
    inputs: Tensor | None = None,
    region: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """SSIM + L2 loss (+ KL for the VAE) of reconstructing ``batch`` from ``inputs`` (default: itself).

    With ``region`` (where the inputs were corrupted) and ``config.focus``,
    each pixel's loss is weighted ``1 + focus * region``: a displaced patch
    of tissue is a small part of the image's error, and would otherwise be
    the last thing the network learns to restore. A network with a corruption
    head also learns ``region`` itself (``config.head_loss`` × binary
    cross-entropy; clean slices teach it zero).
    """
    reconstruction, mean, log_var, logits = net.forward_with_head(batch if inputs is None else inputs)
    if region is not None and config.focus > 0:
        weight = 1.0 + config.focus * region
        weight = weight / weight.mean()
        mse = (weight * (reconstruction - batch).pow(2)).mean()
        structural = (weight * (1.0 - ssim.ssim(batch, reconstruction))).mean()
    else:
        mse = F.mse_loss(reconstruction, batch)
        structural = 1.0 - ssim.ssim(batch, reconstruction).mean()
    loss = mse + config.ssim_weight * structural
    parts = {"mse": float(mse.detach()), "ssim": float(1.0 - structural.detach())}
    if log_var is not None:
        pixels = batch.shape[-1] * batch.shape[-2]
        kl = 0.5 * torch.sum(mean.pow(2) + log_var.exp() - 1.0 - log_var) / (batch.shape[0] * pixels)
        loss = loss + config.kl_weight * kl
        parts["kl"] = float(kl.detach())
    if logits is not None and region is not None:
        head = F.binary_cross_entropy_with_logits(logits, region.clamp(0.0, 1.0))
        loss = loss + config.head_loss * head
        parts["head"] = float(head.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts


def train(
    config: TrainConfig,
    train_set: SliceSet,
    validation_set: SliceSet | None,
    out: Path,
    resume: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> ReconstructionNet:
    """Train a network on normal slices; checkpoint and log every epoch under ``out``.

    Parameters
    ----------
    config
        Training and network configuration.
    train_set, validation_set
        Normal slices (validation: held-out, not augmented).
    out
        Folder for ``checkpoint.pt`` and ``metrics.jsonl``.
    resume
        Continue from ``out/checkpoint.pt`` if it exists.
    on_epoch
        Called with each epoch's log record.

    Returns
    -------
    ReconstructionNet
        The trained network, in eval mode, on the CPU.
    """
    if train_set.images.shape[-1] != config.network.size:
        raise ValueError(f"slices are {train_set.images.shape[-1]} px, the network takes {config.network.size}")
    torch.set_num_threads(config.threads)
    generator = seed_everything(config.seed)
    device = torch.device(config.device)
    net = ReconstructionNet(config.network).to(device)
    ssim = Dissimilarity(config.dissimilarity).to(device)
    total_steps = config.epochs * config.steps_per_epoch
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / CHECKPOINT_NAME
    start_epoch = 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        start_epoch = int(state["epoch"])
    images = torch.from_numpy(train_set.images).to(device)
    held_out = torch.from_numpy(validation_set.images).to(device) if validation_set is not None else None
    with (out / METRICS_NAME).open("a") as metrics_log:
        for epoch in range(start_epoch, config.epochs):
            net.train()
            started = time.perf_counter()
            sums: dict[str, float] = {}
            for _ in range(config.steps_per_epoch):
                index = torch.randint(len(images), (config.batch_size,), generator=generator)
                batch = images[index.to(device)]
                if config.augment:
                    batch = augment(batch, generator)
                inputs, region = corrupt_batch(batch, generator, config) if config.denoise > 0 else (None, None)
                loss, parts = reconstruction_loss(net, ssim, batch, config, inputs, region)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                schedule.step()
                for key, value in parts.items():
                    sums[key] = sums.get(key, 0.0) + value / config.steps_per_epoch
            record: dict[str, float] = {"epoch": epoch + 1, **sums, "seconds": time.perf_counter() - started}
            if held_out is not None:
                record.update(validate(net, ssim, held_out, config))
            metrics_log.write(json.dumps(record) + "\n")
            metrics_log.flush()
            torch.save(
                {
                    "model": net.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": generator.get_state(),
                    "epoch": epoch + 1,
                    "config": config.as_dict(),
                },
                checkpoint_path,
            )
            log.info("epoch %d: %s", epoch + 1, record)
            if on_epoch is not None:
                on_epoch(record)
    return net.cpu().eval()


@torch.no_grad()
def validate(net: ReconstructionNet, ssim: Dissimilarity, images: Tensor, config: TrainConfig) -> dict[str, float]:
    """Mean squared error and SSIM of deterministic reconstructions of held-out slices."""
    was_training = net.training
    net.eval()
    mse, similarity = 0.0, 0.0
    for start in range(0, len(images), config.batch_size):
        batch = images[start : start + config.batch_size]
        reconstruction = net.reconstruct(batch)
        mse += float(F.mse_loss(reconstruction, batch, reduction="sum")) / batch[0].numel()
        similarity += float(ssim.ssim(batch, reconstruction).mean(dim=(1, 2, 3)).sum())
    net.train(was_training)
    return {"val_mse": mse / len(images), "val_ssim": similarity / len(images)}


def calibrate_feature_scales(
    net: ReconstructionNet, images: npt.ArrayLike, config: DissimilarityConfig, quantile: float = 0.99
) -> DissimilarityConfig:
    """``config`` with ``feature_scales`` set from normal ``images`` (unchanged when ``feature_weight`` is 0).

    Each encoder level's squared feature difference is divided by the ratio of its ``quantile`` to
    the pixel-level map's, so that on normal slices every level contributes on the pixel map's scale.
    """
    if config.feature_weight == 0:
        return config
    dissimilarity = Dissimilarity(replace(config, feature_weight=0.0))
    batch = torch.as_tensor(np.asarray(images, dtype=np.float32))
    with torch.no_grad():
        net = net.cpu().eval()
        reconstruction, features = net.reconstruct_with_features(batch)
        pixel = float(torch.quantile(dissimilarity(batch, reconstruction).flatten(), quantile))
        levels = dissimilarity.feature_levels(features, net.features(reconstruction))
        scales = tuple(max(float(torch.quantile(level.flatten(), quantile)), 1e-12) / max(pixel, 1e-12)
                       for level in levels)  # fmt: skip
    return replace(config, feature_scales=scales)


def load_checkpoint(path: Path) -> tuple[ReconstructionNet, TrainConfig]:
    """The network (eval mode, CPU) and configuration saved in a checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = config_from_dict(state["config"])
    net = ReconstructionNet(config.network)
    net.load_state_dict(state["model"])
    return net.eval(), config


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Rebuild a :class:`TrainConfig` from :meth:`TrainConfig.as_dict` output."""
    plain = dict(values)
    network = NetworkConfig(**plain.pop("network"))
    dissimilarity = DissimilarityConfig(**plain.pop("dissimilarity"))  # feature_scales: list → tuple
    if "corruptions" in plain:
        plain["corruptions"] = tuple(plain["corruptions"])
    scaling = plain.pop("mr_scaling", None)  # absent: trained before the scaling was configurable
    mr_scaling = MrScaling(tuple(scaling["percentiles"]), tuple(scaling["targets"])) if scaling else LEGACY_MR_SCALING
    return TrainConfig(**plain, network=network, dissimilarity=dissimilarity, mr_scaling=mr_scaling)
