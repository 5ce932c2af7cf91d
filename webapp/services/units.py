"""View data of the unit pages: a dissected layer's unit table, and one unit's labels, formula, motion score,
galleries (JPEG strips and looping clips, rendered on demand) and effects."""
from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from mmit_interp.store import ResultsStore

from ..links import Links
from ..settings import ServedRun
from .commands import missing
from .readers import finite, images_in, open_store, run_model

UNIT_SORTS = ("iou", "label", "unit", "category", "motion", "formula")
STORE_SORTS = ("iou", "label", "unit", "category")
CLIP_SOURCE = "clips.json"  # dissect.gallery.SOURCE_NAME, named here so the pages need no torch import
MOTION_HELP = ("motion score m in [0, 1]: how much of the unit's response change comes from changing the motion "
               "(frames frozen or shuffled) rather than the appearance (colours and textures swapped, same motion); "
               "above 0.5 the unit follows motion, below it appearance")
_RENDER = threading.Lock()  # one clip render at a time, each on the gallery's own copy of the model
_MODELS: dict[Path, tuple[Any, Any, dict]] = {}


def layer_units(run: ServedRun, links: Links, layer: str | None = None, concept_set: str | None = None,
                category: str | None = None, q: str | None = None, sort: str = "iou", include_all: bool = False,
                motion_min: float | None = None, has_formula: bool = False) -> dict:
    """A layer's unit table (label, category, IoU, formula, motion score) with header counts and filter choices;
    rows that do not match the filter (category, concept, motion score >= `motion_min`, `has_formula`) are left
    out, or kept with `match: false` when `include_all` (pages filter in place). 404 for a layer that was not
    dissected."""
    if sort not in UNIT_SORTS:
        sort = "iou"
    undissected = {"name": run.name, "layers": [], "layer": None, "units": [], "categories": [], "concept_sets": [],
                   "missing": [missing("network dissection of this run", "dissect", run.dir)]}
    with open_store(run.dir) as store:
        layers = store.layers() if store else []
        if not layers:
            return undissected
        rank = {name: i for i, name in enumerate(trunk_order([d["layer"] for d in layers], run_model(run.dir)))}
        layers.sort(key=lambda d: (rank[d["layer"]], d["concept_set"]))
        layer = layer or layers[-1]["layer"]
        here = [d for d in layers if d["layer"] == layer]
        if not here:
            raise HTTPException(404, f"layer {layer!r} of run {run.name!r} was not dissected")
        sets = [d["concept_set"] for d in here]
        if concept_set not in sets:  # the concept set that explains most of the layer's units
            concept_set = max(here, key=lambda d: d["n_interpretable"] or 0)["concept_set"]
        every = store.units(layer, concept_set, order_by=sort if sort in STORE_SORTS else "iou")
        motion = store.unit_motion(layer)
        formulas = unit_formulas(store, layer, concept_set)
    interp = [u for u in every if u["interpretable"]]
    needle = (q or "").lower()
    units = [{"unit": u["unit"], "label": u["label"], "category": u["category"], "iou": u["iou"],
              "interpretable": u["interpretable"], "href": links("unit_page", run=run.name, layer=layer, unit=u["unit"]),
              "motion": motion.get(u["unit"]), "formula": formulas.get(u["unit"]),
              "match": (not category or u["category"] == category) and needle in (u["label"] or "").lower()
              and (motion_min is None or (motion.get(u["unit"]) is not None and motion[u["unit"]] >= motion_min))
              and (not has_formula or u["unit"] in formulas)}
             for u in every]
    if sort == "motion":  # the store orders by its own columns; these two come from other tables (none last)
        units.sort(key=lambda u: (u["motion"] is None, -(u["motion"] or 0.0)))
    elif sort == "formula":
        units.sort(key=lambda u: (u["formula"] is None, -((u["formula"] or {}).get("gain") or 0.0)))
    return finite({
        "name": run.name, "layers": layers, "layer": layer, "concept_set": concept_set, "concept_sets": sets,
        "category": category or "", "q": q or "", "sort": sort, "sorts": UNIT_SORTS,
        "categories": sorted({u["category"] for u in every if u["category"]}),
        "n_units": len(every), "n_interpretable": len(interp), "n_concepts": len({u["label"] for u in interp}),
        "motion_min": motion_min, "has_formula": has_formula, "has_motion": bool(motion), "has_formulas": bool(formulas),
        "motion_help": MOTION_HELP,
        "units": units if include_all else [u for u in units if u["match"]],
        "missing": ([] if motion else [missing(f"motion scores of {layer}'s units", "motion", run.dir)])
                   + ([] if formulas else [missing(f"compositional formulas of {layer}'s units", "formulas", run.dir,
                                                   layer=layer)]),
    })


