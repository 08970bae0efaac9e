"""The network: a small CNN in plain PyTorch, built from ``ModelConfig``.

One block per entry of ``model.channels``: 3x3 convolution, batch norm, ReLU and 2x2 max
pooling (``ceil_mode`` so an 8x8 digit survives any number of blocks). Global average pooling
makes the head independent of the image size, so the same config works for 8x8 digits and
larger photos. Input normalisation (per-channel mean/std measured on the training images) is
part of the model, so the exported graph takes raw [0, 1] pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from .config import ModelConfig


class ConvNet(nn.Module):
    """conv blocks -> global average pool -> dropout -> hidden layer -> dropout -> logits."""

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(self, cfg: ModelConfig, n_classes: int, in_channels: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        previous = in_channels
        for width in cfg.channels:
            blocks += [
                nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=2, ceil_mode=True),
            ]
            previous = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(previous, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, n_classes),
        )
        # Buffers, not parameters: saved in checkpoints and exported, never trained.
        self.register_buffer("pixel_mean", torch.full((1, in_channels, 1, 1), 0.5))
        self.register_buffer("pixel_std", torch.full((1, in_channels, 1, 1), 0.5))

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Per-channel statistics of the training images (std floored to avoid dividing by 0)."""
        shape = self.pixel_mean.shape
        self.pixel_mean.copy_(torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.pixel_std.copy_(torch.tensor(std, dtype=torch.float32).clamp_min(1e-3).reshape(shape))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw pixels ``[N, C, H, W]`` in [0, 1] -> logits ``[N, n_classes]``."""
        x = self.features((pixels - self.pixel_mean) / self.pixel_std)
        # A plain mean rather than AdaptiveAvgPool2d: its CUDA backward has no deterministic
        # implementation, and training.deterministic would make it raise.
        return self.head(x.mean(dim=(2, 3)))


def build_model(cfg: ModelConfig, n_classes: int, in_channels: int) -> ConvNet:
    return ConvNet(cfg, n_classes, in_channels)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, written out so it is deterministic on every device: ``nll_loss``
    (inside ``F.cross_entropy``) raises on CUDA under ``torch.use_deterministic_algorithms``."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    target = F.one_hot(labels, num_classes=logits.shape[1]).to(log_probs.dtype)
    return -(target * log_probs).sum(dim=1).mean()


def probabilities(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Class probabilities in evaluation mode (no dropout, running batch-norm statistics)."""
    return torch.softmax(model(pixels).float(), dim=1)
