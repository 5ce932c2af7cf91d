"""`analyze_clip`: the one-clip service behind `mmit-cam` and the dashboard's upload page.

Decode the clip as the checkpoint's transforms say, one forward pass for predictions and every
selected class's CAM (`cam.cam_for`), mCAM, then write per-frame images and an overlay video, record
the clip in the run's results store and return a JSON-able dict. Models are cached per checkpoint
(path, size, mtime) so a long-running server loads each once.

Files under `out_dir` (default `RUN/cams/<clip_key>/`, `clip_key` = first 16 hex digits of the
clip file's SHA-256, so re-analysing a clip replaces its files and store rows):
`frame_{t}.jpg` (the sampled frame at display size), `cam_{c}_{t}.jpg` (class c's CAM blended over
frame t), `heat_{c}_{t}.png` (class c's CAM alone as RGBA, alpha = normalised CAM: a browser can
change opacity and toggle classes by stacking these over `frame_{t}.jpg`), `mcam_{t}.jpg`,
`mcam_layer_{t}.png` (the mCAM alone as RGBA at full opacity, same use), `strip_{t}.jpg` (per-class overlays side
by side), `overlay.mp4` (or `.gif`: the mCAM overlay at the clip's own pace) and `result.json` (the returned dict).
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ..explain.cam import cam_for
from ..checkpoint import cached_model
from ..dataset import ClipTransform, clip_batch, load_clip
from ..explain.mcam import mcam, normalise
from ..explain.render import captioned_row, colormap_lut, composite, mcam_layers, resize_frames, write_video
from ..store import open_run_store, run_root
from ..video import probe

OUTPUT_PATTERNS = ("frame_*.jpg", "cam_*.jpg", "heat_*.png", "mcam_*.jpg", "mcam_layer_*.png", "strip_*.jpg",
                   "overlay.mp4", "overlay.gif", "result.json")
def clip_key(path: str | Path) -> str:
    """First 16 hex digits of the clip file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _img(path: Path, rgb: np.ndarray) -> str:
    """Write an RGB(A) image: JPEG (quality 92) or PNG (fast compression) by suffix; returns the path."""
    code = cv2.COLOR_RGBA2BGRA if rgb.shape[-1] == 4 else cv2.COLOR_RGB2BGR
    opts = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, code), opts):
        raise OSError(f"cannot write {path}")
    return str(path)


