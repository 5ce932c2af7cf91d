"""What class maps of a given spatial window and temporal field would score if they were exact (window oracles).

A position of a model's last map sees a square window of the frame over a span of sampled frames
around its own (its temporal field; a trunk whose temporal kernels chain past the clip's length sees
the whole clip). A *window oracle* gives class j, at position p and sampled frame t, the mean over the
frames of t's field of how much of j's actor p's window holds: its pixels in a box window (`box`),
1 where any of them are (`meets`, a detector that saturates once the action is in view), or its
pixels weighted by a Gaussian (`gauss`, an effective receptive field that fades from the centre).
Scored by `mmit-analyze localisation`'s rules (clip min-max normalisation, max-of-maps owner, own-map
pointing), the oracles say what the geometry of a window and a field allows on a clip set's boxes, and
what it forbids: a whole-clip field caps pointing however exact the map, since the map is the same in
every frame. They are not bounds on a learned model, which may weigh its window in any way; `meets`
and `box` are the saturating and the counting poles.

Ties between classes (two actors equally in every window of the field) are shared: a pixel whose
maximum `n` maps reach gives each `1 / n`, the expected credit of a random tie-break; elsewhere the
figure is `localisation.ownership` exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..synth.probes import world_config
from .localisation import ClipBoxes, exclusive, frame_masks, pointing
from .mcam import normalise

SHAPES = ("box", "meets", "gauss")


def axis_profile(n: int, grid: int, window: float, shape: str = "box") -> np.ndarray:
    """`(grid, n)` weights of the `n` pixels of one frame axis for each grid cell, centred where the
    upsampled maps place the cells: a `window`-pixel box (1 inside, clipped to the frame; `box` and
    `meets`), or a Gaussian whose standard deviation is `window` pixels (`gauss`)."""
    centre = (np.arange(grid) + 0.5) * n / grid
    px = np.arange(n) + 0.5
    if shape in ("box", "meets"):
        lo = np.floor(centre - window / 2)
        return ((px[None] >= lo[:, None]) & (px[None] < lo[:, None] + window)).astype(np.float64)
    if shape == "gauss":
        return np.exp(-0.5 * ((px[None] - centre[:, None]) / window) ** 2)
    raise ValueError(f"window shape {shape!r}: choose one of {', '.join(SHAPES)}")


def window_presence(masks: np.ndarray, grid: int, window: float, shape: str = "box") -> np.ndarray:
    """`(S, T, grid, grid)`: how much of each action's mask `(S, T, H, W)` lies in each cell's window
    (pixels weighted by `axis_profile`: a box window counts the actor's pixels inside it), or for
    `meets` 1 where any of it does: a detector that saturates once the action is in view."""
    _, _, h, w = masks.shape
    area = np.einsum("gh,sthw,kw->stgk", axis_profile(h, grid, window, shape), masks.astype(np.float64),
                     axis_profile(w, grid, window, shape))
    return (area > 0).astype(np.float64) if shape == "meets" else area


def oracle_maps(masks: np.ndarray, *, grid: int, window: float, field: int | None, shape: str = "box"
                ) -> torch.Tensor:
    """`(S, T, H, W)` window-oracle maps of box masks `(S, T, H, W)` at the sampled frames: per cell, the
    mean over the frames `u` with `|u - t| <= field` (all frames when `field` is None) of the action's
    pixels in the cell's window, upsampled from the grid as CAMs are (trilinear, corners not aligned)."""
    t, h, w = masks.shape[1:]
    pres = torch.from_numpy(window_presence(masks, grid, window, shape)).float()
    u = torch.arange(t)
    near = torch.ones(t, t) if field is None else ((u[:, None] - u[None, :]).abs() <= field).float()
    near = near / near.sum(1, keepdim=True)
    per_frame = torch.einsum("tu,suhw->sthw", near, pres)
    return F.interpolate(per_frame.unsqueeze(1), size=(t, h, w), mode="trilinear", align_corners=False)[:, 0]


def shared_ownership(maps: torch.Tensor, masks: np.ndarray) -> list[tuple[int, float | None, float]]:
    """`(j, ownership, coverage)` per class with exclusive-box pixels in one frame: normalised maps
    `(S, H, W)`, box masks `(S, H, W)`; a pixel's credit for j is 1 / (number of maps at the pixel's
    maximum) where j's map reaches it, and the pixel is owned where that maximum is above 0."""
    peak = maps.max(0).values
    at_max = (maps == peak[None]) & (peak[None] > 0)
    credit = (at_max.float() / at_max.sum(0).clamp(min=1)).numpy()
    owned_px = (peak > 0).numpy()
    only = exclusive(masks)
    out = []
    for j in range(masks.shape[0]):
        px = only[j]
        if px.any():
            owned = int(owned_px[px].sum())
            out.append((j, float(credit[j][px].sum()) / owned if owned else None, owned / int(px.sum())))
    return out


def clip_masks(clip: ClipBoxes, frames: int, size: int, n_frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Box masks `(S, T, size, size)` and presence `(S, T)` of the clip's boxed actions at the `frames`
    sampled frames a model sees (the evaluation's evenly spread segment centres); None without any."""
    from ..video import sample_indices

    idx = [int(i) for i in sample_indices(n_frames, frames)]
    actions = [a for a in clip.boxes if any(i in clip.boxes[a] for i in idx)]
    return frame_masks(clip, actions, idx, size) if actions else None


def ceiling_scores(masks: np.ndarray, present: np.ndarray, *, grid: int, window: float, field: int | None,
                   shape: str = "box") -> dict[str, list[float]]:
    """One clip's oracle scores: `pointing` per (action, present frame); `ownership` and `coverage` per
    (action, frame) with two or more boxed actions; `chance` = 1 / actions, once per ownership record."""
    maps = normalise(oracle_maps(masks, grid=grid, window=window, field=field, shape=shape), "clip")
    out: dict[str, list[float]] = {"pointing": [], "ownership": [], "coverage": [], "chance": []}
    for t in range(masks.shape[1]):
        for j in np.nonzero(present[:, t])[0]:
            out["pointing"].append(pointing(maps[j, t].numpy(), masks[j, t]))
        if present[:, t].sum() < 2:
            continue
        for _, acc, cov in shared_ownership(maps[:, t], masks[:, t]):
            out["coverage"].append(cov)
            if acc is not None:
                out["ownership"].append(acc)
                out["chance"].append(1.0 / masks.shape[0])
    return out


def ownership_ceiling(clips: Iterable[ClipBoxes], *, frames: int = 8, size: int = 64, grid: int = 8,
                      window: float = 43, field: int | None = None, shape: str = "box",
                      n_frames: int | None = None) -> dict[str, Any]:
    """Mean window-oracle `pointing`, `ownership`, `coverage` and ownership `chance` over clips' boxes
    (None where no record has one), with the record counts (`n_pointing`, `n_ownership`). `window` is
    in pixels of the `size`-pixel frame the model sees (a box's side or a Gaussian's standard deviation,
    `shape`); `n_frames` is the clips' length (probed from each video when None)."""
    if grid < 1 or window <= 0 or (field is not None and field < 0):
        raise ValueError("grid must be >= 1, window > 0 and field >= 0 (or None for the whole clip)")
    from ..video import probe

    acc: dict[str, list[float]] = {"pointing": [], "ownership": [], "coverage": [], "chance": []}
    for clip in clips:
        boxed = clip_masks(clip, frames, size, n_frames or probe(clip.path).n_frames)
        if boxed is not None:
            for k, v in ceiling_scores(*boxed, grid=grid, window=window, field=field, shape=shape).items():
                acc[k].extend(v)
    out: dict[str, Any] = {k: (float(np.mean(v)) if v else None) for k, v in acc.items()}
    out.update(n_pointing=len(acc["pointing"]), n_ownership=len(acc["ownership"]))
    return out


def run_ceiling(*, world: str | Path | None = None, boxes_csv: str | Path | None = None,
                videos_root: str | Path | None = None, split: str = "val", max_clips: int | None = None,
                frames: int = 8, size: int = 64, grid: int = 8, windows: Sequence[float] = (43,),
                fields: Sequence[int | None] = (None,), shape: str = "box") -> list[dict[str, Any]]:
    """`ownership_ceiling` for every (window, field) on a synthetic world's truth or a boxes CSV: one
    row `{window, field, shape, grid, frames, size, pointing, ownership, coverage, chance, n_...}` each."""
    from .localisation import boxes_from_csv, boxes_from_truth

    if (world is None) == (boxes_csv is None):
        raise ValueError("give a synthetic world or a boxes CSV, not both")
    if shape not in SHAPES:
        raise ValueError(f"window shape {shape!r}: choose one of {', '.join(SHAPES)}")
    clips = boxes_from_truth(world, split) if world is not None else boxes_from_csv(boxes_csv, videos_root)
    clips = clips[:max_clips] if max_clips else clips
    n_frames = world_config(world).frames if world is not None else None
    return [{"window": w, "field": f, "shape": shape, "grid": grid, "frames": frames, "size": size,
             **ownership_ceiling(clips, frames=frames, size=size, grid=grid, window=w, field=f, shape=shape,
                                 n_frames=n_frames)}
            for w in windows for f in fields]
