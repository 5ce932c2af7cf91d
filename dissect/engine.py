"""The exact streaming Network Dissection engine (DESIGN 8).

Two passes over the data, features recomputed rather than stored:
pass 1 keeps each unit's running top-(floor(qN)+1) raw values (exact threshold T_u) and the top
images by per-image max activation; pass 2 evaluates the bilinear (align_corners=False) upsampling
only where it can exceed T_u (maps whose raw maximum crosses it, within them the cells with a
corner above it, within those the 4 x 4 tiles not decided by their corners), thresholds strictly
and tallies I[u,l], G[l] and both activation denominators from per-tile active-pixel bitmasks and
the batch's per-tile label bitmasks (``TileLabels``, built once per batch). Several layers share each pass;
shards of a ``torchrun`` job merge their states exactly (all integer sums / exact top-k unions).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmit_interp.hooks import capture_activations
from mmit_interp.unit_labels import Concept, UnitLabel
from dissect.stats import PLANE_MODES, LabelBatch, Tally, TileLabels, TopKImages, TopKQuantile, quantile_rank

TIME_MODES = ("frames", "mean")
TUBES_NEED_FRAMES = ("a tube concept set has masks per frame, so each time step is scored against its own frame: "
                     "use time='frames' (time='mean' would average the steps over moving masks)")
DENOMINATORS = ("lite", "original")


def to_samples(x: torch.Tensor, time: str = "mean") -> tuple[torch.Tensor, int]:
    """Turn a layer output into 2-D maps ``(M, U, h, w)`` and the number of samples per image.

    4-D ``(N, U, h, w)`` passes through. 5-D video ``(N, U, T, h, w)``: ``time="mean"`` averages over
    time (one sample per clip); ``time="frames"`` makes every time step a sample of its own
    (M = N*T, sample n*T + t), scored against the same still masks or, on a tube set, against its
    own frame's masks (``sample_labels``).
    """
    if x.dim() == 4:
        return x, 1
    if x.dim() == 5:
        if time == "mean":
            return x.mean(2), 1
        if time == "frames":
            n, u, t, h, w = x.shape
            return x.permute(0, 2, 1, 3, 4).reshape(n * t, u, h, w), t
        raise ValueError(f"time must be one of {TIME_MODES}, got {time!r}")
    raise ValueError(f"cannot dissect a layer output of shape {tuple(x.shape)}: need (N,U,h,w) or (N,U,T,h,w)")


def frame_of_step(step: int, steps: int, frames: int) -> int:
    """The input frame a layer time step is scored against: the one at its temporal centre,
    floor((step + 0.5) * frames / steps) (exact integer arithmetic)."""
    return (2 * step + 1) * frames // (2 * steps)


def sample_labels(labels: dict, layer_steps: int) -> tuple[dict, int]:
    """Align a batch's labels with the samples of a layer with ``layer_steps`` time steps; returns
    ``(labels, repeats)``, ``repeats`` = samples per label row (what ``Tally.add_labels`` takes).

    Still sets (``pixel (N, P, sh, sw)``): the labels unchanged and ``layer_steps`` (every step of a
    clip is scored against the same masks, sample n*T' + t). Tube sets (``pixel (N, T, P, sh, sw)``,
    per input frame): row n*T' + t' holds the labels of frame ``frame_of_step(t', T', T)`` and
    ``repeats`` is 1; ``index`` repeats each clip's global index per step, so a row maps back to its
    image. ``layer_steps`` is ``to_samples``'s second result (1 for a 2-D layer or ``time="mean"``).
    """
    if layer_steps < 1:
        raise ValueError(f"layer_steps must be >= 1, got {layer_steps}")
    pixel = labels["pixel"]
    if pixel.dim() == 4:
        return labels, layer_steps
    if pixel.dim() != 5:
        raise ValueError(f"labels['pixel'] must be (N, P, sh, sw) or (N, T, P, sh, sw), got {tuple(pixel.shape)}")
    n, frames = pixel.shape[:2]
    pick = torch.tensor([frame_of_step(t, layer_steps, frames) for t in range(layer_steps)], device=pixel.device)
    out = dict(labels)
    for key in ("pixel", "plane_cat", "whole", "whole_cat"):
        if key in labels:
            v = labels[key]
            out[key] = v.index_select(1, pick.to(v.device)).reshape(n * layer_steps, *v.shape[2:])
    out["index"] = labels["index"].repeat_interleave(layer_steps)
    return out, 1


@dataclass
class LayerResult:
    """Everything dissection learnt about one layer on one concept set (plain tensors + names)."""

    layer: str
    thresholds: torch.Tensor
    tally: Tally
    top_images: TopKImages
    primary: torch.Tensor
    label_names: list[str]
    categories: list[str]
    settings: dict = field(default_factory=dict)

    @property
    def units(self) -> int:
        """Number of units in the layer."""
        return self.thresholds.shape[0]

    def iou(self, denominator: str = "lite") -> torch.Tensor:
        """IoU (units, labels + 1) under ``"lite"`` (NetDissect-Lite) or ``"original"`` denominators."""
        return self.tally.iou(denominator)

    def category_bests(self, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per unit and category, the label with the highest IoU among labels with c(l) = c (ties: the
        lowest number, as Lite's ``argmax``) and that IoU; ``(units, C)`` each, label 0 and IoU -1
        where a category has no label."""
        labels = torch.zeros((self.units, len(self.categories)), dtype=torch.long)
        scores = torch.full((self.units, len(self.categories)), -1.0, dtype=torch.float64)
        for ci in range(len(self.categories)):
            cols = (self.primary == ci).nonzero().view(-1)
            if len(cols):
                j = torch.argmax(iou[:, cols], dim=1)
                labels[:, ci], scores[:, ci] = cols[j], iou[:, cols].gather(1, j[:, None])[:, 0]
        return labels, scores

    def unit_labels(self, denominator: str = "lite", iou_threshold: float = 0.04, runner_ups: int = 3) -> list[UnitLabel]:
        """One ``UnitLabel`` per unit: best label, its category c(l), IoU, interpretable flag, runner-ups and
        per-category bests; the one place dissection's labels are decided.

        The best label is NetDissect-Lite's: each category's best label, then the category whose best
        scores highest, ties going to the category listed last (Lite's reversed ``argsort``)."""
        iou = self.iou(denominator)
        iou[:, 0] = -1.0
        iou[:, self.primary < 0] = -1.0
        labels, scores = self.category_bests(iou)
        last = scores.shape[1] - 1 - torch.argmax(scores.flip(1), dim=1)  # the last category with the top score
        order = torch.argsort(iou, dim=1, descending=True, stable=True)
        prim = self.primary.tolist()

        def concept(j: int, score: float) -> Concept:
            return Concept(self.label_names[j], self.categories[prim[j]], score, j)

        out = []
        for u in range(self.units):
            best = int(labels[u, last[u]])
            out.append(UnitLabel(
                unit=u, category=self.categories[prim[best]], label=self.label_names[best], label_number=best,
                iou=float(iou[u, best]), interpretable=bool(iou[u, best] >= iou_threshold),
                threshold=float(self.thresholds[u]),
                runner_ups=tuple(concept(j, float(iou[u, j]))
                                 for j in [int(j) for j in order[u, : 1 + runner_ups] if int(j) != best][:runner_ups]
                                 if iou[u, j] >= 0),
                bests=tuple(concept(int(labels[u, ci]), float(scores[u, ci])) if scores[u, ci] >= 0
                            else Concept("", cat, 0.0, 0) for ci, cat in enumerate(self.categories)),
            ))
        return out

    def state_dict(self) -> dict:
        """Plain state for the cache."""
        return {
            "layer": self.layer,
            "thresholds": self.thresholds.cpu(),
            "tally": self.tally.state_dict(),
            "top_images": self.top_images.state_dict(),
            "primary": self.primary.cpu(),
            "label_names": list(self.label_names),
            "categories": list(self.categories),
            "settings": dict(self.settings),
        }

    @classmethod
    def from_state_dict(cls, s: dict) -> "LayerResult":
        """Rebuild from ``state_dict()``."""
        return cls(
            s["layer"], s["thresholds"], Tally.from_state_dict(s["tally"]), TopKImages.from_state_dict(s["top_images"]),
            s["primary"], s["label_names"], s["categories"], s["settings"],
        )


