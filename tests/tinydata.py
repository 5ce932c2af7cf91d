"""A tiny M-MiT-layout data set written with PyAV, for the foundation tests.

Each class is a coloured square at a class-specific place, moving right over time, so a small
model learns it in seconds; some clips carry a sine tone as an AAC sound track, others none.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

PALETTE = np.array([[230, 30, 30], [30, 200, 30], [40, 60, 230], [230, 200, 20], [200, 40, 200], [20, 200, 200]],
                   dtype=np.uint8)


def write_clip(path: Path, frames: np.ndarray, fps: int = 8, audio: np.ndarray | None = None, rate: int = 22050) -> None:
    """Write RGB frames `(T, H, W, 3)` as H.264 mp4, with a mono AAC track when `audio` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height = frames.shape[2], frames.shape[1]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "18", "preset": "ultrafast"}
        as_ = c.add_stream("aac", rate=rate, layout="mono") if audio is not None else None
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
        if as_ is not None:
            af = av.AudioFrame.from_ndarray(audio.astype(np.float32).reshape(1, -1), format="fltp", layout="mono")
            af.sample_rate = rate
            for pkt in as_.encode(af):
                c.mux(pkt)
            for pkt in as_.encode():
                c.mux(pkt)


def render(labels: list[int], n_classes: int, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames showing one moving square per label on a noisy grey background."""
    x = np.full((frames, size, size, 3), 90, np.uint8)
    x = np.clip(x.astype(np.int16) + rng.integers(-20, 20, x.shape), 0, 255).astype(np.uint8)
    s = size // 4
    for c in labels:
        row = (c * s) % (size - s)
        for t in range(frames):
            col = int((size - s) * t / max(1, frames - 1))
            x[t, row:row + s, col:col + s] = PALETTE[c % len(PALETTE)]
    return x


def make_tiny_mmit(root: Path, n_train: int = 32, n_val: int = 12, n_classes: int = 4, frames: int = 8,
                   size: int = 32, seed: int = 0, audio_every: int = 2) -> Path:
    """Write `moments_categories.txt`, `trainingSet.csv`, `validationSet.csv` and `videos/`."""
    rng = np.random.default_rng(seed)
    names = [f"action_{i}" for i in range(n_classes)]
    (root / "moments_categories.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "moments_categories.txt").write_text("".join(f"{n},{i}\n" for i, n in enumerate(names)))
    t = np.arange(22050 * 3) / 22050
    for split, n, fname in (("train", n_train, "trainingSet.csv"), ("val", n_val, "validationSet.csv")):
        rows = []
        for i in range(n):
            k = 1 + int(rng.random() < 0.4)
            labels = sorted(rng.choice(n_classes, size=k, replace=False).tolist())
            rel = f"{names[labels[0]]}/{split}_{i:04d}.mp4"
            tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * labels[0]) * t) if i % audio_every == 0 else None
            write_clip(root / "videos" / rel, render(labels, n_classes, frames, size, rng), audio=tone)
            rows.append(",".join([rel] + [str(c) for c in labels]))
        (root / fname).write_text("\n".join(rows) + "\n")
    return root
