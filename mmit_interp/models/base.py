"""The interface every model offers the analyses, so no caller branches on a model's kind.

A model reads named inputs from a dataset batch (`inputs`), has one *trunk* whose `blocks()` the
analyses split and whose last map the CAMs draw (`trunk()`), and a head that turns that map plus a
*context* into logits: `logits = head(*features(batch))`. The context is what the head needs besides
the trunk's map (a fusion model's pooled audio; `None` for one trunk). `cam_weight()` is the head's
weight on the trunk's pooled features and `pool_weights()` how the head reads the map's positions.
A new model family subclasses `ModelBase` (or `GapLinearNet`) in its own module and registers a builder.

A block may also read a *guide* that the trunk computes once from its input (`trunk.guide(x)`, e.g. each
last-map cell's input colour): such a block subclasses `GuidedBlock` and is called `m(y, guide)`. Whoever
runs blocks by hand (block splits, concept paths) runs them through `call_block` and carries the guide.
"""
from __future__ import annotations

import torch
from torch import nn


class ModelBase(nn.Module):
    """Shared interface of the registered models (see module doc); `modality` is for display only."""

    modality: str = ""
    inputs: tuple[str, ...] = ()

    def trunk(self) -> nn.Module:
        """The module whose `blocks()` are split and whose last features the CAMs weigh."""
        raise NotImplementedError

    def guide(self, x: torch.Tensor) -> torch.Tensor | None:
        """What the trunk's `GuidedBlock`s read besides their input, from the trunk's input `x` (`None`: no such block)."""
        return None

    def context(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """What the head needs besides the trunk's features (`None`: nothing)."""
        return None

    def features(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The trunk's last features `(N, K, ...)` of a batch and the head's context."""
        trunk = self.trunk()
        return trunk.forward_features(batch[trunk.inputs[0]]), self.context(batch)

    def head(self, feats: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """Logits `(N, C)` from the trunk's last features and the context."""
        raise NotImplementedError

    def cam_weight(self) -> torch.Tensor:
        """The head's weight `(C, K)` on the trunk's pooled features (the CAM weights)."""
        raise NotImplementedError

    def pool_weights(self, f: torch.Tensor, class_idx: int) -> torch.Tensor:
        """Weights `(N, P)` over the last map's positions with which class `class_idx`'s logit reads it."""
        raise NotImplementedError

    def parts(self) -> dict[str, nn.Module]:
        """Named sub-networks that can be initialised from their own checkpoints and frozen
        (a fusion model's `visual` and `audio` trunks); none for a single trunk."""
        return {}


def gap_weights(f: torch.Tensor) -> torch.Tensor:
    """Uniform position weights `(N, P)` of global average pooling over a map `(N, K, ...)`."""
    flat = f.flatten(2)
    return torch.full(flat.shape[::2], 1.0 / flat.shape[2], dtype=f.dtype, device=f.device)


def forward_batch(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of any registered model (or its DDP wrapper) for a batch: its `forward` on the `inputs` it names."""
    return model(*(batch.get(k) for k in getattr(model, "module", model).inputs))


class GuidedBlock(nn.Module):
    """A block that reads, besides the previous block's output `y`, the trunk's guide: `forward(y, guide)`.
    `guide` is `None` where no clip stands behind `y` (selectivity's solo-unit maps); the block must then
    still give a defined output (and say in its docstring what it does)."""

    def forward(self, y: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


def call_block(block: nn.Module, y: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
    """One block's output: `block(y)`, or `block(y, guide)` for a `GuidedBlock`."""
    return block(y, guide) if isinstance(block, GuidedBlock) else block(y)
