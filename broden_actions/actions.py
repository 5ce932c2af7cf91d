"""Action regions as a Broden category, and merging concept sets without copying images.

``build_action_regions`` turns ``boxes.csv`` (``image,action,x1,y1,x2,y2``, pixel coordinates in
the frame, several rows per image) and the frames into a Broden concept set with one category,
``action``: per image, one mask plane per action at the seg size (the union of that action's
boxes, cells by ``mmit_interp.boxes.box_mask``'s rule), label numbers appended after a base set's. The frames are referenced in place, by a
path relative to the new folder's ``images/``; only the small mask PNGs are written.

``build_action_tubes`` makes the same set from a synthetic world a *tube set*: beside each still
row, per frame of the item's ``<stem>.mp4`` snippet, one mask plane per action visible in that
frame (its box in ``truth.jsonl``), as filmstrip PNGs listed in ``tubes.csv`` (format:
``mmit_interp.broden_format``).

``merge_concept_sets`` writes a new concept-set folder holding the categories of several sets.
Its ``index.csv`` points at the original images and masks by relative path (``../../...``), and
its tables are combined from the sources' tables, so nothing is re-read, rewritten or copied.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from broden_actions.broden import Broden, load_broden
from mmit_interp.boxes import box_mask
from mmit_interp.broden_format import (INDEX_FIXED, TUBES_CSV, BrodenFormatError, encode_label_plane, filmstrips,
                                      write_broden_tables, write_tube_table)

BOX_COLUMNS = ["image", "action", "x1", "y1", "x2", "y2"]


def read_boxes(path: str | os.PathLike) -> list[dict]:
    """Parse ``boxes.csv`` into ``[{image, action, x1, y1, x2, y2, line}]`` with file:line errors."""
    path = Path(path)
    if not path.is_file():
        raise BrodenFormatError(path, None, "file not found")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [h.strip() for h in rows[0]][:6] != BOX_COLUMNS:
        raise BrodenFormatError(path, 1, f"header must be {','.join(BOX_COLUMNS)}")
    out = []
    for i, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != 6:
            raise BrodenFormatError(path, i, f"expected 6 cells ({','.join(BOX_COLUMNS)}), got {len(row)}")
        image, action = row[0].strip(), row[1].strip()
        if not image or not action:
            raise BrodenFormatError(path, i, "empty image or action")
        try:
            x1, y1, x2, y2 = (float(c) for c in row[2:])
        except ValueError:
            raise BrodenFormatError(path, i, f"box coordinates must be numbers, got {row[2:]}") from None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
            raise BrodenFormatError(path, i, f"box ({x1}, {y1}, {x2}, {y2}) needs x1 < x2 and y1 < y2")
        out.append({"image": image, "action": action, "x1": x1, "y1": y1, "x2": x2, "y2": y2, "line": i})
    return out


def build_action_regions(
    boxes_csv: str | os.PathLike,
    frames_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    base: str | os.PathLike | Broden | None = None,
    seg_size: tuple[int, int] | None = None,
    split: str = "train",
    category: str = "action",
) -> Path:
    """Write an ``action`` concept set from boxes + frames; label numbers follow ``base``'s labels.

    ``seg_size`` defaults to the base set's mask size (its first row), else 112 x 112. An action
    whose name is already a base label keeps that label's number (Broden: one name, one number).
    """
    boxes, sizes = _checked_boxes(boxes_csv, frames_dir)
    stills = _still_boxes(boxes)
    base_set = load_broden(base) if base is not None and not isinstance(base, Broden) else base
    seg = _seg_size(base_set, seg_size)
    numbers = _label_numbers([(category, a) for bs in stills.values() for a in bs], base_set)
    items = {image: (sizes[image], {category: _box_planes(bs, sizes[image], seg, numbers)}, [])
             for image, bs in stills.items()}
    return _write_concept_set(items, Path(frames_dir), Path(out), [category], numbers, seg, split)


def build_action_tubes(
    world: str | os.PathLike,
    out: str | os.PathLike,
    *,
    base: str | os.PathLike | Broden | None = None,
    seg_size: tuple[int, int] | None = None,
    split: str = "train",
    category: str = "action",
    render: bool = False,
) -> Path:
    """Write an ``action`` tube set from a synthetic world's action regions and ``truth.jsonl``.

    The still rows are ``build_action_regions``'s (boxes.csv, the snippet's centre frame); a still
    ``<clip>_f<f>.png`` with snippet ``<clip>_f<f>.mp4`` of n = min(snippet_frames, frames) frames
    (world.json) gets, for snippet frame j, the boxes truth.jsonl gives clip frame f - n//2 + j.
    ``render=True`` re-renders each item's clip (deterministic from the world's config) and takes
    every mask, still and per frame, pixel-exact from its owner maps instead: ``action`` (the
    pixels each actor shows), ``color`` (its plain pixels), ``object`` (its shape) and ``texture``
    (a patterned actor's pixels), numbered after ``base`` (the world's Broden set reuses its numbers).
    """
    world = Path(world)
    regions = world / "action_regions"
    frames_dir, boxes_csv = regions / "frames", regions / "boxes.csv"
    desc = world / "world.json"
    if not desc.is_file():
        raise BrodenFormatError(desc, None, "file not found (not a synthetic world folder made by mmit-synth)")
    config = json.loads(desc.read_text())["config"]
    n = min(int(config["snippet_frames"]), int(config["frames"]))
    from mmit_interp.synth.truth import load_truth

    truth = {Path(c.path).stem: c for c in load_truth(world)}
    boxes, sizes = _checked_boxes(boxes_csv, frames_dir)
    stills = _still_boxes(boxes)
    clips: dict[str, tuple] = {}  # image -> (its clip's truth, clip frame of snippet frame 0, centre frame)
    for image in stills:
        m = re.fullmatch(r"(.+)_f(\d+)\.png", Path(image).name)
        clip = truth.get(m.group(1)) if m else None
        if clip is None:
            raise BrodenFormatError(boxes_csv, None, f"image {image!r} names no clip of {world / 'truth.jsonl'} "
                                    "(expected <clip>_f<frame>.png)")
        if not (frames_dir / image).with_suffix(".mp4").is_file():
            raise BrodenFormatError(boxes_csv, None, f"image {image!r} has no snippet {Path(image).with_suffix('.mp4')}")
        first = int(m.group(2)) - n // 2
        if first < 0 or first + n > clip.frames:
            raise BrodenFormatError(boxes_csv, None, f"the {n}-frame snippet of {image!r} leaves clip {clip.path}")
        clips[image] = (clip, first, int(m.group(2)))
    base_set = load_broden(base) if base is not None and not isinstance(base, Broden) else base
    seg = _seg_size(base_set, seg_size)
    if render:
        return _rendered_tubes(world, config, clips, n, sizes, frames_dir, Path(out), base_set, seg, split, category)
    tubes = {image: [clip.boxes_at(first + j) for j in range(n)] for image, (clip, first, _) in clips.items()}
    numbers = _label_numbers([(category, a) for bs in stills.values() for a in bs]
                             + [(category, a) for t in tubes.values() for f in t for a in f], base_set)
    items = {image: (sizes[image], {category: _box_planes(bs, sizes[image], seg, numbers)},
                     [{category: _box_planes({a: [b] for a, b in f.items()}, sizes[image], seg, numbers)}
                      for f in tubes[image]])
             for image, bs in stills.items()}
    return _write_concept_set(items, frames_dir, Path(out), [category], numbers, seg, split)


RENDERED_CATEGORIES = ("action", "color", "object", "texture")


def _rendered_tubes(world: Path, config: dict, clips: dict[str, tuple], n: int, sizes: dict[str, tuple[int, int]],
                    frames_dir: Path, out: Path, base_set: Broden | None, seg: tuple[int, int], split: str,
                    category: str) -> Path:
    """``build_action_tubes(render=True)``: every mask from the re-rendered clips' owner maps (``clips``:
    image -> (truth, first snippet frame, centre frame); ``n`` snippet frames)."""
    import dataclasses

    from mmit_interp.synth.render import render_clip
    from mmit_interp.synth.world import SynthConfig, sample_clips

    known = {f.name for f in dataclasses.fields(SynthConfig)}
    if set(config) - known:
        raise BrodenFormatError(world / "world.json", None, f"config keys this version does not know: "
                                f"{sorted(set(config) - known)}")
    cfg = SynthConfig(**config)
    specs = {s.name: s for s in sample_clips(cfg)}
    cats = [category, *RENDERED_CATEGORIES[1:]]
    names = []
    for clip, _, _ in clips.values():
        for a in specs[Path(clip.path).stem].actors:
            if a.visible:
                names += [(category, a.action), ("color", a.colour), ("object", a.shape)]
                names += [("texture", a.texture)] if a.texture != "plain" else []
    numbers = _label_numbers(names, base_set)
    items = {}
    for image, (clip, first, centre) in clips.items():
        spec = specs[Path(clip.path).stem]
        rendered = render_clip(spec, cfg)
        visible = [a for a in spec.actors if a.visible]
        if rendered.boxes != [a.boxes for a in clip.actors if a.visible]:
            raise BrodenFormatError(world / "truth.jsonl", None, f"re-rendering {clip.path} does not reproduce its "
                                    "truth boxes (a world from another version of the renderer?)")

        def planes(f: int) -> dict[str, list[np.ndarray]]:
            p = _owner_planes(rendered.owner[f], rendered.pattern[f], visible, numbers, category, seg)
            return {c: [q] for c, q in p.items() if q.any()}

        items[image] = (sizes[image], planes(centre), [planes(first + j) for j in range(n)])
    return _write_concept_set(items, frames_dir, out, cats, numbers, seg, split)


def _owner_planes(owner: np.ndarray, pattern: np.ndarray, actors: list, numbers: dict[str, tuple], category: str,
                  seg: tuple[int, int]) -> dict[str, np.ndarray]:
    """One frame's label planes at ``seg`` (nearest neighbour, as the world's concept stills): the action,
    colour (plain pixels), shape and texture of the visible actor each pixel shows."""
    import cv2

    out = {c: np.zeros(owner.shape, np.int32) for c in (category, "color", "object", "texture")}
    for i, a in enumerate(actors):
        mine = owner == i
        out[category][mine] = numbers[a.action][0]
        out["object"][mine] = numbers[a.shape][0]
        if a.texture == "plain":  # texture marks under a plain actor are an earlier actor's
            out["color"][mine] = numbers[a.colour][0]
        else:
            out["color"][mine & ~pattern] = numbers[a.colour][0]
            out["texture"][mine] = numbers[a.texture][0]
    return {c: cv2.resize(p, seg[::-1], interpolation=cv2.INTER_NEAREST) for c, p in out.items()}


def _checked_boxes(boxes_csv: str | os.PathLike, frames_dir: str | os.PathLike
                   ) -> tuple[list[dict], dict[str, tuple[int, int]]]:
    """``read_boxes`` with every image found under ``frames_dir`` and every box inside it; the images' (h, w)."""
    boxes = read_boxes(boxes_csv)
    sizes: dict[str, tuple[int, int]] = {}
    for b in boxes:
        if b["image"] not in sizes:
            fp = Path(frames_dir) / b["image"]
            if not fp.is_file():
                raise BrodenFormatError(boxes_csv, b["line"], f"unknown image {b['image']!r}: {fp} not found")
            w, h = Image.open(fp).size
            sizes[b["image"]] = (h, w)
        h, w = sizes[b["image"]]
        if b["x1"] < 0 or b["y1"] < 0 or b["x2"] > w or b["y2"] > h:
            raise BrodenFormatError(
                boxes_csv, b["line"], f"box ({b['x1']}, {b['y1']}, {b['x2']}, {b['y2']}) lies outside the {w}x{h} image {b['image']!r}"
            )
    return boxes, sizes


