"""Thin read helpers: files and the results store of a run dir, shaped for templates and the API.

No analysis happens here. Each function returns a JSON-able dict that the `/api/...` route returns
as is and the HTML route renders; a piece that has not been computed yet is listed under
`missing` with the command that produces it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import quote
from typing import Any, Iterable, Sequence

from mmit_interp.store import DB_NAME, ResultsStore, StoreError

METRIC_NAMES = {
    "hit@1": "hit@1 (top-1 class is a positive)",
    "hit@5": "hit@5 (a positive among the top 5)",
    "map_sample": "mAP per sample (MMIT-style: AP of each clip's class ranking, averaged over clips)",
    "map_class": "mAP per class (AP of each class over clips, averaged over classes with a positive)",
    "map_micro": "mAP micro (AP over all clip-class pairs pooled)",
}
CURVE_METRICS = ("map_sample", "map_class", "map_micro", "hit@1", "hit@5")
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
UNIT_SORTS = ("iou", "label", "unit", "category")


def seg(part: str) -> str:
    """One URL path segment, percent-encoded (run and layer names come from folders and files)."""
    return quote(str(part), safe="")


def commands(run: Path) -> dict[str, str]:
    """The shell command that produces each piece of a run dir (shown where the piece is missing)."""
    return {
        "run": "make demo",
        "eval": f"mmit-train --evaluate {run}",
        "metrics": f"mmit-train --data DATA --out {run}",
        "dissect": f"mmit-dissect {run} --layers layer3 layer4 --concept-set BRODEN_DIR [BRODEN_WITH_ACTIONS_DIR] --store",
        "ablation": f"mmit-analyze ablation --run {run}",
        "selectivity": f"mmit-analyze selectivity --run {run}",
        "relations": f"mmit-analyze selectivity --run {run}  (writes selectivity and unit/class relations)",
        "figures": f"mmit-analyze figures --run {run} --out {run}/analysis",
        "localisation": f"mmit-analyze localisation --run {run} --world WORLD_DIR",
        "bias": f"mmit-analyze bias --run {run} --world WORLD_DIR",
        "clip": f"mmit-cam CLIP.mp4 --run {run}  (or upload the clip on this page)",
    }


def finite(v: Any) -> Any:
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    return v


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it does not exist."""
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-empty line, or [] when the file does not exist."""
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def open_store(run: Path) -> ResultsStore | None:
    """The run's results store when it exists and has a registered run (never creates one)."""
    if not (run / DB_NAME).is_file():
        return None
    store = ResultsStore(run)
    try:
        store.run_id()
    except StoreError:
        store.close()
        return None
    return store


def class_names(run: Path, store: ResultsStore | None = None) -> list[str]:
    """The run's vocabulary: the store's classes, else `moments_categories.txt`."""
    if store is not None:
        return store.classes()
    from mmit_interp.vocab import Vocabulary

    f = run / "moments_categories.txt"
    return list(Vocabulary.from_file(f).names) if f.is_file() else []


