"""View data of a run's explanations page: the stored method x metric table (`mmit-analyze explanations`)."""
from __future__ import annotations

from mmit_interp.explain.clip_maps import METHOD_LABELS
from mmit_interp.explain.table import DEFAULT_METHODS, METRICS, SANITY_LIMIT

from ..links import Links
from ..settings import ServedRun
from .commands import missing
from .readers import finite, open_store, read_json

BETTER = {"pointing": "higher", "energy": "higher", "ownership": "higher", "ownership_mcam": "higher",
          "deletion": "lower", "insertion": "higher", "deletion_others": "higher", "insertion_others": "lower",
          "rank_corr": "lower", "sanity": "lower"}
COLUMNS = tuple(m for m in METRICS if m not in ("sanity", "forwards"))
ORDER = (*DEFAULT_METHODS, "random")


def explanations_view(run: ServedRun, links: Links) -> dict:
    """Per stored data set: one row per method (`random` last) with each metric's mean and 95 % interval,
    its sanity correlation and whether it fails, its cost in forwards; else the command that computes it."""
    with open_store(run.dir) as store:
        rows = store.explanations() if store else []
    cells: dict[str, dict[str, dict[str, dict]]] = {}
    for r in rows:
        cells.setdefault(r["dataset"], {}).setdefault(r["method"], {})[r["metric"]] = {
            k: r[k] for k in ("mean", "lo", "hi", "n")}
    tables = [_table(dataset, methods) for dataset, methods in cells.items()]
    data = (read_json(run.dir / "config.json") or {}).get("data") or "WORLD_DIR"
    gaps = [] if tables else [missing("the explanation methods x metrics table", "explanations", run.dir, world=data)]
    return finite({"name": run.name, "tables": tables, "columns": [{"metric": m, "better": BETTER[m]} for m in COLUMNS],
                   "sanity_limit": SANITY_LIMIT, "analysis": links("analysis_page", run=run.name), "missing": gaps})


def _table(dataset: str, methods: dict[str, dict[str, dict]]) -> dict:
    """One data set's rows in the command's method order, with the clip count the table was computed on."""
    names = sorted(methods, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))
    out = []
    for m in names:
        row = methods[m]
        sanity = row.get("sanity")
        fails = None if sanity is None or sanity["mean"] is None else sanity["mean"] >= SANITY_LIMIT
        out.append({"method": m, "label": METHOD_LABELS.get(m, m), "baseline": m == "random",
                    "cells": {k: row[k] for k in COLUMNS if k in row}, "sanity": sanity, "fails_sanity": fails,
                    "forwards": (row.get("forwards") or {}).get("mean")})
    n_clips = max((row.get("forwards", {}).get("n") or 0 for row in methods.values()), default=0)
    return {"dataset": dataset, "n_clips": n_clips, "rows": out}
