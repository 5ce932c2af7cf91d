"""Dissection outputs: unit tables, NetDissect-Lite ``tally.csv``, galleries, counts, Table 3, Fig. 11.

Everything is plain data first (lists of dicts, JSON-able), then files: CSV/JSON, JPEG tiles,
matplotlib figures (PNG + SVG). ``label_units`` gives the unit records (``UnitLabel``) that the
files here and the results store both take.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dissect.compose import FormulaLabel
from dissect.engine import InputTransform, LayerResult
from mmit_interp.unit_labels import UnitLabel

UNIT_COLUMNS = ["layer", "unit", "category", "label", "label_number", "iou", "interpretable", "threshold", "runner_ups"]


def label_units(results: Mapping[str, Mapping[str, LayerResult]], denominator: str = "lite",
                iou_threshold: float = 0.04) -> dict[str, dict[str, list[UnitLabel]]]:
    """``{concept set: {layer: [UnitLabel]}}``: every layer's unit records, decided once and shared by the
    files (``write_outputs``) and the results store (``ResultsStore.write_units``)."""
    return {cs: {layer: res.unit_labels(denominator, iou_threshold) for layer, res in layers.items()}
            for cs, layers in results.items()}


def write_unit_table(layer: str, labels: Sequence[UnitLabel], path: str | os.PathLike) -> Path:
    """Write the unit table CSV: fixed columns, then ``<category>_label`` / ``<category>_iou`` pairs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cats = [b.category for b in labels[0].bests] if labels else []
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(UNIT_COLUMNS + [f"{c}_{k}" for c in cats for k in ("label", "iou")])
        for r in labels:
            ru = "; ".join(f"{x.label} ({x.category}) {x.iou:.4f}" for x in r.runner_ups)
            w.writerow([layer, r.unit, r.category, r.label, r.label_number, r.iou, r.interpretable, r.threshold, ru]
                       + [v for b in r.bests for v in (b.label, b.iou)])
    return path


def write_tally_csv(result: LayerResult, labels: Sequence[UnitLabel], path: str | os.PathLike,
                    denominator: str = "lite") -> Path:
    """Write NetDissect-Lite's ``tally.csv`` as its ``tally()`` does: unit (1-based), category, label,
    score, then per category ``<cat>-label, <cat>-truth, <cat>-activation, <cat>-intersect, <cat>-iou``
    (counts as floats); best score first, ties: higher unit first. ``labels`` are ``result``'s unit
    records under the same ``denominator``.

    Lite's choices are kept: a category where every IoU of the unit is 0 names label 0 (its
    ``argmax`` of zeros), whose activation is that of the last category (label 0's primary category
    in Lite); the unit's category is the last one with the top score."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    act = {"lite": result.tally.act_lite, "original": result.tally.act_orig}[denominator]
    cat_of = result.primary.clone()
    cat_of[0] = len(result.categories) - 1
    fields = ["unit", "category", "label", "score"]
    for cat in result.categories:
        fields += [f"{cat}-label", f"{cat}-truth", f"{cat}-activation", f"{cat}-intersect", f"{cat}-iou"]
    rows = []
    for rec in labels:
        u = rec.unit
        best = [(b.number, b.iou) if b.iou > 0 else (0, 0.0) for b in rec.bests]
        top_score = max(sc for _, sc in best)
        top = max(ci for ci, (_, sc) in enumerate(best) if sc == top_score)  # ties: the last category
        row: dict = {"unit": u + 1, "category": result.categories[top],
                     "label": result.label_names[best[top][0]], "score": top_score}
        for cat, (j, score) in zip(result.categories, best):
            row.update({
                f"{cat}-label": result.label_names[j],
                f"{cat}-truth": float(result.tally.label_area[j]),
                f"{cat}-activation": float(act[u, cat_of[j]]),
                f"{cat}-intersect": float(result.tally.inter[u, j]),
                f"{cat}-iou": score,
            })
        rows.append(row)
    rows.sort(key=lambda r: (-r["score"], -r["unit"]))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def category_counts(labels: Sequence[UnitLabel], categories: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    """Per category: interpretable units and unique concepts among them (plus a ``total`` entry)."""
    cats = list(categories) if categories else sorted({r.category for r in labels})
    out = {c: {"units": 0, "concepts": 0} for c in cats}
    concepts: dict[str, set] = {c: set() for c in cats}
    for r in labels:
        if r.interpretable:
            out.setdefault(r.category, {"units": 0, "concepts": 0})["units"] += 1
            concepts.setdefault(r.category, set()).add(r.label)
    for c, s in concepts.items():
        out[c]["concepts"] = len(s)
    out["total"] = {"units": sum(v["units"] for v in out.values()), "concepts": sum(len(s) for s in concepts.values())}
    return out


def table3(counts: Mapping[str, Mapping[str, Mapping[str, int]]]) -> list[dict]:
    """Table 3 rows from ``{concept set: category_counts(...)}``: concepts found, interpretable units."""
    return [{"concept_set": name, "concepts": c["total"]["concepts"], "interpretable_units": c["total"]["units"]}
            for name, c in counts.items()]


def blockwise(counts: Mapping[str, Mapping[str, Mapping[str, int]]], categories: Sequence[str]) -> list[dict]:
    """Fig. 11 data from ``{layer: category_counts(...)}``: interpretable units per category per layer."""
    return [{"layer": layer, **{c: cc.get(c, {}).get("units", 0) for c in categories}} for layer, cc in counts.items()]


def write_rows(rows: Sequence[Mapping], stem: str | os.PathLike) -> None:
    """Write rows as ``<stem>.csv`` and ``<stem>.json``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(list(rows), indent=2))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]) if rows else [], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def formula_summary(formulas: Sequence[FormulaLabel]) -> dict:
    """A layer's compositional labels in numbers: units, units whose best formula joins two or more
    labels, mean formula IoU, mean single-label IoU (the same plain IoU) and mean gain."""
    n = max(len(formulas), 1)
    return {"units": len(formulas), "compositional": sum(f.length > 1 for f in formulas),
            "mean_iou": sum(f.iou for f in formulas) / n, "mean_label_iou": sum(f.label_iou for f in formulas) / n,
            "mean_gain": sum(f.gain for f in formulas) / n}