def all_merge(objs: dict[str, Any], make: Callable[[dict], Any]) -> dict[str, Any]:
    """Merge named stat objects across torch.distributed ranks (in rank order, exact); no-op when single.

    Every rank must call it, also one that got no image and so holds no object: it sends an empty
    dict and receives the merged objects of the others (instead of skipping the collective and
    leaving the other ranks waiting)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return objs
    states: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(states, {n: o.state_dict() for n, o in objs.items()})
    merged: dict[str, Any] = {}
    for rank_states in states:
        for n, st in rank_states.items():
            if n in merged:
                merged[n].merge(make(st))
            else:
                merged[n] = make(st)
    return merged


def dissect_stream(
    batches: Callable[[], Iterable[tuple[dict[str, torch.Tensor], dict]]],
    num_images: int,
    primary: torch.Tensor,
    label_names: list[str],
    categories: list[str],
    *,
    quantile: float = 0.005,
    time: str = "mean",
    planes: str = "lite",
    top_k: int = 12,
    device: torch.device | str = "cpu",
    settings: dict | None = None,
) -> dict[str, LayerResult]:
    """Dissect every layer that ``batches()`` yields features for; ``batches`` is called once per pass.

    Each batch is ``({layer: output tensor}, labels)`` with ``labels`` a ``BrodenDataset.collate``
    dict (``pixel``, ``whole``, ``whole_cat``, ``index`` = global image index; the first pass reads
    only ``index``, so it may hold nothing else); tube labels
    (``pixel (N, T, P, sh, sw)``) score each time step against its own frame (``sample_labels``) and
    need ``time="frames"``.
    ``num_images`` counts all images over every shard (it fixes the quantile rank k).
    ``primary (L+1,)`` is each label's primary category c(l) (-1: none), which alone decides where
    a label counts in the activation areas. ``planes="lite"`` counts a label once per plane that
    carries it (NetDissect-Lite), ``"union"`` once per pixel (``LabelBatch``).
    """
    if time not in TIME_MODES:
        raise ValueError(f"time must be one of {TIME_MODES}, got {time!r}")
    if planes not in PLANE_MODES:
        raise ValueError(f"planes must be one of {PLANE_MODES}, got {planes!r}")
    quants: dict[str, TopKQuantile] = {}
    tops: dict[str, TopKImages] = {}
    with torch.no_grad():
        for feats, labels in batches():
            _check_time(labels, time)
            for name, x in feats.items():
                s, rep = to_samples(x.to(device).float(), time)
                m, u, h, w = s.shape
                if name not in quants:
                    k = quantile_rank(quantile, num_images * rep * h * w) + 1
                    if k == 1:
                        warnings.warn(f"layer {name}: quantile {quantile} of {num_images * rep * h * w} values per unit "
                                      "is rank 0, so T_u is the maximum and no unit fires; use more images or a "
                                      "larger quantile", stacklevel=2)
                    quants[name] = TopKQuantile(u, k, device)
                    tops[name] = TopKImages(u, top_k, device)
                quants[name].add(s.transpose(0, 1))
                tops[name].add(s.amax((2, 3)).view(-1, rep, u).amax(1), labels["index"])
    quants = all_merge(quants, lambda st: TopKQuantile.from_state_dict(st, device))
    tops = all_merge(tops, lambda st: TopKImages.from_state_dict(st, device))
    thresholds = {n: q.threshold() for n, q in quants.items()}

    prim = torch.as_tensor(primary, dtype=torch.long)
    tallies = {n: Tally(q.units, prim, len(categories), device) for n, q in quants.items()}
    blocks: dict[tuple, BilinearBlocks] = {}
    with torch.no_grad():
        for feats, labels in batches():
            _check_time(labels, time)
            samples = {name: to_samples(x.to(device).float(), time) for name, x in feats.items()}
            tube = labels["pixel"].dim() == 5
            # the batch's labels are aligned once per time-step count (tubes; stills: once) and tiled
            # once per geometry; the first tiling of an alignment also yields its statistics
            lbs: dict[int | None, LabelBatch] = {}
            tiles: dict[tuple, TileLabels] = {}
            for name, (s, rep) in samples.items():
                geom = tuple(s.shape[2:]) + tuple(labels["pixel"].shape[-2:])
                if geom not in blocks:
                    blocks[geom] = BilinearBlocks(*geom, device=device)
                align = rep if tube else None
                aligned, lrep = sample_labels(labels, rep)
                if align not in lbs:
                    lbs[align] = LabelBatch(aligned, device, partition=blocks[geom].partition, planes=planes)
                    tiles[align, geom] = lbs[align].tiles
                lb = lbs[align]
                if (align, geom) not in tiles:
                    tiles[align, geom] = blocks[geom].labels(lb)
                tallies[name].add_labels(lb, lrep)
                _tally_layer(tallies[name], s, lrep, thresholds[name], lb, tiles[align, geom], blocks[geom])
    tallies = all_merge(tallies, lambda st: Tally.from_state_dict(st, device))
    return {
        n: LayerResult(n, thresholds[n].cpu(), tallies[n], tops[n], prim, label_names, categories,
                       {**(settings or {}), "planes": planes})
        for n in quants
    }


def _check_time(labels: dict, time: str) -> None:
    """Refuse ``time="mean"`` on tube labels (pass 1 may see only ``index``: then pass 2 decides)."""
    if time == "mean" and "pixel" in labels and labels["pixel"].dim() == 5:
        raise ValueError(TUBES_NEED_FRAMES)


class BilinearBlocks:
    """Bilinear (align_corners=False) upsampling from (h, w) to (sh, sw), evaluated only where needed.

    Along each axis the output splits into segments where the map is linear between two raw
    samples (lo, hi): the leading border (clamped to sample 0), one per raw cell, and the trailing
    border (clamped to the last sample). On a rectangle of segments the map is bilinear, so it peaks
    and bottoms out at one of its corners. So: segment cells whose four raw corners are all <= T
    are skipped; the rest are cut into tiles of at most ``tile`` x ``tile`` pixels; tiles whose four
    corner pixels all exceed T are wholly active, tiles whose corners are all <= T are skipped, and
    only the remaining tiles' pixels are evaluated (float64) and thresholded. Pass-2 cost then
    follows the active area instead of units x mask pixels.
    """

    def __init__(self, h: int, w: int, sh: int, sw: int, tile: int = 4, device: torch.device | str = "cpu"):
        if tile > 4:
            raise ValueError(f"tiles hold at most 4 x 4 pixels (16-bit masks), got {tile}")
        self.h, self.w, self.sh, self.sw = h, w, sh, sw
        self.lo_y, self.hi_y, self.ry, self.ry_ok, self.wy, self.wy_end, self.ty_ok = self._axis(h, sh, tile, device)
        self.lo_x, self.hi_x, self.rx, self.rx_ok, self.wx, self.wx_end, self.tx_ok = self._axis(w, sw, tile, device)
        self.sy, self.ny = self.ty_ok.shape
        self.sx, self.nx = self.tx_ok.shape
        self.seg_ok = (self.ty_ok[:, None, :, None] & self.tx_ok[None, :, None, :]).view(-1, self.ny, self.nx)
        # every real tile (a, ty, b, tx) gets an id tile_id[a, ty, b, tx], row-major over the real row and
        # column groups, which as (rows, rows_ok, cols, cols_ok) are the partition TileLabels takes
        real = self.ty_ok[:, :, None, None] & self.tx_ok[None, None, :, :]
        self.tile_id = (torch.cumsum(real.view(-1), 0) - 1).view(-1)
        self.partition = (self.ry[self.ty_ok], self.ry_ok[self.ty_ok], self.rx[self.tx_ok], self.rx_ok[self.tx_ok])
        bit = 1 << torch.arange(tile * tile, device=device, dtype=torch.int32)
        ok = self.partition[1][:, None, :, None] & self.partition[3][None, :, None, :]
        self.tile_bits = (ok.reshape(-1, tile * tile).int() * bit).sum(1, dtype=torch.int32)
        self.bitf = bit.float()

    @staticmethod
    def _axis(inp: int, out: int, tile: int, device):
        """Per segment: raw samples (lo, hi); per segment and tile: output indices, validity, weights
        of ``hi``, end weights, whether the tile exists."""
        segs: list[list[tuple[int, float]]] = [[] for _ in range(inp + 1)]
        for d in range(out):
            src = (d + 0.5) * inp / out - 0.5
            i0 = min(int(src), inp - 1)
            if src < 0:  # clamped to sample 0; the weight is 0 either way
                segs[0].append((d, 0.0))
            else:
                segs[i0 + 1].append((d, src - i0))
        tiles = [[c[i : i + tile] for i in range(0, len(c), tile)] for c in segs]
        nt = max(1, max(len(t) for t in tiles))
        idx = torch.zeros((inp + 1, nt, tile), dtype=torch.long)
        ok = torch.zeros((inp + 1, nt, tile), dtype=torch.bool)
        lam = torch.zeros((inp + 1, nt, tile), dtype=torch.float64)
        end = torch.zeros((inp + 1, nt, 2), dtype=torch.float64)
        t_ok = torch.zeros((inp + 1, nt), dtype=torch.bool)
        for a, ts in enumerate(tiles):
            for j, t in enumerate(ts):
                t_ok[a, j] = True
                end[a, j, 0], end[a, j, 1] = t[0][1], t[-1][1]
                for k, (d, lm) in enumerate(t):
                    idx[a, j, k], ok[a, j, k], lam[a, j, k] = d, True, lm
        lo = torch.clamp(torch.arange(inp + 1) - 1, min=0)
        hi = torch.clamp(torch.arange(inp + 1), max=inp - 1)
        return tuple(v.to(device) for v in (lo, hi, idx, ok, lam, end, t_ok))

    def active(self, x: torch.Tensor, thr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Active pixels (upsampled > thr) of maps ``x (n, h, w)`` with per-map ``thr (n,)``.

        Returns ``(tile_map, tile, act)``: per tile with an active pixel, its map index, its tile id
        and the bitmask of its active pixels.
        """
        rows = [x.index_select(1, r) for r in (self.lo_y, self.hi_y)]
        c = [r.index_select(2, q).reshape(-1) for r in rows for q in (self.lo_x, self.hi_x)]  # c00, c01, c10, c11
        cmax = torch.maximum(torch.maximum(c[0], c[1]), torch.maximum(c[2], c[3])).view(len(x), self.sy, self.sx)
        hot = (cmax > thr[:, None, None]).view(-1).nonzero().view(-1)
        hot_m = torch.div(hot, self.sy * self.sx, rounding_mode="floor")
        a = torch.div(hot, self.sx, rounding_mode="floor") % self.sy
        b = hot % self.sx
        c00, c01, c10, c11 = (v.index_select(0, hot).double() for v in c)
        coef = torch.stack([c00, c01 - c00, c10, c11 - c10], 1)  # top = c00 + wx*(c01-c00), bot likewise
        t = thr.index_select(0, hot_m).double()
        # the bilinear value at each tile's four corner pixels bounds it from above and below
        ny, nx = self.ny, self.nx
        xe = self.wx_end.view(self.sx, 1, 2 * nx).index_select(0, b)
        top = coef[:, 0, None, None] + xe * coef[:, 1, None, None]
        bot = coef[:, 2, None, None] + xe * coef[:, 3, None, None]
        corner = (top + self.wy_end.view(self.sy, 2 * ny, 1).index_select(0, a) * (bot - top)).view(-1, ny, 2, nx, 2)
        ok = self.seg_ok.index_select(0, hot % (self.sy * self.sx))  # which tiles of the rectangle exist
        q = [corner[:, :, i, :, j] for i in (0, 1) for j in (0, 1)]  # four corner grids, no reduction kernels
        t3 = t[:, None, None]
        full = (torch.minimum(torch.minimum(q[0], q[1]), torch.minimum(q[2], q[3])) > t3) & ok
        part = (torch.maximum(torch.maximum(q[0], q[1]), torch.maximum(q[2], q[3])) > t3) & ok & ~full
        k, ty, tx = full.nonzero(as_tuple=True)
        full_map = hot_m.index_select(0, k)
        full_tile = self.tile_id.index_select(0, ((a.index_select(0, k) * ny + ty) * self.sx + b.index_select(0, k)) * nx + tx)
        k, ty, tx = part.nonzero(as_tuple=True)
        ay, bx = a.index_select(0, k) * ny + ty, b.index_select(0, k) * nx + tx
        wx = self.wx.view(-1, self.wx.shape[2]).index_select(0, bx)  # (nt, tile)
        wy = self.wy.view(-1, self.wy.shape[2]).index_select(0, ay)
        ck = coef.index_select(0, k)
        top = ck[:, 0, None] + wx * ck[:, 1, None]
        bot = ck[:, 2, None] + wx * ck[:, 3, None]
        val = top[:, None, :] + wy[:, :, None] * (bot - top)[:, None, :]  # (nt, tile, tile)
        hit = val > t.index_select(0, k)[:, None, None]
        tile = self.tile_id.index_select(0, (ay * self.sx + b.index_select(0, k)) * nx + tx)
        # uint8, not bool, to float: bool conversions are slow; exact, the sums stay below 2**16
        bits = (hit.flatten(1).view(torch.uint8).float() @ self.bitf).int() & self.tile_bits.index_select(0, tile)
        some = (bits != 0).nonzero().view(-1)
        return (torch.cat([full_map, hot_m.index_select(0, k.index_select(0, some))]),
                torch.cat([full_tile, tile.index_select(0, some)]),
                torch.cat([self.tile_bits.index_select(0, full_tile), bits.index_select(0, some)]))

    def labels(self, lb: LabelBatch) -> TileLabels:
        """The batch's labels per tile of this geometry (shared by every layer of that geometry)."""
        return TileLabels(lb, *self.partition)


