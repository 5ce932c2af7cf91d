"""Bring your own model: torchvision video models and torchvision/timm image models (per frame) behind `ModelBase`.

Every adapter keeps the wrapped model's parameter names (its `state_dict()` is the torchvision/timm
one, so a state_dict saved from the plain model loads as is) and cuts the model into named `blocks()`
whose outputs are grids `(N, K, T', H', W')` (MViT: tokens, see below). A block that is one module is
registered under that module's own path, so `mmit-dissect --layers layer4` hooks a 5-D grid.

- `TorchvisionVideo(arch)`: `r3d_18`, `mc3_18`, `r2plus1d_18` (GAP + linear: exact CAM); `s3d` (a
  fixed average pool, a 1x1x1 conv, a mean: linear in the last map, so exact CAM, the pool giving the
  position weights); `swin3d_t/s/b` (a per-position LayerNorm before GAP: Grad-CAM at the last stage
  `features.6`); `mvit_v1_b`, `mvit_v2_s` (the head reads only the class token: Grad-CAM at the
  second-last block's spatial tokens `blocks.{n-2}.grid`; the last block is where they reach the token).
- `PerFrame2D(backbone)`: a 2-D classifier applied to each of the T frames; logits are the mean of the
  per-frame logits, features the per-frame maps stacked in time `(N, K, T, h, w)`. Where the
  backbone's head is GAP + one linear layer (checked numerically when built) the CAM is exact,
  otherwise Grad-CAM at the last block.

Tokens become grids as the models lay them out. Swin3D stages hold `(N, T', H', W', C)`: permuted
to channels first. MViT holds `[class token, spatial tokens in (t, h, w) order]`; the grid starts at
the patch embedding's `(T/2, H/4, W/4)` (`pos_encoding`'s sizes: MViT takes only 16x224x224) and
shrinks where a block pools its queries (`attn.pool_q`), so block i's spatial tokens reshape to
`(C, T'_i, H'_i, W'_i)` (`TokenBlock.grid`). Between MViT blocks the split analyses see the tokens
channels first, `(N, C, 1 + T'H'W')`, class token included (ablation zeroes a unit everywhere).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .base import ModelBase, gap_weights

VIDEO_ARCHS = ("r3d_18", "mc3_18", "r2plus1d_18", "s3d", "swin3d_t", "swin3d_s", "swin3d_b", "mvit_v1_b", "mvit_v2_s")


def per_frame(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """A 2-D function on each frame of a grid: `(N, K, T, H, W) -> (N, K', T, h, w)`."""
    n, t = x.shape[0], x.shape[2]
    return fn(x.transpose(1, 2).flatten(0, 1)).unflatten(0, (n, t)).transpose(1, 2)


def adopt(owner: nn.Module, inner: nn.Module) -> None:
    """Register `inner`'s children, own parameters and buffers on `owner` under the same names (`inner`
    itself stays unregistered), so a wrapper's `state_dict` keys are the wrapped module's."""
    for n, c in inner.named_children():
        owner._modules[n] = c
    for n, p in inner.named_parameters(recurse=False):
        owner.register_parameter(n, p)
    for n, b in inner.named_buffers(recurse=False):
        owner.register_buffer(n, b, persistent=n not in inner._non_persistent_buffers_set)


class _Adopted(nn.Module):
    """Runs `inner` (held unregistered) but owns its children, parameters and buffers under their own
    names, so replacing a module by its wrapper leaves every `state_dict` key as it was."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.__dict__["inner"] = inner
        adopt(self, inner)

    def train(self, mode: bool = True) -> "_Adopted":
        super().train(mode)
        self.inner.training = mode
        return self

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.inner._parameters.update({n: p for n, p in self._parameters.items() if n in self.inner._parameters})
        self.inner._buffers.update({n: b for n, b in self._buffers.items() if n in self.inner._buffers})
        return self


