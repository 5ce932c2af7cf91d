"""Splitting a model at a block: run the trunk up to it once, the rest many times (ablation, selectivity).

For a fusion model the split is inside its visual trunk: the audio branch's pooled features are
computed once with the prefix (`ctx`) and concatenated again in `logits_from`, exactly as
`FusionNet.forward` does. Block names are those of `model.blocks()` (`stem`, `layer1.0`, ...);
a stage name (`layer4`) means its last block, the same tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def trunk_of(model: nn.Module) -> nn.Module:
    """The module whose `blocks()` are split: the model itself, or a fusion model's visual trunk."""
    return model.visual if getattr(model, "modality", "video") == "fusion" else model


def resolve_block(model: nn.Module, name: str) -> str:
    """A `blocks()` name; a stage name (`layer3`) resolves to its last block (`layer3.1`)."""
    names = [n for n, _ in trunk_of(model).blocks()]
    if name in names:
        return name
    inside = [n for n in names if n.startswith(name + ".")]
    if not inside:
        raise KeyError(f"no block or stage {name!r}; blocks are {', '.join(names)}")
    return inside[-1]


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of every residual block (all blocks but the stem), in execution order."""
    return [n for n, _ in trunk_of(model).blocks() if n != "stem"]


def stage_aliases(model: nn.Module, name: str) -> list[str]:
    """Names under which a block's output may have been dissected: the block and, if it ends a stage, the stage."""
    block = resolve_block(model, name)
    stage = block.split(".")[0]
    return [block, stage] if resolve_block(model, stage) == block else [block]


@dataclass
class Prefix:
    """Block output `feats (N, K, ...)` of a batch and the context needed to finish it (fusion audio)."""

    feats: torch.Tensor
    ctx: torch.Tensor | None


def run_until(model: nn.Module, name: str, batch: dict[str, torch.Tensor]) -> Prefix:
    """Output of block `name` for a dataset batch (and the fusion model's pooled, masked audio)."""
    trunk = trunk_of(model)
    kind = getattr(model, "modality", "video")
    x = batch["audio"] if kind == "audio" else batch["video"]
    name = resolve_block(model, name)
    for n, m in trunk.blocks():
        x = m(x)
        if n == name:
            break
    ctx = None
    if kind == "fusion":
        a = model.audio.pool(model.audio.forward_features(batch["audio"]))
        ctx = a * batch["has_audio"].to(a.dtype).view(-1, 1)
    return Prefix(x, ctx)


def logits_from(model: nn.Module, name: str, feats: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
    """Logits from block `name`'s output: the later blocks and the head (fusion: with the audio context)."""
    name = resolve_block(model, name)
    out = trunk_of(model).forward_from(name, feats)
    if getattr(model, "modality", "video") != "fusion":
        return out
    if ctx is None:
        ctx = torch.zeros(out.shape[0], model.feature_dim - model.visual_dim, dtype=out.dtype)
    return model.fc(model.dropout(torch.cat([out, ctx.expand(out.shape[0], -1)], 1)))
