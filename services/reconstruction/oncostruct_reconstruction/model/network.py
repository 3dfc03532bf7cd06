"""The reconstruction networks and the served graph (torch; only training and export import this).

A 2D slice-wise residual encoder/decoder in the spirit of Kobayashi et al.
(2020): a variational autoencoder trained on normal slices with SSIM + L2
reconstruction loss, so that its reconstruction of any input is the nearest
normal image it knows. The plain autoencoder (no sampling, no KL term) is
the baseline the benchmark compares it with. The denoising U-Net (the shipped
model) adds skip connections and, optionally, a corruption head: a second
output that learns where its training inputs were corrupted.

:class:`AnomalyGraph` is what gets exported to ONNX and served: it returns
the reconstruction and the anomaly map computed in the graph, so only the
map (and the reconstruction) travel back from Triton.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .scoring import SSIM_C1, SSIM_C2, DissimilarityConfig, gaussian_kernel

ModelKind = Literal["vae", "ae", "dae"]


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of a reconstruction network.

    Attributes
    ----------
    kind
        ``"vae"`` (variational), ``"ae"`` (plain autoencoder baseline) or ``"dae"``
        (denoising U-Net: the plain autoencoder with skip connections from each
        encoder level to the decoder, trained to restore corrupted inputs;
        Kascenas et al. 2022).
    size
        In-plane input size (a multiple of ``2 ** levels``).
    base_channels
        Channels of the first level; doubled at each level, capped at 8×.
    levels
        Downsampling steps; the latent grid is ``size / 2 ** levels`` square.
    latent_channels
        Channels of the latent grid (the bottleneck's width).
    skip_from
        U-Net only: the finest encoder level passed to the decoder (0: every
        level, full resolution included; 1: from half resolution on, so
        that the finest detail is redrawn, not copied).
    corruption_head
        A second output beside the reconstruction: per pixel, the logit that
        the input was corrupted there, learned from the training corruptions
        (self-supervised anomaly localisation, after Tan et al. 2020's foreign
        patch interpolation). Its probability enters the anomaly map with
        :attr:`~oncostruct_reconstruction.model.scoring.DissimilarityConfig.head_weight`.
    """

    kind: ModelKind = "vae"
    size: int = 128
    base_channels: int = 16
    levels: int = 3
    latent_channels: int = 8
    skip_from: int = 0
    corruption_head: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able values."""
        return asdict(self)


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(x + self.body(x))
        return out


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2),
    )


class ReconstructionNet(nn.Module):
    """Residual encoder/decoder with a spatial latent grid; variational or plain."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        if config.size % (2**config.levels):
            raise ValueError(f"size {config.size} is not a multiple of 2**levels = {2**config.levels}")
        self.config = config
        widths = [config.base_channels * min(2**level, 8) for level in range(config.levels + 1)]
        encoder: list[nn.Module] = [_conv(1, widths[0]), ResidualBlock(widths[0])]
        for level in range(config.levels):
            encoder += [_conv(widths[level], widths[level + 1], stride=2), ResidualBlock(widths[level + 1])]
        self.encoder = nn.Sequential(*encoder)
        out_latent = config.latent_channels * (2 if config.kind == "vae" else 1)
        self.to_latent = nn.Conv2d(widths[-1], out_latent, 1)
        self.from_latent = nn.Sequential(nn.Conv2d(config.latent_channels, widths[-1], 1), nn.LeakyReLU(0.2))
        self.skips = config.kind == "dae"
        decoder: list[nn.Module] = []
        for level in reversed(range(config.levels)):
            decoder += [
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                _conv(widths[level + 1] + (widths[level] if self._skips_at(level) else 0), widths[level]),
                ResidualBlock(widths[level]),
            ]
        decoder += [nn.Conv2d(widths[0], 2 if config.corruption_head else 1, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)

    def _skips_at(self, level: int) -> bool:
        return self.skips and level >= self.config.skip_from

    def _levels(self, image: Tensor) -> list[Tensor]:
        """The encoder's output at each level, finest first (the last one feeds the latent)."""
        features: list[Tensor] = []
        x = image
        for index, module in enumerate(self.encoder):
            x = module(x)
            if index % 2 == 1:  # after each level's residual block
                features.append(x)
        return features

    def _latent(self, features: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        latent = self.to_latent(features[-1])
        if self.config.kind == "vae":
            mean, log_var = latent.chunk(2, dim=1)
            return mean, log_var.clamp(-10.0, 10.0)
        return latent, None

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """Latent mean (and log-variance for the VAE)."""
        return self._latent(self._levels(image))

    def decode(self, latent: Tensor, skips: list[Tensor] | None = None) -> Tensor:
        """Image in [0, 1] from a latent grid (and, for the U-Net, the encoder's finer levels)."""
        return self.decode_with_head(latent, skips)[0]

    def decode_with_head(self, latent: Tensor, skips: list[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """The image and, with a corruption head, its ``(n, 1, h, w)`` corruption logits."""
        x = self.from_latent(latent)
        modules = list(self.decoder)
        for step in range(self.config.levels):
            upsample, conv, block = modules[3 * step : 3 * step + 3]
            x = upsample(x)
            level = self.config.levels - 1 - step
            if self._skips_at(level):
                if skips is None:
                    raise ValueError("the U-Net decoder needs the encoder's levels")
                x = torch.cat([x, skips[level]], dim=1)
            x = block(conv(x))
        out = modules[-1](x)
        if self.config.corruption_head:
            return torch.sigmoid(out[:, :1]), out[:, 1:]
        return torch.sigmoid(out), None

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Reconstruction (sampled in training for the VAE), latent mean, latent log-variance."""
        reconstruction, mean, log_var, _ = self.forward_with_head(image)
        return reconstruction, mean, log_var

    def forward_with_head(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """:meth:`forward` and the corruption logits (None without a corruption head)."""
        features = self._levels(image)
        mean, log_var = self._latent(features)
        latent = mean
        if self.training and log_var is not None:
            latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        reconstruction, logits = self.decode_with_head(latent, features[:-1])
        return reconstruction, mean, log_var, logits

    def reconstruct(self, image: Tensor) -> Tensor:
        """Deterministic reconstruction (the latent mean): the nearest normal image."""
        return self.reconstruct_with_features(image)[0]

    def reconstruct_with_features(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The reconstruction and the encoder's features of ``image`` at each level (finest first)."""
        reconstruction, features, _ = self.analyse(image)
        return reconstruction, features

    def analyse(self, image: Tensor) -> tuple[Tensor, list[Tensor], Tensor | None]:
        """Reconstruction, the encoder's features (finest first) and the corruption logits (or None)."""
        features = self._levels(image)
        mean, _ = self._latent(features)
        reconstruction, logits = self.decode_with_head(mean, features[:-1])
        return reconstruction, features, logits

    def features(self, image: Tensor) -> list[Tensor]:
        """The encoder's features of ``image`` at each level, finest first."""
        return self._levels(image)


class Dissimilarity(nn.Module):
    """The anomaly map of :func:`oncostruct_reconstruction.model.scoring.dissimilarity_map`, in torch."""

    def __init__(self, config: DissimilarityConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("ssim_kernel", torch.from_numpy(gaussian_kernel(config.ssim_sigma, config.ssim_radius)))
        self.register_buffer(
            "smooth_kernel", torch.from_numpy(gaussian_kernel(config.smooth_sigma, config.smooth_radius))
        )

    @staticmethod
    def _blur(x: Tensor, kernel: Tensor) -> Tensor:
        radius = kernel.numel() // 2
        x = F.conv2d(x, kernel.view(1, 1, 1, -1), padding=(0, radius))
        return F.conv2d(x, kernel.view(1, 1, -1, 1), padding=(radius, 0))

    def ssim(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-pixel SSIM of ``(n, 1, h, w)`` images."""
        kernel = cast(Tensor, self.ssim_kernel)
        mu_x, mu_y = self._blur(x, kernel), self._blur(y, kernel)
        var_x = self._blur(x * x, kernel) - mu_x * mu_x
        var_y = self._blur(y * y, kernel) - mu_y * mu_y
        cov = self._blur(x * y, kernel) - mu_x * mu_y
        numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
        denominator = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)
        return numerator / denominator

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """The smoothed pixel-level anomaly map of ``x`` against its reconstruction ``y``."""
        structural = (1.0 - self.ssim(x, y)) / 2.0
        combined = self.config.ssim_weight * structural + self.config.l1_weight * (x - y).abs()
        smooth_kernel = cast(Tensor, self.smooth_kernel)
        return torch.clamp(self._blur(combined, smooth_kernel), min=0.0)

    def feature_levels(self, image_features: list[Tensor], reconstruction_features: list[Tensor]) -> list[Tensor]:
        """Per level, the channel mean of the squared feature difference, ``(n, 1, h_l, w_l)``, unscaled."""
        return [
            (fx - fy).pow(2).mean(dim=1, keepdim=True)
            for fx, fy in zip(image_features, reconstruction_features, strict=True)
        ]

    def feature_map(
        self, image_features: list[Tensor], reconstruction_features: list[Tensor], size: tuple[int, int]
    ) -> Tensor:
        """The feature-level term: scaled level differences upsampled to ``size``, averaged over the
        configured levels, smoothed."""
        levels = self.feature_levels(image_features, reconstruction_features)
        if len(levels) != len(self.config.feature_scales):
            raise ValueError(f"{len(levels)} encoder levels but {len(self.config.feature_scales)} feature scales")
        chosen = self.config.feature_levels or tuple(range(len(levels)))
        if max(chosen) >= len(levels):
            raise ValueError(f"feature level {max(chosen)} asked of a network with {len(levels)} levels")
        total = sum(
            F.interpolate(levels[index] / self.config.feature_scales[index], size=size, mode="bilinear",
                          align_corners=False)
            for index in chosen
        )  # fmt: skip
        return self._blur(cast(Tensor, total) / len(chosen), cast(Tensor, self.smooth_kernel))

    def head_map(self, logits: Tensor) -> Tensor:
        """The corruption head's term: its probability, smoothed like the pixel-level map."""
        return self._blur(torch.sigmoid(logits), cast(Tensor, self.smooth_kernel))


class AnomalyGraph(nn.Module):
    """The served graph: ``image`` → (``anomaly_map``, ``reconstruction``)."""

    def __init__(self, net: ReconstructionNet, dissimilarity: DissimilarityConfig) -> None:
        super().__init__()
        self.net = net
        self.dissimilarity = Dissimilarity(dissimilarity)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Anomaly map and reconstruction of a ``(n, 1, size, size)`` batch in [0, 1]."""
        reconstruction, features, logits = self.net.analyse(image)
        anomaly = self.dissimilarity(image, reconstruction)
        config = self.dissimilarity.config
        if config.feature_weight > 0:
            again = self.net.features(reconstruction)
            size = (int(image.shape[-2]), int(image.shape[-1]))
            anomaly = anomaly + config.feature_weight * self.dissimilarity.feature_map(features, again, size)
        if config.head_weight > 0 and logits is not None:
            anomaly = anomaly + config.head_weight * self.dissimilarity.head_map(logits)
        return anomaly, reconstruction


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
