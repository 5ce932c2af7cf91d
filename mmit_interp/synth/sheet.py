"""Contact sheet of a generated world: a few clips' frames with their truth boxes and labels.

``python -m mmit_interp.synth.sheet WORLD OUT.png`` draws it (docs/img/synth_contact.png comes
from the default world this way).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from .truth import ClipTruth, load_truth

_PALETTE = [(255, 80, 80), (80, 220, 255), (255, 230, 60), (120, 255, 120)]


def _frames(path: Path) -> list[np.ndarray]:
    """All RGB frames of a clip (OpenCV decode)."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def _row(world: Path, clip: ClipTruth, n_frames: int, scale: int) -> np.ndarray:
    """One clip as a strip of frames with boxes and a caption line of its labels."""
    frames = _frames(world / "videos" / clip.path)
    picks = np.linspace(0, len(frames) - 1, n_frames).round().astype(int)
    tiles = []
    visible = [a for a in clip.actors if a.visible]
    for f in picks:
        tile = cv2.resize(frames[f], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for k, a in enumerate(visible):
            box = a.boxes[f]
            if box is None:
                continue
            x1, y1, x2, y2 = (v * scale for v in box)
            col = _PALETTE[k % len(_PALETTE)]
            cv2.rectangle(tile, (x1, y1), (x2 - 1, y2 - 1), col, 1)
            cv2.putText(tile, a.action, (x1 + 2, max(y1 - 3, 9)), cv2.FONT_HERSHEY_SIMPLEX, 0.33, col, 1, cv2.LINE_AA)
        tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
    strip = np.concatenate(tiles, 1)
    caption = np.full((18, strip.shape[1], 3), 255, np.uint8)
    heard = [a.action for a in clip.actors if not a.visible]
    text = f"{clip.scene}: " + ", ".join(a.action for a in visible)
    if heard:
        text += "  + heard: " + ", ".join(heard)
    cv2.putText(caption, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, caption], 0)


def contact_sheet(world: str | os.PathLike, out: str | os.PathLike, clips: int = 6, frames: int = 5,
                  scale: int = 3) -> Path:
    """Write a PNG of ``clips`` validation clips (those with the most visible actions first) and return its path."""
    world = Path(world)
    truth = [t for t in load_truth(world) if t.split == "val"] or load_truth(world)
    chosen = sorted(truth, key=lambda t: -min(sum(a.visible for a in t.actors), 3))[:clips]
    sheet = np.concatenate([_row(world, c, frames, scale) for c in chosen], 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: world folder, output PNG, optional clip and frame counts."""
    p = argparse.ArgumentParser(description="Contact sheet of a synthetic world (frames, truth boxes, labels).")
    p.add_argument("world")
    p.add_argument("out")
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--scale", type=int, default=3)
    a = p.parse_args(argv)
    print(contact_sheet(a.world, a.out, a.clips, a.frames, a.scale))


if __name__ == "__main__":
    main()
