"""Audio-visual fusion: concatenated pooled visual and audio features -> one linear layer.

Clips without a sound track get zero audio features (`audio_mask` 0), so the head falls back to
its visual part plus the bias; the mask is documented in the README. The visual trunk is the
model's trunk; the pooled, masked audio features are the head's context (`ModelBase`).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import ModelBase, gap_weights


class FusionNet(ModelBase):
    """Visual trunk + audio trunk + a linear head over `[GAP(visual), GAP(audio) * mask]`."""

    modality = "fusion"
    inputs = ("video", "audio", "has_audio")

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

    def trunk(self) -> nn.Module:
        """The visual trunk."""
        return self.visual

    def context(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled audio features `(N, Ka)`, zeroed where `batch["has_audio"]` is 0 (no mask: kept)."""
        a = self.audio.pool(self.audio.forward_features(batch["audio"]))
        mask = batch.get("has_audio")
        return a if mask is None else a * mask.to(a.dtype).view(-1, 1)

    def joint(self, feats: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        """The concatenated pooled features `(N, Kv + Ka)`; no context counts as silence (zeros)."""
        v = self.visual.pool(feats)
        if ctx is None:
            ctx = torch.zeros(v.shape[0], self.feature_dim - self.visual_dim, dtype=v.dtype, device=v.device)
        return torch.cat([v, ctx.expand(v.shape[0], -1)], 1)

    def head(self, feats: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from the visual trunk's last features and the audio context."""
        return self.fc(self.dropout(self.joint(feats, ctx)))

    def cam_weight(self) -> torch.Tensor:
        """The head's visual slice `W[:, :visual_dim]`: the audio term is constant over space and time."""
        return self.fc.weight[:, : self.visual_dim]

    def pool_weights(self, f: torch.Tensor, class_idx: int) -> torch.Tensor:
        """Uniform: the head averages the visual map."""
        return gap_weights(f)

    def parts(self) -> dict[str, nn.Module]:
        """The visual and audio trunks (`--init-visual`, `--init-audio`, `--freeze-trunks`)."""
        return {"visual": self.visual, "audio": self.audio}

    def pooled(self, video: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor | None) -> torch.Tensor:
        """The concatenated pooled features `(N, Kv + Ka)`."""
        return self.joint(*self.features({"video": video, "audio": audio, "has_audio": audio_mask}))

    def forward(self, video: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(*self.features({"video": video, "audio": audio, "has_audio": audio_mask}))
