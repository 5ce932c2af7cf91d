"""`clip_method_maps`: one clip's per-class maps by any explanation method, drawn like `analyze_clip`'s CAMs.

The dashboard's method switch: CAM maps come with the clip's analysis; another method's maps of the
same classes are computed on request and written, per class and sampled frame, as `heat_{c}_{t}.png`
(the map alone as RGBA, alpha = map min-max normalised over the clip) and `cam_{c}_{t}.jpg` (blended
over the frame) into `out_dir`, with `result.json` (the returned dict, file names relative to
`out_dir`) written last: it marks a finished computation.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..checkpoint import cached_model
from ..analysis.clip_analysis import _img
from ..dataset import ClipTransform, clip_batch, load_clip
from .mcam import normalise
from .render import colormap_lut, resize_frames
from .methods import make_method
from .table import count_forwards

METHOD_LABELS = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "occlusion": "occlusion",
                 "rise": "RISE", "ig": "Integrated Gradients"}
RESULT = "result.json"


def clip_method_maps(run_dir: str | Path, clip_path: str | Path, method: str, classes: Sequence[int],
                     out_dir: str | Path, *, display_size: int | None = None, colormap: str = "jet",
                     opacity: float = 0.5) -> dict[str, Any]:
    """Maps of `classes` on one clip by `method` (a key of `METHOD_LABELS`), drawn into `out_dir` (see module doc)."""
    if method not in METHOD_LABELS:
        raise ValueError(f"unknown explanation method {method!r}: choose from {', '.join(METHOD_LABELS)}")
    t0 = time.perf_counter()
    model, meta = cached_model(run_dir)
    if "video" not in model.inputs:
        raise ValueError(f"{meta['path']}: an audio-only model has no frames to draw maps on")
    tf = ClipTransform.from_dict(meta["transforms"])
    clip = load_clip(clip_path, tf, want_audio="audio" in model.inputs)
    b = clip_batch(clip)
    disp = int(display_size or max(tf.size, 256))
    n_t = clip["video"].shape[1]
    with count_forwards(model) as n:
        res = make_method(method, model)(b["video"], audio=b["audio"], audio_mask=b["has_audio"], classes=list(classes),
                                         size=(n_t, disp, disp))
    sel = res.classes[0].tolist()
    heat_u8 = (normalise(res.maps[0].detach(), "clip").numpy() * 255).round().astype(np.uint8)
    rgb = colormap_lut(colormap)[heat_u8]
    frames = resize_frames(clip["frames"], disp)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT).unlink(missing_ok=True)
    heat: dict[str, list[str]] = {}
    cam: dict[str, list[str]] = {}
    for j, c in enumerate(sel):
        for t in range(n_t):
            heat.setdefault(str(c), []).append(Path(_img(out / f"heat_{c}_{t}.png", np.concatenate(
                [rgb[j, t], heat_u8[j, t, ..., None]], -1))).name)
            cam.setdefault(str(c), []).append(Path(_img(out / f"cam_{c}_{t}.jpg", cv2.addWeighted(
                frames[t], 1 - opacity, rgb[j, t], opacity, 0))).name)
    result = {"method": method, "label": METHOD_LABELS[method], "classes": sel, "n_frames": n_t,
              "heat_frames": heat, "cam_frames": cam, "forwards": n[0],
              "params": {"display_size": disp, "colormap": colormap, "opacity": opacity, "normalise": "clip"},
              "timings": {"total_s": round(time.perf_counter() - t0, 4)}}
    (out / RESULT).write_text(json.dumps(result, indent=1))
    return result
