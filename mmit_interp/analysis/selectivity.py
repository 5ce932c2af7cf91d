"""Unit selectivity (DESIGN 9, Fig. 10, eq. 5) and the solo-unit class responses it is built on.

For block b with K units and output size (T', H', W') at the model's input size, the K synthetic
block outputs x_i (unit i's map = 1 everywhere, every other unit 0) go through the rest of the
network as one batch of K (`trunk.logits_from`, in chunks of `chunk` units to bound memory), then
c = class probabilities (softmax over classes, or per-class sigmoid: `prob`) and
selectivity_i = 1 - mean_c(c) / max_c(c). Per block: the mean over its units.

"The layer's biases are 0": the synthetic tensor *replaces* the block's output, so every additive
term computed inside the block (the shifts of its BatchNorms, incl. the shortcut's, and its
ReLU) is excluded by construction - without that, each unit's map would carry the block's own
per-channel offsets. The blocks after b and the head keep their BatchNorm shifts and bias: they are
"the rest of the network". A fusion model's audio features are 0 (a clip with no sound).

Softmax selectivity is 1 - 1/(C max_c c) and lies in [0, 1 - 1/C]; sigmoid probabilities do not
sum to 1, so with sigmoid a unit that raises every class equally still scores 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .trunk import logits_from, resolve_block, residual_blocks, run_until


def class_probs(logits: torch.Tensor, prob: str = "softmax") -> torch.Tensor:
    """Softmax over classes or elementwise sigmoid."""
    if prob == "softmax":
        return torch.softmax(logits, -1)
    if prob == "sigmoid":
        return torch.sigmoid(logits)
    raise ValueError(f"prob must be 'softmax' or 'sigmoid', not {prob!r}")


def selectivity_from_probs(p: torch.Tensor) -> torch.Tensor:
    """Eq. 5 per row: 1 - mean(c) / max(c)."""
    return 1 - p.mean(-1) / p.max(-1).values


def input_like(model: nn.Module, transforms: dict) -> dict[str, torch.Tensor]:
    """A zero batch of one clip shaped as the checkpoint's transforms say (to learn block shapes)."""
    t, s = int(transforms["frames"]), int(transforms["size"])
    n_audio = int(round(float(transforms.get("audio_rate", 22050)) * float(transforms.get("audio_seconds", 3.0))))
    return {"video": torch.zeros(1, 3, t, s, s), "audio": torch.zeros(1, 1, n_audio), "has_audio": torch.zeros(1)}


@torch.no_grad()
def block_shape(model: nn.Module, block: str, example: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Per-clip output shape `(K, ...)` of `block` for inputs shaped like `example`."""
    return tuple(run_until(model, block, example).feats.shape[1:])


@torch.no_grad()
def solo_unit_logits(model: nn.Module, block: str, shape: Sequence[int], chunk: int = 256) -> torch.Tensor:
    """Logits `(K + 1, C)`: row i with only unit i's map = 1 everywhere, last row with every unit 0. No clip stands
    behind these maps, so a later `GuidedBlock` runs without its guide (it says what it does then)."""
    k, rest = shape[0], tuple(shape[1:])
    out = []
    for i in range(0, k + 1, chunk):
        ids = torch.arange(i, min(i + chunk, k + 1))
        x = torch.zeros(len(ids), k, *rest)
        on = ids < k
        x[on.nonzero().squeeze(1), ids[on]] = 1.0
        out.append(logits_from(model, block, x))
    return torch.cat(out)


def block_selectivity(model: nn.Module, block: str, example: dict[str, torch.Tensor], *, prob: str = "softmax",
                      chunk: int = 256) -> dict[str, Any]:
    """Per-unit selectivity of one block, its mean, and the solo-unit logits (for relations)."""
    block = resolve_block(model, block)
    logits = solo_unit_logits(model, block, block_shape(model, block, example), chunk)
    sel = selectivity_from_probs(class_probs(logits[:-1], prob))
    return {"block": block, "prob": prob, "units": sel, "mean": float(sel.mean()), "logits": logits[:-1],
            "baseline_logits": logits[-1]}


def network_selectivity(model: nn.Module, example: dict[str, torch.Tensor], *, blocks: Sequence[str] | None = None,
                        prob: str = "softmax", chunk: int = 256) -> list[dict[str, Any]]:
    """`block_selectivity` of every residual block (or the named ones), in network order."""
    names = [resolve_block(model, b) for b in blocks] if blocks else residual_blocks(model)
    return [block_selectivity(model, b, example, prob=prob, chunk=chunk) for b in names]


def run_selectivity(run_dir: str | Path, *, blocks: Sequence[str] | None = None, prob: str = "softmax",
                    top: int = 10, record: bool = True) -> list[dict[str, Any]]:
    """Selectivity and unit <-> class relations of a run's blocks, recorded in the run's store."""
    from ..checkpoint import load_model
    from .relations import relation_tables
    from ..store import open_run_store

    model, meta = load_model(run_dir)
    res = network_selectivity(model, input_like(model, meta["transforms"]), blocks=blocks, prob=prob)
    if record:
        st, rid = open_run_store(run_dir, meta)
        with st:
            for r in res:
                st.write_selectivity(r["block"], r["units"].tolist(), prob=prob, run_id=rid)
                u2c, c2u = relation_tables(r["logits"], r["baseline_logits"], top=top)
                st.write_relations(r["block"], "unit_to_class", u2c, prob="logit", run_id=rid)
                st.write_relations(r["block"], "class_to_unit", c2u, prob="logit", run_id=rid)
    return res
