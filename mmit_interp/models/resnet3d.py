"""Inflated 3-D ResNets for video, `(N, 3, T, H, W)` in, logits `(N, C)` out.

One generic trunk (`VideoResNet`) takes its block type and a per-block temporal-kernel plan; the
recipes differ only in those parts (torchvision's `models/video/resnet.py` shape):
- `resnet3d50`: the authors' M-MiT model (Monfort et al.; Hara et al. 3-D ResNet): conv1 7x7x7
  stride (1,2,2), max-pool 3x3x3 stride 2, every middle conv 3x3x3, stages 2-4 stride time too.
  16x224x224 in gives a 2048x1x7x7 layer4. Names match their release (`last_linear` -> `fc`).
- `i3d_r50`: Wang et al. (non-local networks) I3D baseline: conv1 5x7x7 stride (1,2,2), max-pool
  1x3x3, 3x1x1 first convs on alternating bottlenecks, no temporal striding (time kept at layer4,
  so CAMs differ per frame). Their pool2 temporal pooling is omitted for the same reason.
- `i3d_r18`: small ResNet-18-shaped I3D (basic blocks, base `width` 16 by default) for the demo
  and tests; time is kept after the stem.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .base import ModelBase, call_block, gap_weights


class TimeSymmetricConv3d(nn.Conv3d):
    """A Conv3d whose kernel is the same read forwards and backwards in time (`w[t] = w[-t]`, stored as is,
    applied symmetrised), so a stack of them commutes with reversing the clip: no map can systematically
    lag or lead its actor. The state dict is a plain Conv3d's, so inflation and checkpoints are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, 0.5 * (self.weight + self.weight.flip(2)), self.bias)


def _conv(cin: int, cout: int, kt: int, ks: int, stride: tuple[int, int, int] = (1, 1, 1)) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, (kt, ks, ks), stride=stride, padding=(kt // 2, ks // 2, ks // 2), bias=False)


def _symmetrise_time(net: nn.Module) -> None:
    """Turn every Conv3d of `net` with a temporal kernel > 1 into a `TimeSymmetricConv3d` in place."""
    for m in net.modules():
        if type(m) is nn.Conv3d and m.kernel_size[0] > 1:
            m.__class__ = TimeSymmetricConv3d


class BasicBlock3d(nn.Module):
    """Two (kt x ks x ks) convs with an identity (or 1x1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: tuple[int, int, int], kt: Sequence[int], ks: int = 3):
        super().__init__()
        self.conv1 = _conv(inplanes, planes, kt[0], ks, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv(planes, planes, kt[1], ks)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class Bottleneck3d(nn.Module):
    """1x1 -> ks x ks -> 1x1 bottleneck; `kt` gives the temporal kernel of conv1 and conv2."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: tuple[int, int, int], kt: Sequence[int], ks: int = 3):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, (kt[0], 1, 1), padding=(kt[0] // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv(planes, planes, kt[1], ks, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


def _shortcut(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential | None:
    if cin == cout and stride == (1, 1, 1):
        return None
    return nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))


