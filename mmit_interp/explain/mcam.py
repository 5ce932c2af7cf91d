"""Multi-label CAM (mCAM, DESIGN 7): one map per clip saying where each predicted action is.

Given the CAMs of the selected classes `(S, T, H, W)` (already upsampled to the frames by `cam`):
1. `normalise`: each class's map scaled to [0, 1] over the whole clip (min-max over T, H, W; a
   constant map becomes 0), DESIGN's choice; `per="frame"` scales each frame on its own instead (see
   docs/analysis.md: better pointing and ownership on every model measured, but a frame where an
   action is absent gets its noise stretched to [0, 1]).
2. `suppress_similar`: at a pixel where two classes' normalised values differ by less than `delta`
   both are set to 0 (strict `<`; `delta = 0` disables it).
3. `intensity` = max over classes, `owner` = argmax (-1 where every class is 0), then the
   intensity is smoothed per frame with a 5x5 Gaussian (`sigma` 1.1 by default, what OpenCV's
   `GaussianBlur(ksize=(5, 5), sigmaX=0)` uses). The owner map is categorical and is not smoothed.

Choice (documented in docs/analysis.md): steps 2-3 run at frame resolution, after upsampling. The
last conv map of these models is 2x2 to 7x7, where a 5x5 kernel would blur the whole map into one
blob and `delta` would act on a handful of cells; the authors' CAM code also resizes each
normalised CAM to the image before combining. Step 1 is done on the upsampled maps as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KERNEL_SIZE = 5
NORMALISE = ("clip", "frame")


@dataclass
class MCAM:
    """mCAM of one clip: smoothed `intensity (T, H, W)` in [0, 1], `owner (T, H, W)` (index into
    `classes`, -1 = nobody), the suppressed per-class maps `(S, T, H, W)` and the class indices `(S,)`."""

    intensity: torch.Tensor
    owner: torch.Tensor
    maps: torch.Tensor
    classes: torch.Tensor


def normalise(maps: torch.Tensor, per: str = "clip") -> torch.Tensor:
    """Min-max scale each class map `(S, T, H, W)` to [0, 1] over the whole clip (`per="clip"`) or over
    each frame (`per="frame"`); a constant map (or frame) becomes 0."""
    if per not in NORMALISE:
        raise ValueError(f"normalise per {per!r}: choose one of {', '.join(NORMALISE)}")
    flat = maps.flatten(1) if per == "clip" else maps.flatten(2)
    lo, hi = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(flat))
    return out.view_as(maps)


def suppress_similar(maps: torch.Tensor, delta: float) -> torch.Tensor:
    """Zero both classes at every pixel where two class maps `(S, ...)` differ by less than `delta`."""
    similar = torch.zeros_like(maps, dtype=torch.bool)
    for i in range(maps.shape[0] - 1):  # S is small (top-k); each pair once: class i against every later class
        close = (maps[i + 1:] - maps[i]).abs_() < delta
        similar[i] |= close.any(0)
        similar[i + 1:] |= close
    return maps.masked_fill(similar, 0.0)


def gaussian_kernel(sigma: float, size: int = KERNEL_SIZE) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel `(size, size)`."""
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def smooth(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-frame 5x5 Gaussian smoothing of `(T, H, W)` (reflect padding, like OpenCV's default border)."""
    k = gaussian_kernel(sigma).to(frames)
    p = KERNEL_SIZE // 2
    x = frames.unsqueeze(1)
    mode = "reflect" if min(frames.shape[-2:]) > p else "replicate"
    return F.conv2d(F.pad(x, (p, p, p, p), mode=mode), k.view(1, 1, KERNEL_SIZE, KERNEL_SIZE)).squeeze(1)


def mcam(maps: torch.Tensor, classes: torch.Tensor, *, delta: float = 0.05, sigma: float = 1.1,
         normalised: bool = False, per: str = "clip") -> MCAM:
    """mCAM of one clip from its class CAMs `(S, T, H, W)` at frame resolution (DESIGN 7 steps 1-3);
    `normalised` says the maps already went through `normalise`, else it runs `per` clip or frame."""
    m = maps if normalised else normalise(maps, per)
    sup = suppress_similar(m, delta)
    peak, arg = sup.max(0)
    owner = torch.where(peak > 0, arg, torch.full_like(arg, -1))
    return MCAM(smooth(peak, sigma).clamp_(0, 1), owner, sup, classes)


def max_of_cams(maps: torch.Tensor, classes: torch.Tensor, per: str = "clip") -> MCAM:
    """The plain baseline: normalised maps, max and argmax, no suppression and no smoothing."""
    m = normalise(maps, per)
    peak, arg = m.max(0)
    return MCAM(peak, torch.where(peak > 0, arg, torch.full_like(arg, -1)), m, classes)
