"""More explanation methods, each one small class giving maps `(N, S, T, H, W)` like `cam.py`'s.

Two families share `cam.BaseCAM`'s class selection and result (`CAMResult`):
- *channel-weight* methods override `weights(acts, grads, classes)` like `GradCAM`:
  `GradCAMPlusPlus` (Chattopadhyay et al. 2018, eq. 19; the exp-free form pytorch-grad-cam uses).
- *input-space* methods (`InputCAM`) override `attribute(clip, sel, grid)`: the map of one clip's
  selected classes straight from the input, at the input's resolution or a coarser grid that the
  shared `__call__` upsamples. `Occlusion` (a spatio-temporal cube replaced by the blurred clip,
  the drop of the class's score), `RISE` (Petsiuk et al. 2018 in 3-D: random masks over space and
  time, the mean score of the masks keeping a voxel), `IntegratedGradients` (Sundararajan et al. 2017, from the
  blurred clip, midpoint Riemann sum) and `RandomMap` (uniform noise on the last conv grid: the
  baseline row of every metric).
Scores are the sigmoid of the logit (multi-label) except Integrated Gradients, which attributes the
logit so that its completeness holds: `sum(map) ~= logit(clip) - logit(baseline)`.
Fusion models: the clip's audio is held fixed while the video is perturbed.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .cam import BaseCAM, CAMResult, GradCAM, LinearCAM, select_classes
from ..models import forward_batch

Forward = Callable[[torch.Tensor], torch.Tensor]


def blurred(video: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Each frame of `(N, 3, T, H, W)` blurred by a separable Gaussian (default sigma = H / 8, reflect
    border): the 'information removed' baseline of occlusion, RISE, IG and the deletion curves."""
    n, c, t, h, w = video.shape
    s = float(sigma if sigma is not None else h / 8)
    r = int(min(3 * s, min(h, w) - 1))
    x = torch.arange(-r, r + 1, dtype=video.dtype)
    g = torch.exp(-(x ** 2) / (2 * s ** 2))
    g = g / g.sum()
    f = video.permute(0, 2, 1, 3, 4).reshape(n * t * c, 1, h, w)
    f = F.conv2d(F.pad(f, (r, r, 0, 0), mode="reflect"), g.view(1, 1, 1, -1))
    f = F.conv2d(F.pad(f, (0, 0, r, r), mode="reflect"), g.view(1, 1, -1, 1))
    return f.view(n, t, c, h, w).permute(0, 2, 1, 3, 4).contiguous()


def clip_forward(model: nn.Module, audio: torch.Tensor | None = None, audio_mask: torch.Tensor | None = None,
                 batch_size: int = 32) -> Forward:
    """Logits of variants of one clip `(B, 3, T, H, W) -> (B, C)` in chunks of `batch_size`; the clip's
    `audio (1, 1, L)` and `audio_mask (1,)`, where given, go with every variant (a model that hears reads them)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(0, x.shape[0], batch_size):
            v = x[i: i + batch_size]
            batch = {"video": v}
            if audio is not None:
                batch["audio"] = audio.expand(v.shape[0], *audio.shape[1:])
            if audio_mask is not None:
                batch["has_audio"] = audio_mask.expand(v.shape[0])
            outs.append(forward_batch(model, batch))
        return torch.cat(outs)
    return run


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++: `w[c, k] = sum_{t,h,w} relu(g) * a`, `a = g^2 / (2 g^2 + sum(F_k) g^3)` (0 where g = 0)."""

    def weights(self, acts: torch.Tensor, grads: torch.Tensor | None, classes: torch.Tensor) -> torch.Tensor:
        """Second-order weighted positive gradients, `(S, N, K, ...)` -> `(N, S, K)`."""
        g2 = grads.pow(2)
        total = acts.flatten(2).sum(2)[None, :, :, None, None, None]
        den = 2 * g2 + total * g2 * grads
        a = torch.where((grads != 0) & (den != 0), g2 / torch.where(den != 0, den, torch.ones_like(den)), 0.0)
        return (grads.clamp(min=0) * a).flatten(3).sum(3).transpose(0, 1)


