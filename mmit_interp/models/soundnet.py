"""SoundNet (Aytar et al. 2016): 8 1-D conv layers on raw mono 22,050 Hz audio in [-256, 256].

Input `(N, 1, L)`. For 3-s clips conv8 (kernel 8 after ~64x downsampling of conv7's input) has
too few steps, so features are conv7's output `(N, 1024*width_mult, L')`, average-pooled for the
head (as the M-MiT paper does).
"""
from __future__ import annotations

import torch
from torch import nn

from .resnet3d import GapLinearNet

# (out channels, kernel, stride, padding, max-pool after) per layer, conv1..conv7
_SPEC = [(16, 64, 2, 32, 8), (32, 32, 2, 16, 8), (64, 16, 2, 8, 0), (128, 8, 2, 4, 0),
         (256, 4, 2, 2, 4), (512, 4, 2, 2, 0), (1024, 4, 2, 2, 0)]


class SoundNet(GapLinearNet):
    """SoundNet conv1..conv7 trunk + GAP + linear head."""

    modality = "audio"
    inputs = ("audio",)

    def __init__(self, *, num_classes: int, width_mult: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.num_classes = num_classes
        cin = 1
        for i, (c, k, s, p, pool) in enumerate(_SPEC, 1):
            c = max(4, int(round(c * width_mult)))
            mods = [nn.Conv1d(cin, c, k, stride=s, padding=p), nn.BatchNorm1d(c), nn.ReLU(inplace=True)]
            if pool:
                mods.append(nn.MaxPool1d(pool, pool))
            self.add_module(f"conv{i}", nn.Sequential(*mods))
            cin = c
        self.feature_dim = cin
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of conv1..conv7 in execution order."""
        return [(f"conv{i}", getattr(self, f"conv{i}")) for i in range(1, len(_SPEC) + 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """conv7 features `(N, K, L')`."""
        for _, m in self.blocks():
            x = m(x)
        return x

    def pool(self, f: torch.Tensor) -> torch.Tensor:
        """Average over time `(N, K, L') -> (N, K)`."""
        return f.mean(-1)


def soundnet(*, num_classes: int, width_mult: float = 1.0, dropout: float = 0.0) -> SoundNet:
    """SoundNet-8 trunk (conv1..conv7) with a linear head over pooled conv7."""
    return SoundNet(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