class PerFrameBlock(_Adopted):
    """A 2-D module applied to each frame of a grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(self.inner, x)


class ChannelsLastBlock(_Adopted):
    """A module on channels-last grids `(N, T, H, W, C)` (Swin3D stages) seen channels first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class Grid(nn.Module):
    """Identity hook point whose output is a grid `(N, K, T, H, W)` (MViT's spatial tokens): the layer
    dissection and Grad-CAM read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class TokenBlock(_Adopted):
    """An MViT block on channels-first tokens `(N, C, 1 + THW)` with a fixed input grid `thw_in`; its
    spatial output tokens pass through `grid` as `(N, C', T', H', W')`."""

    def __init__(self, inner: nn.Module, thw_in: tuple[int, int, int], thw_out: tuple[int, int, int]):
        super().__init__(inner)
        self.thw_in, self.thw_out = thw_in, thw_out
        self.grid = Grid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.inner(x.transpose(1, 2), self.thw_in)
        g = self.grid(y[:, 1:].transpose(1, 2).unflatten(2, self.thw_out))
        return torch.cat([y[:, :1].transpose(1, 2), g.flatten(2)], 2)


class _View(nn.Module):
    """A method of the model as one block (the model held unregistered: no duplicate parameters; a
    `deepcopy` of the model calls the copy's method, so a randomised copy stays whole)."""

    def __init__(self, owner: nn.Module, method: str):
        super().__init__()
        self.__dict__["owner"] = owner
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.owner, self.method)(x)


