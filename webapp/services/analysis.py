"""View data of a run's analysis page: ablation, selectivity per block, Table 3, concept counts, localisation."""
from __future__ import annotations

import math

from ..links import Links
from ..settings import ServedRun
from .charts import bar_chart, line_chart
from .commands import missing
from .readers import finite, open_store


def analysis_overview(run: ServedRun, links: Links) -> dict:
    """Ablation curves, selectivity per block, Table 3 and block-wise concept counts, with figures."""
    figures = links.files(run, sorted((run.dir / "analysis").glob("*.png")))
    dissect_figures = links.files(run, [run.dir / "dissect" / "table3.png",
                                        *sorted((run.dir / "dissect").glob("*/blockwise.png"))])
    ablation, selectivity, table3, counts, localisation = {}, {}, [], [], []
    with open_store(run.dir) as store:
        if store is not None:
            localisation = [r for r in store.localisation() if r["class_idx"] == -1 and r["frame"] == -1]
            ablation = store.ablation_curves()
            selectivity = {p: v for p in ("softmax", "sigmoid") if (v := store.selectivity_blocks(prob=p))}
            for d in store.layers():
                interp = store.units(d["layer"], d["concept_set"], interpretable_only=True)
                table3.append({**d, "n_concepts": len({u["label"] for u in interp})})
                counts.append({"layer": d["layer"], "concept_set": d["concept_set"],
                               "counts": store.category_counts(d["layer"], d["concept_set"])})
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
    gaps = []
    if not ablation:
        gaps.append(missing("ablation curves", "ablation", run.dir))
    if not selectivity:
        gaps.append(missing("selectivity per block", "selectivity", run.dir))
    if not table3:
        gaps.append(missing("Table 3 and block-wise concept counts (dissection)", "dissect", run.dir))
    if not localisation:
        gaps.append(missing("CAM localisation scores (pointing game, energy in box)", "localisation", run.dir))
    if not figures:
        gaps.append(missing("matplotlib figures (PNG/SVG) of these analyses", "figures", run.dir))
    return finite({"name": run.name, "figures": figures, "dissect_figures": dissect_figures, "ablation": abl_charts,
                   "selectivity": selectivity, "selectivity_charts": sel_charts, "table3": table3, "categories": cats,
                   "counts": counts, "count_charts": count_charts, "localisation": localisation, "missing": gaps})
