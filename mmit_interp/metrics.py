"""Multi-label evaluation (DESIGN 6): hit@k, sample/class/micro mAP and per-class AP, all named.

AP is scikit-learn's ``average_precision_score``: AP = sum_k (R_k - R_{k-1}) P_k over the distinct
score thresholds in decreasing order, so tied scores form one group whose positives all get the
precision at the group's end (no interpolation, no tie-order dependence). It is computed for all
rows at once with sorts and cumulative sums (no Python loop over clips or classes).

- ``map_sample``: AP of each clip's ranking of the classes, averaged over clips with at least one
  positive; clips without any positive are skipped and counted in ``clips_skipped``.
- ``hit@1`` / ``hit@5``: share of those same clips (with >= 1 positive) with a positive among the
  top 1 / 5 classes. Ties are broken *against* the clip: within a group of equal scores, negatives
  rank before positives. This is deterministic, never rewards a model for emitting equal scores, and
  coincides with any tie-breaking rule when scores are distinct (as real network outputs are).
- ``map_class``: per-class AP averaged over classes with at least one positive;
  ``map_class_skipped`` counts the others, whose ``per_class_ap`` entry is NaN.
- ``map_micro``: AP over all (clip, class) pairs pooled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # numpy array, torch tensor or nested lists


def _to_numpy(a: ArrayLike, name: str) -> np.ndarray:
    """N x C float64 array from a torch tensor (any device) or array-like."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be N x C; got shape {arr.shape}")
    return arr


def _check(scores: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert (scores, targets) to float64 scores and a boolean target matrix."""
    s = _to_numpy(scores, "scores")
    y = _to_numpy(targets, "targets")
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and targets {y.shape} differ in shape")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("targets must be binary (0/1)")
    return s, y > 0.5


def average_precision_rows(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP of every row (ranking its columns by score), scikit-learn's definition; NaN for a row without positives."""
    n = scores.shape[1]
    order = np.argsort(-scores, axis=1)  # tie order is irrelevant: tied scores are grouped below
    s = np.take_along_axis(scores, order, axis=1)
    y = np.take_along_axis(targets, order, axis=1).astype(np.float64)
    tp = np.cumsum(y, axis=1)
    cols = np.arange(n)
    # Index of the last element of each element's tie group: the precision is read there.
    is_end = np.ones_like(s, dtype=bool)
    is_end[:, :-1] = s[:, :-1] != s[:, 1:]
    group_end = np.minimum.accumulate(np.where(is_end, cols, n)[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(tp, group_end, axis=1) / (group_end + 1.0)
    n_pos = tp[:, -1] if n else np.zeros(scores.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, (y * precision_at_end).sum(1) / n_pos, np.nan)


def _hit_at_k(s: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Per clip: is the best positive within the top k when ties rank negatives first (bool, N)."""
    best_pos = np.where(y, s, -np.inf).max(1, keepdims=True)
    rank = (s > best_pos).sum(1) + ((s == best_pos) & ~y).sum(1) + 1
    return rank <= k


def evaluate(scores: ArrayLike, targets: ArrayLike) -> dict[str, Any]:
    """All DESIGN 6 metrics for N x C scores and binary targets, as a JSON-friendly dict."""
    s, y = _check(scores, targets)
    n_clips, n_classes = s.shape
    has_pos = y.any(1)
    per_class = average_precision_rows(np.ascontiguousarray(s.T), np.ascontiguousarray(y.T))
    per_sample = average_precision_rows(s[has_pos], y[has_pos])
    evaluated = int(has_pos.sum())

    def mean_or_nan(values: np.ndarray) -> float:
        """Mean as a float, NaN when empty."""
        return float(values.mean()) if values.size else float("nan")

    return {
        "hit@1": mean_or_nan(_hit_at_k(s[has_pos], y[has_pos], 1)),
        "hit@5": mean_or_nan(_hit_at_k(s[has_pos], y[has_pos], 5)),
        "map_sample": mean_or_nan(per_sample),
        "map_class": mean_or_nan(per_class[~np.isnan(per_class)]),
        "map_class_skipped": int(np.isnan(per_class).sum()),
        "map_micro": float(average_precision_rows(s.reshape(1, -1), y.reshape(1, -1))[0]),
        "per_class_ap": [float(v) for v in per_class],
        "n_clips": int(n_clips),
        "n_classes": int(n_classes),
        "clips_skipped": int(n_clips - evaluated),
    }


def label_prior_baseline(train_targets: ArrayLike, val_targets: ArrayLike) -> dict[str, Any]:
    """Metrics of scoring every validation clip with the training class frequencies: the floor a model must beat."""
    train = _to_numpy(train_targets, "train_targets")
    val = _to_numpy(val_targets, "val_targets")
    if train.shape[1] != val.shape[1]:
        raise ValueError(f"train has {train.shape[1]} classes, val has {val.shape[1]}")
    prior = (train > 0.5).mean(0) if train.shape[0] else np.zeros(train.shape[1])
    return evaluate(np.broadcast_to(prior, val.shape), val)