def analyze_clip(run_dir: str | Path, clip_path: str | Path, out_dir: str | Path | None = None, *,
                 top_k: int = 5, classes: Sequence[int | str] | None = None, threshold: float | None = None,
                 delta: float = 0.05, sigma: float = 1.1, normalise_per: str = "clip", scale: str = "minmax",
                 colormap: str = "jet",
                 opacity: float = 0.5, display_size: int | None = None, video_format: str = "mp4",
                 n_predictions: int = 10, record: bool = True, key: str | None = None) -> dict[str, Any]:
    """Predictions, per-class CAM and mCAM frame images and an overlay video for one clip (see module doc).

    Classes: named (`classes`, indices or names), else those with sigmoid score >= `threshold`,
    else the `top_k`. `display_size` (default max(model input size, 256)) is the side of the square
    frames drawn. Scores are sigmoid(logit), the logit is returned too. mCAM: `delta`, `sigma`,
    `normalise_per` ("clip" or "frame") and `scale` ("minmax" or "zscore") as in `mcam.mcam`; the per-class
    images show the maps so normalised. `key`: the clip's `clip_key` when the caller has hashed the file
    already (the dashboard hashes uploads once, while receiving them).
    """
    t0 = time.perf_counter()
    model, meta = cached_model(run_dir)
    vocab = meta["vocab"]
    if "video" not in model.inputs:
        raise ValueError(f"{meta['path']}: an audio-only model has no frames to draw CAMs on")
    tf = ClipTransform.from_dict(meta["transforms"])
    clip = load_clip(clip_path, tf, want_audio="audio" in model.inputs)
    disp = int(display_size or max(tf.size, 256))
    names_idx = None if classes is None else [c if isinstance(c, int) else vocab.index(c) for c in classes]
    b = clip_batch(clip)
    n_t = clip["video"].shape[1]
    res = cam_for(model)(b["video"], audio=b["audio"], audio_mask=b["has_audio"], classes=names_idx, top_k=top_k,
                         threshold=threshold, size=(n_t, disp, disp))
    t_model = time.perf_counter() - t0
    sel = res.classes[0].tolist()
    logits = res.logits[0]
    probs = torch.sigmoid(logits)
    order = probs.argsort(descending=True)[: min(n_predictions, len(vocab))].tolist()
    norm = normalise(res.maps[0], normalise_per, scale)
    mc = mcam(norm, res.classes[0], delta=delta, sigma=sigma, normalised=True)

    root = run_root(run_dir)
    key = key or clip_key(clip_path)
    out = Path(out_dir) if out_dir is not None else root / "cams" / key
    out.mkdir(parents=True, exist_ok=True)
    for pattern in OUTPUT_PATTERNS:  # a re-analysis may draw other classes: drop the previous files
        for old in out.glob(pattern):
            old.unlink()
    frames = resize_frames(clip["frames"], disp)
    heat = norm.numpy()
    inten, owner = mc.intensity.numpy(), mc.owner.numpy()
    sel_names = [vocab.names[c] for c in sel]
    heat_u8 = (heat * 255).round().astype(np.uint8)
    rgb = colormap_lut(colormap)[heat_u8]  # (S, T, H, W, 3)
    files: list[tuple[str, int, int, str]] = []
    mcam_frames = []
    # encoders release the GIL: images are written by two threads while the next frame is drawn
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = []

        def put(kind: str, c: int, t: int, name: str, img: np.ndarray) -> None:
            files.append((kind, c, t, str(out / name)))
            jobs.append(pool.submit(_img, out / name, img))

        for t in range(n_t):
            put("frame", -1, t, f"frame_{t}.jpg", frames[t])
            blended = [cv2.addWeighted(frames[t], 1 - opacity, rgb[j, t], opacity, 0) for j in range(len(sel))]
            for j, c in enumerate(sel):
                put("cam", c, t, f"cam_{c}_{t}.jpg", blended[j])
                put("heat", c, t, f"heat_{c}_{t}.png", np.concatenate([rgb[j, t], heat_u8[j, t, ..., None]], -1))
            layer, over = mcam_layers(inten[t], owner[t], sel_names, opacities=(1.0, max(opacity, 0.6)))
            put("mcam_layer", -1, t, f"mcam_layer_{t}.png", layer)
            mcam_frames.append(composite(frames[t], over))
            put("mcam", -1, t, f"mcam_{t}.jpg", mcam_frames[-1])
            put("strip", -1, t, f"strip_{t}.jpg", captioned_row(blended, sel_names))
        video = write_video(mcam_frames, out / f"overlay.{video_format}", fps=_clip_fps(clip_path, n_t))
        for job in jobs:
            job.result()  # re-raises a failed write
    files.append(("video", -1, -1, str(video)))
    params = dict(top_k=top_k, classes=names_idx, threshold=threshold, delta=delta, sigma=sigma,
                  normalise=normalise_per, scale=scale, colormap=colormap, opacity=opacity, display_size=disp, frames=n_t,
                  size=tf.size)
    result = {
        "clip_key": key, "clip": str(clip_path), "run": str(root), "checkpoint": meta["path"],
        "model": meta["model"]["name"], "has_audio": bool(clip["has_audio"]), "n_frames": n_t,
        "frame_indices": [int(i) for i in clip["frame_indices"]],
        "predictions": [{"class_idx": c, "name": vocab.names[c], "score": float(probs[c]), "logit": float(logits[c])}
                        for c in order],
        "cam_classes": [{"class_idx": c, "name": vocab.names[c], "score": float(probs[c])} for c in sel],
        "frames": [f for k, _, _, f in files if k == "frame"],
        "cam_frames": {str(c): [f for k, cc, _, f in files if k == "cam" and cc == c] for c in sel},
        "heat_frames": {str(c): [f for k, cc, _, f in files if k == "heat" and cc == c] for c in sel},
        "mcam_frames": [f for k, _, _, f in files if k == "mcam"],
        "mcam_layers": [f for k, _, _, f in files if k == "mcam_layer"],
        "strip_frames": [f for k, _, _, f in files if k == "strip"],
        "mcam_owner_share": {vocab.names[c]: float((owner == j).mean()) for j, c in enumerate(sel)},
        "overlay_video": str(video), "out_dir": str(out), "params": params,
        "timings": {"model_s": round(t_model, 4), "total_s": round(time.perf_counter() - t0, 4)},
    }
    if record:
        store, rid = open_run_store(root, meta)
        with store:
            store.write_clip(key, path=str(clip_path), n_frames=n_t, has_audio=bool(clip["has_audio"]), out_dir=str(out),
                             predictions=[(c, float(probs[c])) for c in order], files=files,
                             overlay_video=str(video), params=params, run_id=rid)
    result["timings"]["total_s"] = round(time.perf_counter() - t0, 4)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _clip_fps(path: str | Path, n_frames: int) -> float:
    """Frame rate that plays the sampled frames over the clip's own duration (OpenCV's container
    figures; PyAV's probe only when OpenCV has none)."""
    cap = cv2.VideoCapture(str(path))
    n, fps = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    if n > 0 and fps > 0:
        dur = n / fps
    else:
        info = probe(path)
        dur = info.duration or (info.n_frames / info.fps if info.fps else 0.0)
    return max(n_frames / dur, 1.0) if dur > 0 else 8.0