def write_formulas(layer: str, formulas: Sequence[FormulaLabel], labels: Sequence[UnitLabel],
                   stem: str | os.PathLike) -> dict:
    """Write ``<stem>.{csv,json}``: per unit its best formula and plain IoU beside the best single label
    under the same IoU, the gain, and dissection's own label and IoU (``labels``, its denominator) for
    reference; returns ``formula_summary``."""
    write_rows([{"layer": layer, "unit": f.unit, "formula": f.formula, "length": f.length, "iou": f.iou,
                 "label": f.label, "label_iou": f.label_iou, "gain": f.gain, "dissection_label": lab.label,
                 "dissection_iou": lab.iou} for f, lab in zip(formulas, labels)], stem)
    return formula_summary(formulas)


def plot_table3(rows: Sequence[Mapping], stem: str | os.PathLike) -> None:
    """Grouped bars of concepts found and interpretable units per concept set (PNG + SVG)."""
    from mmit_interp.analysis.figures import plt, save_figure

    names = [r["concept_set"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(3.4 + 1.2 * len(rows), 3.2))
    ax.bar(x - 0.2, [r["concepts"] for r in rows], 0.4, label="concepts found")
    ax.bar(x + 0.2, [r["interpretable_units"] for r in rows], 0.4, label="interpretable units")
    ax.set_xticks(x, names, rotation=15)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Concept sets compared (Table 3)", fontsize=10)
    save_figure(fig, stem, dpi=150)


def plot_blockwise(rows: Sequence[Mapping], categories: Sequence[str], stem: str | os.PathLike) -> None:
    """Stacked bars of interpretable units per category for each layer/block (Fig. 11; PNG + SVG)."""
    from mmit_interp.analysis.figures import plt, save_figure

    layers = [r["layer"] for r in rows]
    fig, ax = plt.subplots(figsize=(2.8 + 0.9 * len(rows), 3.4))
    bottom = np.zeros(len(rows))
    for c in categories:
        v = np.array([r.get(c, 0) for r in rows], dtype=float)
        ax.bar(layers, v, bottom=bottom, label=c)
        bottom += v
    ax.set_ylabel("interpretable units")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Interpretable units per category, by block", fontsize=10)
    save_figure(fig, stem, dpi=150)


def write_gallery(
    model: nn.Module,
    result: LayerResult,
    dataset,
    out_dir: str | os.PathLike,
    *,
    units: Sequence[int] | None = None,
    k: int = 8,
    time: str = "mean",
    input_adapter: Callable[[torch.Tensor], tuple] | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> list[Path]:
    """Write ``unit_<u>.jpg`` strips: each unit's top-k images (by per-image max activation), the
    region where the upsampled map exceeds T_u kept bright and outlined, the rest dimmed."""
    from PIL import Image

    from dissect.gallery import bilinear, item_maps

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    units = list(range(result.units)) if units is None else list(units)
    tops = {u: [int(i) for i in result.top_images.images[u, :k]] for u in units}
    needed = sorted({i for v in tops.values() for i in v})
    # every unit's maps of each needed image; frames: the max over the layer's time steps
    found = item_maps(model, dataset, result.layer, {i: units for i in needed}, time=time,
                      input_adapter=input_adapter, batch_size=batch_size, device=device)
    maps = {i: m.amax(1) for i, m in found.items()}
    paths = []
    size = tuple(max(112, s) for s in dataset.size)  # tiles at least 112 px, the region drawn at tile size
    for pos, u in enumerate(units):
        tiles = []
        for i in tops[u]:
            img = np.asarray(Image.fromarray(dataset.read_image(i)).resize(size[::-1], Image.BILINEAR), dtype=np.float32)
            up = bilinear(maps[i][pos][None].double(), size)[0]  # the engine's arithmetic: flat maps at T_u stay off
            m = (up > result.thresholds[u]).numpy()
            edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
            tile = np.where(m[..., None], img, img * 0.3)
            tile[edge] = (255, 220, 0)
            tiles.append(tile.astype(np.uint8))
        if tiles:
            gap = np.full((size[0], 3, 3), 255, np.uint8)
            strip = np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], axis=1)
            p = out_dir / f"unit_{u:04d}.jpg"
            Image.fromarray(strip).save(p, quality=90)
            paths.append(p)
    return paths


