"""Unit <-> class relations and concept paths (DESIGN 9: "why juggling? polka dots").

- Unit -> class: with only unit i on (its map = 1 everywhere, as in `selectivity`), the classes
  whose logits rise most over the all-units-off output. Class -> unit: for class k, the units whose
  solo activation gives k the highest logit (the same solo-unit logits, read by column).
- Concept path of a clip and class c, on that clip's own activations:
  step 0, the last block's (block-4) units k ranked by their exact share of the logit,
  `W[c, k] * mean_{t,h,w} F4_k` (GAP + linear: the logit is their sum plus the bias; a fusion
  model uses the visual slice of its head, the audio share is a separate constant; an LSE head
  weights the positions by its softmax instead of the mean, and adds a constant concentration term);
  step 1, for each of those units, the block-3 units j ranked by gradient x activation,
  `sum_{t,h,w} (d mean(F4_k) / d F3_j) * F3_j` (first-order Taylor share; block 4's ReLUs and
  BatchNorm shifts make an exact decomposition impossible, so this is the standard attribution,
  computed for all chosen units in one batched backward). Each unit carries its dissection label
  from the run's store (block or stage name) or "not dissected".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.base import call_block
from .trunk import check_chain, resolve_block, stage_aliases


def relation_tables(logits: torch.Tensor, baseline: torch.Tensor, top: int = 10
                    ) -> tuple[dict[int, list[tuple[int, float]]], dict[int, list[tuple[int, float]]]]:
    """From solo-unit logits `(K, C)` and the all-off logits `(C,)`: unit -> [(class, rise)] and
    class -> [(unit, rise)], best first, `top` each."""
    rise = logits - baseline
    tc = rise.topk(min(top, rise.shape[1]), dim=1)
    tu = rise.T.topk(min(top, rise.shape[0]), dim=1)
    u2c = {u: list(zip(tc.indices[u].tolist(), tc.values[u].tolist())) for u in range(rise.shape[0])}
    c2u = {c: list(zip(tu.indices[c].tolist(), tu.values[c].tolist())) for c in range(rise.shape[1])}
    return u2c, c2u


def path_blocks(model: nn.Module) -> tuple[str, str]:
    """The default concept-path blocks: the trunk's last block (it feeds the head) and the last block of the
    stage before (`layer4.1`, `layer3.1` on a ResNet; the previous block where the trunk is one stage)."""
    names = [n for n, _ in model.trunk().blocks()]
    if len(names) < 2:
        raise ValueError(f"a concept path needs two blocks; the trunk has {names}")
    stage = names[-1].split(".")[0]
    earlier = [n for n in names[:-1] if n.split(".")[0] != stage]
    return names[-1], (earlier or names[:-1])[-1]


def concept_path(model: nn.Module, video: torch.Tensor, class_idx: int, *, upper: str | None = None,
                 lower: str | None = None, top_upper: int = 5, top_lower: int = 3) -> list[dict[str, Any]]:
    """Concept path rows `{step, rank, layer, unit, parent, contribution, label_layers}` for one clip `(1, 3, T, H, W)`.

    `upper` must be the block feeding the head; `lower` any earlier block (defaults: `path_blocks`).
    """
    trunk = model.trunk()
    names = [n for n, _ in trunk.blocks()]
    default_up, default_lo = path_blocks(model)
    up, lo = resolve_block(model, upper or default_up), resolve_block(model, lower or default_lo)
    if up != names[-1]:
        raise ValueError(f"upper block {up!r} must be the last block ({names[-1]!r}) that feeds the linear head")
    if names.index(lo) >= names.index(up):
        raise ValueError(f"lower block {lo!r} must come before {up!r}")
    check_chain(model, video)
    mods = dict(trunk.blocks())
    with torch.no_grad():
        x, guide = video, trunk.guide(video)
        for n in names[: names.index(lo) + 1]:
            x = call_block(mods[n], x, guide)
    f3 = x.detach().requires_grad_(True)
    x = f3
    for n in names[names.index(lo) + 1:]:
        x = call_block(mods[n], x, guide)
    # how the head reads the positions: GAP's mean, or an LSE head's softmax weights (held fixed, so the
    # shares stay exact up to that head's constant concentration term, see `GapLinearNet.pool_weights`)
    w = model.pool_weights(x.detach(), class_idx)[0]
    pooled = (x.flatten(2)[0] * w).sum(1)  # (K4,)
    share = model.cam_weight()[class_idx].detach() * pooled.detach()
    top = share.topk(min(top_upper, share.numel()))
    rows = [{"step": 0, "rank": r, "layer": up, "unit": int(u), "parent": -1, "contribution": float(v),
             "label_layers": stage_aliases(model, up)}
            for r, (u, v) in enumerate(zip(top.indices.tolist(), top.values.tolist()))]
    sel = top.indices
    eye = torch.zeros(len(sel), pooled.numel())
    eye[torch.arange(len(sel)), sel] = 1.0
    grads = torch.autograd.grad(pooled, f3, grad_outputs=eye, is_grads_batched=True)[0]  # (S, 1, K3, ...)
    attr = (grads * f3.detach()).flatten(3).sum(3)[:, 0]  # (S, K3)
    sub = attr.topk(min(top_lower, attr.shape[1]), dim=1)
    for i, parent in enumerate(sel.tolist()):
        rows += [{"step": 1, "rank": r, "layer": lo, "unit": int(u), "parent": parent, "contribution": float(v),
                  "label_layers": stage_aliases(model, lo)}
                 for r, (u, v) in enumerate(zip(sub.indices[i].tolist(), sub.values[i].tolist()))]
    return rows


def clip_concept_path(run_dir: str | Path, clip_path: str | Path, class_: int | str | None = None, *,
                      key: str | None = None, top_upper: int = 5, top_lower: int = 3,
                      record: bool = True) -> dict[str, Any]:
    """Concept path of a clip for a class (default: its top prediction), labelled from the run's store.

    `key` is the clip's store key when the caller hashed the file already (the dashboard does, at
    intake); the default class is the stored top prediction when the clip was analysed, so no extra
    forward pass runs. With `record`, the clip is analysed (`analyze_clip`) if the store does not hold
    it yet, and the path is stored under its clip key.
    """
    from ..checkpoint import cached_model
    from ..dataset import ClipTransform, clip_batch, load_clip
    from ..models import forward_batch
    from ..store import open_run_store
    from .clip_analysis import analyze_clip, clip_key

    model, meta = cached_model(run_dir)
    vocab = meta["vocab"]
    key = key or clip_key(clip_path)
    clip = load_clip(clip_path, ClipTransform.from_dict(meta["transforms"]), want_audio="audio" in model.inputs)
    st, rid = open_run_store(run_dir, meta)
    with st:
        stored = st.clip(key, run_id=rid)
        if class_ is None and stored and stored["predictions"]:
            class_ = int(stored["predictions"][0]["class_idx"])
        if class_ is None:
            with torch.no_grad():
                class_ = int(forward_batch(model, clip_batch(clip))[0].argmax())
        c = class_ if isinstance(class_, int) else vocab.index(class_)
        rows = concept_path(model, clip["video"][None], c, top_upper=top_upper, top_lower=top_lower)
        st.label_path_rows(rows)
        if record:
            if stored is None:
                analyze_clip(run_dir, clip_path, key=key)
            st.write_concept_path(key, c, rows, run_id=rid)
    return {"clip_key": key, "clip": str(clip_path), "class_idx": c, "class": vocab.names[c], "path": rows}
