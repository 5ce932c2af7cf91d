"""Faithfulness and discriminativeness of maps: deletion / insertion curves over space-time voxels.

Deletion (Petsiuk et al. 2018; Quantus's `PixelFlipping` is the same curve): the clip's voxels
`(t, h, w)` (all colour channels together) are replaced by a baseline clip (the blurred clip, see
`methods.blurred`) in the map's order, largest value first; after step k of `steps` the first
`k * V // steps` voxels are replaced, and every class's score is recorded along the way (k = 0 is
the clip itself). Insertion starts from the baseline and puts the clip's voxels back in the same
order. AUC = trapezoid over the removed fraction in [0, 1]. A good map of action c makes c's score
fall fast under deletion (low AUC) and rise fast under insertion (high AUC) — and, being a map of
*c*, leaves the clip's other actions' scores alone (their deletion AUC stays high).
Ties in the map keep raster order (a stable sort), so a constant map deletes frame by frame.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
MODES = ("deletion", "insertion")


def voxel_ranks(saliency: torch.Tensor) -> torch.Tensor:
    """Rank of each voxel of a map `(T, H, W)` in descending order (0 = largest; ties in raster order)."""
    order = torch.sort(-saliency.flatten(), stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks.view_as(saliency)


def perturbation_curve(forward: Forward, clip: torch.Tensor, baseline: torch.Tensor, saliency: torch.Tensor, *,
                       mode: str = "deletion", steps: int = 10, score: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid,
                       batch_size: int = 32) -> torch.Tensor:
    """Scores `(steps + 1, C)` of every class while the voxels of `clip (3, T, H, W)` are deleted
    (replaced by `baseline`) or inserted (into `baseline`) in the order of `saliency (T, H, W)`."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    ranks = voxel_ranks(saliency)
    n = ranks.numel()
    src, dst = (baseline, clip) if mode == "deletion" else (clip, baseline)
    out = []
    for k0 in range(0, steps + 1, batch_size):
        ks = torch.arange(k0, min(k0 + batch_size, steps + 1))
        moved = ranks[None] < (ks * n // steps).view(-1, 1, 1, 1)
        with torch.no_grad():
            out.append(score(forward(torch.where(moved[:, None], src[None], dst[None]))))
    return torch.cat(out)


def auc(curve: torch.Tensor | np.ndarray) -> np.ndarray:
    """Area under curves `(steps + 1, ...)` over the fraction axis [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, dtype=np.float64)
    return (c[:-1] + c[1:]).sum(0) / (2 * (c.shape[0] - 1))


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float | None:
    """Spearman rank correlation of two maps of the same shape (average ranks for ties); None if one is constant."""
    from scipy.stats import rankdata

    x, y = rankdata(np.asarray(a).ravel()), rankdata(np.asarray(b).ravel())
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else None


def pairwise_rank_correlation(maps: torch.Tensor | np.ndarray) -> float | None:
    """Mean Spearman correlation over the pairs of a clip's class maps `(S, T, H, W)` (discriminativeness:
    lower = the co-occurring actions' maps differ more); None with fewer than two defined pairs."""
    vals = [r for i in range(len(maps)) for j in range(i + 1, len(maps))
            if (r := rank_correlation(maps[i], maps[j])) is not None]
    return float(np.mean(vals)) if vals else None