def unit_formulas(store: ResultsStore, layer: str, concept_set: str) -> dict[int, dict]:
    """`{unit: {formula, length, iou, label, label_iou, gain, terms}}`: each unit's best compositional formula on
    a concept set (`dissect.compose`, stored by `mmit-dissect --formulas --store`); `{}` when not searched."""
    return {r["unit"]: r for r in store.unit_formulas(layer, concept_set)}


def gallery_paths(run: Path, concept_set: str, layer: str, unit: int, extra: Any) -> list[str]:
    """A unit's top-image strips: dissection's `dissect/<set>/<layer>/gallery/unit_<u>.jpg`, and any image the record names."""
    own = run / "dissect" / concept_set / layer / "gallery" / f"unit_{unit:04d}.jpg"
    return [str(own)] + images_in(extra)


def trunk_order(layers: list[str], model: Any) -> list[str]:
    """Dissected layer names (blocks, or stages standing for their last block: `trunk.resolve_block`) in the
    model's execution order, so a layer list reads stem to head (`attend` after `layer4`); names of no block
    follow, alphabetically, as does everything when there is no loadable model (None)."""
    from mmit_interp.analysis.trunk import find_block

    if model is None:
        return sorted(set(layers))
    blocks = [n for n, _ in model.trunk().blocks()]

    def position(name: str) -> int:
        block = find_block(model, name)
        return len(blocks) if block is None else blocks.index(block)

    return sorted(set(layers), key=lambda name: (position(name), name))


def analysis_block(run: Path, layer: str) -> str | None:
    """The analysis block whose output a dissected layer is (`trunk.resolve_block` on the run's model:
    `layer4` -> its last block), or None when the run has no loadable model or no such block."""
    from mmit_interp.analysis.trunk import find_block

    model = run_model(run)
    return None if model is None else find_block(model, layer)


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
        scores = store.unit_motion(layer)
        formulas = [{"concept_set": r["concept_set"], **f} for r in per_set
                    if (f := unit_formulas(store, layer, r["concept_set"]).get(unit))]
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
    clips = [{"concept_set": r["concept_set"],
              "url": links("unit_clips", run=run.name, layer=layer, unit=unit, concept_set=r["concept_set"])}
             for r in per_set if clip_source_path(run.dir, r["concept_set"], layer).is_file()]
    return finite({
        "name": run.name, "layer": layer, "unit": unit, "n_units": n_units, "label": best["label"],
        "category": best["category"], "iou": best["iou"], "interpretable": best["interpretable"],
        "concept_sets": [{"concept_set": r["concept_set"], "label": r["label"], "category": r["category"],
                          "iou": r["iou"], "interpretable": r["interpretable"], "runner_ups": r["runner_ups"],
                          **_per_category(r["per_category"])} for r in per_set],
        "gallery": gallery, "clips": clips, "formulas": formulas,
        "motion": _motion_badge(scores[unit]) if unit in scores else None,
        "extra": {r["concept_set"]: {k: v for k, v in r["extra"].items() if not images_in(v)} for r in per_set},
        "drives": drives, "selectivity": selectivity, "block": block_used,
        "neighbours": {"previous": unit - 1 if unit > 0 else None, "next": unit + 1 if unit + 1 < n_units else None,
                       "better_iou": order[pos - 1] if pos else None,
                       "worse_iou": order[pos + 1] if pos is not None and pos + 1 < len(order) else None},
        "permalink": links("unit_page", run=run.name, layer=layer, unit=unit),
        "missing": ([] if block_used else [missing("selectivity and unit-to-class relations of this block",
                                                   "relations", run.dir)])
                   + ([] if gallery else [missing("this unit's top-image gallery", "dissect", run.dir)])
                   + ([] if clips else [missing("this unit's clip gallery (video models; dissection writes what it is "
                                                "rendered from)", "dissect", run.dir)])
                   + ([] if formulas else [missing("this unit's compositional formula", "formulas", run.dir,
                                                   layer=layer)])
                   + ([] if unit in scores else [missing("this unit's motion score", "motion", run.dir)]),
    })


