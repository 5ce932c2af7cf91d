"""The Broden concept-set format and its writer (DESIGN 3.2); the reader is `broden_actions.broden`.

Layout of a concept-set folder::

    index.csv      image,split,ih,iw,sh,sw,<one column per category, category.csv order>
    label.csv      number,name,category,frequency,coverage,syns
    category.csv   name,first,last,count,frequency
    c_<cat>.csv    code,number,name,frequency,coverage
    images/        the images (paths in index.csv are relative to it) and PNG label planes

A PNG plane stores a global label number as R + 256*G (0 = unlabelled). ``frequency`` is the
number of images holding a label (or category); ``coverage`` is the summed fraction of each
image it covers (a whole-image label covers 1.0), so ``coverage / frequency`` is its mean area.

A *tube set* (spatio-temporal concepts, e.g. action tubes) is a valid Broden folder whose rows
(the still of each item, its snippet's centre frame) are scored as before by any reader, plus::

    tubes.csv      image,frames,<one column per category, category.csv order>
    images/<stem>.mp4   each tube item's snippet, beside its still

one row per tube item: ``image`` is the item's ``index.csv`` path, ``frames`` F the number of
frames of its snippet, and the category cells ``;``-lists of *filmstrip* mask PNGs (F frame masks
stacked top to bottom, F*sh x sw; frame t is rows t*sh .. (t+1)*sh - 1, each frame a label plane as
in ``index.csv``) and whole-image label numbers (holding in every frame). One PNG per plane and
item, not per frame, keeps a tube as cheap to read as a still. The statistics in
label/category/c_<cat>.csv count the stills and the tube frames alike (each an image), so a
label seen only in frames has its category.
The writer sits on the ground floor because the synthetic world (`mmit_interp.synth`) writes concept
sets; `broden_actions` reads, builds and merges them on top of it.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

INDEX_FIXED = ["image", "split", "ih", "iw", "sh", "sw"]
TUBES_CSV = "tubes.csv"
TUBE_FIXED = ["image", "frames"]


class BrodenFormatError(ValueError):
    """A concept-set folder is malformed; the message names the file and (1-based) line."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