def _tally_layer(tally: Tally, s: torch.Tensor, rep: int, thr: torch.Tensor, lb: LabelBatch, tiles: TileLabels,
                 blocks: BilinearBlocks, maps_per_chunk: int = 512) -> None:
    """Tally the (sample, unit) maps whose raw maximum crosses T_u (no other map has active pixels).

    Maps go in small chunks so every temporary stays small and is reused by the allocator
    (large short-lived arrays cost page faults that dominate on our VMs; PERF-NOTES).
    """
    s = s.contiguous()
    flat = s.view(-1, *s.shape[2:])
    mi, ui = (s.amax((2, 3)) > thr[None]).nonzero(as_tuple=True)
    for c in range(0, len(mi), maps_per_chunk):
        m, u = mi[c : c + maps_per_chunk], ui[c : c + maps_per_chunk]
        image = torch.div(m, rep, rounding_mode="floor")
        tile_map, tile, act = blocks.active(flat.index_select(0, m * s.shape[1] + u), thr.index_select(0, u))
        tally.add(u, image, tile_map, tile, act, lb, tiles)


# ----------------------------------------------------------------------------- models and caching


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over a model's state_dict names, shapes and bytes (the cache's checkpoint hash)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        t = v.detach().cpu().contiguous().reshape(-1)
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def concept_set_fingerprint(root: str | os.PathLike) -> str:
    """SHA-256 over a concept set's resolved path and its CSV tables."""
    root = Path(root).resolve()
    h = hashlib.sha256(str(root).encode())
    for f in sorted(root.glob("*.csv")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_key(checkpoint: str, layer: str, concept_set: str, settings: dict) -> str:
    """Key of a cached layer result: every argument that changes it."""
    blob = json.dumps({"ckpt": checkpoint, "layer": layer, "cs": concept_set, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def shard_indices(n: int) -> list[int]:
    """This rank's strided share of ``range(n)`` under torch.distributed (all of it when single)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return list(range(dist.get_rank(), n, dist.get_world_size()))
    return list(range(n))


def is_main() -> bool:
    """True on rank 0 or when not distributed."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@dataclass(frozen=True)
class InputTransform:
    """How concept images become model input, as one object: ``size`` (None: the concept set's own),
    ``frames`` (T: a video model's clip of T frames; None: a 2-D model), ``mean``/``std`` (None:
    ImageNet's). Built from a checkpoint's ``transforms`` by ``from_checkpoint``."""

    size: int | tuple[int, int] | None = None
    frames: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_checkpoint(cls, transforms: Mapping[str, Any], *, video: bool = True, frames: int | None = None,
                        size: int | None = None) -> "InputTransform":
        """A checkpoint's ``transforms`` (frames only for a ``video`` model), ``frames``/``size`` overriding."""
        mean, std = transforms.get("mean"), transforms.get("std")
        return cls(size or transforms.get("size"), (frames or transforms.get("frames")) if video else None,
                   tuple(mean) if mean and std else None, tuple(std) if mean and std else None)

    def dataset(self, root: str | os.PathLike, **kwargs: Any):
        """The ``BrodenDataset`` of a concept set under this transform (``kwargs``: its other options)."""
        from broden_actions.broden import BrodenDataset

        return BrodenDataset(root, size=self.size, frames=self.frames, mean=self.mean, std=self.std, **kwargs)

    def settings(self) -> dict:
        """The transform's part of a cache key (JSON-able)."""
        norm = {"mean": list(self.mean), "std": list(self.std)} if self.mean is not None else {}
        return {"frames": self.frames, "size": self.size, "dataset": norm}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "InputTransform":
        """The transform a dissection ran with, from its ``LayerResult.settings`` (the inverse of ``settings()``)."""
        norm = settings.get("dataset") or {}
        size = settings.get("size")
        return cls(tuple(size) if isinstance(size, list) else size, settings.get("frames"),
                   tuple(norm["mean"]) if norm else None, tuple(norm["std"]) if norm else None)


@contextmanager
def feature_batches(
    model: nn.Module,
    dataset,
    layers: Sequence[str],
    *,
    input_adapter: Callable[[torch.Tensor], tuple] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    workers: int = 0,
    progress: bool = True,
    desc: str = "features",
    first_pass_labels: bool = True,
) -> Iterator[Callable[[], Iterator[tuple[dict[str, torch.Tensor], dict]]]]:
    """The data loop the streaming analyses share (``dissect_stream``, ``compose_stream``): yields a
    ``batches()`` callable, one pass over this rank's shard of ``dataset`` per call, each batch
    ``({layer: output}, collated batch)``; the model runs in eval mode on ``device`` meanwhile and gets
    its mode back after. ``first_pass_labels=False`` decodes no masks in the first pass (features only)."""
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    loader = DataLoader(Subset(dataset, shard_indices(len(dataset))), batch_size=batch_size, num_workers=workers,
                        collate_fn=dataset.collate, shuffle=False)
    adapter = input_adapter or (lambda x: (x,))
    labels = iter([first_pass_labels])

    def batches() -> Iterator[tuple[dict[str, torch.Tensor], dict]]:
        dataset.with_labels = next(labels, True)
        with tqdm(total=len(loader.dataset), unit="img", disable=not (progress and is_main()), desc=desc) as bar:
            for batch in loader:
                with capture_activations(model, list(layers)) as acts:
                    model(*adapter(batch["image"].to(device)))
                bar.update(len(batch["index"]))
                yield dict(acts), batch

    was_training = model.training
    model.to(device).eval()
    try:
        yield batches
    finally:
        model.train(was_training)
        dataset.with_labels = True


def run_dissection(
    model: nn.Module,
    layers: Sequence[str],
    concept_sets: Sequence[str | os.PathLike],
    *,
    categories: Sequence[str] | None = None,
    quantile: float = 0.005,
    time: str = "mean",
    planes: str = "lite",
    transform: InputTransform = InputTransform(),
    input_adapter: Callable[[torch.Tensor], tuple] | None = None,
    batch_size: int = 16,
    workers: int = 0,
    top_k: int = 12,
    device: torch.device | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    checkpoint_hash: str | None = None,
    use_snippets: bool = True,
    progress: bool = True,
) -> dict[str, dict[str, LayerResult]]:
    """Dissect ``layers`` of ``model`` on each concept-set folder; returns ``{concept set: {layer: result}}``.

    The model is moved to ``device`` (default: CUDA when available) and run in eval mode.
    ``transform`` (an ``InputTransform``, e.g. ``InputTransform.from_checkpoint(meta["transforms"])``)
    sizes and normalises the images; with ``frames=T`` a video model gets (N, 3, T, H, W) clips
    (snippet or T still copies), with ``frames=None`` a 2-D model (N, 3, H, W) images. ``input_adapter(images)`` returns the model's positional inputs (default
    ``(images,)``). Results are cached in ``cache_dir`` under a key of checkpoint hash, layer,
    concept set and settings (a tube set's own key: ``tubes``); under ``torchrun`` each rank takes a
    strided shard. ``planes``: see ``dissect_stream``. A tube set (``tubes.csv``) fed as snippets
    scores every time step against its frame's masks and needs ``time="frames"``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ckpt = checkpoint_hash or model_fingerprint(model)
    settings = {"quantile": quantile, "time": time, "planes": planes, **transform.settings(), "top_k": top_k,
                "categories": list(categories) if categories else None, "snippets": use_snippets}
    out: dict[str, dict[str, LayerResult]] = {}
    for cs in concept_sets:
        ds = transform.dataset(cs, categories=list(categories) if categories else None, use_snippets=use_snippets)
        if ds.tubes and time == "mean":
            raise ValueError(f"{cs}: {TUBES_NEED_FRAMES}")
        csid = concept_set_fingerprint(cs)
        keys = {layer: cache_key(ckpt, layer, csid, {**settings, "tubes": True} if ds.tubes else settings)
                for layer in layers}
        cached = {}
        if cache_dir is not None:
            for layer, key in keys.items():
                p = Path(cache_dir) / f"{key}.pt"
                if p.is_file():
                    cached[layer] = LayerResult.from_state_dict(torch.load(p, weights_only=False))
        todo = [layer for layer in layers if layer not in cached]
        results = dict(cached)
        if todo:
            prim = torch.from_numpy(ds.broden.primary_categories(ds.categories)).long()
            with feature_batches(model, ds, todo, input_adapter=input_adapter, device=device, batch_size=batch_size,
                                 workers=workers, progress=progress, desc=f"dissect {Path(cs).name}",
                                 first_pass_labels=False) as batches:
                fresh = dissect_stream(batches, len(ds), prim, ds.broden.label_names(), list(ds.categories),
                                       quantile=quantile, time=time, planes=planes, top_k=top_k, device=device,
                                       settings={**settings, "concept_set": str(cs), "checkpoint": ckpt,
                                                 "tubes": ds.tubes})
            if cache_dir is not None and is_main():
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                for layer, res in fresh.items():
                    tmp = Path(cache_dir) / f"{keys[layer]}.pt.tmp"
                    torch.save(res.state_dict(), tmp)
                    tmp.replace(Path(cache_dir) / f"{keys[layer]}.pt")
            results.update(fresh)
        out[str(cs)] = {layer: results[layer] for layer in layers}
    return out