def _motion_badge(score: float | None) -> dict:
    """The unit page's motion badge: the side the score falls on, the score, and what it measures."""
    if score is None:
        return {"score": None, "kind": "unmoved", "help": "no probe (frozen, shuffled or re-coloured clips) changed "
                                                          "this unit's response, so it has no motion score"}
    return {"score": score, "kind": "motion" if score > 0.5 else "appearance", "help": f"{MOTION_HELP} (m = {score:.3f})"}


def clip_source_path(run: Path, concept_set: str, layer: str) -> Path:
    """A dissected video layer's clip-gallery source: `dissect/<set>/<layer>/gallery/clips.json` (`dissect.gallery`)."""
    return run / "dissect" / concept_set / layer / "gallery" / CLIP_SOURCE


def unit_clips(run: ServedRun, layer: str, unit: int, concept_set: str) -> Path:
    """A unit's clip strip (animated WebP) on a concept set: the cached file, else rendered now and cached.
    404 when the layer has no clip source or no such unit; 409 when the run's checkpoint or the concept set
    changed since dissection (the command to run again is in the message)."""
    from dissect.gallery import ClipSource, render_clip_gallery
    from mmit_interp.video import ClipDecodeError

    src = clip_source_path(run.dir, concept_set, layer)
    if not src.is_file():
        raise HTTPException(404, f"layer {layer!r} of run {run.name!r} has no clip gallery on {concept_set!r}; "
                                 f"dissect it (video models): {missing('', 'dissect', run.dir, layers=layer)['shell']}")
    try:
        source = ClipSource.read(src)
    except ValueError as e:
        raise HTTPException(409, str(e)) from None
    if not 0 <= unit < source.units:
        raise HTTPException(404, f"layer {layer!r} has units 0..{source.units - 1}, not {unit}")
    cached = source.clip_path(src.parent, unit)
    if cached.is_file():
        return cached
    with _RENDER:
        model, meta = _gallery_model(run.dir)
        if source.checkpoint and meta.get("sha256", "")[:16] != source.checkpoint:
            raise HTTPException(409, f"run {run.name!r}'s checkpoint changed since {layer} was dissected; dissect it "
                                     f"again: {missing('', 'dissect', run.dir, layers=layer)['shell']}")
        try:  # a concept set changed, moved or unreadable since dissection
            paths = render_clip_gallery(model, source, source.dataset(), src.parent, units=[unit])
        except (ValueError, OSError, ClipDecodeError) as e:
            raise HTTPException(409, str(e)) from None
    if unit not in paths:
        raise HTTPException(404, f"unit {unit} of {layer!r} has no top items on {concept_set!r}")
    return paths[unit]


def _gallery_model(run: Path) -> tuple[Any, dict]:
    """The run's model for clip galleries: a private copy of `cached_model`'s (renewed when that reloads), so its
    hooks never meet the job queue's analyses on the shared one."""
    from mmit_interp.checkpoint import CheckpointError, cached_model

    try:
        shared, meta = cached_model(run)
    except CheckpointError as e:
        raise HTTPException(404, f"no loadable model in {run.name}: {e}") from None
    held = _MODELS.get(run)
    if held is None or held[0] is not shared:
        held = _MODELS[run] = (shared, copy.deepcopy(shared), meta)
    return held[1], held[2]


def _per_category(bests: list[dict]) -> dict:
    """Dissection's best label per category (the record's `per_category`), best first, and the best one without `action`."""
    rows = sorted((d for d in bests if d["label"]), key=lambda d: (-(d["iou"] or 0.0), d["category"]))
    without = next((d for d in rows if d["category"] != "action"), None)
    return {"per_category": rows, "best_without_action": without}
