"""Audio-visual fusion: one linear layer over the visual and the audio features, logit =
visual term + audio term + bias.

The visual term pools the class maps `W_v F_v` the way the visual trunk's own head does: their
mean (GAP + linear) for a GAP trunk, their log-sum-exp for a trunk with an LSE head (`head_r`), so
fusing does not undo what the trunk was trained to pool (averaging an LSE trunk's maps cost the
demo's fusion 0.13 map_class, docs/experiments.md). The audio term is `W_a` on the pooled audio
features. Clips without a sound track get zero audio features (`audio_mask` 0), so the head falls
back to its visual term plus the bias; the mask is documented in the README. The visual trunk is
the model's trunk; the pooled, masked audio features are the head's context (`ModelBase`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import ModelBase, gap_weights


class FusionNet(ModelBase):
    """Visual trunk + audio trunk + a linear head: visual class maps pooled as the trunk pools them, plus
    `W_a GAP(audio) * mask`, plus the bias."""

    modality = "fusion"
    inputs = ("video", "audio", "has_audio")
    head_version = 2  # 1: GAP of the visual features whatever the trunk's pooling (before 7 Dec 2026)

    def __init__(self, visual: nn.Module, audio: nn.Module, *, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.num_classes = num_classes
        self.visual = visual
        self.audio = audio
        self.visual_dim = visual.feature_dim
        self.head_r = float(getattr(visual, "head_r", 0.0))  # > 0: the visual maps are pooled by log-sum-exp
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

    def visual_term(self, feats: torch.Tensor) -> torch.Tensor:
        """The visual part of the logits `(N, C)`: the class maps `W_v F` pooled as the trunk pools them."""
        w = self.fc.weight[:, : self.visual_dim]
        if self.head_r <= 0:
            return self.dropout(self.visual.pool(feats)) @ w.T
        m = torch.einsum("nk...,ck->nc...", self.dropout(feats), w).flatten(2)
        return (torch.logsumexp(self.head_r * m, dim=2) - math.log(m.shape[2])) / self.head_r

    def audio_term(self, ctx: torch.Tensor | None, n: int) -> torch.Tensor:
        """The audio part of the logits `(n, C)`; no context counts as silence (zeros)."""
        w = self.fc.weight[:, self.visual_dim:]
        if ctx is None:
            return torch.zeros(n, w.shape[0], dtype=w.dtype, device=w.device)
        return (self.dropout(ctx) @ w.T).expand(n, -1)

    def head(self, feats: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from the visual trunk's last features and the audio context."""
        return self.visual_term(feats) + self.audio_term(ctx, feats.shape[0]) + self.fc.bias

    def cam_weight(self) -> torch.Tensor:
        """The head's visual slice `W[:, :visual_dim]`: the audio term is constant over space and time."""
        return self.fc.weight[:, : self.visual_dim]

    def pool_weights(self, f: torch.Tensor, class_idx: int) -> torch.Tensor:
        """The visual term's weights `(N, P)` over the map's positions: uniform for a GAP trunk,
        `softmax(r m_c)` for an LSE one (see `GapLinearNet.pool_weights`)."""
        if self.head_r <= 0:
            return gap_weights(f)
        m = torch.einsum("nkp,k->np", f.flatten(2), self.fc.weight[class_idx, : self.visual_dim])
        return torch.softmax(self.head_r * m, dim=1)

    def parts(self) -> dict[str, nn.Module]:
        """The visual and audio trunks (`--init-visual`, `--init-audio`, `--freeze-trunks`)."""
        return {"visual": self.visual, "audio": self.audio}

    def terms(self, video: torch.Tensor, audio: torch.Tensor,
              audio_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The visual and the audio parts of the logits, each `(N, C)` (logits = their sum + bias)."""
        feats, ctx = self.features({"video": video, "audio": audio, "has_audio": audio_mask})
        return self.visual_term(feats), self.audio_term(ctx, feats.shape[0])

    def forward(self, video: torch.Tensor, audio: torch.Tensor, audio_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(*self.features({"video": video, "audio": audio, "has_audio": audio_mask}))
