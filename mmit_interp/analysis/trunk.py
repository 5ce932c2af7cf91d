"""Splitting a model at a block: run the trunk up to it once, the rest many times (ablation, selectivity).

The split is inside `model.trunk()` (a fusion model's visual trunk); the head's context (a fusion
model's pooled audio) is computed once with the prefix (`ctx`) and handed to `model.head` again in
`logits_from`, exactly as the model's forward does. So is the trunk's guide (`ModelBase.guide`: what a
`GuidedBlock` reads besides its input, e.g. the cells' input colours), which the later blocks need.
Block names are those of the trunk's `blocks()` (`stem`, `layer1.0`, ...); a stage name (`layer4`)
means its last block, the same tensor.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from ..models.base import call_block

_CHAINS_CHECKED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


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


def find_block(model: nn.Module, name: str) -> str | None:
    """`resolve_block`, or None where `name` is no block or stage of the model's trunk (e.g. a layer of
    another model dissected into the same store)."""
    try:
        return resolve_block(model, name)
    except KeyError:
        return None


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of every residual block (all blocks but the stem), in execution order."""
    return [n for n, _ in model.trunk().blocks() if n != "stem"]


def stages(model: nn.Module) -> list[str]:
    """The trunk's stages after the stem, in execution order (`layer1` .. `layer4`, then `attend` for a track
    model): what a whole-trunk analysis dissects, and the last one the map the head reads."""
    return list(dict.fromkeys(n.split(".")[0] for n in residual_blocks(model)))


def stage_aliases(model: nn.Module, name: str) -> list[str]:
    """Names under which a block's output may have been dissected: the block and, if it ends a stage, the stage."""
    block = resolve_block(model, name)
    stage = block.split(".")[0]
    return [block, stage] if stage != block and resolve_block(model, stage) == block else [block]


def check_chain(model: nn.Module, x: torch.Tensor) -> None:
    """Raise unless running the trunk's `blocks()` in order on input `x` gives its last map (`forward_features`):
    block splits (ablation, selectivity) and concept paths rebuild the map the head reads from the blocks, so a
    trunk that does more after its last block would get wrong figures, not an error. Checked once per trunk."""
    trunk = model.trunk()
    if trunk in _CHAINS_CHECKED:
        return
    with torch.no_grad():
        y, guide = x, trunk.guide(x)
        for _, m in trunk.blocks():
            y = call_block(m, y, guide)
        ref = trunk.forward_features(x)
    if y.shape != ref.shape or not torch.allclose(y, ref, rtol=1e-4, atol=1e-5):
        raise ValueError(f"{type(trunk).__name__}: its blocks() run in order do not give its last map (forward_features"
                         f" {tuple(ref.shape)}); block splits and concept paths need the map the head reads to be the"
                         " last block's output (docs/CONTRACTS.md)")
    _CHAINS_CHECKED.add(trunk)


@dataclass
class Prefix:
    """Block output `feats (N, K, ...)` of a batch, the head's context needed to finish it (fusion audio) and
    the trunk's guide for its later blocks (`None` for a trunk without `GuidedBlock`s)."""

    feats: torch.Tensor
    ctx: torch.Tensor | None
    guide: torch.Tensor | None = None


def run_until(model: nn.Module, name: str, batch: dict[str, torch.Tensor]) -> Prefix:
    """Output of block `name` for a dataset batch, and the head's context."""
    trunk = model.trunk()
    x = batch[trunk.inputs[0]]
    name = resolve_block(model, name)
    check_chain(model, x)
    guide = trunk.guide(x)
    for n, m in trunk.blocks():
        x = call_block(m, x, guide)
        if n == name:
            break
    return Prefix(x, model.context(batch), guide)


def logits_from(model: nn.Module, name: str, feats: torch.Tensor, ctx: torch.Tensor | None = None,
                guide: torch.Tensor | None = None) -> torch.Tensor:
    """Logits from block `name`'s output: the later blocks (with the trunk's guide; none: a `GuidedBlock` sees
    no clip) and the head (with the context; none: silence)."""
    return model.head(model.trunk().features_from(resolve_block(model, name), feats, guide), ctx)
