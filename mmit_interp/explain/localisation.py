"""Localisation scores of CAMs where true boxes exist: pointing game and energy inside the box.

For each clip, the CAMs of its true actions that have a box in at least one sampled frame are
computed in one pass (`cam.cam_for`, named classes) at the model's frame size, then each class gets
one map per sampled frame under three methods:
- `cam`: the class's own normalised CAM (no competition; the classic per-class view),
- `cam_max`: plain max-of-CAMs, the class's map where it is the argmax of the normalised maps
  (its value there, 0 elsewhere),
- `mcam`: the same with mCAM (suppression below `delta`, smoothed intensity), DESIGN 7.
Scores per (class, frame) where the class has a box: *pointing* = 1 if the map's maximum lies in a
box of that class (tied maxima: the one nearest their centroid; a map that is 0 everywhere misses), *energy* =
share of the map's sum inside the boxes (0 for an all-zero map); *chance* = the boxes' share of the
frame (the pointing score of a uniformly random point); in frames with two or more boxed actions,
*pointing_other* = 1 if the maximum lies in another of those actions' boxes and not its own (a miss
that confuses actors; the other misses land on the background). *pointing_path* = 1 if the maximum
lies on the action's path, the union of its boxes over the clip's sampled frames (a map that marks
where a trajectory's evidence lies, e.g. an orbit, rather than the actor's place in this frame, hits
the path but not the box); its chance is the path's share of the frame. *pointing_prev* /
*pointing_next* = 1 if the maximum lies in the action's box one sampled frame earlier / later (scored
where the action has a box in both frames): a map that lags its actor scores pointing_prev above
pointing. Boxes are scaled from the video's pixel
grid to the model's input grid (frames are resized without crop); which pixels a box covers is
`boxes.box_mask`'s rule.
*Which action is where* (frames where two or more scored classes have boxes; `cam_max` and `mcam`,
the methods that assign pixels to classes): over the pixels inside exactly one class's box,
*ownership* = share of the pixels the method assigns to some class that it assigns to that class
(undefined, so not recorded, when it assigns none), *coverage* = share it assigns at all (always 1
for `cam_max`; mCAM's suppression leaves pixels to nobody); chance ownership = 1 / the number of
scored classes in the clip (a random owner). *box_ownership* (`cam` records) asks the same per box
instead of per pixel: 1 if the class's own normalised CAM has the highest mean over its exclusive box
pixels of the clip's scored classes' CAMs (its chance is ownership's). Ownership below box ownership
is lost near the box's edges, where other actors' maps reach, not to the wrong actor.
Results are averaged per class (frame -1), per sampled-frame index (class -1) and overall.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..boxes import Box, box_mask
from .mcam import max_of_cams, mcam

METHODS = ("cam", "cam_max", "mcam")


@dataclass
class ClipBoxes:
    """True boxes of one clip: `boxes[action][frame] = [box, ...]` in the video's pixel grid `width x height`."""

    path: Path
    width: int
    height: int
    boxes: dict[str, dict[int, list[Box]]] = field(default_factory=dict)


def boxes_from_truth(world: str | Path, split: str = "val") -> list[ClipBoxes]:
    """Boxes of a synthetic world's clips (`truth.jsonl`, loader `mmit_interp.synth.truth`)."""
    from ..synth.truth import load_truth

    root = Path(world)
    out = []
    for t in load_truth(root):
        if t.split != split:
            continue
        cb = ClipBoxes(root / "videos" / t.path, t.width, t.height)
        for a in t.actors:
            for f, b in enumerate(a.boxes or []):
                if b is not None:
                    cb.boxes.setdefault(a.action, {}).setdefault(f, []).append(tuple(map(float, b)))
        if cb.boxes:
            out.append(cb)
    return out


def boxes_from_csv(path: str | Path, videos_root: str | Path | None = None) -> list[ClipBoxes]:
    """User boxes: CSV with header `clip,frame,action,x1,y1,x2,y2` (frame = 0-based index in the video,
    pixel coordinates, x2/y2 exclusive); clip paths relative to `videos_root` (default: the CSV's folder)."""
    from ..video import probe

    path = Path(path)
    root = Path(videos_root) if videos_root else path.parent
    clips: dict[str, ClipBoxes] = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            try:
                p = root / row["clip"]
                if row["clip"] not in clips:
                    info = probe(p)
                    clips[row["clip"]] = ClipBoxes(p, info.width, info.height)
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
                clips[row["clip"]].boxes.setdefault(row["action"], {}).setdefault(int(row["frame"]), []).append(box)
            except (KeyError, ValueError) as e:
                raise ValueError(f"{path}:{n}: bad box row ({e})") from None
    return list(clips.values())


