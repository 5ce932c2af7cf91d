"""Broden-format concept sets: reader and torch dataset (DESIGN 3.2).

The format and its writer are `mmit_interp.broden_format` (the synthetic world writes concept sets
on the ground floor); this module reads them for dissection, action regions and merging.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mmit_interp.broden_format import INDEX_FIXED, TUBE_FIXED, TUBES_CSV, BrodenFormatError, decode_label_plane

# ----------------------------------------------------------------------------- reader


@dataclass
class Label:
    """One global label: its number, name, per-category image counts (label.csv) and statistics."""

    number: int
    name: str
    categories: dict[str, int]
    frequency: int
    coverage: float
    syns: list[str]


@dataclass
class CategoryLabel:
    """One row of ``c_<cat>.csv``: category-local code, global number, name, frequency, coverage."""

    code: int
    number: int
    name: str
    frequency: int
    coverage: float


@dataclass
class IndexRow:
    """One image of ``index.csv``: path, split, sizes and per-category PNG paths / whole labels."""

    image: str
    split: str
    ih: int
    iw: int
    sh: int
    sw: int
    pixel: dict[str, list[str]]
    whole: dict[str, list[int]]
    line: int


@dataclass
class Tube:
    """One row of ``tubes.csv``: an item's snippet frame count and, per category, its filmstrip mask
    PNG paths (every frame's plane stacked top to bottom) and whole labels (in every frame)."""

    frames: int
    pixel: dict[str, list[str]]
    whole: dict[str, list[int]]
    line: int


def _open_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a CSV file into (header, [(line number, cells)]), naming the file when it is missing."""
    if not path.is_file():
        raise BrodenFormatError(path, None, "file not found")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise BrodenFormatError(path, 1, "empty file (a header is required)")
    header = [h.strip() for h in rows[0]]
    body = [(i + 2, r) for i, r in enumerate(rows[1:]) if any(c.strip() for c in r)]
    return header, body


def _need_columns(path: Path, header: list[str], cols: list[str]) -> dict[str, int]:
    """Map required column names to positions, or fail naming the file's header line."""
    pos = {h: i for i, h in enumerate(header)}
    missing = [c for c in cols if c not in pos]
    if missing:
        raise BrodenFormatError(path, 1, f"missing column(s) {missing}; header is {header}")
    return pos


def _cell(path: Path, line: int, row: list[str], pos: dict[str, int], col: str) -> str:
    """Return one cell of a row, failing with file and line when the row is too short."""
    i = pos[col]
    if i >= len(row):
        raise BrodenFormatError(path, line, f"row has {len(row)} cells, column {col!r} is missing")
    return row[i].strip()


def _int(path: Path, line: int, value: str, what: str) -> int:
    """Parse an integer cell, failing with file and line."""
    try:
        return int(value)
    except ValueError:
        raise BrodenFormatError(path, line, f"{what} must be an integer, got {value!r}") from None


def _float(path: Path, line: int, value: str, what: str) -> float:
    """Parse a float cell (empty means 0), failing with file and line."""
    if value == "":
        return 0.0
    try:
        return float(value)
    except ValueError:
        raise BrodenFormatError(path, line, f"{what} must be a number, got {value!r}") from None


_CAT_ITEM = re.compile(r"^([^()]+)\((\d+)\)$")


class Broden:
    """A parsed Broden concept set: categories (from category.csv), labels, c_<cat> tables, index rows.

    Paths in ``rows`` are relative to ``root / "images"``; ``image_path``/``mask_path`` resolve them.
    A tube set's ``tubes.csv`` (``mmit_interp.broden_format``) gives ``tubes``: per index image
    path, its ``Tube`` (empty for a still-only set); ``load_tube`` decodes chosen frames' masks.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise BrodenFormatError(self.root, None, "concept-set folder not found")
        self.categories = self._read_categories()
        self.labels = self._read_labels()
        self.category_labels = {c: self._read_category_labels(c) for c in self.categories}
        self.rows = self._read_index()
        self.tubes = self._read_tubes()

    # -- tables
    def _read_categories(self) -> list[str]:
        path = self.root / "category.csv"
        header, body = _open_csv(path)
        pos = _need_columns(path, header, ["name"])
        cats: list[str] = []
        for line, row in body:
            name = _cell(path, line, row, pos, "name")
            if not name or name in cats:
                raise BrodenFormatError(path, line, f"empty or duplicate category name {name!r}")
            cats.append(name)
        if not cats:
            raise BrodenFormatError(path, 2, "no categories listed")
        return cats

    def _read_labels(self) -> dict[int, Label]:
        path = self.root / "label.csv"
        header, body = _open_csv(path)
        pos = _need_columns(path, header, ["number", "name"])
        labels: dict[int, Label] = {}
        for line, row in body:
            num = _int(path, line, _cell(path, line, row, pos, "number"), "number")
            if num == 0:
                continue  # some real Broden files list the unlabelled class 0 as '-'
            if num < 0 or num in labels:
                raise BrodenFormatError(path, line, f"negative or duplicate label number {num}")
            cats: dict[str, int] = {}
            catcell = _cell(path, line, row, pos, "category") if "category" in pos else ""
            for item in filter(None, (s.strip() for s in catcell.split(";"))):
                m = _CAT_ITEM.match(item)
                if m:
                    cats[m.group(1)] = int(m.group(2))
                elif item != "-":
                    cats[item] = 0
            for c in cats:
                if c not in self.categories:
                    raise BrodenFormatError(path, line, f"category {c!r} is not in category.csv {self.categories}")
            freq = _int(path, line, _cell(path, line, row, pos, "frequency") or "0", "frequency") if "frequency" in pos else 0
            cov = _float(path, line, _cell(path, line, row, pos, "coverage"), "coverage") if "coverage" in pos else 0.0
            syncell = row[pos["syns"]] if "syns" in pos and pos["syns"] < len(row) else ""
            syns = [s for s in syncell.split(";") if s]
            labels[num] = Label(num, _cell(path, line, row, pos, "name"), cats, freq, cov, syns)
        return labels

    def _read_category_labels(self, cat: str) -> list[CategoryLabel]:
        path = self.root / f"c_{cat}.csv"
        header, body = _open_csv(path)
        pos = _need_columns(path, header, ["code", "number", "name", "frequency", "coverage"])
        out = []
        for line, row in body:
            num = _int(path, line, _cell(path, line, row, pos, "number"), "number")
            if num == 0:
                continue
            if num not in self.labels:
                raise BrodenFormatError(path, line, f"label number {num} is not in label.csv")
            out.append(
                CategoryLabel(
                    _int(path, line, _cell(path, line, row, pos, "code"), "code"),
                    num,
                    _cell(path, line, row, pos, "name"),
                    _int(path, line, _cell(path, line, row, pos, "frequency") or "0", "frequency"),
                    _float(path, line, _cell(path, line, row, pos, "coverage"), "coverage"),
                )
            )
        return out

    def _read_cells(self, path: Path, line: int, row: list[str], pos: dict[str, int]
                    ) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
        """A row's category cells: mask PNG paths and whole-image label numbers per category."""
        pixel: dict[str, list[str]] = {}
        whole: dict[str, list[int]] = {}
        for cat in self.categories:
            for item in filter(None, (s.strip() for s in _cell(path, line, row, pos, cat).split(";"))):
                if item.isdigit():
                    num = int(item)
                    if num == 0:
                        continue
                    if num not in self.labels:
                        raise BrodenFormatError(path, line, f"{cat} label number {num} is not in label.csv")
                    whole.setdefault(cat, []).append(num)
                else:
                    pixel.setdefault(cat, []).append(item)
        return pixel, whole

    def _read_index(self) -> list[IndexRow]:
        path = self.root / "index.csv"
        header, body = _open_csv(path)
        pos = _need_columns(path, header, INDEX_FIXED + self.categories)
        rows = []
        for line, row in body:
            vals = {k: _cell(path, line, row, pos, k) for k in INDEX_FIXED}
            if not vals["image"]:
                raise BrodenFormatError(path, line, "empty image path")
            sizes = {k: _int(path, line, vals[k], k) for k in ("ih", "iw", "sh", "sw")}
            if min(sizes.values()) <= 0:
                raise BrodenFormatError(path, line, f"image and mask sizes must be positive, got {sizes}")
            pixel, whole = self._read_cells(path, line, row, pos)
            rows.append(IndexRow(vals["image"], vals["split"], **sizes, pixel=pixel, whole=whole, line=line))
        return rows

    def _read_tubes(self) -> dict[str, Tube]:
        """``tubes.csv`` per index image path; ``{}`` when the set has none."""
        path = self.root / TUBES_CSV
        if not path.is_file():
            return {}
        header, body = _open_csv(path)
        pos = _need_columns(path, header, TUBE_FIXED + self.categories)
        images = {r.image for r in self.rows}
        tubes: dict[str, Tube] = {}
        for line, row in body:
            image = _cell(path, line, row, pos, "image")
            if image not in images:
                raise BrodenFormatError(path, line, f"image {image!r} is not a row of index.csv")
            if image in tubes:
                raise BrodenFormatError(path, line, f"repeated tube {image!r} (first on line {tubes[image].line})")
            frames = _int(path, line, _cell(path, line, row, pos, "frames"), "frames")
            if frames < 1:
                raise BrodenFormatError(path, line, f"frames must be >= 1, got {frames}")
            tubes[image] = Tube(frames, *self._read_cells(path, line, row, pos), line)
        return tubes

    # -- read-outs
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_labels(self) -> int:
        """Largest global label number (label arrays are sized num_labels + 1, index 0 unused)."""
        return max(self.labels, default=0)

    def label_name(self, number: int) -> str:
        """Name of a global label number."""
        return self.labels[number].name

    def label_names(self) -> list[str]:
        """Label names indexed by global label number ("" for 0 and unused numbers): the engine's table."""
        names = [""] * (self.num_labels + 1)
        for num, lab in self.labels.items():
            names[num] = lab.name
        return names

    def primary_categories(self, categories: list[str] | None = None) -> np.ndarray:
        """Index into ``categories`` (default: all) of c(l) per label number: the category where l
        has the largest coverage in the ``c_<cat>.csv`` tables, -1 for labels in none of them.

        NetDissect's rule (``primary_categories_per_index``: ``max`` over ``(coverage, category
        index)``, 0 where l is not listed): ties go to the category listed last."""
        categories = list(categories) if categories is not None else self.categories
        cov = np.zeros((self.num_labels + 1, len(categories)))
        listed = np.zeros(self.num_labels + 1, bool)
        for ci, cat in enumerate(categories):
            for cl in self.category_labels[cat]:
                cov[cl.number, ci] = cl.coverage
                listed[cl.number] = True
        last = len(categories) - 1 - np.argmax(cov[:, ::-1], axis=1)
        out = np.where(listed, last, -1)
        out[0] = -1
        return out

    def image_path(self, row: IndexRow) -> Path:
        """Absolute path of a row's image."""
        return self.root / "images" / row.image

    def load_masks(self, row: IndexRow, seg_size: tuple[int, int] | None = None,
                   frame: int | None = None) -> dict[str, np.ndarray]:
        """Decode a row's PNG planes per category as int32 arrays (planes, sh, sw), label 0 = none;
        with ``frame``, those of that frame of the row's tube (``load_tube``)."""
        if frame is not None:
            return self.load_tube(row, [frame], seg_size)[0]
        sh, sw = seg_size or (row.sh, row.sw)
        out = {}
        for cat, paths in row.pixel.items():
            planes = []
            for rel in paths:
                img = self._open_plane(rel, self.root / "index.csv", row.line)
                if img.size != (sw, sh):
                    img = img.resize((sw, sh), Image.NEAREST)
                planes.append(decode_label_plane(np.asarray(img)))
            out[cat] = np.stack(planes)
        return out

    def load_tube(self, row: IndexRow, frames: Sequence[int],
                  seg_size: tuple[int, int] | None = None) -> list[dict[str, np.ndarray]]:
        """Per frame in ``frames`` (of the row's snippet), its masks ``{cat: int32 (planes, sh, sw)}``
        from the tube's filmstrips, each filmstrip decoded once."""
        tube = self.tubes.get(row.image)
        table = self.root / TUBES_CSV
        if tube is None:
            raise BrodenFormatError(table, None, f"{row.image!r} has no tube")
        bad = [int(t) for t in frames if not 0 <= int(t) < tube.frames]
        if bad:
            raise BrodenFormatError(table, tube.line,
                                    f"{row.image!r} has no tube frame {bad[0]} ({tube.frames} frames)")
        sh, sw = seg_size or (row.sh, row.sw)
        out: list[dict[str, list[np.ndarray]]] = [{} for _ in frames]
        for cat, paths in tube.pixel.items():
            for rel in paths:
                img = self._open_plane(rel, table, tube.line)
                w, h = img.size
                if h % tube.frames:
                    raise BrodenFormatError(table, tube.line, f"filmstrip {rel} is {h} px high, not a multiple of "
                                            f"its {tube.frames} frames")
                fh = h // tube.frames
                strip = decode_label_plane(np.asarray(img)) if (fh, w) == (sh, sw) else None
                for planes, t in zip(out, frames):
                    if strip is not None:
                        plane = strip[int(t) * fh:(int(t) + 1) * fh]
                    else:
                        frame = img.crop((0, int(t) * fh, w, (int(t) + 1) * fh)).resize((sw, sh), Image.NEAREST)
                        plane = decode_label_plane(np.asarray(frame))
                    planes.setdefault(cat, []).append(plane)
        return [{cat: np.stack(ps) for cat, ps in planes.items()} for planes in out]

    def _open_plane(self, rel: str, table: Path, line: int) -> Image.Image:
        """Open a mask PNG under ``images/``, naming the table line that lists it when it is missing."""
        p = self.root / "images" / rel
        if not p.is_file():
            raise BrodenFormatError(table, line, f"mask file {p} not found")
        return Image.open(p)


def load_broden(root: str | os.PathLike) -> Broden:
    """Parse a Broden-format concept-set folder (categories from its category.csv)."""
    return Broden(root)


# ----------------------------------------------------------------------------- torch dataset

class BrodenDataset:
    """Torch Dataset over a Broden concept set: normalised model input plus label masks at seg size.

    An item is ``{"image": (3, H, W) or (3, T, H, W) float, "masks": {cat: int32 (planes, sh, sw)},
    "whole": {cat: [label numbers]}, "index": int}``. With ``frames=T`` (video models) an image is
    fed as a clip: the ``<stem>.mp4`` snippet beside it, sampled evenly to T frames, when one
    exists and ``use_snippets`` is on, else T copies of the still image. Pixels are normalised as
    every model input is (``mmit_interp.dataset.normalise``; ``mean``/``std`` default to ImageNet's).

    On a tube set (``Broden.tubes``) with ``tubes`` on (default: whenever the set has tubes and clips
    come from snippets) an item also holds ``frame_masks``/``frame_whole``: the labels of each of
    the T frames sampled from its snippet (the still's labels for an item without a tube), and
    ``collate`` gives per-frame label tensors ``pixel (N, T, P, sh, sw)``.
    """

    def __init__(
        self,
        root: str | os.PathLike | Broden,
        size: tuple[int, int] | int | None = None,
        frames: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        split: str | None = None,
        seg_size: tuple[int, int] | None = None,
        use_snippets: bool = True,
        categories: list[str] | None = None,
        tubes: bool | None = None,
    ):
        self.broden = root if isinstance(root, Broden) else load_broden(root)
        self.categories = list(categories) if categories else list(self.broden.categories)
        unknown = [c for c in self.categories if c not in self.broden.categories]
        if unknown:
            raise ValueError(f"categories {unknown} not in {self.broden.root}/category.csv {self.broden.categories}")
        self.indices = [i for i, r in enumerate(self.broden.rows) if split is None or r.split == split]
        if not self.indices:
            raise ValueError(f"{self.broden.root}: no images (split={split!r})")
        first = self.broden.rows[self.indices[0]]
        self.seg_size = tuple(seg_size) if seg_size else (first.sh, first.sw)
        if isinstance(size, int):
            size = (size, size)
        self.size = tuple(size) if size else (first.ih, first.iw)
        self.frames = frames
        from mmit_interp.dataset import IMAGENET_MEAN, IMAGENET_STD

        self.mean = tuple(mean) if mean is not None else IMAGENET_MEAN
        self.std = tuple(std) if std is not None else IMAGENET_STD
        self.use_snippets = use_snippets
        usable = bool(self.broden.tubes) and bool(frames) and use_snippets
        if tubes and not usable:
            raise ValueError(f"{self.broden.root}: tube labels need a tube set (tubes.csv: "
                             f"{'found' if self.broden.tubes else 'missing'}), frames (got {frames}) and snippets "
                             f"(use_snippets={use_snippets})")
        self.tubes = usable if tubes is None else bool(tubes)
        self.with_labels = True  # False: items and batches hold only ``image`` and ``index`` (a features-only pass)

    def __len__(self) -> int:
        return len(self.indices)

    def row(self, i: int) -> IndexRow:
        """The index row behind item ``i``."""
        return self.broden.rows[self.indices[i]]

    def read_image(self, i: int) -> np.ndarray:
        """Item ``i``'s image as uint8 RGB (H, W, 3) at the model input size (squashed, no crop)."""
        row = self.row(i)
        path = self.broden.image_path(row)
        if not path.is_file():
            raise BrodenFormatError(self.broden.root / "index.csv", row.line, f"image file {path} not found")
        h, w = self.size
        return np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR))

    def snippet_path(self, i: int) -> Path | None:
        """The ``<stem>.mp4`` snippet beside item ``i``'s image, if one exists."""
        p = self.broden.image_path(self.row(i)).with_suffix(".mp4")
        return p if p.is_file() else None

    def read_clip(self, i: int) -> np.ndarray:
        """Item ``i`` as uint8 frames (T, H, W, 3): its snippet sampled to T frames, or T still copies."""
        return self._clip(i)[0]

    def _clip(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``read_clip`` and the snippet frame indices it sampled (None: still copies)."""
        snip = self.snippet_path(i) if self.use_snippets else None
        if snip is not None:
            from mmit_interp.video import decode_frames

            return decode_frames(snip, self.frames, size=self.size)
        return np.repeat(self.read_image(i)[None], self.frames, axis=0), None

    def frame_labels(self, i: int, frames: np.ndarray | None) -> tuple[list[dict], list[dict]]:
        """Per sampled snippet frame, item ``i``'s masks ``{cat: int32 (planes, sh, sw)}`` and whole
        labels; the still's for every frame when the item has no tube or ``frames`` is None."""
        import torch

        row = self.row(i)
        tube = self.broden.tubes.get(row.image)
        if tube is None or frames is None:
            n = len(frames) if frames is not None else self.frames
            return [self._masks(row)] * n, [self._whole(row.whole)] * n
        masks = [{c: torch.from_numpy(m) for c, m in f.items() if c in self.categories}
                 for f in self.broden.load_tube(row, frames, self.seg_size)]
        return masks, [self._whole(tube.whole)] * len(frames)

    def _masks(self, row: IndexRow) -> dict:
        """A row's still masks as tensors, restricted to the dataset's categories."""
        import torch

        return {c: torch.from_numpy(m) for c, m in self.broden.load_masks(row, self.seg_size).items()
                if c in self.categories}

    def _whole(self, whole: dict[str, list[int]]) -> dict[str, list[int]]:
        """Whole-image labels restricted to the dataset's categories."""
        return {c: list(v) for c, v in whole.items() if c in self.categories}

    def __getitem__(self, i: int) -> dict:
        from mmit_interp.dataset import normalise

        pix, want = self._clip(i) if self.frames else (self.read_image(i)[None], None)
        x = normalise(pix, self.mean, self.std)  # (3, T, H, W)
        if not self.frames:
            x = x[:, 0]
        if not self.with_labels:
            return {"image": x, "index": i}
        row = self.row(i)
        item = {"image": x, "masks": self._masks(row), "whole": self._whole(row.whole), "index": i}
        if self.tubes:
            item["frame_masks"], item["frame_whole"] = self.frame_labels(i, want)
        return item

    def collate(self, items: list[dict]) -> dict:
        """Batch items into padded label tensors the dissection engine consumes.

        Returns ``image (N, ...)``, ``pixel (N, P, sh, sw) int32`` (all planes of all categories,
        zero-padded), ``plane_cat (N, P) long`` (category index, -1 = padding), ``whole (N, W) long``
        (0 = padding), ``whole_cat (N, W) long`` and ``index (N,) long``. Tube items (``frame_masks``)
        give per-frame labels: ``pixel (N, T, P, sh, sw)``, ``plane_cat (N, T, P)``, ``whole`` and
        ``whole_cat (N, T, W)``, frame t being the t-th frame of the item's clip. Items read with
        ``with_labels`` off give ``image`` and ``index`` only.
        """
        import torch

        n = len(items)
        index = torch.tensor([it["index"] for it in items], dtype=torch.long)
        if "masks" not in items[0]:  # with_labels off
            return {"image": torch.stack([it["image"] for it in items]), "index": index}
        if self.tubes:
            t = len(items[0]["frame_masks"])
            labels = self._pad([m for it in items for m in it["frame_masks"]],
                               [w for it in items for w in it["frame_whole"]])
            labels = {k: v.view(n, t, *v.shape[1:]) for k, v in labels.items()}
        else:
            labels = self._pad([it["masks"] for it in items], [it["whole"] for it in items])
        return {"image": torch.stack([it["image"] for it in items]), **labels, "index": index}

    def _pad(self, masks: list[dict], wholes: list[dict]) -> dict:
        """Label sets (masks ``{cat: (planes, sh, sw)}``, whole labels ``{cat: [numbers]}``) as padded
        ``pixel``, ``plane_cat``, ``whole``, ``whole_cat`` tensors, one row per set."""
        import torch

        sh, sw = self.seg_size
        cidx = {c: k for k, c in enumerate(self.categories)}
        planes = [[(m, cidx[c]) for c, ms in it.items() for m in ms] for it in masks]
        whole_l = [[(lab, cidx[c]) for c, labs in it.items() for lab in labs] for it in wholes]
        n, pmax, wmax = len(masks), max(1, max(map(len, planes))), max(1, max(map(len, whole_l)))
        pixel = torch.zeros((n, pmax, sh, sw), dtype=torch.int32)
        plane_cat = torch.full((n, pmax), -1, dtype=torch.long)
        whole = torch.zeros((n, wmax), dtype=torch.long)
        whole_cat = torch.full((n, wmax), -1, dtype=torch.long)
        for b in range(n):
            for k, (m, c) in enumerate(planes[b]):
                pixel[b, k] = m
                plane_cat[b, k] = c
            for k, (lab, c) in enumerate(whole_l[b]):
                whole[b, k] = lab
                whole_cat[b, k] = c
        return {"pixel": pixel, "plane_cat": plane_cat, "whole": whole, "whole_cat": whole_cat}