class GapLinearNet(ModelBase):
    """The shared tail of every trunk with a GAP + linear head (`fc`): subclasses give `inputs`, `blocks()`,
    `forward_features()` and `pool()`; the model is its own trunk and `forward_head` is its head.

    `head_r > 0` pools the class maps `W F + b` (the CAMs themselves) by log-sum-exp,
    `(1/r) log mean exp(r m)`, instead of averaging: r -> 0 is GAP + linear, large r the maximum
    (Pinheiro & Collobert 2015; WILDCAT). The gradient then reaches the positions where a class's
    map is high, not every position of a clip holding the class, so each map stays on its actor.
    """

    head_r: float = 0.0

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """Pooling + (dropout) + linear: logits `(N, C)` from the last features `(N, K, ...)`."""
        if self.head_r <= 0:
            return self.fc(self.dropout(self.pool(f)))
        m = torch.einsum("nk...,ck->nc...", self.dropout(f), self.fc.weight).flatten(2)  # class maps (N, C, P)
        r = self.head_r
        pooled = (torch.logsumexp(r * m, dim=2) - math.log(m.shape[2])) / r
        return pooled + self.fc.bias

    def pool_weights(self, f: torch.Tensor, class_idx: int) -> torch.Tensor:
        """Weights `(N, P)` over the last map's positions with which class `class_idx`'s logit reads the
        features: uniform for GAP; `softmax(r m_c)` for the LSE head, where exactly
        `logit_c = b_c + sum_k W[c, k] <F_k>_weights + (H(weights) - log P) / r`."""
        if self.head_r <= 0:
            return gap_weights(f)
        m = torch.einsum("nkp,k->np", f.flatten(2), self.fc.weight[class_idx])
        return torch.softmax(self.head_r * m, dim=1)

    def trunk(self) -> GapLinearNet:
        """The model is its own trunk."""
        return self

    def head(self, feats: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """The model's own `forward_head` (no context)."""
        return self.forward_head(feats)

    def cam_weight(self) -> torch.Tensor:
        """The linear head's weight `(C, K)`."""
        return self.fc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def features_from(self, name: str, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """Last features from `x`, the output of block `name`: runs every later block (with the trunk's guide
        for a `GuidedBlock`, see `ModelBase.guide`)."""
        blocks = self.blocks()
        names = [n for n, _ in blocks]
        if name not in names:
            raise KeyError(f"no block {name!r}; blocks are {', '.join(names)}")
        for _, m in blocks[names.index(name) + 1:]:
            x = call_block(m, x, guide)
        return x


class VideoResNet(GapLinearNet):
    """Generic 3-D ResNet trunk + GAP + linear head.

    `kt_plan[s][b]` is the (conv1, conv2) temporal kernel pair of block b in stage s;
    `strides[s]` the (t, h, w) stride of stage s's first block; `spatial_kernels[s]` the spatial
    kernel of stage s's convs (1 in late stages bounds the receptive field, as in BagNet).
    """

    modality = "video"
    inputs = ("video",)

    def __init__(self, block: type[nn.Module], layers: Sequence[int], kt_plan: Sequence[Sequence[Sequence[int]]],
                 strides: Sequence[tuple[int, int, int]], *, num_classes: int, width: int = 64,
                 stem_kernel: tuple[int, int, int] = (5, 7, 7), stem_stride: tuple[int, int, int] = (1, 2, 2),
                 pool_kernel: tuple[int, int, int] | None = (1, 3, 3),
                 pool_stride: tuple[int, int, int] = (1, 2, 2), spatial_kernels: Sequence[int] = (3, 3, 3, 3),
                 head_r: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.head_r = float(head_r)
        self.num_classes = num_classes
        self.conv1 = nn.Conv3d(3, width, stem_kernel, stride=stem_stride,
                               padding=tuple(k // 2 for k in stem_kernel), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = (nn.MaxPool3d(pool_kernel, pool_stride, padding=tuple(k // 2 for k in pool_kernel))
                        if pool_kernel else nn.Identity())
        inplanes = width
        for s, (n, stride, ks) in enumerate(zip(layers, strides, spatial_kernels)):
            planes = width * 2 ** s
            blocks = []
            for b in range(n):
                blocks.append(block(inplanes, planes, tuple(stride) if b == 0 else (1, 1, 1), kt_plan[s][b], ks))
                inplanes = planes * block.expansion
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.feature_dim = inplanes
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each block: each block starts as identity
            if isinstance(m, (Bottleneck3d, BasicBlock3d)):
                nn.init.zeros_((m.bn3 if isinstance(m, Bottleneck3d) else m.bn2).weight)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 -> bn1 -> relu -> maxpool."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of the stem and every residual block, in execution order."""
        out: list[tuple[str, nn.Module]] = [("stem", _Stem(self))]
        for s in range(1, 5):
            layer = getattr(self, f"layer{s}")
            out += [(f"layer{s}.{i}", blk) for i, blk in enumerate(layer)]
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last conv features `(N, K, T', H', W')` (layer4 output)."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def pool(self, f: torch.Tensor) -> torch.Tensor:
        """Global average pooling `(N, K, ...) -> (N, K)`."""
        return self.avgpool(f).flatten(1)


class _Stem(nn.Module):
    """View of a trunk's stem as one block (not registered as a child: no duplicate params)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.__dict__["net"] = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.stem(x)


def _plan(layers: Sequence[int], pattern: Sequence[Sequence[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    return [[pattern[s][b % len(pattern[s])] for b in range(n)] for s, n in enumerate(layers)]


def resnet3d50(*, num_classes: int, dropout: float = 0.0) -> VideoResNet:
    """The authors' M-MiT `resnet3d50` (3x3x3 everywhere, time strided in stages 2-4)."""
    layers = (3, 4, 6, 3)
    return VideoResNet(Bottleneck3d, layers, _plan(layers, [[(1, 3)]] * 4),
                       [(1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)], num_classes=num_classes, width=64,
                       stem_kernel=(7, 7, 7), stem_stride=(1, 2, 2), pool_kernel=(3, 3, 3),
                       pool_stride=(2, 2, 2), dropout=dropout)


def i3d_r50(*, num_classes: int, dropout: float = 0.0) -> VideoResNet:
    """Wang et al. I3D ResNet-50: 3x1x1 on alternating bottlenecks, time kept at layer4."""
    layers = (3, 4, 6, 3)
    pattern = [[(3, 1)], [(3, 1), (1, 1)], [(3, 1), (1, 1)], [(1, 1), (3, 1)]]
    return VideoResNet(Bottleneck3d, layers, _plan(layers, pattern),
                       [(1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2)], num_classes=num_classes, width=64,
                       stem_kernel=(5, 7, 7), dropout=dropout)


def i3d_r18(*, num_classes: int, width: int = 16, layer3_stride: int = 2, layer4_stride: int = 2,
            stem_pool: bool = True, spatial_kernels: Sequence[int] = (3, 3, 3, 3),
            temporal_kernels: Sequence[int] = (3, 3, 3, 3), head_r: float = 0.0, time_symmetric: bool = False,
            dropout: float = 0.0) -> VideoResNet:
    """Small ResNet-18-shaped I3D (basic blocks, no temporal striding after the stem).

    `layer4_stride=1` keeps a finer last map (e.g. 4x4 instead of 2x2 at 64x64 input);
    `spatial_kernels` / `temporal_kernels` give each stage's conv kernel in space and time: 1 in the
    late stages bounds what one position of the last map sees, so its CAM stays on one actor;
    `head_r > 0` pools the class maps by log-sum-exp (see `GapLinearNet`); `time_symmetric` makes
    every temporal kernel symmetric in time (`TimeSymmetricConv3d`; docs/synth.md, "The maps lag").
    """
    layers = (2, 2, 2, 2)
    net = VideoResNet(BasicBlock3d, layers, _plan(layers, [[(k, k)] for k in temporal_kernels]),
                       [(1, 1, 1), (1, 2, 2), (1, layer3_stride, layer3_stride), (1, layer4_stride, layer4_stride)],
                       num_classes=num_classes, width=width, stem_kernel=(3, 7, 7),
                       pool_kernel=(1, 3, 3) if stem_pool else None, spatial_kernels=spatial_kernels,
                       head_r=head_r, dropout=dropout)
    if time_symmetric:
        _symmetrise_time(net)
    return net