class InputCAM(BaseCAM):
    """Methods that explain from the input (perturbations or input gradients); subclasses define `attribute`.

    `attribute` gets a `forward` of batches of one clip's variants `(B, 3, T, H, W) -> logits (B, C)`
    (chunked by `batch_size`, the clip's audio held fixed), the clip `(3, T, H, W)`, the selected
    classes `(S,)` and the last conv map's grid `(T', H', W')`; it returns maps `(S, t, h, w)` that
    are upsampled to the requested size (`upsample`: `trilinear` or `nearest`)."""

    upsample = "trilinear"
    needs_input_grad = False

    def __init__(self, model: nn.Module, *, batch_size: int = 32, sigma: float | None = None):
        super().__init__(model)
        self.batch_size = batch_size
        self.sigma = sigma

    def attribute(self, forward: Forward, clip: torch.Tensor, sel: torch.Tensor,
                  grid: tuple[int, int, int]) -> torch.Tensor:
        """Maps `(S, t, h, w)` of classes `sel` for one clip."""
        raise NotImplementedError

    def baseline(self, clip: torch.Tensor) -> torch.Tensor:
        """The blurred clip `(3, T, H, W)` that stands for 'removed'."""
        return blurred(clip[None], self.sigma)[0]

    def __call__(self, video: torch.Tensor, *, audio: torch.Tensor | None = None,
                 audio_mask: torch.Tensor | None = None, classes: Sequence[int] | None = None,
                 top_k: int | None = 5, threshold: float | None = None,
                 size: tuple[int, int, int] | None = None) -> CAMResult:
        """Maps of the selected classes for a batch `video (N, 3, T, H, W)`, clip by clip."""
        with torch.no_grad():
            acts, logits = self.features_and_logits(video, audio, audio_mask)
        sel = select_classes(logits, top_k=top_k, threshold=threshold, classes=classes)
        grid = tuple(acts.shape[2:])
        raws = []
        for i in range(video.shape[0]):
            fwd = clip_forward(self.model, None if audio is None else audio[i: i + 1],
                               None if audio_mask is None else audio_mask[i: i + 1], self.batch_size)
            with torch.set_grad_enabled(self.needs_input_grad):
                raws.append(self.attribute(fwd, video[i], sel[i], grid).detach())
        raw = torch.stack(raws)
        out = tuple(video.shape[2:]) if size is None else tuple(size)
        kw = {"align_corners": False} if self.upsample == "trilinear" else {}
        maps = F.interpolate(raw.flatten(0, 1).unsqueeze(1), size=out, mode=self.upsample, **kw)
        return CAMResult(maps.view(*sel.shape, *out), raw, sel, logits)


def cell_index(n: int, cells: int) -> torch.Tensor:
    """Cell of each of `n` positions split into `cells` (nearest-upsampling's rule: `i * cells // n`)."""
    return torch.arange(n) * cells // n


class Occlusion(InputCAM):
    """Occlusion sensitivity: the clip cut into `cells = (t, h, w)` cubes, each replaced in turn by the
    blurred clip; a cube's value = score(clip) - score(occluded clip). Cost: 1 + t*h*w forwards."""

    upsample = "nearest"

    def __init__(self, model: nn.Module, *, cells: tuple[int, int, int] = (4, 4, 4), **kw):
        super().__init__(model, **kw)
        self.cells = tuple(cells)

    def attribute(self, forward: Forward, clip: torch.Tensor, sel: torch.Tensor,
                  grid: tuple[int, int, int]) -> torch.Tensor:
        """Score drop per cube `(S, t, h, w)`."""
        ct, ch, cw = self.cells
        _, t, h, w = clip.shape
        cell = (cell_index(t, ct)[:, None, None] * ch + cell_index(h, ch)[None, :, None]) * cw + cell_index(w, cw)
        masks = cell[None] == torch.arange(ct * ch * cw).view(-1, 1, 1, 1)
        base = self.baseline(clip)
        variants = torch.cat([clip[None], torch.where(masks[:, None], base[None], clip[None])])
        s = torch.sigmoid(forward(variants))[:, sel]
        return (s[0] - s[1:]).T.reshape(-1, ct, ch, cw)


