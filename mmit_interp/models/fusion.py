"""Audio-visual fusion: concatenated pooled visual and audio features -> one linear layer.

Clips without a sound track get zero audio features (`audio_mask` 0), so the head falls back to
its visual part plus the bias; the mask is documented in the README.
"""
from __future__ import annotations

import torch
from torch import nn


class FusionNet(nn.Module):
    """Visual trunk + audio trunk + a linear head over `[GAP(visual), GAP(audio) * mask]`."""

    modality = "fusion"

    def __init__(self, visual: nn.Module, audio: nn.Module, *, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.num_classes = num_classes
        self.visual = visual
        self.audio = audio
        self.visual_dim = visual.feature_dim
        self.feature_dim = visual.feature_dim + audio.feature_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.feature_dim, num_classes)
        visual.fc = nn.Identity()  # the trunks' own heads are unused; keep them out of the state
        audio.fc = nn.Identity()

    def pooled(self, video: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor | None) -> torch.Tensor:
        """The concatenated pooled features `(N, Kv + Ka)`."""
        v = self.visual.pool(self.visual.forward_features(video))
        a = self.audio.pool(self.audio.forward_features(audio))
        if audio_mask is not None:
            a = a * audio_mask.to(a.dtype).view(-1, 1)
        return torch.cat([v, a], 1)

    def forward(self, video: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.dropout(self.pooled(video, audio, audio_mask)))
