"""Figures from results stores (matplotlib, Agg backend): each saved as `<base>.svg` and `<base>.png`.

- `ablation_figure` (Fig. 9): metric relative to unablated vs fraction of units ablated, one line
  per run, shaded band = mean +- std over seeds.
- `selectivity_figure` (Fig. 10): mean unit selectivity per residual block, one bar group per run,
  error bars = std over the block's units.
- `class_ap_figure`: per-class AP, sorted, one bar per class (classes without positives left out).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, base: str | Path, dpi: int = 120) -> list[Path]:
    """Lay out, save as `<base>.svg` and `<base>.png`, close; every figure of the toolkit goes through here."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.parent / f"{base.name}.svg", base.parent / f"{base.name}.png"]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=dpi)
    plt.close(fig)
    return paths


def ablation_figure(curves: Mapping[str, Mapping[str, Sequence[float]]], base: str | Path, *,
                    metric: str = "map_sample", title: str | None = None) -> list[Path]:
    """Ablation curves `{run: {p, mean, std}}` of one metric on one plot."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for run, c in curves.items():
        p, m, s = (np.asarray(c[k], float) for k in ("p", "mean", "std"))
        ax.plot(p, m, marker="o", ms=3, label=run)
        ax.fill_between(p, m - s, m + s, alpha=0.2)
    ax.set_xlabel("fraction of units ablated (p)")
    ax.set_ylabel(f"{metric} / unablated")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"Feature ablation: {metric}")
    ax.legend(fontsize=8)
    return save_figure(fig, base)


def selectivity_figure(blocks: Mapping[str, Sequence[Mapping]], base: str | Path, *, prob: str = "softmax") -> list[Path]:
    """Mean selectivity per block `{run: [{block, mean, std}]}` as grouped bars."""
    names = list(dict.fromkeys(b["block"] for rows in blocks.values() for b in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(names) * max(len(blocks), 1)), 4))
    width = 0.8 / max(len(blocks), 1)
    x = np.arange(len(names))
    for i, (run, rows) in enumerate(blocks.items()):
        by = {b["block"]: b for b in rows}
        mean = [by[n]["mean"] if n in by else np.nan for n in names]
        std = [by[n]["std"] if n in by else 0.0 for n in names]
        ax.bar(x + (i - (len(blocks) - 1) / 2) * width, mean, width, yerr=std, capsize=2, label=run)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel(f"mean unit selectivity ({prob})")
    ax.set_title("Selectivity per residual block")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, base)


def class_ap_figure(rows: Sequence[Mapping], base: str | Path, *, title: str = "Per-class AP") -> list[Path]:
    """Per-class AP rows `{name, ap}` (None = no positives, left out), sorted descending."""
    kept = sorted(((r["name"], r["ap"]) for r in rows if r["ap"] is not None), key=lambda t: -t[1])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.18 * len(kept)), 4))
    ax.bar(range(len(kept)), [a for _, a in kept])
    ax.set_xticks(range(len(kept)), [n for n, _ in kept], rotation=90, fontsize=6)
    ax.set_ylabel("AP")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title} ({len(kept)} classes with positives)")
    return save_figure(fig, base)


def run_figures(run_dirs: Sequence[str | Path], out_dir: str | Path, *, metric: str = "map_sample",
                prob: str = "softmax", split: str = "val") -> list[Path]:
    """Every figure the runs' stores allow: ablation per block, selectivity, per-class AP per run."""
    from ..store import ResultsStore, StoreError

    out = Path(out_dir)
    curves: dict[str, dict[str, dict]] = {}
    sel: dict[str, list] = {}
    paths: list[Path] = []
    for rd in run_dirs:
        name = Path(rd).name
        with ResultsStore(rd) as st:
            try:
                st.run_id()
            except StoreError:
                continue
            for block, by_metric in st.ablation_curves(split=split).items():
                if metric in by_metric:
                    curves.setdefault(block, {})[name] = by_metric[metric]
            rows = st.selectivity_blocks(prob=prob)
            if rows:
                sel[name] = rows
            ap = st.class_ap(split)
            if ap:
                paths += class_ap_figure(ap, out / f"class_ap_{name}", title=f"Per-class AP, {name}")
    for block, by_run in curves.items():
        paths += ablation_figure(by_run, out / f"ablation_{block}_{metric}", metric=metric,
                                 title=f"Ablation of {block}: {metric}")
    if sel:
        paths += selectivity_figure(sel, out / f"selectivity_{prob}", prob=prob)
    return paths