def _still_boxes(boxes: list[dict]) -> dict[str, dict[str, list[tuple]]]:
    """Boxes per image and action, images and actions in first-seen order."""
    out: dict[str, dict[str, list[tuple]]] = {}
    for b in boxes:
        out.setdefault(b["image"], {}).setdefault(b["action"], []).append((b["x1"], b["y1"], b["x2"], b["y2"]))
    return out


def _seg_size(base_set: Broden | None, seg_size: tuple[int, int] | None) -> tuple[int, int]:
    """The mask size: ``seg_size``, else the base set's (its first row), else 112 x 112."""
    if seg_size is not None:
        return tuple(seg_size)
    return (base_set.rows[0].sh, base_set.rows[0].sw) if base_set is not None and base_set.rows else (112, 112)


def _label_numbers(names: list[tuple[str, str]], base_set: Broden | None) -> dict[str, tuple[int, list[str]]]:
    """Global number and categories of each name of (category, name) pairs, numbered in first-seen
    order after ``base_set``'s labels; a name already in the base keeps its number (Broden: one
    name, one number)."""
    known = {lab.name: num for num, lab in base_set.labels.items()} if base_set is not None else {}
    nxt = (base_set.num_labels if base_set is not None else 0) + 1
    out: dict[str, tuple[int, list[str]]] = {}
    for cat, name in names:
        if name not in out:
            out[name] = (known.get(name, nxt), [])
            nxt += name not in known
        if cat not in out[name][1]:
            out[name][1].append(cat)
    return out