def line_chart(x: Sequence[float], series: dict[str, Sequence[float | None]], *, width: int = 560,
               height: int = 220, y_range: tuple[float, float] | None = None, x_label: str = "",
               y_label: str = "") -> dict:
    """Pixel coordinates of an inline SVG line chart (polylines, ticks) for the `chart` macro."""
    pad_l, pad_r, pad_t, pad_b = 48, 12, 10, 34
    xs = [float(v) for v in x]
    ys = [float(v) for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not xs or not ys:
        return {"empty": True, "width": width, "height": height}
    lo, hi = y_range if y_range else (min(ys), max(ys))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1

    def px(v: float) -> float:
        return round(pad_l + (v - x0) / (x1 - x0) * (width - pad_l - pad_r), 1)

    def py(v: float) -> float:
        return round(height - pad_b - (v - lo) / (hi - lo) * (height - pad_t - pad_b), 1)

    lines = []
    for i, (name, vals) in enumerate(series.items()):
        pts = [(px(a), py(float(b))) for a, b in zip(xs, vals) if b is not None and math.isfinite(b)]
        lines.append({"name": name, "color": COLORS[i % len(COLORS)], "points": " ".join(f"{a},{b}" for a, b in pts),
                      "dots": pts, "values": [finite(v) for v in vals]})
    n_ticks = 5
    yticks = [(py(lo + (hi - lo) * k / (n_ticks - 1)), f"{lo + (hi - lo) * k / (n_ticks - 1):.3g}") for k in range(n_ticks)]
    step = max(1, len(xs) // 8)
    xticks = [(px(v), f"{v:g}") for v in xs[::step]]
    return {"empty": False, "width": width, "height": height, "lines": lines, "xticks": xticks, "yticks": yticks,
            "x_label": x_label, "y_label": y_label, "left": pad_l, "bottom": height - pad_b, "right": width - pad_r,
            "top": pad_t, "x": xs}


def bar_chart(groups: Sequence[str], series: dict[str, Sequence[float | None]], *, width: int = 560,
              height: int = 220, y_label: str = "") -> dict:
    """Pixel rectangles of an inline SVG grouped bar chart (one group per x label) for the `bars` macro."""
    pad_l, pad_r, pad_t, pad_b = 48, 12, 10, 34
    vals = [float(v) for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not groups or not vals:
        return {"empty": True, "width": width, "height": height}
    hi = max(max(vals), 1e-12)
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    gw = plot_w / len(groups)
    bw = gw * 0.8 / max(1, len(series))
    bars, legend = [], []
    for j, (name, vs) in enumerate(series.items()):
        color = COLORS[j % len(COLORS)]
        legend.append({"name": name, "color": color})
        for i, v in enumerate(vs):
            if v is None or not math.isfinite(v):
                continue
            h = round(float(v) / hi * plot_h, 1)
            bars.append({"x": round(pad_l + i * gw + gw * 0.1 + j * bw, 1), "y": round(height - pad_b - h, 1),
                         "w": round(bw, 1), "h": h, "color": color, "title": f"{groups[i]}, {name}: {v:.3g}"})
    yticks = [(round(height - pad_b - plot_h * k / 4, 1), f"{hi * k / 4:.3g}") for k in range(5)]
    xticks = [(round(pad_l + (i + 0.5) * gw, 1), g) for i, g in enumerate(groups)]
    return {"empty": False, "width": width, "height": height, "bars": bars, "lines": legend, "xticks": xticks,
            "yticks": yticks, "x_label": "", "y_label": y_label, "left": pad_l, "bottom": height - pad_b,
            "right": width - pad_r, "top": pad_t}


# ------------------------------------------------------------------------- runs
def run_card(name: str, run: Path) -> dict:
    """One line of the runs list: model, loss, data, the headline metrics and what has been analysed
    (dissected layers, analysed clips), so a visitor sees which runs have explanations to browse."""
    cfg = read_json(run / "config.json") or {}
    ev = read_json(run / "eval.json") or {}
    store = open_store(run)
    try:
        layers = sorted({r["layer"] for r in store.layers()}) if store else []
        n_clips = store.n_clips() if store else 0
    finally:
        if store:
            store.close()
    return finite({"name": name, "path": str(run), "model": cfg.get("model"), "loss": cfg.get("loss"),
                   "data": cfg.get("data"), "metrics": {k: ev.get(k) for k in METRIC_NAMES if k in ev},
                   "analysed": {"dissected_layers": layers, "clips": n_clips}})


def run_overview(name: str, run: Path) -> dict:
    """Everything the run page shows: recipe, named metrics, per-class AP, training curves, what is missing."""
    cfg = read_json(run / "config.json")
    ev = read_json(run / "eval.json")
    base = read_json(run / "baseline.json") or {}
    epochs = read_jsonl(run / "metrics.jsonl")
    store = open_store(run)
    try:
        names = class_names(run, store)
        clips = store.clips() if store else []
        layers = store.layers() if store else []
    finally:
        if store:
            store.close()
    cmd = commands(run)
    missing = []
    if cfg is None:
        missing.append({"what": "training config (config.json)", "command": cmd["metrics"]})
    if ev is None:
        missing.append({"what": "final evaluation (eval.json)", "command": cmd["eval"]})
    if not epochs:
        missing.append({"what": "training curves (metrics.jsonl)", "command": cmd["metrics"]})
    c = cfg or {}
    metrics = [{"key": k, "name": desc, "value": ev.get(k), "baseline": base.get(k)}
               for k, desc in METRIC_NAMES.items()] if ev else []
    per_class = [{"class_idx": i, "name": names[i] if i < len(names) else f"class {i}", "ap": ap}
                 for i, ap in enumerate((ev or {}).get("per_class_ap", []))]
    ep = [e.get("epoch", i + 1) for i, e in enumerate(epochs)]
    curves = {
        "loss": line_chart(ep, {"train loss": [e.get("train_loss") for e in epochs]}, x_label="epoch", y_label="loss"),
        "metrics": line_chart(ep, {k: [e.get(k) for e in epochs] for k in CURVE_METRICS}, y_range=(0.0, 1.0),
                              x_label="epoch", y_label="validation metric"),
    }
    return finite({
        "name": name, "path": str(run), "config": c,
        "recipe": {"model": c.get("model"), "model_kwargs": c.get("model_kwargs"), "loss": c.get("loss"),
                   "class_weights": c.get("class_weights_resolved", c.get("class_weights")), "data": c.get("data"),
                   "frames": c.get("frames"), "size": c.get("size"), "epochs": c.get("epochs")},
        "metrics": metrics, "has_baseline": bool(base),
        "eval_extra": {k: ev.get(k) for k in ("split", "n_clips", "n_classes", "clips_skipped", "map_class_skipped")
                       if k in ev} if ev else {},
        "per_class_ap": per_class, "epochs": epochs, "curves": curves, "missing": missing,
        "clips": clips, "layers": layers, "classes": names,
    })


# ------------------------------------------------------------------------- clips
def file_url(name: str, run: Path, path: str | Path, base: Path | None = None) -> str | None:
    """`/files/...` URL of a file the analysis wrote (absolute, run-relative or `base`-relative)."""
    p = Path(path)
    root = run.resolve()
    for cand in ((p,) if p.is_absolute() else (run / p, (base or run) / p)):
        try:
            rel = cand.resolve().relative_to(root)
        except ValueError:
            continue
        if cand.is_file():
            return f"/files/{seg(name)}/{quote(rel.as_posix())}"
    return None


def validation_clips(run: Path, limit: int = 500) -> dict:
    """The run's validation clips (from its config's data folder) with their labels, to pick from."""
    cfg = read_json(run / "config.json") or {}
    data = cfg.get("data")
    if not data or not Path(data).is_dir():
        return {"data": data, "clips": [], "missing": f"the run's data folder {data!r} is not on this machine"}
    from mmit_interp.annotations import AnnotationError, read_mmit

    try:
        ann = read_mmit(data, "val", check_files=True, allow_missing=True)
    except (AnnotationError, ValueError) as e:
        return {"data": data, "clips": [], "missing": str(e)}
    names = ann.vocab.names
    return {"data": data, "total": len(ann), "missing": None,
            "clips": [{"index": i, "rel": a.rel, "labels": [names[c] for c in a.labels]}
                      for i, a in enumerate(ann.items[:limit])]}


def validation_clip(run: Path, index: int) -> tuple[Path, str, list[str]] | None:
    """Path, relative name and labels of validation clip `index`, or None."""
    cfg = read_json(run / "config.json") or {}
    if not cfg.get("data"):
        return None
    from mmit_interp.annotations import read_mmit

    ann = read_mmit(cfg["data"], "val", check_files=True, allow_missing=True)
    if not 0 <= index < len(ann):
        return None
    a = ann.items[index]
    return a.path, a.rel, [ann.vocab.names[c] for c in a.labels]


def _clip_key(result: dict, sha: str) -> str:
    """The store's key of an analysed clip (the service's `clip_key`, else the sha256)."""
    return str(result.get("clip_key") or sha)


def analysed_clips(name: str, run: Path) -> list[dict]:
    """Clips with a finished analysis in this run, newest first, with their top prediction."""
    cams = run / "cams"
    if not cams.is_dir():
        return []
    out = []
    for res in cams.glob("*/result.json"):
        sha = res.parent.name
        side = read_json(run / "uploads" / f"{sha}.json") or {}
        result = read_json(res) or {}
        preds = result.get("predictions") or []
        top = preds[0] if preds else {}
        out.append({"sha256": sha, "permalink": f"/runs/{seg(name)}/clips/{sha}",
                    "filename": side.get("filename") or Path(result.get("clip", sha)).name,
                    "source": side.get("source", "mmit-cam"), "labels": side.get("labels"), "top_name": top.get("name"),
                    "top_score": top.get("score"), "mtime": res.stat().st_mtime})
    return finite(sorted(out, key=lambda d: -d["mtime"]))


def clip_view(name: str, run: Path, sha: str) -> dict:
    """An analysed clip shaped for the viewer: predictions (+ truth), frame URLs per kind, downloads."""
    result = read_json(run / "cams" / sha / "result.json") or {}
    side = read_json(run / "uploads" / f"{sha}.json") or {"filename": Path(result.get("clip", sha)).name,
                                                          "source": "mmit-cam", "n_frames": result.get("n_frames")}
    out_dir = run / "cams" / sha
    key = _clip_key(result, sha)
    store = open_store(run)
    try:
        row = store.clip(key) if store else None
    finally:
        if store:
            store.close()
    truth = set(side.get("labels") or [])
    src = row or {}
    preds = src.get("predictions") or result.get("predictions") or []
    files = src.get("files") or {}

    def urls(paths: Iterable[str]) -> list[str]:
        return [u for u in (file_url(name, run, p, out_dir) for p in paths) if u]

    def per_class(kind: str) -> dict[str, list[str]]:
        return {str(ci): urls(ps) for ci, ps in (files.get(kind) or {}).items() if int(ci) >= 0}

    one = lambda kind: urls((files.get(kind) or {}).get(-1, []))  # noqa: E731
    video = one("video")
    downloads = [{"label": "overlay video (MP4)", "url": u} for u in video if u.endswith(".mp4")]
    downloads += [{"label": "overlay animation (GIF)", "url": u} for u in video if u.endswith(".gif")]
    downloads.append({"label": "scores and file list (JSON)", "url": f"/api/runs/{seg(name)}/clips/{sha}"})
    downloads.append({"label": "every frame image: frames, mCAM, per-class CAMs, RGBA heat-map PNGs (ZIP)",
                      "url": f"/api/runs/{seg(name)}/clips/{sha}/frames.zip"})
    mcam = one("mcam")
    return finite({
        "name": name, "sha256": sha, "clip_key": key, "clip": side,
        "has_audio": bool(side.get("has_audio", src.get("has_audio"))),  # the container's own streams
        "ground_truth": sorted(truth) if side.get("labels") is not None else None,
        "predictions": [{"class_idx": int(p["class_idx"]), "name": p["name"], "score": p["score"],
                         "truth": (p["name"] in truth) if side.get("labels") is not None else None} for p in preds],
        "frames": {"base": one("frame"), "mcam": mcam, "mcam_layer": one("mcam_layer"), "strip": one("strip"),
                   "cam": per_class("cam"),
                   "heat": per_class("heat")},
        "n_frames": len(mcam),
        "video": video, "downloads": downloads, "params": src.get("params") or {},
        "permalink": f"/runs/{seg(name)}/clips/{sha}", "clip_url": file_url(name, run, run / "uploads" / side.get("file", "")),
        "missing": [] if row else [{"what": "this clip's rows in the results store", "command": commands(run)["clip"]}],
    })


def clip_images(run: Path, sha: str) -> list[Path]:
    """Every image the analysis wrote for a clip (frames, mCAM, per-class CAMs and heat maps), inside the run."""
    out = (run / "cams" / sha).resolve()
    if not out.is_relative_to(run.resolve()) or not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def concept_path_view(name: str, run: Path, sha: str, class_idx: int) -> dict:
    """The concept path of (clip, class) with each unit's dissection label, grouped block 4 -> block 3."""
    result = read_json(run / "cams" / sha / "result.json") or {}
    store = open_store(run)
    try:
        rows = store.concept_path(_clip_key(result, sha), class_idx) if store else []
        dissected = {d["layer"] for d in store.layers()} if store else set()
        for r in rows:  # the layer name the unit pages know the unit by
            r["unit_layer"] = next((a for a in r.get("label_layers") or [r["layer"]] if a in dissected), None)
        names = class_names(run, store)
        class_name = names[class_idx] if 0 <= class_idx < len(names) else f"class {class_idx}"
        bias = bias_view(run, store, class_name)
    finally:
        if store:
            store.close()
    steps0 = [r for r in rows if r["step"] == 0]
    children = {}
    for r in rows:
        if r["step"] == 1:
            children.setdefault(r["parent"], []).append(r)
    path = [{**r, "children": children.get(r["unit"], [])} for r in steps0]
    return finite({"name": name, "sha256": sha, "class_idx": class_idx, "class_name": class_name,
                   "path": path, "bias": bias, "clip_permalink": f"/runs/{seg(name)}/clips/{sha}",
                   "missing": [] if rows else [{"what": "the concept path of this clip and class",
                                                "command": f"mmit-analyze concept-path {result.get('clip', 'CLIP')} "
                                                           f"--run {run} --class {class_idx}"}]})


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.0%}"


def bias_sentence(s: dict) -> str:
    """A stored bias test (`mmit_interp.bias.run_bias`'s summary) in plain words."""
    act, tex = s["action"], s["texture"]
    if s["excess"] is None:
        return f"The {tex} -> {act} bias could not be measured: " + "; ".join(s.get("notes") or []) + "."
    text = (f"On {s['n_lure']} clips where a {tex} actor does something else, the model scores {act} "
            f"{s['score']['lure']:.3f} on average, against {s['score']['control']:.3f} on {s['n_control']} clips "
            f"without a {tex} actor: an excess of {s['excess']:+.3f}. ")
    if not s["n_units"]:
        return text + f"Dissection labels no unit {tex} in {', '.join(s['layers'])}, so there is nothing to ablate."
    ab, rnd, oc = s["ablated"], s["random"], s["ablated"]["other_classes"]
    text += (f"Zeroing the {s['n_units']} units labelled {tex} ({', '.join(s['layers'])}) leaves "
             f"{ab['excess']:+.3f}, {_pct(ab['removed'])} of the excess removed; as many random units remove "
             f"{_pct(rnd['removed_mean'])} on average (at most {_pct(rnd['removed_max'])}).")
    if oc:
        text += (f" The other classes' scores move by {oc['mean_abs_change']:.3f} on average "
                 f"(at most {oc['max_abs_change']:.3f}, {oc['max_class']}).")
    return text


def bias_view(run: Path, store: ResultsStore | None, class_name: str) -> dict | None:
    """The stored bias test whose biased action is this class (the world's planted pair first), in
    words and figures; when none is stored but the run's world plants its bias on this class, the
    command that computes it; None otherwise."""
    rows = store.bias(class_name) if store else []
    if rows:
        s = next((r for r in rows if r["summary"].get("planted")), rows[0])["summary"]
        return {"summary": s, "sentence": bias_sentence(s), "missing": []}
    data = (read_json(run / "config.json") or {}).get("data")
    planted = ((read_json(Path(data) / "world.json") if data else None) or {}).get("bias") or {}
    if planted.get("action") != class_name:
        return None
    return {"summary": None, "sentence": None,
            "missing": [{"what": f"the planted-bias test ({planted.get('texture')} -> {class_name})",
                         "command": commands(run)["bias"].replace("WORLD_DIR", str(data))}]}


# ------------------------------------------------------------------------- units
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")


def _images_in(extra: Any) -> list[str]:
    """Image paths named anywhere in a unit record's extra fields (galleries written by dissection)."""
    if isinstance(extra, str):
        return [extra] if extra.lower().endswith(IMAGE_SUFFIXES) else []
    if isinstance(extra, dict):
        return [p for v in extra.values() for p in _images_in(v)]
    if isinstance(extra, (list, tuple)):
        return [p for v in extra for p in _images_in(v)]
    return []


def units_overview(name: str, run: Path, layer: str | None = None, concept_set: str | None = None,
                   category: str | None = None, q: str | None = None, sort: str = "iou",
                   include_all: bool = False) -> dict:
    """A layer's unit table (label, category, IoU) with header counts and filter choices; rows that
    do not match the filter are left out, or kept with `match: false` when `include_all` (pages filter in place)."""
    if sort not in UNIT_SORTS:
        sort = "iou"
    store = open_store(run)
    if store is None:
        return {"name": name, "layers": [], "layer": None, "units": [], "categories": [], "concept_sets": [],
                "missing": [{"what": "network dissection of this run", "command": commands(run)["dissect"]}]}
    try:
        layers = store.layers()
        if not layers:
            return {"name": name, "layers": [], "layer": None, "units": [], "categories": [], "concept_sets": [],
                    "missing": [{"what": "network dissection of this run", "command": commands(run)["dissect"]}]}
        layer = layer or layers[-1]["layer"]
        sets = [d["concept_set"] for d in layers if d["layer"] == layer]
        if not sets:
            return {"name": name, "layers": layers, "layer": layer, "units": [], "categories": [],
                    "concept_sets": [], "not_found": True,
                    "missing": [{"what": f"dissection of layer {layer!r}", "command": commands(run)["dissect"]}]}
        concept_set = concept_set if concept_set in sets else sets[0]
        every = store.units(layer, concept_set, order_by=sort)
    finally:
        store.close()
    interp = [u for u in every if u["interpretable"]]
    needle = (q or "").lower()
    units = [{"unit": u["unit"], "label": u["label"], "category": u["category"], "iou": u["iou"],
              "interpretable": u["interpretable"], "href": f"/runs/{seg(name)}/units/{seg(layer)}/{u['unit']}",
              "match": (not category or u["category"] == category) and needle in (u["label"] or "").lower()}
             for u in every]
    return finite({
        "name": name, "layers": layers, "layer": layer, "concept_set": concept_set, "concept_sets": sets,
        "category": category or "", "q": q or "", "sort": sort, "sorts": UNIT_SORTS,
        "categories": sorted({u["category"] for u in every if u["category"]}),
        "n_units": len(every), "n_interpretable": len(interp), "n_concepts": len({u["label"] for u in interp}),
        "units": units if include_all else [u for u in units if u["match"]], "missing": [],
    })


def urls_of(name: str, run: Path, paths: Iterable[str]) -> list[str]:
    """`/files/...` URLs of the existing ones among `paths` (relative to the run dir or absolute)."""
    return [u for u in (file_url(name, run, p) for p in paths) if u]


def gallery_paths(run: Path, concept_set: str, layer: str, unit: int, extra: Any) -> list[str]:
    """A unit's top-image strips: dissection's `dissect/<set>/<layer>/gallery/unit_<u>.jpg`, and any image the record names."""
    own = run / "dissect" / concept_set / layer / "gallery" / f"unit_{unit:04d}.jpg"
    return [str(own)] + _images_in(extra)


def _blocks_for(layer: str, blocks: Sequence[str]) -> list[str]:
    """Candidate analysis block names for a dissected layer (`layer4` -> `layer4`, its last block)."""
    inner = sorted((b for b in blocks if b.startswith(layer + ".")), key=lambda s: int(s.split(".")[1]))
    return [layer] + inner[-1:]


def unit_detail(name: str, run: Path, layer: str, unit: int) -> dict | None:
    """One unit: label per concept set with runner-ups, gallery, classes it drives, selectivity, neighbours."""
    store = open_store(run)
    if store is None:
        return None
    try:
        sets = [d for d in store.layers() if d["layer"] == layer]
        per_set = [r for r in (store.unit(layer, unit, d["concept_set"]) for d in sets) if r]
        if not per_set:
            return None
        n_units = max(d["n_units"] for d in sets)
        names = store.classes()
        blocks_known = [b["block"] for p in ("softmax", "sigmoid") for b in store.selectivity_blocks(prob=p)]
        drives, selectivity, block_used = [], None, None
        for block in _blocks_for(layer, blocks_known):
            rel = store.relations(block, "unit_to_class", unit, prob="logit")
            sel = next(((p, v) for p in ("softmax", "sigmoid") if (v := store.selectivity(block, prob=p))), None)
            if rel or sel:
                drives = [{"class_idx": c, "name": names[c] if c < len(names) else str(c), "score": s}
                          for c, s in rel.get(unit, [])]
                if sel:
                    prob, vals = sel
                    known = [v for v in vals if v is not None]
                    selectivity = {"value": vals[unit] if unit < len(vals) else None, "prob": prob,
                                   "block_mean": sum(known) / len(known) if known else None}
                block_used = block
                break
        ranked = store.units(layer, per_set[0]["concept_set"], order_by="iou")
    finally:
        store.close()
    order = [u["unit"] for u in ranked]
    pos = order.index(unit) if unit in order else None
    best = max(per_set, key=lambda r: r["iou"] if r["iou"] is not None else -1)
    return finite({
        "name": name, "layer": layer, "unit": unit, "n_units": n_units, "label": best["label"],
        "category": best["category"], "iou": best["iou"], "interpretable": best["interpretable"],
        "concept_sets": [{"concept_set": r["concept_set"], "label": r["label"], "category": r["category"],
                          "iou": r["iou"], "interpretable": r["interpretable"], "runner_ups": _runner_ups(r["runner_ups"]),
                          **_per_category(r["extra"])} for r in per_set],
        "gallery": [{"concept_set": r["concept_set"], "url": u} for r in per_set
                    for u in urls_of(name, run, gallery_paths(run, r["concept_set"], layer, unit, r["extra"]))],
        "extra": {r["concept_set"]: {k: v for k, v in r["extra"].items() if not _images_in(v)} for r in per_set},
        "drives": drives, "selectivity": selectivity, "block": block_used,
        "neighbours": {"previous": unit - 1 if unit > 0 else None, "next": unit + 1 if unit + 1 < n_units else None,
                       "better_iou": order[pos - 1] if pos else None,
                       "worse_iou": order[pos + 1] if pos is not None and pos + 1 < len(order) else None},
        "permalink": f"/runs/{seg(name)}/units/{seg(layer)}/{unit}",
        "missing": ([] if block_used else [{"what": "selectivity and unit-to-class relations of this block",
                                             "command": commands(run)["relations"]}])
                   + ([] if any(urls_of(name, run, gallery_paths(run, r["concept_set"], layer, unit, r["extra"]))
                                for r in per_set) else
                      [{"what": "this unit's top-image gallery", "command": commands(run)["dissect"]}]),
    })


def _per_category(extra: dict) -> dict:
    """Dissection's best label per category (`<cat>_label`, `<cat>_iou`) and the best one without `action`."""
    rows = [{"category": k[: -len("_label")], "label": v, "iou": extra.get(k[: -len("_label")] + "_iou")}
            for k, v in extra.items() if k.endswith("_label") and v]
    rows.sort(key=lambda d: -(d["iou"] or 0.0))
    without = next((d for d in rows if d["category"] != "action"), None)
    return {"per_category": rows, "best_without_action": without}


def _runner_ups(raw: Any) -> list[dict]:
    """Runner-up concepts as `{label, category, iou}` whatever shape dissection stored them in."""
    out = []
    for r in raw or []:
        if isinstance(r, dict):
            out.append({"label": r.get("label") or r.get("name"), "category": r.get("category"), "iou": r.get("iou")})
        elif isinstance(r, (list, tuple)) and len(r) >= 2:
            out.append({"label": r[0], "category": r[2] if len(r) > 2 else None, "iou": r[1]})
    return out


# ------------------------------------------------------------------------- analyses
def analysis_overview(name: str, run: Path) -> dict:
    """Ablation curves, selectivity per block, Table 3 and block-wise concept counts, with figures."""
    cmd = commands(run)
    figures = urls_of(name, run, sorted(str(p) for p in (run / "analysis").glob("*.png")))
    dissect_figures = urls_of(name, run, [str(run / "dissect" / "table3.png")]
                              + sorted(str(p) for p in (run / "dissect").glob("*/blockwise.png")))
    store = open_store(run)
    ablation, selectivity, table3, counts, localisation = {}, {}, [], [], []
    try:
        if store is not None:
            localisation = [r for r in store.localisation() if r["class_idx"] == -1 and r["frame"] == -1]
            ablation = store.ablation_curves()
            selectivity = {p: store.selectivity_blocks(prob=p) for p in ("softmax", "sigmoid")}
            selectivity = {p: v for p, v in selectivity.items() if v}
            for d in store.layers():
                interp = store.units(d["layer"], d["concept_set"], interpretable_only=True)
                table3.append({**d, "n_concepts": len({u["label"] for u in interp})})
                counts.append({"layer": d["layer"], "concept_set": d["concept_set"],
                               "counts": store.category_counts(d["layer"], d["concept_set"])})
    finally:
        if store:
            store.close()
    abl_charts = [{"layer": lay, "chart": line_chart(
        next(iter(mets.values()))["p"], {m: v["mean"] for m, v in mets.items()}, y_range=(0.0, max(1.0, max(
            (x for v in mets.values() for x in v["mean"] if x is not None and math.isfinite(x)), default=1.0))),
        x_label="fraction of units ablated", y_label="metric / unablated"),
        "rows": [{"metric": m, "p": p, "mean": v["mean"][i], "std": v["std"][i], "n": v["n"][i]}
                 for m, v in mets.items() for i, p in enumerate(v["p"])]} for lay, mets in ablation.items()]
    sel_charts = {p: bar_chart([b["block"] for b in v], {f"mean selectivity ({p})": [b["mean"] for b in v]})
                  for p, v in selectivity.items()}
    cats = sorted({c for d in counts for c in d["counts"]})
    by_set: dict[str, list[dict]] = {}
    for d in counts:
        by_set.setdefault(d["concept_set"], []).append(d)
    count_charts = {cs: bar_chart([d["layer"] for d in v], {c: [d["counts"].get(c, 0) for d in v] for c in cats},
                                  y_label="interpretable units")
                    for cs, v in by_set.items()}
    missing = []
    if not ablation:
        missing.append({"what": "ablation curves", "command": cmd["ablation"]})
    if not selectivity:
        missing.append({"what": "selectivity per block", "command": cmd["selectivity"]})
    if not table3:
        missing.append({"what": "Table 3 and block-wise concept counts (dissection)", "command": cmd["dissect"]})
    if not localisation:
        missing.append({"what": "CAM localisation scores (pointing game, energy in box)", "command": cmd["localisation"]})
    if not figures:
        missing.append({"what": "matplotlib figures (PNG/SVG) of these analyses", "command": cmd["figures"]})
    return finite({"name": name, "figures": figures, "dissect_figures": dissect_figures, "ablation": abl_charts, "selectivity": selectivity,
                   "selectivity_charts": sel_charts, "table3": table3, "categories": cats, "counts": counts,
                   "count_charts": count_charts, "localisation": localisation, "missing": missing})
