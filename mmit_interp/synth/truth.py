"""The ground-truth file of a synthetic world (``truth.jsonl``) and its loader.

One JSON object per clip, in CSV order (training clips, then validation clips)::

    {"path": "sliding/train_000000.mp4", "split": "train" | "val",
     "labels": [complete true actions], "train_labels": [labels in the clip's CSV row],
     "scene": "meadow", "frames": 24, "fps": 8, "width": 64, "height": 64,
     "has_audio": true, "audible": [actions that can be heard],
     "actors": [{"action", "shape", "colour", "texture", "visible", "audible",
                 "boxes": [[x1, y1, x2, y2] or null, one per frame] or null}]}

Boxes are in pixel coordinates of the frame, ``x1 <= x < x2`` and ``y1 <= y < y2`` (exclusive
right/bottom edges), and bound the actor's *visible* pixels in that frame (after clipping to the
frame and occlusion); ``null`` where the actor cannot be seen (blinked off, faded out, hidden, out
of frame). Heard-only actors have ``shape``/``colour``/``texture``/``boxes`` null.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .world import ActorSpec

Box = tuple[int, int, int, int]


@dataclass
class ActorTruth(ActorSpec):
    """One actor of a clip (its `ActorSpec`) and, if visible, its per-frame box (None where not visible)."""

    boxes: list[Box | None] | None


@dataclass
class ClipTruth:
    """The complete truth of one clip (see the module docstring for the field meanings)."""

    path: str
    split: str
    labels: list[str]
    train_labels: list[str]
    scene: str
    frames: int
    fps: int
    width: int
    height: int
    has_audio: bool
    audible: list[str]
    actors: list[ActorTruth]

    def boxes_at(self, frame: int) -> dict[str, Box]:
        """Boxes of the actions visible in frame ``frame``, by action name."""
        return {a.action: a.boxes[frame] for a in self.actors if a.boxes and a.boxes[frame] is not None}

    def to_json(self) -> str:
        """One line of truth.jsonl (compact, key order fixed, so files are byte-reproducible)."""
        d = {k: getattr(self, k) for k in ("path", "split", "labels", "train_labels", "scene", "frames", "fps",
                                           "width", "height", "has_audio", "audible")}
        d["actors"] = [
            {"action": a.action, "shape": a.shape, "colour": a.colour, "texture": a.texture, "visible": a.visible,
             "audible": a.audible, "boxes": None if a.boxes is None else [None if b is None else list(b) for b in a.boxes]}
            for a in self.actors
        ]
        return json.dumps(d, separators=(",", ":"))


def _clip_from_dict(d: dict) -> ClipTruth:
    """Build a ClipTruth from one parsed JSON line."""
    actors = [
        ActorTruth(a["action"], a["shape"], a["colour"], a["texture"], bool(a["visible"]), bool(a["audible"]),
                   None if a["boxes"] is None else [None if b is None else tuple(int(v) for v in b) for b in a["boxes"]])
        for a in d["actors"]
    ]
    return ClipTruth(d["path"], d["split"], list(d["labels"]), list(d["train_labels"]), d["scene"], int(d["frames"]),
                     int(d["fps"]), int(d["width"]), int(d["height"]), bool(d["has_audio"]), list(d["audible"]), actors)


def load_truth(path: str | os.PathLike) -> list[ClipTruth]:
    """Read ``truth.jsonl`` (or a world folder holding it) into ClipTruth records, in file order."""
    p = Path(path)
    if p.is_dir():
        p = p / "truth.jsonl"
    out = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(_clip_from_dict(json.loads(line)))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{p}:{n}: malformed truth record ({e})") from e
    return out
