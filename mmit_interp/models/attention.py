"""`i3d_r18_attend`: an `i3d_r18` whose last map gathers each actor's motion along its track (issue 12).

A trunk with a short temporal field keeps each last-map position on its actor's place in its own frame,
but cannot tell actions apart that differ only in the motion over the whole clip. `TrackAttention`, a
non-local block (Wang et al. 2018) after layer4, lets every (t, y, x) position gather the features of the
positions it attends to. Keyed on each cell's input colour plus a prior against jumps (a bilateral
affinity, DenseCRF's appearance and position kernels), a position attends to its own actor in the other
frames, so its map knows that actor's whole motion and little of the others' (docs/synth.md, "Gathering
each actor's motion along its track"). The colour is the trunk's *guide*: computed once from the clip,
carried beside the block outputs by the analyses (`ModelBase.guide`, `GuidedBlock`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import GuidedBlock
from .resnet3d import VideoResNet, i3d_r18


class TrackAttention(GuidedBlock):
    """`f + relu(BN(W [f, gathered]))`, `gathered(p) = sum_r a(p, r) v(r)` over every position r of the map.

    Values `v` see the features and each position's normalised (t, y, x). Logits of `a(p, .)`:
    - `guided`: `-softplus(gamma) |c_p - c_r|^2` on the guide's cell colours `c` (no learned keys);
      otherwise learned keys `q_p . k_r / sqrt(dim)` of the features and coordinates;
    - with `locality > 0`, minus `softplus(rho) |dyx|^2 / (|dt| + 1)^2` (normalised coordinates, dt in
      frames): a position prefers positions near it at a speed an actor can have (rho starts at `locality`).
    A guided block given no guide (selectivity's solo-unit maps, where no clip stands behind the map)
    attends by the prior alone.
    """

    def __init__(self, channels: int, dim: int = 32, locality: float = 0.0, guided: bool = False):
        super().__init__()
        self.dim = dim
        self.rho = nn.Parameter(torch.tensor(float(locality))) if locality else None
        self.gamma = nn.Parameter(torch.tensor(4.0)) if guided else None
        if not guided:
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
        p = t * h * w
        if self.gamma is None:
            logits = torch.einsum("ndp,ndr->npr", self.q(x).flatten(2), self.k(x).flatten(2)) / math.sqrt(self.dim)
        elif guide is None:
            logits = f.new_zeros(n, p, p)
        else:
            if guide.shape[2:] != f.shape[2:]:
                guide = nn.functional.adaptive_avg_pool3d(guide, f.shape[2:])
            g = guide.flatten(2).transpose(1, 2).to(f.dtype)  # (N, P, 3): each cell's mean input colour
            logits = -nn.functional.softplus(self.gamma) * torch.cdist(g, g) ** 2
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
    """A `VideoResNet` whose last block is a `TrackAttention` (`attend`) after layer4: its output is the map the
    head reads, the CAMs weigh and dissection (layer `attend`) and concept paths see."""

    stride: int = 8  # the last map's spatial stride, to pool the guide to its grid

    def guide(self, x: torch.Tensor) -> torch.Tensor | None:
        """Each last-map cell's mean input colour `(N, 3, T, H/stride, W/stride)` (`None` for learned keys)."""
        if self.attend.gamma is None:
            return None
        t, h, w = x.shape[2:]
        return nn.functional.adaptive_avg_pool3d(x, (t, math.ceil(h / self.stride), math.ceil(w / self.stride)))

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The ResNet's blocks, then `attend`."""
        return super().blocks() + [("attend", self.attend)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The attended last map `(N, K, T', H', W')`."""
        return self.attend(super().forward_features(x), self.guide(x))


def i3d_r18_attend(*, num_classes: int, attention_dim: int = 32, attention_locality: float = 0.0,
                   attention_guided: bool = False, **kwargs) -> AttendedResNet:
    """`i3d_r18(**kwargs)` followed by a `TrackAttention` block: `attention_dim` the learned keys' size,
    `attention_locality` the prior's initial weight (0: none), `attention_guided` keys on the cells' colours."""
    net = i3d_r18(num_classes=num_classes, **kwargs)
    net.__class__ = AttendedResNet  # the same modules and parameters; the subclass only adds `attend` after them
    strided = [net.conv1, net.maxpool] + [getattr(net, f"layer{s}")[0].conv1 for s in range(1, 5)]
    net.stride = math.prod(getattr(m, "stride", (1,))[-1] for m in strided)  # read off the built trunk
    net.attend = TrackAttention(net.feature_dim, attention_dim, attention_locality, attention_guided)
    return net
