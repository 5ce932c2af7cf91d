"""Probes 38-47 of issue 12 (docs/synth.md, "Gathering each actor's motion along its track"): a trunk with a
3-frame temporal field whose last map gathers, by attention, the features of the positions that belong to the
same actor in every frame, so that a map can know an actor's whole motion and still sit on its place in each
frame. Runs `loc_probe.py` with the model `i3d_r18_attend`, registered here: not in the library yet, whose
block splits and concept paths do not know a block that reads the clip's colours besides its input
(synth.md says what adopting it takes).

    python benchmarks/track_attention.py OUT NAME [loc_probe options] --kwargs '{"attention_dim": 32, ...}'
    python benchmarks/track_attention.py mass RUN WORLD [MAX_CLIPS]   # where the attention looks

`mass` prints, for query positions inside one action's box in clips with two or more boxed actions, the share
of their attention on that action's boxes (any frame), on the other actions' boxes and on the background, next
to those regions' shares of the positions (a last-map cell belongs to a box it is at least 30 % covered by).

`attention_dim` (learned keys' size), `attention_locality` (initial weight of a prior against jumps per frame,
`- softplus(rho) |dyx|^2 / (|dt| + 1)^2` in normalised coordinates; 0: none), `attention_guided` (no learned
keys: a bilateral affinity on each cell's mean input colour, `- softplus(gamma) |c - c'|^2`, plus the prior;
the learned key convs are still built, unused, as in the probes' runs, so a rebuild draws the same initial weights).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mmit_interp.models import MODELS, VideoResNet, i3d_r18


class ActorAttention(nn.Module):
    """A non-local block (Wang et al. 2018) over every (t, y, x) position of the last map: each position
    gathers the values of the positions it attends to, `f + relu(BN(W [f, gathered]))`. Keys and values see
    the features and each position's normalised coordinates."""

    def __init__(self, channels: int, dim: int, locality: float = 0.0, guided: bool = False):
        super().__init__()
        self.dim = dim
        self.rho = nn.Parameter(torch.tensor(float(locality))) if locality else None
        self.gamma = nn.Parameter(torch.tensor(4.0)) if guided else None
        self.q = nn.Conv3d(channels + 3, dim, 1)
        self.k = nn.Conv3d(channels + 3, dim, 1)
        self.v = nn.Sequential(nn.Conv3d(channels + 3, channels, 1), nn.ReLU(inplace=True),
                               nn.Conv3d(channels, channels, 1))
        self.out = nn.Sequential(nn.Conv3d(2 * channels, channels, 1, bias=False), nn.BatchNorm3d(channels),
                                 nn.ReLU(inplace=True))

    def attention(self, f: torch.Tensor, guide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention weights `(N, P, P)` of every position over every position, and the values `(N, K, P)`."""
        n, _, t, h, w = f.shape
        axes = [torch.linspace(-1, 1, k, device=f.device, dtype=f.dtype) if k > 1
                else torch.zeros(1, device=f.device, dtype=f.dtype) for k in (t, h, w)]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij")).expand(n, 3, t, h, w)
        x = torch.cat([f, coords], 1)
        if self.gamma is not None:
            g = guide.flatten(2).transpose(1, 2)  # (N, P, 3): each cell's mean input colour
            logits = -nn.functional.softplus(self.gamma) * torch.cdist(g, g) ** 2
        else:
            logits = torch.einsum("ndp,ndr->npr", self.q(x).flatten(2), self.k(x).flatten(2)) / math.sqrt(self.dim)
        if self.rho is not None:
            c = coords[0].flatten(1)  # (3, P): t, y, x
            d2 = (c[1, :, None] - c[1, None]) ** 2 + (c[2, :, None] - c[2, None]) ** 2
            dt = (c[0, :, None] - c[0, None]).abs() * (t - 1) / 2
            logits = logits - nn.functional.softplus(self.rho) * d2 / (dt + 1) ** 2
        return torch.softmax(logits, dim=2), self.v(x).flatten(2)

    def forward(self, f: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        a, v = self.attention(f, guide)
        gathered = torch.einsum("npr,nkr->nkp", a, v).reshape_as(f)
        return f + self.out(torch.cat([f, gathered], 1))


class AttendedResNet(VideoResNet):
    """`i3d_r18` with an `ActorAttention` after layer4 (its last map is the attended one)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = super().forward_features(x)
        return self.attend(f, nn.functional.adaptive_avg_pool3d(x, f.shape[2:]))


def i3d_r18_attend(*, num_classes: int, attention_dim: int = 32, attention_locality: float = 0.0,
                   attention_guided: bool = False, **kwargs) -> AttendedResNet:
    """`i3d_r18(**kwargs)` followed by an `ActorAttention` block."""
    net = i3d_r18(num_classes=num_classes, **kwargs)
    net.__class__ = AttendedResNet
    net.attend = ActorAttention(net.feature_dim, attention_dim, attention_locality, attention_guided)
    return net


MODELS.setdefault("i3d_r18_attend", i3d_r18_attend)


def attention_mass(run: str | Path, world: str | Path, max_clips: int = 80) -> dict[str, list[float]]:
    """Attention shares `{"mass": [own, other, background], "area": [...]}` of a run's `ActorAttention`
    on a synthetic world's validation clips (see the module doc)."""
    from mmit_interp.checkpoint import load_model
    from mmit_interp.dataset import ClipTransform
    from mmit_interp.explain.localisation import boxes_from_truth, clip_inputs

    model, meta = load_model(run)
    tf = ClipTransform.from_dict(meta["transforms"])
    seen: list[torch.Tensor] = []
    plain = model.attend.attention

    def spy(f: torch.Tensor, guide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a, v = plain(f, guide)
        seen.append(a[0])
        return a, v

    model.attend.attention = spy
    mass, area = np.zeros(3), np.zeros(3)
    for clip in boxes_from_truth(world)[:max_clips]:
        inp = clip_inputs(model, meta["vocab"], clip, tf)
        if inp is None or len(inp["actions"]) < 2:
            continue
        seen.clear()
        with torch.no_grad():
            f = model.forward_features(inp["video"])
        a = seen[0].numpy()
        m = torch.tensor(inp["masks"], dtype=torch.float32)  # (S, T, H, W) boxes on the input grid
        cells = nn.functional.adaptive_avg_pool2d(m.flatten(0, 1), f.shape[-2:]).view(len(m), -1).numpy() > 0.3
        for s in range(len(m)):
            own = cells[s]
            other = cells[np.arange(len(m)) != s].any(0) & ~own
            bg = ~cells.any(0)
            if own.any():
                rows = a[own]
                mass += [rows[:, r].sum(1).mean() for r in (own, other, bg)]
                area += [r.mean() for r in (own, other, bg)]
    return {"mass": (mass / mass.sum()).round(3).tolist(), "area": (area / area.sum()).round(3).tolist()}


if __name__ == "__main__":
    if sys.argv[1] == "mass":
        print(attention_mass(sys.argv[2], sys.argv[3], *(int(x) for x in sys.argv[4:5])))
    else:
        import loc_probe

        sys.argv += ["--model", "i3d_r18_attend"]
        loc_probe.main()
