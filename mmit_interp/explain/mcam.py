"""Multi-label CAM (mCAM, DESIGN 7): one map per clip saying where each predicted action is.

Given the CAMs of the selected classes `(S, T, H, W)` (already upsampled to the frames by `cam`):
1. `normalise`: each class's map scaled to [0, 1] over the whole clip (min-max over T, H, W; a
   constant map becomes 0), DESIGN's choice; `per="frame"` scales each frame on its own instead (see
   docs/analysis.md: better pointing and ownership on every model measured, but a frame where an
   action is absent gets its noise stretched to [0, 1]). `scale="zscore"` standardises each class's
   map instead (mean 0, standard deviation 1 over the clip or frame) and then maps every class to
   [0, 1] by one shared affine, so classes are compared in standard units: a pixel goes to the class
   that stands out most from its own map there, not to the class whose extremes happen to be
   closest (docs/analysis.md: more pixels and boxes to the right action on all four models measured).
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
SCALES = ("minmax", "zscore")


@dataclass
class MCAM:
    """mCAM of one clip: smoothed `intensity (T, H, W)` in [0, 1], `owner (T, H, W)` (index into
    `classes`, -1 = nobody), the suppressed per-class maps `(S, T, H, W)` and the class indices `(S,)`."""

    intensity: torch.Tensor
    owner: torch.Tensor
    maps: torch.Tensor
    classes: torch.Tensor


def normalise(maps: torch.Tensor, per: str = "clip", scale: str = "minmax") -> torch.Tensor:
    """Scale class maps `(S, T, H, W)` to [0, 1] over the whole clip (`per="clip"`) or each frame
    (`per="frame"`). `minmax`: each map (or frame) on its own, a constant one becomes 0. `zscore`: each
    standardised, then all by one affine to [0, 1] (a constant one sits at the bottom, 0)."""
    if per not in NORMALISE:
        raise ValueError(f"normalise per {per!r}: choose one of {', '.join(NORMALISE)}")
    if scale not in SCALES:
        raise ValueError(f"normalise scale {scale!r}: choose one of {', '.join(SCALES)}")
    flat = maps.flatten(1) if per == "clip" else maps.flatten(2)
    if scale == "minmax":
        lo, hi = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    else:
        sd = flat.std(-1, keepdim=True, unbiased=False)
        flat = torch.where(sd > 0, (flat - flat.mean(-1, keepdim=True)) / torch.where(sd > 0, sd, torch.ones_like(sd)),
                           torch.full_like(flat, float("inf")))  # constant: placed at the bottom below
        varied = torch.isfinite(flat)
        lo = flat[varied].min() if varied.any() else flat.new_zeros(())
        hi = flat[varied].max() if varied.any() else flat.new_zeros(())
        flat = torch.where(varied, flat, lo)
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
         normalised: bool = False, per: str = "clip", scale: str = "minmax") -> MCAM:
    """mCAM of one clip from its class CAMs `(S, T, H, W)` at frame resolution (DESIGN 7 steps 1-3);
    `normalised` says the maps already went through `normalise`, else it runs `per` clip or frame by `scale`."""
    m = maps if normalised else normalise(maps, per, scale)
    sup = suppress_similar(m, delta)
    peak, arg = sup.max(0)
    owner = torch.where(peak > 0, arg, torch.full_like(arg, -1))
    return MCAM(smooth(peak, sigma).clamp_(0, 1), owner, sup, classes)


def max_of_cams(maps: torch.Tensor, classes: torch.Tensor, per: str = "clip", scale: str = "minmax") -> MCAM:
    """The plain baseline: normalised maps, max and argmax, no suppression and no smoothing."""
    m = normalise(maps, per, scale)
    peak, arg = m.max(0)
    return MCAM(peak, torch.where(peak > 0, arg, torch.full_like(arg, -1)), m, classes)
