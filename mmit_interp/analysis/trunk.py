"""Splitting a model at a block: run the trunk up to it once, the rest many times (ablation, selectivity).

The split is inside `model.trunk()` (a fusion model's visual trunk); the head's context (a fusion
model's pooled audio) is computed once with the prefix (`ctx`) and handed to `model.head` again in
`logits_from`, exactly as the model's forward does. Block names are those of the trunk's `blocks()`
(`stem`, `layer1.0`, ...); a stage name (`layer4`) means its last block, the same tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def trunk_prefix(model: nn.Module) -> str:
    """The dotted `named_modules()` prefix of the model's trunk (`""` or `"visual."`), for naming its units."""
    trunk = model.trunk()
    return next(n + "." if n else "" for n, m in model.named_modules() if m is trunk)


def resolve_block(model: nn.Module, name: str) -> str:
    """A `blocks()` name; a stage name (`layer3`) resolves to its last block (`layer3.1`)."""
    names = [n for n, _ in model.trunk().blocks()]
    if name in names:
        return name
    inside = [n for n in names if n.startswith(name + ".")]
    if not inside:
        raise KeyError(f"no block or stage {name!r}; blocks are {', '.join(names)}")
    return inside[-1]


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of every residual block (all blocks but the stem), in execution order."""
    return [n for n, _ in model.trunk().blocks() if n != "stem"]


def stage_aliases(model: nn.Module, name: str) -> list[str]:
    """Names under which a block's output may have been dissected: the block and, if it ends a stage, the stage."""
    block = resolve_block(model, name)
    stage = block.split(".")[0]
    return [block, stage] if resolve_block(model, stage) == block else [block]


@dataclass
class Prefix:
    """Block output `feats (N, K, ...)` of a batch and the head's context needed to finish it (fusion audio)."""

    feats: torch.Tensor
    ctx: torch.Tensor | None


def run_until(model: nn.Module, name: str, batch: dict[str, torch.Tensor]) -> Prefix:
    """Output of block `name` for a dataset batch, and the head's context."""
    trunk = model.trunk()
    x = batch[trunk.inputs[0]]
    name = resolve_block(model, name)
    for n, m in trunk.blocks():
        x = m(x)
        if n == name:
            break
    return Prefix(x, model.context(batch))


def logits_from(model: nn.Module, name: str, feats: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
    """Logits from block `name`'s output: the later blocks and the head (with the context; none: silence)."""
    return model.head(model.trunk().features_from(resolve_block(model, name), feats), ctx)