class RISE(InputCAM):
    """RISE in 3-D: `n_masks` binary grids `cells = (t, h, w)` kept with probability `p`, upsampled
    (trilinear) with a random shift of up to one cell per axis, the clip outside a mask being the
    blurred clip. Map = E[score | voxel kept], estimated as `sum_i score_i mask_i / sum_i mask_i`: the
    paper divides by `n p` instead, whose per-voxel coverage noise swamps the signal at a few hundred
    masks (tested). Cost: 1 + n_masks forwards. Seeded (`seed`)."""

    def __init__(self, model: nn.Module, *, n_masks: int = 128, cells: tuple[int, int, int] = (4, 6, 6),
                 p: float = 0.5, seed: int = 0, **kw):
        super().__init__(model, **kw)
        self.n_masks, self.cells, self.p = n_masks, tuple(cells), p
        self.generator = torch.Generator().manual_seed(seed)

    def masks(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """`(n_masks, T, H, W)` soft masks in [0, 1] for a clip of `shape`."""
        g = self.generator
        grid = (torch.rand(self.n_masks, 1, *self.cells, generator=g) < self.p).float()
        step = [-(-n // c) for n, c in zip(shape, self.cells)]  # cell size, rounded up
        big = F.interpolate(grid, size=tuple((c + 1) * s for c, s in zip(self.cells, step)), mode="trilinear",
                            align_corners=False)[:, 0]
        out = torch.empty(self.n_masks, *shape)
        shifts = [torch.randint(0, s, (self.n_masks,), generator=g) for s in step]
        for i in range(self.n_masks):
            a, b, c = (int(x[i]) for x in shifts)
            out[i] = big[i, a: a + shape[0], b: b + shape[1], c: c + shape[2]]
        return out

    def attribute(self, forward: Forward, clip: torch.Tensor, sel: torch.Tensor,
                  grid: tuple[int, int, int]) -> torch.Tensor:
        """Score-weighted mean of the masks over their sum `(S, T, H, W)`."""
        m = self.masks(tuple(clip.shape[1:]))
        base = self.baseline(clip)
        s = torch.cat([torch.sigmoid(forward(base[None] + m[i: i + self.batch_size, None] * (clip - base)[None]))[:, sel]
                       for i in range(0, self.n_masks, self.batch_size)])
        return torch.einsum("ms,mthw->sthw", s, m) / m.sum(0).clamp(min=1e-6)


class IntegratedGradients(InputCAM):
    """Integrated Gradients of each selected logit from the blurred clip, `steps` midpoints; summed over
    colour channels. Cost: `steps` forwards and one batched backward each."""

    needs_input_grad = True

    def __init__(self, model: nn.Module, *, steps: int = 8, **kw):
        super().__init__(model, **kw)
        self.steps = steps

    def attribute(self, forward: Forward, clip: torch.Tensor, sel: torch.Tensor,
                  grid: tuple[int, int, int]) -> torch.Tensor:
        """`(clip - baseline) * mean path gradient`, summed over channels, `(S, T, H, W)`."""
        base = self.baseline(clip)
        alphas = (torch.arange(self.steps, dtype=clip.dtype) + 0.5) / self.steps
        total = torch.zeros(len(sel), *clip.shape)
        for i in range(0, self.steps, self.batch_size):
            a = alphas[i: i + self.batch_size].view(-1, 1, 1, 1, 1)
            x = (base[None] + a * (clip - base)[None]).requires_grad_(True)
            logits = forward(x)
            onehot = torch.zeros(len(sel), *logits.shape, dtype=logits.dtype)
            onehot[torch.arange(len(sel)), :, sel] = 1.0
            g = torch.autograd.grad(logits, x, grad_outputs=onehot, is_grads_batched=True)[0]
            total += g.sum(1)
        return ((clip - base)[None] * total / self.steps).sum(1)


class RandomMap(InputCAM):
    """The baseline: uniform noise on the last conv map's grid, upsampled like a CAM (a fresh draw per call)."""

    def __init__(self, model: nn.Module, *, seed: int = 0, **kw):
        super().__init__(model, **kw)
        self.generator = torch.Generator().manual_seed(seed)

    def attribute(self, forward: Forward, clip: torch.Tensor, sel: torch.Tensor,
                  grid: tuple[int, int, int]) -> torch.Tensor:
        """Noise `(S, T', H', W')`."""
        return torch.rand(len(sel), *grid, generator=self.generator)


METHODS: dict[str, Callable[..., BaseCAM]] = {
    "cam": LinearCAM, "gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "occlusion": Occlusion,
    "rise": RISE, "ig": IntegratedGradients, "random": RandomMap}


def make_method(name: str, model: nn.Module) -> BaseCAM:
    """The method `name` (a key of `METHODS`) on `model` with its default settings."""
    if name not in METHODS:
        raise ValueError(f"unknown explanation method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name](model)
