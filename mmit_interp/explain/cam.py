"""Class activation maps for video models, every requested class at once: `(N, classes, T, H, W)`.

A CAM method is a small class with one extension point, `weights(acts, grads, classes)` -> the
per-class channel weights `(N, S, K)` (pytorch-grad-cam's shape); the shared `__call__` runs the
model, picks the classes (top-k, a score threshold or named), forms `sum_k w[c, k] F_k` for all of
them with one `einsum`, and upsamples the maps to the sampled frames (linear in time, bilinear in
space, `align_corners=False`): frame t of the output belongs to input frame t.

- `LinearCAM` (Zhou et al. 2016, DESIGN 7): for GAP + linear heads, `w[c] = W[c]`; every class
  from the single forward pass, no backward. The fusion model's head is also exactly linear in the
  pooled visual features (`logit = W_v GAP(F_v) + W_a a + b`), so its visual CAM uses the visual
  slice `W[:, :visual_dim]`: the audio term is constant over space and time and does not shape the
  map (an exact split, not an approximation).
- `GradCAM` (Selvaraju et al. 2017): `w[c] = mean_{t,h,w} d logit_c / d F`, the fallback for any
  head that is not GAP + linear; all classes from one forward and one batched backward
  (`is_grads_batched`). With a GAP + linear head its maps are the CAM maps divided by `T'H'W'`.

Maps are returned raw (signed, no ReLU); `mcam.normalise` does the per-clip [0, 1] scaling.
The bias is left out (a constant per class). Logits are returned with the maps so callers get
predictions from the same pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import capture_activations
from ..models import forward_batch


@dataclass
class CAMResult:
    """Maps `(N, S, T, H, W)` of classes `(N, S)`, low-resolution maps `(N, S, T', H', W')`, logits `(N, C)`."""

    maps: torch.Tensor
    raw: torch.Tensor
    classes: torch.Tensor
    logits: torch.Tensor


def select_classes(logits: torch.Tensor, *, top_k: int | None = 5, threshold: float | None = None,
                   classes: Sequence[int] | None = None) -> torch.Tensor:
    """Classes per clip `(N, S)`: the named ones, else the top-k by score, else all with sigmoid score >= threshold.

    With a threshold, S is the largest count over the batch; clips with fewer qualifying classes are
    padded with their next-best classes (S = 1 at least).
    """
    n, c = logits.shape
    if classes is not None:
        idx = torch.as_tensor(list(classes), dtype=torch.long)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= c:
            raise ValueError(f"class indices must be in [0, {c}); got {list(classes)}")
        return idx.expand(n, -1).clone()
    if threshold is not None:
        k = max(1, int((torch.sigmoid(logits) >= threshold).sum(1).max()))
    elif top_k is not None:
        k = min(int(top_k), c)
    else:
        raise ValueError("give classes, top_k or threshold")
    return logits.topk(k, dim=1).indices


class BaseCAM:
    """Shared CAM machinery; subclasses define `weights` (and set `needs_grad`)."""

    needs_grad = False

    def __init__(self, model: nn.Module, target_layer: str | None = None):
        self.model = model
        # default: the trunk's last map, or the layer a model whose last map is not a grid names (`cam_layer`)
        self.target_layer = target_layer or getattr(model, "cam_layer", None)

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, classes: torch.Tensor) -> torch.Tensor:
        """Channel weights `(N, S, K)` of the selected classes from activations `(N, K, T', H', W')`
        and, if `needs_grad`, gradients `(S, N, K, T', H', W')` of each selected logit."""
        raise NotImplementedError

    def features_and_logits(self, video: torch.Tensor, audio: torch.Tensor | None = None,
                            audio_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The CAM layer's activations `(N, K, T', H', W')` and the logits, from one forward pass."""
        m = self.model
        batch = {"video": video, "audio": audio, "has_audio": audio_mask}
        if self.target_layer is not None:
            with capture_activations(m, [self.target_layer], detach=not self.needs_grad) as acts:
                logits = forward_batch(m, batch)
            return acts[self.target_layer], logits
        f, ctx = m.features(batch)
        return f, m.head(f, ctx)

    def __call__(self, video: torch.Tensor, *, audio: torch.Tensor | None = None,
                 audio_mask: torch.Tensor | None = None, classes: Sequence[int] | None = None,
                 top_k: int | None = 5, threshold: float | None = None,
                 size: tuple[int, int, int] | None = None) -> CAMResult:
        """CAMs of the selected classes for a batch `video (N, 3, T, H, W)`, upsampled to `size`
        (default: the input's `(T, H, W)`)."""
        with torch.set_grad_enabled(self.needs_grad):
            acts, logits = self.features_and_logits(video, audio, audio_mask)
            sel = select_classes(logits.detach(), top_k=top_k, threshold=threshold, classes=classes)
            grads = None
            if self.needs_grad:
                s, n = sel.shape[1], sel.shape[0]
                onehot = torch.zeros(s, n, logits.shape[1], dtype=logits.dtype)
                onehot.scatter_(2, sel.T.unsqueeze(2), 1.0)
                grads = torch.autograd.grad(logits, acts, grad_outputs=onehot, is_grads_batched=True)[0]
            w = self.weights(acts.detach(), grads, sel)
        raw = torch.einsum("nsk,nkthw->nsthw", w, acts.detach())
        out = tuple(video.shape[2:]) if size is None else tuple(size)
        maps = F.interpolate(raw.flatten(0, 1).unsqueeze(1), size=out, mode="trilinear", align_corners=False)
        return CAMResult(maps.view(*sel.shape, *out), raw, sel, logits.detach())


class LinearCAM(BaseCAM):
    """Classic CAM for GAP + linear heads (incl. the fusion head's visual slice): `w[c] = W[c]`."""

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, classes: torch.Tensor) -> torch.Tensor:
        """Rows of the head's weight matrix for the selected classes."""
        return self.model.cam_weight().detach()[classes]


class GradCAM(BaseCAM):
    """Grad-CAM: `w[c] = mean over (t, h, w) of the gradient of logit c` (any differentiable head)."""

    needs_grad = True

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, classes: torch.Tensor) -> torch.Tensor:
        """Spatio-temporally averaged gradients, `(S, N, K, ...)` -> `(N, S, K)`."""
        return grads.flatten(3).mean(3).transpose(0, 1)


def cam_for(model: nn.Module, target_layer: str | None = None) -> BaseCAM:
    """The exact single-pass `LinearCAM` where the head allows it (video, fusion), else `GradCAM` at `target_layer`
    or at the layer the model names (`cam_layer`: an adapted model whose head is not linear, models/adapters.py)."""
    target_layer = target_layer or getattr(model, "cam_layer", None)
    if target_layer is not None:
        return GradCAM(model, target_layer)
    if "video" in model.inputs:
        return LinearCAM(model)
    raise ValueError(f"{type(model).__name__} has no GAP + linear video head: name a target_layer for GradCAM")
