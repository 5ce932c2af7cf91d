"""Feature ablation (DESIGN 9, Fig. 9): zero a random fraction p of a block's units, re-evaluate.

The validation clips go through the trunk up to the block once (`cache_features`); every (p, seed)
then runs only the later blocks and the head on the cached block outputs with the dropped units'
maps set to 0 (`trunk.logits_from`). Unit subsets are nested: for a seed, the units dropped at p
are the first round(p K) of one random permutation, so a curve degrades monotonically in what it
removes and seeds differ only in which units go. Each metric of `metrics.evaluate` is reported as
value / unablated value; the spread over seeds is kept (all rows go to the store, which
aggregates mean, std, min, max per p).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..metrics import evaluate
from .trunk import logits_from, resolve_block, run_until, stages

METRICS = ("hit@1", "hit@5", "map_sample", "map_class", "map_micro")
DEFAULT_PS = tuple(round(p, 2) for p in np.linspace(0, 1, 11))


@dataclass
class FeatureCache:
    """Block outputs `feats (N, K, ...)` of a validation set, fusion audio context, targets `(N, C)` and the
    trunk's guide for the later blocks (`None` unless the trunk has a `GuidedBlock`)."""

    block: str
    feats: torch.Tensor
    ctx: torch.Tensor | None
    targets: np.ndarray
    guide: torch.Tensor | None = None


@torch.no_grad()
def cache_features(model: nn.Module, batches: Iterable[dict], block: str) -> FeatureCache:
    """Run every batch (dataset batch dicts with `target`) through the trunk up to `block`, once."""
    block = resolve_block(model, block)
    feats, ctxs, guides, targets = [], [], [], []
    for b in batches:
        if "target" not in b:
            continue
        p = run_until(model, block, b)
        feats.append(p.feats)
        ctxs.append(p.ctx)
        guides.append(p.guide)
        targets.append(b["target"].numpy())
    if not feats:
        raise ValueError("no decodable clip to evaluate on")
    ctx = None if ctxs[0] is None else torch.cat(ctxs)
    guide = None if guides[0] is None else torch.cat(guides)
    return FeatureCache(block, torch.cat(feats), ctx, np.concatenate(targets), guide)


def drop_order(n_units: int, seed: int) -> torch.Tensor:
    """The order in which a seed drops units (a permutation of `range(n_units)`)."""
    return torch.randperm(n_units, generator=torch.Generator().manual_seed(int(seed)))


def keep_mask(n_units: int, p: float, seed: int) -> torch.Tensor:
    """Boolean `(K,)`: False for the round(p K) units the seed drops at fraction p."""
    keep = torch.ones(n_units, dtype=torch.bool)
    keep[drop_order(n_units, seed)[: int(round(p * n_units))]] = False
    return keep


@torch.no_grad()
def ablated_logits(model: nn.Module, cache: FeatureCache, keep: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Logits `(N, C)` with the units where `keep` is False zeroed in the cached block output."""
    shape = (1, -1) + (1,) * (cache.feats.dim() - 2)
    scale = keep.to(cache.feats.dtype).view(shape)
    out = []
    for i in range(0, cache.feats.shape[0], batch_size):
        ctx = None if cache.ctx is None else cache.ctx[i: i + batch_size]
        guide = None if cache.guide is None else cache.guide[i: i + batch_size]
        out.append(logits_from(model, cache.block, cache.feats[i: i + batch_size] * scale, ctx, guide))
    return torch.cat(out)


def ablation_sweep(model: nn.Module, cache: FeatureCache, *, ps: Sequence[float] = DEFAULT_PS,
                   seeds: Sequence[int] = (0, 1, 2), metrics: Sequence[str] = METRICS,
                   batch_size: int = 64) -> dict[str, Any]:
    """Every (p, seed): each metric's value and its ratio to the unablated value.

    Returns `{"block", "n_units", "n_clips", "baseline": {metric: value}, "rows": [{metric, p, seed, value, rel}]}`.
    """
    k = cache.feats.shape[1]
    base_m = evaluate(torch.sigmoid(ablated_logits(model, cache, torch.ones(k, dtype=torch.bool), batch_size)),
                      cache.targets)
    rows = []
    for seed in seeds:
        for p in ps:
            m = evaluate(torch.sigmoid(ablated_logits(model, cache, keep_mask(k, p, seed), batch_size)), cache.targets)
            for name in metrics:
                base = base_m[name]
                rel = m[name] / base if base and np.isfinite(base) else float("nan")
                rows.append({"metric": name, "p": float(p), "seed": int(seed), "value": m[name], "rel": rel})
    return {"block": cache.block, "n_units": k, "n_clips": int(cache.feats.shape[0]),
            "baseline": {n: base_m[n] for n in metrics}, "rows": rows}


def summarise(rows: Iterable[dict]) -> dict[str, dict[str, list[float]]]:
    """`{metric: {p, mean, std}}` of the relative values over seeds (std: population)."""
    acc: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        acc.setdefault(r["metric"], {}).setdefault(r["p"], []).append(r["rel"])
    out = {}
    for met, by_p in acc.items():
        ps = sorted(by_p)
        vals = [np.asarray(by_p[p], float) for p in ps]
        out[met] = {"p": ps, "mean": [float(v.mean()) for v in vals], "std": [float(v.std()) for v in vals]}
    return out


def validation_batches(run_dir: str | Path, meta: dict, model: nn.Module, *, data: str | None = None,
                       split: str = "val", max_clips: int | None = None, batch_size: int = 16):
    """Batches of a run's validation split (`data` defaults to the run config's data set)."""
    from torch.utils.data import DataLoader

    from ..annotations import read_mmit
    from ..checkpoint import run_data
    from ..dataset import ClipDataset, ClipTransform, collate_clips

    root = data or run_data(run_dir, meta)
    if not root:
        raise ValueError(f"{run_dir}: the run's config names no data set; pass data=")
    ann = read_mmit(root, split, vocab=meta["vocab"])
    if max_clips:
        ann.items = ann.items[:max_clips]
    ds = ClipDataset(ann, ClipTransform.from_dict(meta["transforms"]), video="video" in model.inputs,
                     audio="audio" in model.inputs)
    return DataLoader(ds, batch_size=batch_size, num_workers=0, collate_fn=collate_clips)


def run_ablation(run_dir: str | Path, *, block: str | None = None, data: str | None = None, split: str = "val",
                 ps: Sequence[float] = DEFAULT_PS, seeds: Sequence[int] = (0, 1, 2), max_clips: int | None = None,
                 record: bool = True) -> dict[str, Any]:
    """Ablation sweep of a run dir's block (default: the trunk's last stage, the map the head reads:
    `layer4`, or `attend` for a track model) on its validation split, recorded in the run's store."""
    from ..checkpoint import load_model
    from ..store import open_run_store

    model, meta = load_model(run_dir)
    block = block or stages(model)[-1]
    cache = cache_features(model, validation_batches(run_dir, meta, model, data=data, split=split,
                                                     max_clips=max_clips), block)
    res = ablation_sweep(model, cache, ps=ps, seeds=seeds)
    if record:
        st, rid = open_run_store(run_dir, meta)
        with st:
            st.write_ablation(res["block"], res["rows"], split=split, run_id=rid)
    return res
