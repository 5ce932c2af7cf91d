"""View data of the home page (the runs list) and of a run's page (recipe, metrics, curves)."""
from __future__ import annotations

from ..settings import ServedRun, Settings
from .charts import line_chart
from .commands import missing
from .readers import class_names, finite, open_store, read_json, read_jsonl

METRIC_NAMES = {
    "hit@1": "hit@1 (top-1 class is a positive)",
    "hit@5": "hit@5 (a positive among the top 5)",
    "map_sample": "mAP per sample (MMIT-style: AP of each clip's class ranking, averaged over clips)",
    "map_class": "mAP per class (AP of each class over clips, averaged over classes with a positive)",
    "map_micro": "mAP micro (AP over all clip-class pairs pooled)",
}
CURVE_METRICS = ("map_sample", "map_class", "map_micro", "hit@1", "hit@5")


def runs_index(settings: Settings) -> dict:
    """The served runs (or, when there are none, what to run to make one)."""
    return {"runs": [run_card(settings.served(n)) for n in settings.run_names],
            "source": settings.runs_source, "make": "make demo",
            "env": "MMIT_RUNS=/path/to/run_dir uvicorn webapp.main:app"}


def run_card(run: ServedRun) -> dict:
    """One line of the runs list: model, loss, data, the headline metrics and what has been analysed
    (dissected layers, analysed clips), so a visitor sees which runs have explanations to browse."""
    cfg = read_json(run.dir / "config.json") or {}
    ev = read_json(run.dir / "eval.json") or {}
    with open_store(run.dir) as store:
        layers = sorted({r["layer"] for r in store.layers()}) if store else []
        n_clips = store.n_clips() if store else 0
    return finite({"name": run.name, "path": str(run.dir), "model": cfg.get("model"), "loss": cfg.get("loss"),
                   "data": cfg.get("data"), "metrics": {k: ev.get(k) for k in METRIC_NAMES if k in ev},
                   "analysed": {"dissected_layers": layers, "clips": n_clips}})


def run_overview(run: ServedRun) -> dict:
    """Everything the run page shows: recipe, named metrics, per-class AP, training curves, what is missing."""
    cfg = read_json(run.dir / "config.json")
    ev = read_json(run.dir / "eval.json")
    base = read_json(run.dir / "baseline.json") or {}
    epochs = read_jsonl(run.dir / "metrics.jsonl")
    with open_store(run.dir) as store:
        names = class_names(run.dir, store)
        clips = store.clips() if store else []
        layers = store.layers() if store else []
    gaps = []
    if cfg is None:
        gaps.append(missing("training config (config.json)", "metrics", run.dir))
    if ev is None:
        gaps.append(missing("final evaluation (eval.json)", "eval", run.dir))
    if not epochs:
        gaps.append(missing("training curves (metrics.jsonl)", "metrics", run.dir))
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
        "name": run.name, "path": str(run.dir), "config": c,
        "recipe": {"model": c.get("model"), "model_kwargs": c.get("model_kwargs"), "loss": c.get("loss"),
                   "class_weights": c.get("class_weights_resolved", c.get("class_weights")), "data": c.get("data"),
                   "frames": c.get("frames"), "size": c.get("size"), "epochs": c.get("epochs"),
                   "shipped": c.get("showcase")},
        "metrics": metrics, "has_baseline": bool(base),
        "eval_extra": {k: ev.get(k) for k in ("split", "n_clips", "n_classes", "clips_skipped", "map_class_skipped")
                       if k in ev} if ev else {},
        "per_class_ap": per_class, "epochs": epochs, "curves": curves, "missing": gaps,
        "clips": clips, "layers": layers, "classes": names,
    })