def peak(heat: np.ndarray, tie: float = 1e-6) -> tuple[int, int] | None:
    """The map's maximum `(y, x)`, None for an all-zero map.

    Values within `tie` of the maximum are tied (bilinear upsampling makes each border cell a flat
    plateau); the tied pixel nearest their centroid is the point, so no raster-order bias favours
    maps whose plateau edge happens to face the box."""
    if not heat.any():
        return None
    ys, xs = np.nonzero(heat >= heat.max() - tie)
    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return int(ys[k]), int(xs[k])


def pointing(heat: np.ndarray, mask: np.ndarray, tie: float = 1e-6) -> float:
    """1.0 if the map's maximum (`peak`) lies in the mask, else 0.0; an all-zero map misses."""
    p = peak(heat, tie)
    return 0.0 if p is None else float(mask[p])


def pointing_other(heat: np.ndarray, own: np.ndarray, others: np.ndarray, tie: float = 1e-6) -> float:
    """1.0 if the map's maximum lies in another action's box (`others`) and not in its own (`own`):
    a miss that confuses actors, as opposed to one that lands on the background."""
    p = peak(heat, tie)
    return 0.0 if p is None else float(others[p] and not own[p])


def energy(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's (non-negative) sum inside the mask."""
    tot = float(heat.sum())
    return float(heat[mask].sum()) / tot if tot > 0 else 0.0


def method_maps(maps: torch.Tensor, classes: torch.Tensor, *, delta: float, sigma: float, per: str = "clip",
                scale: str = "minmax", owners: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Per-class maps `(S, T, H, W)` of each method from raw CAMs at frame resolution (normalised `per`
    clip or frame by `scale`, `mcam.normalise`); `owners`, when given, receives the owner maps `(T, H, W)`
    of the methods that assign pixels to classes."""
    base = max_of_cams(maps, classes, per, scale)
    mc = mcam(base.maps, classes, delta=delta, sigma=sigma, normalised=True)
    if owners is not None:
        owners.update(cam_max=base.owner.numpy(), mcam=mc.owner.numpy())
    s = torch.arange(maps.shape[0]).view(-1, 1, 1, 1)
    return {"cam": base.maps.numpy(),
            "cam_max": torch.where(base.owner[None] == s, base.intensity[None], 0.0).numpy(),
            "mcam": torch.where(mc.owner[None] == s, mc.intensity[None], 0.0).numpy()}


def exclusive(masks: np.ndarray) -> np.ndarray:
    """Each class's pixels inside its own box and no other `(S, H, W)`, from one frame's box masks `(S, H, W)`."""
    return masks & (masks.sum(0) == 1)


def ownership(owner: np.ndarray, masks: np.ndarray) -> list[tuple[int, float | None, float]]:
    """`(j, ownership, coverage)` per class j with pixels inside its box only, for one frame's owner map
    `(H, W)` (index into the classes, -1 = nobody) and box masks `(S, H, W)`; ownership is None where
    the method assigns none of those pixels."""
    only = exclusive(masks)
    out = []
    for j in range(masks.shape[0]):
        o = owner[only[j]]
        if o.size:
            owned = int((o >= 0).sum())
            out.append((j, float((o == j).sum()) / owned if owned else None, owned / o.size))
    return out


def box_ownership(maps: np.ndarray, masks: np.ndarray) -> list[tuple[int, float]]:
    """`(j, 1.0 or 0.0)` per class j with pixels inside its box only, for one frame's normalised class maps
    `(S, H, W)` and box masks `(S, H, W)`: whether class j's map has the highest mean over those pixels."""
    only = exclusive(masks)
    return [(j, float(int(maps[:, only[j]].mean(1).argmax()) == j)) for j in range(masks.shape[0]) if only[j].any()]


def frame_masks(clip: ClipBoxes, actions: list[str], idx: list[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Box masks `(S, T, size, size)` of `actions` at the video frames `idx` on the model's square grid, and
    whether each action has a box there `(S, T)`."""
    masks = np.stack([[box_mask(clip.boxes[a].get(fi, []), (clip.height, clip.width), (size, size)) for fi in idx]
                      for a in actions])
    return masks, np.array([[fi in clip.boxes[a] for fi in idx] for a in actions])


def clip_inputs(model: torch.nn.Module, vocab, clip: ClipBoxes, transform) -> dict[str, Any] | None:
    """One clip's model inputs, its boxed actions (`classes`, `actions`) and box masks per sampled frame."""
    from ..dataset import clip_batch, load_clip

    d = load_clip(clip.path, transform, want_audio="audio" in model.inputs)
    idx = [int(i) for i in d["frame_indices"]]
    actions = [a for a in clip.boxes if a in vocab and any(i in clip.boxes[a] for i in idx)]
    if not actions:
        return None
    masks, present = frame_masks(clip, actions, idx, transform.size)
    b = clip_batch(d)
    return {"video": b["video"], "extra": {"audio": b["audio"], "audio_mask": b["has_audio"]}, "actions": actions,
            "classes": [vocab.index(a) for a in actions], "masks": masks, "present": present}


def score_clip(model: torch.nn.Module, vocab, clip: ClipBoxes, transform, *, delta: float = 0.05,
               sigma: float = 1.1, per: str = "clip", scale: str = "minmax") -> list[dict[str, Any]]:
    """Records `{method, class_idx, frame, pointing, pointing_path, energy, chance, chance_path}` for one
    clip's boxed classes (`pointing_prev` / `pointing_next` where the neighbouring sampled frame has its
    box, `pointing_other` in multi-action frames), and
    `{method, class_idx, frame, ownership?, coverage, chance_ownership}` in its multi-action frames."""
    return score_clip_scales(model, vocab, clip, transform, delta=delta, sigma=sigma, per=per, scales=(scale,))[scale]


def score_clip_scales(model: torch.nn.Module, vocab, clip: ClipBoxes, transform, *, delta: float = 0.05,
                      sigma: float = 1.1, per: str = "clip", scales: Sequence[str] = ("minmax",)
                      ) -> dict[str, list[dict[str, Any]]]:
    """`score_clip`'s records under each normalisation scale, from one decode and one CAM pass of the clip."""
    from .cam import cam_for

    inp = clip_inputs(model, vocab, clip, transform)
    if inp is None:
        return {s: [] for s in scales}
    res = cam_for(model)(inp["video"], classes=inp["classes"], **inp["extra"])
    out = {}
    for s in scales:
        owners: dict[str, np.ndarray] = {}
        maps = method_maps(res.maps[0], res.classes[0], delta=delta, sigma=sigma, per=per, scale=s, owners=owners)
        out[s] = _records(maps, owners, inp["classes"], inp["masks"], inp["present"])
    return out


def _records(maps: dict[str, np.ndarray], owners: dict[str, np.ndarray], classes: list[int], masks: np.ndarray,
             present: np.ndarray) -> list[dict[str, Any]]:
    """`score_clip`'s records of one clip from its methods' maps and owner maps (`method_maps`)."""
    paths = masks.any(1)  # (S, H, W): each action's boxes over the sampled frames
    out = []
    for t in range(masks.shape[1]):
        several = present[:, t].sum() >= 2
        for j, c in enumerate(classes):
            if not present[j, t]:
                continue
            others = np.delete(masks[:, t], j, axis=0).any(0)
            for meth, mm in maps.items():
                r = {"method": meth, "class_idx": c, "frame": t, "pointing": pointing(mm[j, t], masks[j, t]),
                     "energy": energy(mm[j, t], masks[j, t]), "chance": float(masks[j, t].mean()),
                     "pointing_path": pointing(mm[j, t], paths[j]), "chance_path": float(paths[j].mean())}
                for key, u in (("pointing_prev", t - 1), ("pointing_next", t + 1)):
                    if 0 <= u < masks.shape[1] and present[j, u]:
                        r[key] = pointing(mm[j, t], masks[j, u])
                if several:
                    r["pointing_other"] = pointing_other(mm[j, t], masks[j, t], others)
                out.append(r)
        if not several:  # ownership needs two actions in the frame
            continue
        for j, hit in box_ownership(maps[METHODS[0]][:, t], masks[:, t]):
            out.append({"method": METHODS[0], "class_idx": classes[j], "frame": t, "box_ownership": hit})
        for meth, own in owners.items():
            for j, acc, cov in ownership(own[t], masks[:, t]):
                r = {"method": meth, "class_idx": classes[j], "frame": t, "coverage": cov,
                     "chance_ownership": 1.0 / len(classes)}
                out.append(r if acc is None else {**r, "ownership": acc})
    return out


SCORES = ("pointing", "pointing_other", "pointing_path", "pointing_prev", "pointing_next", "energy", "ownership",
          "box_ownership", "coverage")


def aggregate(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store rows `{method, score, class_idx, frame, value, n}`: means per class, per frame and overall
    (-1 = all) of every score a record holds; chance is reported as its own method (`pointing` and
    `pointing_path` from the `cam` records, `ownership` from the `cam_max` ones)."""
    acc: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        for key_c, key_f in ((r["class_idx"], -1), (-1, r["frame"]), (-1, -1)):
            for sc in SCORES:
                if sc in r:
                    acc[(r["method"], sc, key_c, key_f)].append(r[sc])
            if r["method"] == METHODS[0] and "chance" in r:
                acc[("chance", "pointing", key_c, key_f)].append(r["chance"])
            if r["method"] == METHODS[0] and "chance_path" in r:
                acc[("chance", "pointing_path", key_c, key_f)].append(r["chance_path"])
            if r["method"] == METHODS[1] and "chance_ownership" in r:
                acc[("chance", "ownership", key_c, key_f)].append(r["chance_ownership"])
    return [{"method": m, "score": s, "class_idx": c, "frame": f, "value": float(np.mean(v)), "n": len(v)}
            for (m, s, c, f), v in sorted(acc.items())]


def run_localisation(run_dir: str | Path, *, world: str | Path | None = None, boxes_csv: str | Path | None = None,
                     videos_root: str | Path | None = None, split: str = "val", max_clips: int | None = None,
                     delta: float = 0.05, sigma: float = 1.1, normalise: str = "clip", scale: str = "minmax",
                     record: bool = True) -> dict[str, Any]:
    """Localisation of a run's CAMs on a synthetic world's truth or a user boxes CSV; overall summary
    `{method: {score: value}}` plus the store rows. The store's data set label is the world's
    `name:split` (or the CSV's name), followed by the mCAM parameters when they are not the defaults,
    so runs with other parameters sit beside the default ones instead of replacing them."""
    return run_localisation_scales(run_dir, world=world, boxes_csv=boxes_csv, videos_root=videos_root, split=split,
                                   max_clips=max_clips, delta=delta, sigma=sigma, normalise=normalise,
                                   scales=(scale,), record=record)[scale]


def run_localisation_scales(run_dir: str | Path, *, world: str | Path | None = None,
                            boxes_csv: str | Path | None = None, videos_root: str | Path | None = None,
                            split: str = "val", max_clips: int | None = None, delta: float = 0.05,
                            sigma: float = 1.1, normalise: str = "clip", scales: Sequence[str] = ("minmax",),
                            record: bool = True) -> dict[str, dict[str, Any]]:
    """`run_localisation` under each normalisation scale, every clip decoded and its CAMs computed once:
    `{scale: result}`, each scale recorded under its own data set label."""
    from .mcam import NORMALISE, SCALES

    if normalise not in NORMALISE:
        raise ValueError(f"normalise per {normalise!r}: choose one of {', '.join(NORMALISE)}")
    for scale in scales:
        if scale not in SCALES:
            raise ValueError(f"normalise scale {scale!r}: choose one of {', '.join(SCALES)}")
    from ..checkpoint import cached_model
    from ..dataset import ClipTransform
    from ..store import open_run_store

    if (world is None) == (boxes_csv is None):
        raise ValueError("give exactly one of world= (synthetic truth) or boxes_csv=")
    clips = boxes_from_truth(world, split) if world is not None else boxes_from_csv(boxes_csv, videos_root)
    clips = clips[:max_clips] if max_clips else clips
    model, meta = cached_model(run_dir)
    tf = ClipTransform.from_dict(meta["transforms"])
    recs: dict[str, list[dict[str, Any]]] = {s: [] for s in scales}
    for c in clips:
        for s, rs in score_clip_scales(model, meta["vocab"], c, tf, delta=delta, sigma=sigma, per=normalise,
                                       scales=scales).items():
            recs[s] += rs
    base = f"{Path(world).name}:{split}" if world is not None else Path(boxes_csv).name
    out = {}
    for scale in scales:
        rows = aggregate(recs[scale])
        summary = {m: {r["score"]: r["value"] for r in rows if r["method"] == m and r["class_idx"] == -1
                       and r["frame"] == -1} for m in (*METHODS, "chance")}
        dataset = base
        if (delta, sigma, normalise, scale) != (0.05, 1.1, "clip", "minmax"):
            by = "" if scale == "minmax" else f" by {scale}"
            dataset += f" (delta {delta:g}, sigma {sigma:g}, normalise per {normalise}{by})"
        out[scale] = {"dataset": dataset, "n_clips": len(clips), "n_records": len(recs[scale]), "summary": summary,
                      "rows": rows}
    if record:
        st, rid = open_run_store(run_dir, meta)
        with st:
            for r in out.values():
                st.write_localisation(r["dataset"], r["rows"], run_id=rid)
    return out
