"""Inline SVG chart geometry: pixel coordinates computed here, drawn by the `chart` macro of the templates."""
from __future__ import annotations

import math
from typing import Sequence

from .readers import finite

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


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

