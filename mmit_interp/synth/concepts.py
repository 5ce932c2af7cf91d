"""Concept data from the synthetic renderer: a Broden-format concept set and action-region frames.

Broden categories (``OUT/broden/``): per-pixel ``color`` (the actor's colour name, on its plain
pixels only: texture marks are a different shade), per-pixel ``object`` (the shape kind, whole
actor), per-pixel ``texture`` (the actor's texture on the whole actor; ``plain`` is not a label)
and whole-image ``scene``. Texture is per-pixel because dissection scores a unit against the
region where the concept is; a whole-image texture label would credit any unit firing anywhere.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..broden_format import BrodenWriter
from .clips import write_clip
from .render import RenderedClip, Still
from .world import COLOURS, SCENES, SHAPES, TEXTURES, ClipSpec, SynthConfig

CATEGORIES = ["color", "object", "scene", "texture"]
PATTERNED = tuple(t for t in TEXTURES if t != "plain")


@dataclass
class ConceptRecord:
    """One concept image ready for a Broden writer: pixels, per-category label planes, whole labels."""

    image: np.ndarray
    split: str
    pixel: dict[str, np.ndarray]
    whole: dict[str, list[int]]


def label_numbers() -> dict[tuple[str, str], int]:
    """Global Broden label numbers, fixed by category order then catalogue order (1-based)."""
    names = [("color", c) for c in COLOURS] + [("object", s) for s in SHAPES] + [("scene", s) for s in SCENES]
    names += [("texture", t) for t in PATTERNED]
    return {key: i + 1 for i, key in enumerate(names)}


def concept_record(still: Still, index: int, config: SynthConfig) -> ConceptRecord:
    """Turn a rendered still into label planes at the mask size (nearest-neighbour downsampling)."""
    nums = label_numbers()
    planes = {cat: np.zeros(still.owner.shape, np.int32) for cat in ("color", "object", "texture")}
    for i, (shape, colour, texture) in enumerate(still.actors):
        mine = still.owner == i
        planes["color"][mine & ~still.pattern] = nums["color", colour]
        planes["object"][mine] = nums["object", shape]
        if texture != "plain":
            planes["texture"][mine] = nums["texture", texture]
    seg = (config.seg_size, config.seg_size)
    pixel = {cat: cv2.resize(p, seg, interpolation=cv2.INTER_NEAREST) for cat, p in planes.items()}
    split = "val" if index % 5 == 4 else "train"
    return ConceptRecord(still.image, split, pixel, {"scene": [nums["scene", still.scene]]})


def open_broden(root: str | os.PathLike, config: SynthConfig) -> BrodenWriter:
    """A BrodenWriter for the concept set with every label registered in a fixed order."""
    w = BrodenWriter(root, categories=CATEGORIES, image_size=(config.image_size, config.image_size),
                     seg_size=(config.seg_size, config.seg_size))
    for (cat, name), num in label_numbers().items():
        assert w.add_label(name, cat) == num
    return w


def add_record(writer: BrodenWriter, record: ConceptRecord, index: int) -> None:
    """Add one concept record to the writer, leaving out empty planes."""
    pixel = {cat: [p] for cat, p in record.pixel.items() if p.any()}
    writer.add_image(record.image, split=record.split, pixel=pixel, whole=record.whole, name=f"synth_{index:06d}")


def write_action_regions(root: Path, spec: ClipSpec, rendered: RenderedClip, count: int,
                         config: SynthConfig) -> list[tuple[str, str, int, int, int, int]]:
    """Save up to ``count`` frames of a clip (PNG + centred mp4 snippet) and return their box rows.

    Frames are drawn where at least one visible action has a box and a full snippet of
    ``snippet_frames`` frames fits with the frame at index ``snippet_frames // 2``.
    """
    n = min(config.snippet_frames, config.frames)
    half = n // 2
    visible = [a for a in spec.actors if a.visible]
    usable = [f for f in range(half, config.frames - (n - half) + 1) if any(b[f] is not None for b in rendered.boxes)]
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 7]))
    rows = []
    for f in sorted(rng.choice(usable, size=min(count, len(usable)), replace=False)) if usable else []:
        stem = f"{spec.name}_f{int(f):03d}"
        cv2.imwrite(str(root / f"{stem}.png"), cv2.cvtColor(rendered.frames[f], cv2.COLOR_RGB2BGR))
        write_clip(root / f"{stem}.mp4", rendered.frames[f - half:f - half + n], config.fps, crf=config.crf)
        for a, b in zip(visible, rendered.boxes):
            if b[f] is not None:
                rows.append((f"{stem}.png", a.action, *b[f]))
    return rows


def write_boxes_csv(path: Path, rows: list[tuple[str, str, int, int, int, int]]) -> None:
    """Write the action-region box table ``image,action,x1,y1,x2,y2`` (x2, y2 exclusive)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["image", "action", "x1", "y1", "x2", "y2"])
        w.writerows(rows)