class AdapterNet(ModelBase):
    """Shared tail of the adapters: the model is its own trunk, `forward_features` runs `blocks()`.

    The wrapped model `net` is held unregistered and stays the plain model; its children are this
    model's children under the same names (so `state_dict` keys match; a block wrapper takes a child's
    place here, not in `net`), and subclasses reach them as `self.net.<child>` (a child may be called
    `head` or `features`, which are `ModelBase` methods here). `cam_layer` names the
    Grad-CAM layer where the head is not linear in the last map (`linear_head()` None).
    """

    modality = "video"
    inputs = ("video",)

    def __init__(self, net: nn.Module, *, arch: str, num_classes: int):
        super().__init__()
        self.__dict__["net"] = net
        self.arch = arch
        self.num_classes = num_classes
        self.cam_layer: str | None = None
        self._blocks: list[tuple[str, nn.Module]] = []
        adopt(self, net)

    def train(self, mode: bool = True) -> "AdapterNet":
        super().train(mode)
        self.net.training = mode
        return self

    def _replace(self, path: str, module: nn.Module) -> nn.Module:
        """Put `module` at dotted `path` of this model (`net` keeps its own: it stays the plain model, sharing
        the parameters); returns it."""
        parent_path, _, leaf = path.rpartition(".")
        (self.get_submodule(parent_path) if parent_path else self)._modules[leaf] = module
        return module

    def trunk(self) -> "AdapterNet":
        """The model is its own trunk."""
        return self

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of every block in execution order; a block's name is its module path where it is one module."""
        return list(self._blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output from a clip `(N, 3, T, H, W)`."""
        for _, m in self._blocks:
            x = m(x)
        return x

    def features_from(self, name: str, x: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """Last features from `x`, the output of block `name`: runs every later block (a wrapped model has no
        `GuidedBlock`, so `guide` is `None`)."""
        names = [n for n, _ in self._blocks]
        if name not in names:
            raise KeyError(f"no block {name!r}; blocks are {', '.join(names)}")
        for _, m in self._blocks[names.index(name) + 1:]:
            x = m(x)
        return x

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """Logits `(N, C)` from the last features."""
        raise NotImplementedError

    def head(self, feats: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """The wrapped model's head (no context)."""
        return self.forward_head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`(W (C, K), b (C,))` when the logits are `W . pooled map + b`, else None."""
        return None

    def cam_weight(self) -> torch.Tensor:
        """The head's weight `(C, K)` on the pooled last map; where there is none, an error naming the Grad-CAM layer."""
        lin = self.linear_head()
        if lin is None:
            raise ValueError(f"{self.arch}: the head is not linear in the last map; use Grad-CAM at {self.cam_layer!r}")
        return lin[0]

    def pool_weights(self, f: torch.Tensor, class_idx: int) -> torch.Tensor:
        """Uniform weights (global average pooling)."""
        return gap_weights(f)


def _pooled_thw(thw: tuple[int, int, int], pool: nn.Module | None) -> tuple[int, int, int]:
    """The grid after an MViT `Pool` (its conv or max-pool's kernel, stride and padding), or `thw` if none."""
    if pool is None:
        return thw
    p = pool.pool
    k, s, pad = (tuple(v) if isinstance(v, (tuple, list)) else (v,) * 3 for v in (p.kernel_size, p.stride, p.padding))
    return tuple((n + 2 * q - kk) // st + 1 for n, kk, st, q in zip(thw, k, s, pad))


class TorchvisionVideo(AdapterNet):
    """A torchvision video classifier (`torchvision.models.video`) with random weights: nothing is downloaded."""

    def __init__(self, arch: str, *, num_classes: int):
        import torchvision

        if arch not in VIDEO_ARCHS:
            raise ValueError(f"unknown torchvision video model {arch!r}; supported: {', '.join(VIDEO_ARCHS)}")
        super().__init__(torchvision.models.get_model(arch, weights=None, num_classes=num_classes),
                         arch=arch, num_classes=num_classes)
        net = self.net
        self.family = {"r3d": "resnet", "mc3": "resnet", "r2plus1d": "resnet"}.get(arch.split("_")[0], arch.split("_")[0])
        if self.family == "resnet":
            self._blocks = [(n, getattr(net, n)) for n in ("stem", "layer1", "layer2", "layer3", "layer4")]
        elif self.family == "s3d":
            self._blocks = [(f"features.{i}", b) for i, b in enumerate(net.features)]
        elif self.family == "swin3d":
            stages = self._replace("features", nn.Sequential(*[ChannelsLastBlock(s) for s in net.features]))
            self._blocks = [("stem", _View(self, "token_stem"))] + [(f"features.{i}", s) for i, s in enumerate(stages)]
            self.cam_layer = f"features.{len(stages) - 1}"
        else:  # mvit
            thw, wrapped = (net.pos_encoding.temporal_size,) + tuple(net.pos_encoding.spatial_size), []
            for blk in net.blocks:
                out = _pooled_thw(thw, blk.attn.pool_q)
                wrapped.append(TokenBlock(blk, thw, out))
                thw = out
            seq = self._replace("blocks", nn.Sequential(*wrapped))
            self._blocks = [("stem", _View(self, "token_stem"))] + [(f"blocks.{i}", b) for i, b in enumerate(seq)]
            self.cam_layer = f"blocks.{len(seq) - 2}.grid"

    def token_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Swin3D: patch embedding as a grid `(N, C, T', H', W')`; MViT: patch embedding + positions +
        class token, channels first `(N, C, 1 + T'H'W')`."""
        net = self.net
        if self.family == "swin3d":
            return net.pos_drop(net.patch_embed(x)).permute(0, 4, 1, 2, 3)
        return net.pos_encoding(net.conv_proj(x).flatten(2).transpose(1, 2)).transpose(1, 2)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """torchvision's own head on the last features."""
        net = self.net
        if self.family == "resnet":
            return net.fc(net.avgpool(f).flatten(1))
        if self.family == "s3d":
            return net.classifier(net.avgpool(f)).mean((2, 3, 4))
        if self.family == "swin3d":
            return net.head(net.avgpool(net.norm(f.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)).flatten(1))
        return net.head(net.norm(f.transpose(1, 2))[:, 0])

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The video ResNets' `fc`; S3D's 1x1x1 classifier conv as `(C, K)`; None for the transformers."""
        if self.family == "resnet":
            return self.net.fc.weight, self.net.fc.bias
        if self.family == "s3d":
            conv = self.net.classifier[1]
            return conv.weight.flatten(1), conv.bias
        return None

    def pool_weights(self, f: torch.Tensor, class_idx: int) -> torch.Tensor:
        """GAP's uniform weights; for S3D the exact weights of its pool-then-mean (the gradient of
        `mean(avgpool(F))`, linear in F, at a map of ones: uniform where the pool window covers the map)."""
        if self.family != "s3d":
            return gap_weights(f)
        ones = torch.ones((1, 1) + tuple(f.shape[2:]), dtype=f.dtype, device=f.device, requires_grad=True)
        with torch.enable_grad():
            (w,) = torch.autograd.grad(self.net.avgpool(ones).mean(), ones)
        return w.flatten(1).expand(f.shape[0], -1)


def _child(m: nn.Module, *names: str) -> nn.Module | None:
    """The first of the named children that `m` has."""
    return next((m._modules[n] for n in names if m._modules.get(n) is not None), None)


def _last_linear(b: nn.Module) -> nn.Module | None:
    """The 2-D classifier's final layer if it is linear (timm's `get_classifier()`, torchvision's `fc` or `classifier[-1]`)."""
    if hasattr(b, "get_classifier"):
        head = b.get_classifier()
    else:
        head = _child(b, "fc", "classifier")
    if isinstance(head, nn.Sequential):
        head = head[-1]
    return head if isinstance(head, nn.Linear) else None


class PerFrame2D(AdapterNet):
    """A torchvision or timm 2-D image classifier applied per frame: `(N, 3, T, H, W)` -> the mean of the
    T per-frame logits. Blocks: ResNets' stem and `layer1`..`layer4`; timm EfficientNets/MobileNets'
    stem, `blocks.i` (and `conv_head`, `bn2` where they come before the pooling); torchvision's
    `features.i`; a cut must reproduce the plain model's logits (checked when built), else the model is
    one block, `feature_maps` (timm's whole `forward_features`)."""

    def __init__(self, backbone: nn.Module, *, arch: str = "", num_classes: int | None = None):
        lin = _last_linear(backbone)
        if num_classes is None:
            if lin is None:
                raise ValueError(f"{type(backbone).__name__}: no linear classifier to read the class count from; "
                                 "pass num_classes")
            num_classes = lin.out_features
        super().__init__(backbone, arch=arch or type(backbone).__name__, num_classes=num_classes)
        self.__dict__["_lin"] = lin  # one of the children already: not registered twice
        was = backbone.training
        self.eval()
        for head_convs in (True, False):  # timm MobileNetV3's conv_head comes after the pooling: not a block
            self._modules.update(backbone._modules)  # undo an earlier cut: every child the backbone's own
            self._blocks = self._cut(backbone, head_convs)
            if self._blocks and self._reproduces():
                break
        else:
            if not hasattr(backbone, "forward_features"):
                raise ValueError(f"{self.arch}: cannot cut {type(backbone).__name__} into per-frame blocks")
            self._modules.update(backbone._modules)
            self._modules["feature_maps"] = _View(self, "frame_features")  # hookable, no parameters
            self._blocks = [("feature_maps", self._modules["feature_maps"])]
        self._exact = self._check_gap_linear()
        if not self._exact:
            self.cam_layer = self._blocks[-1][0]
        self.train(was)

    def _cut(self, b: nn.Module, head_convs: bool) -> list[tuple[str, nn.Module]]:
        """The backbone as named per-frame blocks (`[]` where its layout is not one of the known ones)."""
        names = set(b._modules)
        if {"layer1", "layer4"} <= names:
            self.stem_names = [n for n in ("conv1", "bn1", "relu", "act1", "maxpool") if n in names]
            return [("stem", _View(self, "frame_stem"))] + [
                (n, self._replace(n, PerFrameBlock(b._modules[n]))) for n in ("layer1", "layer2", "layer3", "layer4")]
        if {"conv_stem", "blocks"} <= names:
            self.stem_names = ["conv_stem", "bn1"]
            stages = self._replace("blocks", nn.Sequential(*[PerFrameBlock(s) for s in b.blocks]))
            tail = [n for n in ("conv_head", "bn2") if head_convs and n in names and not isinstance(b._modules[n], nn.Identity)]
            return ([("stem", _View(self, "frame_stem"))] + [(f"blocks.{i}", s) for i, s in enumerate(stages)]
                    + [(n, self._replace(n, PerFrameBlock(b._modules[n]))) for n in tail])
        if {"features", "classifier"} <= names and isinstance(b._modules["features"], nn.Sequential):
            stages = self._replace("features", nn.Sequential(*[PerFrameBlock(s) for s in b._modules["features"]]))
            return [(f"features.{i}", s) for i, s in enumerate(stages)]
        return []

    def _probe(self, frames: int = 1) -> torch.Tensor:
        """A fixed random clip at the backbone's input size (timm's `pretrained_cfg`, else 64 px)."""
        side = int((getattr(self.net, "pretrained_cfg", None) or {}).get("input_size", (3, 64, 64))[-1])
        return torch.randn(1, 3, frames, side, side, generator=torch.Generator().manual_seed(0))

    def _reproduces(self) -> bool:
        """Whether the blocks and head give the plain model's own logits, frame-averaged (eval mode)."""
        x = self._probe(2)
        with torch.no_grad():
            try:
                ours = self(x)
            except RuntimeError:
                return False
            theirs = torch.stack([self.net(x[:, :, t]) for t in range(x.shape[2])], 1).mean(1)
        return ours.shape == theirs.shape and bool(torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4))

    def frame_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The 2-D stem (`stem_names`, in order) on every frame of a clip."""
        def stem(v: torch.Tensor) -> torch.Tensor:
            for n in self.stem_names:
                v = self.net._modules[n](v)
            return v
        return per_frame(stem, x)

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 2-D model's whole `forward_features` on every frame (a backbone not cut into blocks)."""
        return per_frame(self.net.forward_features, x)

    def _head2d(self, f: torch.Tensor) -> torch.Tensor:
        """The 2-D model's head on maps `(M, K, h, w)`: timm's `forward_head`, else avgpool -> flatten -> fc/classifier."""
        b = self.net
        if hasattr(b, "forward_head"):
            return b.forward_head(f)
        return _child(b, "fc", "classifier")(torch.flatten(b.avgpool(f), 1))

    def _check_gap_linear(self) -> bool:
        """Whether the 2-D head is exactly `linear(GAP(f))`, tested on a random map in eval mode; features
        that are not maps (a ViT's tokens) are an error."""
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            probe = self.forward_features(self._probe())
            if probe.dim() != 5:
                raise ValueError(f"{self.arch}: its features are not 2-D maps (per frame {tuple(probe.shape[1:])}); "
                                 "a per-frame model needs a convolutional backbone")
            k = probe.shape[1]
            f = torch.randn(2, k, 3, 5, generator=g)
            ok = (self._lin is not None and k == self._lin.in_features
                  and torch.allclose(self._head2d(f), self._lin(f.mean((2, 3))), rtol=1e-4, atol=1e-5))
        return bool(ok)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """Mean over frames of the 2-D head's logits of each frame's map."""
        n, t = f.shape[0], f.shape[2]
        return self._head2d(f.transpose(1, 2).flatten(0, 1)).unflatten(0, (n, t)).mean(1)

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The classifier's weight and bias when the 2-D head is GAP + that linear layer."""
        return (self._lin.weight, self._lin.bias) if self._exact else None