def encode_label_plane(plane: np.ndarray) -> np.ndarray:
    """Encode an int plane of global label numbers as an RGB uint8 image (R + 256*G)."""
    plane = np.asarray(plane)
    if plane.ndim != 2:
        raise ValueError(f"a label plane must be 2-D, got shape {plane.shape}")
    if plane.size and (plane.min() < 0 or plane.max() >= 65536):
        raise ValueError("label numbers must lie in [0, 65535] to fit R + 256*G")
    p = plane.astype(np.int64)
    rgb = np.zeros(plane.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = p % 256
    rgb[..., 1] = p // 256
    return rgb


def decode_label_plane(rgb: np.ndarray) -> np.ndarray:
    """Decode an RGB(A) or grey label PNG array to int32 global label numbers (R + 256*G)."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        return a.astype(np.int32)
    return a[..., 0].astype(np.int32) + 256 * a[..., 1].astype(np.int32)


@dataclass
class _LabelStats:
    """Per-label bookkeeping used by the writer: categories, image counts and coverage."""

    number: int
    name: str
    categories: list[str] = field(default_factory=list)
    freq: dict[str, int] = field(default_factory=dict)
    cov: dict[str, float] = field(default_factory=dict)
    images: set[int] = field(default_factory=set)


def write_broden_tables(
    root: str | os.PathLike,
    categories: list[str],
    labels: list[tuple[int, str, list[str]]],
    rows: list[dict],
    frame_areas: list[dict] = (),
) -> None:
    """Write index/label/category/c_<cat> CSVs from index rows and per-image label areas.

    ``labels`` is ``[(number, name, [categories])]``; each row is a dict with the index columns
    (``image, split, ih, iw, sh, sw``), ``cells`` ``{cat: [item, ...]}`` and ``areas``
    ``{cat: {label: fraction of the image}}`` from which frequency and coverage are computed.
    ``frame_areas`` (a tube set: one ``areas`` per tube frame) count in the statistics as images too.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stats = {num: _LabelStats(num, name, list(cats)) for num, name, cats in labels}
    cat_images: dict[str, int] = {c: 0 for c in categories}
    for i, row_areas in enumerate([row["areas"] for row in rows] + list(frame_areas)):
        for cat, areas in row_areas.items():
            if areas:
                cat_images[cat] += 1
            for lab, frac in areas.items():
                st = stats[lab]
                st.freq[cat] = st.freq.get(cat, 0) + 1
                st.cov[cat] = st.cov.get(cat, 0.0) + float(frac)
                st.images.add(i)

    with open(root / "index.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(INDEX_FIXED + list(categories))
        for row in rows:
            w.writerow(
                [row[k] for k in INDEX_FIXED]
                + [";".join(str(x) for x in row["cells"].get(c, [])) for c in categories]
            )

    ordered = sorted(stats.values(), key=lambda s: s.number)
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for st in ordered:
            catcell = ";".join(f"{c}({st.freq.get(c, 0)})" for c in st.categories)
            cov = sum(st.cov.values())
            w.writerow([st.number, st.name, catcell, len(st.images), _fmt(cov), ""])

    with open(root / "category.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "first", "last", "count", "frequency"])
        for c in categories:
            nums = [st.number for st in ordered if c in st.categories]
            first, last = (min(nums), max(nums)) if nums else (0, 0)
            w.writerow([c, first, last, len(nums), cat_images[c]])

    for c in categories:
        with open(root / f"c_{c}.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["code", "number", "name", "frequency", "coverage"])
            code = 0
            for st in ordered:
                if c in st.categories:
                    code += 1
                    w.writerow([code, st.number, st.name, st.freq.get(c, 0), _fmt(st.cov.get(c, 0.0))])


def write_tube_table(root: str | os.PathLike, categories: list[str], rows: list[dict]) -> None:
    """Write ``tubes.csv`` from rows ``{"image", "frames", "cells": {cat: [filmstrip PNG or label, ...]}}``."""
    seen: set[str] = set()
    with open(Path(root) / TUBES_CSV, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TUBE_FIXED + list(categories))
        for r in rows:
            if r["image"] in seen or int(r["frames"]) < 1:
                raise ValueError(f"tube {r['image']!r} is repeated or has no frames ({r['frames']})")
            seen.add(r["image"])
            w.writerow([r["image"], int(r["frames"])]
                       + [";".join(str(x) for x in r["cells"].get(c, [])) for c in categories])


def filmstrips(frames: list[dict[str, list[np.ndarray]]]) -> dict[str, list[np.ndarray]]:
    """Per-frame label planes ``[{cat: [planes (sh, sw)]}]`` as filmstrip planes ``{cat: [(F*sh, sw)]}``:
    strip k of a category stacks every frame's plane k (zeros where a frame has fewer planes)."""
    shape = next((p.shape for f in frames for ps in f.values() for p in ps), None)
    out: dict[str, list[np.ndarray]] = {}
    for cat in dict.fromkeys(c for f in frames for c in f):
        count = max(len(f.get(cat, [])) for f in frames)
        out[cat] = [np.concatenate([f[cat][k] if k < len(f.get(cat, [])) else np.zeros(shape, np.int32)
                                    for f in frames]) for k in range(count)]
    return out


def _fmt(x: float) -> str:
    """Format a coverage value compactly but losslessly enough for statistics (6 decimals)."""
    return f"{x:.6f}".rstrip("0").rstrip(".") if x else "0"


class BrodenWriter:
    """Write a Broden-format concept set: add labels, then images with their masks, then close().

    ``add_label`` returns the global 1-based label number; the same name added under two
    categories keeps one number and lists both categories in ``label.csv``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        categories: list[str],
        image_size: tuple[int, int] = (224, 224),
        seg_size: tuple[int, int] = (112, 112),
        jpeg_quality: int = 95,
    ):
        if len(set(categories)) != len(categories) or not categories:
            raise ValueError(f"categories must be a non-empty list of distinct names, got {categories}")
        for c in categories:
            if not c or any(ch in c for ch in ",;()/") or c in INDEX_FIXED:
                raise ValueError(f"invalid category name {c!r}")
        self.root = Path(root)
        self.categories = list(categories)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seg_size = (int(seg_size[0]), int(seg_size[1]))
        self.jpeg_quality = jpeg_quality
        self._labels: list[tuple[int, str, list[str]]] = []
        self._by_name: dict[str, int] = {}
        self._rows: list[dict] = []
        self._tubes: list[dict] = []
        self._frame_areas: list[dict] = []
        self._names: set[str] = set()
        self._closed = False
        (self.root / "images").mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "BrodenWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def add_label(self, name: str, category: str) -> int:
        """Register ``name`` under ``category`` and return its global label number (1-based)."""
        if category not in self.categories:
            raise ValueError(f"unknown category {category!r}; known: {self.categories}")
        if not name or "," in name or "\n" in name:
            raise ValueError(f"invalid label name {name!r}")
        num = self._by_name.get(name)
        if num is None:
            num = len(self._labels) + 1
            self._by_name[name] = num
            self._labels.append((num, name, [category]))
        elif category not in self._labels[num - 1][2]:
            self._labels[num - 1][2].append(category)
        return num

    def add_image(
        self,
        image: np.ndarray,
        split: str = "train",
        pixel: dict[str, list[np.ndarray]] | None = None,
        whole: dict[str, list[int]] | None = None,
        name: str | None = None,
        tube: list[dict[str, list[np.ndarray]]] | None = None,
    ) -> str:
        """Store one image (squashed to image_size) with its label planes; return its relative path.

        ``tube`` (a tube set) gives the label planes of each frame of the item's snippet, which the
        caller writes as ``<stem>.mp4`` beside the returned path; they go to filmstrip PNGs
        ``<stem>_tube_<cat>_<k>.png`` listed in ``tubes.csv``."""
        if self._closed:
            raise RuntimeError("BrodenWriter is closed")
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image must be uint8 HxWx3, got {img.dtype} {img.shape}")
        if not split or any(ch in split for ch in ",;/"):
            raise ValueError(f"invalid split {split!r}")
        pixel = pixel or {}
        whole = whole or {}
        for cat in list(pixel) + list(whole):
            if cat not in self.categories:
                raise ValueError(f"unknown category {cat!r}; known: {self.categories}")
        idx = len(self._rows)
        stem = name if name is not None else f"{split}/{idx:06d}"
        if stem in self._names or not stem or "," in stem or ";" in stem:
            raise ValueError(f"image name {stem!r} is empty, invalid or already used")
        sh, sw = self.seg_size
        checked, areas = self._check_planes(pixel)
        frames = [self._check_planes(fp) for fp in tube or []]
        cells: dict[str, list] = {}
        for cat, labs in whole.items():
            for lab in (int(v) for v in labs if int(v) != 0):
                self._check_label(lab, cat)
                areas.setdefault(cat, {})[lab] = 1.0
                cells.setdefault(cat, []).append(lab)

        self._names.add(stem)
        rel = f"{stem}.jpg"
        (self.root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        ih, iw = self.image_size
        pil = Image.fromarray(img)
        if img.shape[:2] != (ih, iw):
            pil = pil.resize((iw, ih), Image.BILINEAR)
        pil.save(self.root / "images" / rel, quality=self.jpeg_quality)
        for cat, planes in checked.items():
            paths = []
            for k, p in enumerate(planes):
                suffix = f"_{cat}" if len(planes) == 1 else f"_{cat}_{k + 1}"
                prel = f"{stem}{suffix}.png"
                Image.fromarray(encode_label_plane(p)).save(self.root / "images" / prel)
                paths.append(prel)
            cells[cat] = paths + cells.get(cat, [])
        if frames:
            self._frame_areas += [tareas for _, tareas in frames]
            tcells = {}
            for cat, strips in filmstrips([planes_t for planes_t, _ in frames]).items():
                tcells[cat] = [f"{stem}_tube_{cat}_{k + 1}.png" for k in range(len(strips))]
                for prel, p in zip(tcells[cat], strips):
                    Image.fromarray(encode_label_plane(p)).save(self.root / "images" / prel)
            self._tubes.append({"image": rel, "frames": len(frames), "cells": tcells})
        self._rows.append(
            {"image": rel, "split": split, "ih": ih, "iw": iw, "sh": sh, "sw": sw, "cells": cells, "areas": areas}
        )
        return rel

    def _check_planes(self, pixel: dict[str, list[np.ndarray]]) -> tuple[dict[str, list[np.ndarray]], dict]:
        """Validate label planes per category (shape, dtype, labels); return the non-empty lists and
        each label's area fraction per category."""
        sh, sw = self.seg_size
        checked: dict[str, list[np.ndarray]] = {}
        areas: dict[str, dict[int, float]] = {}
        for cat, planes in pixel.items():
            if cat not in self.categories:
                raise ValueError(f"unknown category {cat!r}; known: {self.categories}")
            planes = [np.asarray(p) for p in planes]
            for p in planes:
                if p.shape != (sh, sw) or not np.issubdtype(p.dtype, np.integer):
                    raise ValueError(f"{cat} mask must be an integer array of shape {(sh, sw)}, got {p.dtype} {p.shape}")
            if planes:
                stack = np.stack(planes).astype(np.int64)
                for lab in (int(v) for v in np.unique(stack) if v != 0):
                    self._check_label(lab, cat)
                    areas.setdefault(cat, {})[lab] = float((stack == lab).any(0).sum()) / (sh * sw)
                checked[cat] = planes
        return checked, areas

    def _check_label(self, lab: int, cat: str) -> None:
        """Reject label numbers that were never added, or were added under another category."""
        if not 1 <= lab <= len(self._labels):
            raise ValueError(f"label number {lab} was not added (have 1..{len(self._labels)})")
        if cat not in self._labels[lab - 1][2]:
            raise ValueError(f"label {lab} ({self._labels[lab - 1][1]!r}) was not added under category {cat!r}")

    def close(self) -> None:
        """Write index.csv, label.csv, category.csv and c_<cat>.csv (idempotent)."""
        if self._closed:
            return
        write_broden_tables(self.root, self.categories, self._labels, self._rows, self._frame_areas)
        if self._tubes:
            write_tube_table(self.root, self.categories, self._tubes)
        self._closed = True
