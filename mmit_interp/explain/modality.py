"""Modality attribution of audio-visual fusion models: exact Shapley split and an audio CAM over time.

*Shapley split.* A modality is removed the way the model removes sound from a clip without a sound
track: its term of the logits is zeroed (`FusionNet`: `audio_mask` 0 zeroes the audio features;
zero visual features give a zero visual term under either pooling). With the four head evaluations
v(both), v(video only), v(audio only), v(none), the exact two-player Shapley values are
`phi_video = ((v(V) - v(0)) + (v(VA) - v(A))) / 2`, `phi_audio` likewise, and
`phi_video + phi_audio = v(VA) - v(0)`: each action's score change from the empty baseline (bias
only) split between the two. On logits the head is additive and `phi_video` is exactly the visual
term (`W_v . GAP(F_v)` for a GAP trunk, the log-sum-exp of its class maps for an LSE one); on
sigmoid scores the interaction is shared equally.

*Audio CAM.* The audio trunk's temporal features `F_a (K_a, L')` through the head's audio slice,
`W_a[c] . F_a(t)`: their mean over time is the audio part of the logit (the pooling is a mean). It is
resampled (linear, `align_corners=False`) to the clip's sampled frames, on the assumption that the
audio window (`audio_seconds` from the start) spans the frames, as it does for the synthetic worlds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCORES = ("prob", "logit")


def shapley_split(model: nn.Module, video: torch.Tensor, audio: torch.Tensor,
                  audio_mask: torch.Tensor | None = None, score: str = "prob") -> dict[str, torch.Tensor]:
    """`{video, audio, full, empty}` `(N, C)`: Shapley values of each class's score (`prob` = sigmoid or
    `logit`) for the two modalities, the score with both and with none (`video + audio = full - empty`)."""
    if score not in SCORES:
        raise ValueError(f"score {score!r}: choose one of {', '.join(SCORES)}")
    with torch.no_grad():
        vis, aud = model.terms(video, audio, audio_mask)
        b = model.fc.bias.expand_as(vis)
        f = torch.sigmoid if score == "prob" else (lambda z: z)
        both, v_only, a_only, none = (f(b + kv * vis + ka * aud) for kv, ka in ((1, 1), (1, 0), (0, 1), (0, 0)))
    return {"video": ((v_only - none) + (both - a_only)) / 2, "audio": ((a_only - none) + (both - v_only)) / 2,
            "full": both, "empty": none}


def audio_cam(model: nn.Module, audio: torch.Tensor, classes: torch.Tensor, n_frames: int,
              audio_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`(maps (N, S, n_frames), raw (N, S, L'))`: the audio CAM of classes `(N, S)` over the trunk's time
    steps and resampled to the clip's frames (0 where `audio_mask` is 0)."""
    with torch.no_grad():
        fa = model.audio.forward_features(audio)
        if audio_mask is not None:
            fa = fa * audio_mask.to(fa.dtype).view(-1, 1, 1)
        w = model.fc.weight[:, model.visual_dim:][classes]
        raw = torch.einsum("nsk,nkl->nsl", w, fa)
    maps = F.interpolate(raw, size=n_frames, mode="linear", align_corners=False)
    return maps, raw