def build_backbone(source: str, arch: str, num_classes: int) -> nn.Module:
    """A 2-D image classifier with random weights: `source` "torchvision" or "timm" (timm imported lazily)."""
    if source == "torchvision":
        import torchvision

        if arch not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"unknown torchvision image model {arch!r}")
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if source == "timm":
        try:
            import timm
        except ImportError:
            raise ImportError("timm models need the optional package timm: pip install 'mmit-interp[own-models]'") from None
        if not timm.is_model(arch):
            raise ValueError(f"unknown timm model {arch!r}")
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    raise ValueError(f"source must be 'torchvision' or 'timm', not {source!r}")


def torchvision_video(*, num_classes: int, arch: str) -> TorchvisionVideo:
    """Registry builder: a torchvision video classifier (`arch` in `VIDEO_ARCHS`)."""
    return TorchvisionVideo(arch, num_classes=num_classes)


def torchvision_frames(*, num_classes: int, arch: str) -> PerFrame2D:
    """Registry builder: a torchvision image classifier applied per frame."""
    return PerFrame2D(build_backbone("torchvision", arch, num_classes), arch=arch, num_classes=num_classes)


def timm_frames(*, num_classes: int, arch: str) -> PerFrame2D:
    """Registry builder: a timm image classifier applied per frame."""
    return PerFrame2D(build_backbone("timm", arch, num_classes), arch=arch, num_classes=num_classes)
