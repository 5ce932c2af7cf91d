"""View data of the unit pages: a dissected layer's unit table, and one unit's labels, gallery and effects."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import HTTPException

from ..links import Links
from ..settings import ServedRun
from .commands import missing
from .readers import finite, images_in, open_store

UNIT_SORTS = ("iou", "label", "unit", "category")


def layer_units(run: ServedRun, links: Links, layer: str | None = None, concept_set: str | None = None,
                category: str | None = None, q: str | None = None, sort: str = "iou", include_all: bool = False) -> dict:
    """A layer's unit table (label, category, IoU) with header counts and filter choices; rows that do not
    match the filter are left out, or kept with `match: false` when `include_all` (pages filter in place).
    404 for a layer that was not dissected."""
    if sort not in UNIT_SORTS:
        sort = "iou"
    undissected = {"name": run.name, "layers": [], "layer": None, "units": [], "categories": [], "concept_sets": [],
                   "missing": [missing("network dissection of this run", "dissect", run.dir)]}
    with open_store(run.dir) as store:
        layers = store.layers() if store else []
        if not layers:
            return undissected
        layer = layer or layers[-1]["layer"]
        sets = [d["concept_set"] for d in layers if d["layer"] == layer]
        if not sets:
            raise HTTPException(404, f"layer {layer!r} of run {run.name!r} was not dissected")
        concept_set = concept_set if concept_set in sets else sets[0]
        every = store.units(layer, concept_set, order_by=sort)
    interp = [u for u in every if u["interpretable"]]
    needle = (q or "").lower()
    units = [{"unit": u["unit"], "label": u["label"], "category": u["category"], "iou": u["iou"],
              "interpretable": u["interpretable"], "href": links("unit_page", run=run.name, layer=layer, unit=u["unit"]),
              "match": (not category or u["category"] == category) and needle in (u["label"] or "").lower()}
             for u in every]
    return finite({
        "name": run.name, "layers": layers, "layer": layer, "concept_set": concept_set, "concept_sets": sets,
        "category": category or "", "q": q or "", "sort": sort, "sorts": UNIT_SORTS,
        "categories": sorted({u["category"] for u in every if u["category"]}),
        "n_units": len(every), "n_interpretable": len(interp), "n_concepts": len({u["label"] for u in interp}),
        "units": units if include_all else [u for u in units if u["match"]], "missing": [],
    })


def gallery_paths(run: Path, concept_set: str, layer: str, unit: int, extra: Any) -> list[str]:
    """A unit's top-image strips: dissection's `dissect/<set>/<layer>/gallery/unit_<u>.jpg`, and any image the record names."""
    own = run / "dissect" / concept_set / layer / "gallery" / f"unit_{unit:04d}.jpg"
    return [str(own)] + images_in(extra)


def analysis_block(run: Path, layer: str) -> str | None:
    """The analysis block whose output a dissected layer is (`trunk.resolve_block` on the run's model:
    `layer4` -> its last block), or None when the run has no loadable model or no such block."""
    from mmit_interp.checkpoint import CheckpointError
    from mmit_interp.checkpoint import cached_model
    from mmit_interp.analysis.trunk import resolve_block

    try:
        model, _ = cached_model(run)
        return resolve_block(model, layer)
    except (CheckpointError, KeyError, AttributeError):
        return None


def unit_detail(run: ServedRun, layer: str, unit: int, links: Links) -> dict:
    """One unit: label per concept set with runner-ups, gallery, classes it drives, selectivity, neighbours;
    404 when it is not in the store."""
    with open_store(run.dir) as store:
        sets = [d for d in store.layers() if d["layer"] == layer] if store else []
        per_set = [r for r in (store.unit(layer, unit, d["concept_set"]) for d in sets) if r]
        if not per_set:
            raise HTTPException(404, f"no dissected unit {unit} in layer {layer!r} of run {run.name!r}")
        n_units = max(d["n_units"] for d in sets)
        names = store.classes()
        block = analysis_block(run.dir, layer)
        rel = store.relations(block, "unit_to_class", unit, prob="logit") if block else {}
        sel = next(((p, v) for p in ("softmax", "sigmoid") if (v := store.selectivity(block, prob=p))), None) \
            if block else None
        ranked = store.units(layer, per_set[0]["concept_set"], order_by="iou")
    drives = [{"class_idx": c, "name": names[c] if c < len(names) else str(c), "score": s} for c, s in rel.get(unit, [])]
    selectivity = None
    if sel:
        prob, vals = sel
        known = [v for v in vals if v is not None]
        selectivity = {"value": vals[unit] if unit < len(vals) else None, "prob": prob,
                       "block_mean": sum(known) / len(known) if known else None}
    block_used = block if rel or sel else None
    order = [u["unit"] for u in ranked]
    pos = order.index(unit) if unit in order else None
    best = max(per_set, key=lambda r: r["iou"] if r["iou"] is not None else -1)
    gallery = [{"concept_set": r["concept_set"], "url": u} for r in per_set
               for u in links.files(run, gallery_paths(run.dir, r["concept_set"], layer, unit, r["extra"]))]
    return finite({
        "name": run.name, "layer": layer, "unit": unit, "n_units": n_units, "label": best["label"],
        "category": best["category"], "iou": best["iou"], "interpretable": best["interpretable"],
        "concept_sets": [{"concept_set": r["concept_set"], "label": r["label"], "category": r["category"],
                          "iou": r["iou"], "interpretable": r["interpretable"], "runner_ups": r["runner_ups"],
                          **_per_category(r["per_category"])} for r in per_set],
        "gallery": gallery,
        "extra": {r["concept_set"]: {k: v for k, v in r["extra"].items() if not images_in(v)} for r in per_set},
        "drives": drives, "selectivity": selectivity, "block": block_used,
        "neighbours": {"previous": unit - 1 if unit > 0 else None, "next": unit + 1 if unit + 1 < n_units else None,
                       "better_iou": order[pos - 1] if pos else None,
                       "worse_iou": order[pos + 1] if pos is not None and pos + 1 < len(order) else None},
        "permalink": links("unit_page", run=run.name, layer=layer, unit=unit),
        "missing": ([] if block_used else [missing("selectivity and unit-to-class relations of this block",
                                                   "relations", run.dir)])
                   + ([] if gallery else [missing("this unit's top-image gallery", "dissect", run.dir)]),
    })


def _per_category(bests: list[dict]) -> dict:
    """Dissection's best label per category (the record's `per_category`), best first, and the best one without `action`."""
    rows = sorted((d for d in bests if d["label"]), key=lambda d: (-(d["iou"] or 0.0), d["category"]))
    without = next((d for d in rows if d["category"] != "action"), None)
    return {"per_category": rows, "best_without_action": without}