def _box_planes(boxes: dict[str, list[tuple]], hw: tuple[int, int], seg: tuple[int, int],
                numbers: dict[str, tuple]) -> list[np.ndarray]:
    """One plane per action: the union of its boxes (``box_mask``'s cells) holding its label number."""
    return [box_mask(bs, hw, seg).astype(np.int32) * numbers[a][0] for a, bs in boxes.items()]


def _areas(planes: dict[str, list[np.ndarray]], seg: tuple[int, int]) -> dict[str, dict[int, float]]:
    """Each label's share of the frame per category (summed over planes)."""
    out: dict[str, dict[int, float]] = {}
    for cat, ps in planes.items():
        for p in ps:
            for lab in (int(v) for v in np.unique(p) if v):
                out.setdefault(cat, {})[lab] = out.get(cat, {}).get(lab, 0.0) + float((p == lab).sum()) / (seg[0] * seg[1])
    return out


def _write_concept_set(items: dict[str, tuple], frames_dir: Path, out: Path, categories: list[str],
                       numbers: dict[str, tuple[int, list[str]]], seg: tuple[int, int], split: str) -> Path:
    """Write the planes of ``items`` (image -> (hw, still {cat: [planes]}, per snippet frame {cat: [planes]}))
    as ``<stem>[_tube]_<cat>_<label>.png`` (``_p<k>`` for a plane of several labels; ``_tube``: filmstrips
    of the frames) and the tables (``tubes.csv`` when frames are given; the statistics count stills
    and frames alike)."""
    sh, sw = seg
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, tube_rows, frame_areas = [], [], []

    def write(stem: str, planes: dict[str, list[np.ndarray]]) -> dict[str, list[str]]:
        cells: dict[str, list[str]] = {}
        for cat, ps in planes.items():
            for k, p in enumerate(ps):
                labs = [int(v) for v in np.unique(p) if v]
                rel = f"{stem}_{cat}_{labs[0]}.png" if len(labs) == 1 else f"{stem}_{cat}_p{k + 1}.png"
                (out / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(encode_label_plane(p)).save(out / "images" / rel)
                cells.setdefault(cat, []).append(rel)
        return cells

    for image, (hw, still, tube) in items.items():
        stem = Path(image).with_suffix("").as_posix()
        frame_rel = Path(os.path.relpath((frames_dir / image).resolve(), (out / "images").resolve())).as_posix()
        rows.append({"image": frame_rel, "split": split, "ih": hw[0], "iw": hw[1], "sh": sh, "sw": sw,
                     "cells": write(stem, still), "areas": _areas(still, seg)})
        if tube:
            frame_areas += [_areas(planes, seg) for planes in tube]
            tube_rows.append({"image": frame_rel, "frames": len(tube),
                              "cells": write(f"{stem}_tube", filmstrips(tube))})
    labels = [(num, name, cats) for name, (num, cats) in sorted(numbers.items(), key=lambda kv: kv[1][0])]
    write_broden_tables(out, categories, labels, rows, frame_areas)
    if tube_rows:
        write_tube_table(out, categories, tube_rows)
    else:
        (out / TUBES_CSV).unlink(missing_ok=True)  # a stale table from an earlier build into this folder
    return out


def merge_concept_sets(sources: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write a concept set holding every category of ``sources`` (e.g. Broden + actions) by reference.

    Images and masks stay where they are (index paths are rewritten relative to ``out/images``);
    a row for the same image file in two sources becomes one row. Tubes (``tubes.csv``) come along
    the same way, so Broden + action tubes is a tube set whose Broden items are stills. A label number used by two
    sources must carry the same name there. ``frequency`` and ``coverage`` are summed from the
    sources' tables (exact when the sources' images are distinct, as for Broden + action frames).
    """
    out = Path(out)
    sets = [load_broden(s) for s in sources]
    categories: list[str] = []
    for s in sets:
        categories += [c for c in s.categories if c not in categories]
    for s, src in zip(sets, sources):
        if Path(src).resolve() == out.resolve():
            raise ValueError(f"merge output {out} must differ from its source {src}")
    labels: dict[int, dict] = {}
    for s in sets:
        for num, lab in s.labels.items():
            cur = labels.setdefault(num, {"name": lab.name, "cats": {}, "frequency": 0, "coverage": 0.0})
            if cur["name"] != lab.name:
                raise BrodenFormatError(
                    s.root / "label.csv", None,
                    f"label number {num} is {lab.name!r} here but {cur['name']!r} in another source; build the "
                    "action set with base=<the other set> so its numbers are appended",
                )
            for c, k in lab.categories.items():
                cur["cats"][c] = cur["cats"].get(c, 0) + k
            cur["frequency"] += lab.frequency
            cur["coverage"] += lab.coverage
    (out / "images").mkdir(parents=True, exist_ok=True)
    img_root = (out / "images").resolve()
    merged: dict[str, dict] = {}
    tubes: dict[str, dict] = {}
    for s in sets:
        src_images = (s.root / "images").resolve()
        for r in s.rows:
            key = os.path.normpath(str(src_images / r.image))
            row = merged.setdefault(key, {"image": Path(os.path.relpath(key, img_root)).as_posix(), "split": r.split,
                                          "ih": r.ih, "iw": r.iw, "sh": r.sh, "sw": r.sw, "cells": {}})
            for c, paths in r.pixel.items():
                row["cells"].setdefault(c, []).extend(
                    Path(os.path.relpath(src_images / p, img_root)).as_posix() for p in paths
                )
            for c, nums in r.whole.items():
                row["cells"].setdefault(c, []).extend(str(n) for n in nums)
            tube = s.tubes.get(r.image)
            if tube is not None:
                t = tubes.setdefault(key, {"image": row["image"], "frames": tube.frames, "cells": {}})
                if t["frames"] != tube.frames:
                    raise BrodenFormatError(s.root / "tubes.csv", tube.line, f"tube {r.image!r} has {tube.frames} "
                                            f"frames here but {t['frames']} in another source")
                for c, paths in tube.pixel.items():
                    t["cells"].setdefault(c, []).extend(Path(os.path.relpath(src_images / p, img_root)).as_posix()
                                                        for p in paths)
                for c, nums in tube.whole.items():
                    t["cells"].setdefault(c, []).extend(str(n) for n in nums)
    with open(out / "index.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(INDEX_FIXED + categories)
        for row in merged.values():
            w.writerow([row[k] for k in INDEX_FIXED] + [";".join(row["cells"].get(c, [])) for c in categories])
    if tubes:
        write_tube_table(out, categories, list(tubes.values()))
    else:
        (out / TUBES_CSV).unlink(missing_ok=True)  # a stale table from an earlier merge into this folder
    with open(out / "label.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for num in sorted(labels):
            lab = labels[num]
            cats = ";".join(f"{c}({k})" for c, k in lab["cats"].items())
            w.writerow([num, lab["name"], cats, lab["frequency"], f"{lab['coverage']:.6f}", ""])
    with open(out / "category.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "first", "last", "count", "frequency"])
        for c in categories:
            nums = sorted({cl.number for s in sets if c in s.categories for cl in s.category_labels[c]})
            freq = sum(1 for row in merged.values() if row["cells"].get(c))
            w.writerow([c, nums[0] if nums else 0, nums[-1] if nums else 0, len(nums), freq])
    for c in categories:
        stats: dict[int, list] = {}
        for s in sets:
            if c in s.categories:
                for cl in s.category_labels[c]:
                    st = stats.setdefault(cl.number, [cl.name, 0, 0.0])
                    st[1] += cl.frequency
                    st[2] += cl.coverage
        with open(out / f"c_{c}.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["code", "number", "name", "frequency", "coverage"])
            for code, num in enumerate(sorted(stats), start=1):
                name, fr, cov = stats[num]
                w.writerow([code, num, name, fr, f"{cov:.6f}"])
    return out