def write_clip_source(model: nn.Module, result: LayerResult, out_dir: str | os.PathLike, *, k: int = 8,
                      labels: Sequence[UnitLabel] = (), render: bool = False,
                      device: torch.device | str = "cpu") -> Path:
    """Write a video layer's clip-gallery source ``<out_dir>/clips.json`` (what the dashboard renders a unit's
    clips from, on demand; ``labels``: the units' records, whose concept a tube item outlines) and, with
    ``render``, every unit's clip strip now (``dissect.gallery``)."""
    from dissect.gallery import SOURCE_NAME, ClipSource, render_clip_gallery

    source = ClipSource.from_result(result, k, [r.label_number for r in labels])
    path = source.write(Path(out_dir) / SOURCE_NAME)
    if render:
        render_clip_gallery(model, source, source.dataset(), out_dir, device=device)
    return path


def write_outputs(
    results: Mapping[str, Mapping[str, LayerResult]],
    labels: Mapping[str, Mapping[str, Sequence[UnitLabel]]],
    out: str | os.PathLike,
    *,
    denominator: str = "lite",
    iou_threshold: float = 0.04,
    gallery: Mapping | None = None,
) -> dict:
    """Write every per-layer file and the cross-set / cross-layer summaries; return the counts.

    ``labels`` is ``label_units(results, denominator, iou_threshold)`` (the same settings).

    Layout: ``<out>/<concept set>/<layer>/{units.csv, tally.csv, counts.json, gallery/}``,
    ``<out>/table3.{csv,json,png,svg}`` (two or more concept sets; one row per set and layer) and
    ``<out>/<concept set>/blockwise.{csv,json,png,svg}``, where a concept set is named by its key's
    last path component. ``gallery`` holds ``model``, ``k``, ``time`` and the ``transform``
    (``InputTransform``) the results were computed with, and ``clips`` (render every unit's clip strip
    now; a video layer's ``gallery/clips.json`` is written either way).
    """
    out = Path(out)
    summary: dict = {}
    for cs, layers in results.items():
        name = Path(cs).name
        summary[name] = {}
        cats: list[str] = []
        for layer, res in layers.items():
            d = out / name / layer
            recs = labels[cs][layer]
            write_unit_table(layer, recs, d / "units.csv")
            write_tally_csv(res, recs, d / "tally.csv", denominator)
            counts = category_counts(recs, res.categories)
            (d / "counts.json").write_text(json.dumps(counts, indent=2))
            summary[name][layer] = counts
            cats = res.categories
            if gallery is not None:
                ds = gallery.get("transform", InputTransform()).dataset(res.settings.get("concept_set", cs))
                dev = next(gallery["model"].parameters()).device
                write_gallery(gallery["model"], res, ds, d / "gallery", k=gallery.get("k", 8),
                              time=gallery.get("time", "mean"), device=dev)
                if ds.frames and "concept_set" in res.settings:
                    write_clip_source(gallery["model"], res, d / "gallery", k=gallery.get("k", 8), labels=recs,
                                      render=gallery.get("clips", False), device=dev)
        rows = blockwise(summary[name], cats)
        write_rows(rows, out / name / "blockwise")
        plot_blockwise(rows, cats, out / name / "blockwise")
    if len(summary) >= 2:
        rows = [{"layer": layer, **r} for layer in next(iter(results.values()))
                for r in table3({cs: summary[cs][layer] for cs in summary if layer in summary[cs]})]
        write_rows(rows, out / "table3")
        last = rows[-1]["layer"]
        plot_table3([r for r in rows if r["layer"] == last], out / "table3")
    write_summary(out / "summary.json", summary, denominator, iou_threshold)
    return summary


def write_summary(path: Path, counts: Mapping[str, dict], denominator: str, iou_threshold: float) -> None:
    """Write ``summary.json``, keeping the counts of concept sets dissected into the same folder before
    under the same settings (a later run on other sets, e.g. the tubes beside the stills, adds to it)."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    same = old.get("denominator") == denominator and old.get("iou_threshold") == iou_threshold
    merged = {**(old.get("counts", {}) if same else {}), **counts}
    path.write_text(json.dumps({"denominator": denominator, "iou_threshold": iou_threshold, "counts": merged},
                               indent=2))
