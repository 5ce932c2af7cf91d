"""Explanation methods' cost per clip as a multiple of one forward pass, and the whole table's time.

    python benchmarks/bench_explain.py [--run RUN --world WORLD] [--reps 5] [--threads 1] [--max-clips N]

Each method's maps of one clip's two classes (the default settings of `mmit_interp.explain.methods`:
occlusion 4 x 4 x 4 = 64 cubes, RISE 128 masks on a 4 x 6 x 6 grid, Integrated Gradients 8 steps)
are timed interleaved with a plain forward (median of per-rep ratios), next to the forward passes
counted by `table.count_forwards`. Without `--run`, a width-16 i3d_r18 at 8 x 64 x 64 (the tiny test
model's shape) with random weights; `--world` also times `run_explanations` (the whole table, not
recorded) on `--max-clips` clips.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    """Print the cost table (and the whole table's time) as text and JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run")
    ap.add_argument("--world")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-clips", type=int)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from mmit_interp.explain.methods import METHODS, make_method
    from mmit_interp.explain.table import count_forwards

    if a.run:
        from mmit_interp.checkpoint import load_model

        model, meta = load_model(a.run)
        t = meta["transforms"]
        shape = (3, t["frames"], t["size"], t["size"])
    else:
        from mmit_interp.models import build_model

        model, shape = build_model("i3d_r18", 4, width=16, layer4_stride=1).eval(), (3, 8, 64, 64)
    if model.inputs != ("video",):
        raise SystemExit("bench_explain times video models")
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    rows = {}
    for name in METHODS:
        meth = make_method(name, model)
        with count_forwards(model) as n:
            meth(x, classes=[0, 1])
        ratios, fwd = [], []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            with torch.no_grad():
                model(x)
            t1 = time.perf_counter()
            meth(x, classes=[0, 1])
            t2 = time.perf_counter()
            ratios.append((t2 - t1) / (t1 - t0))
            fwd.append(t1 - t0)
        rows[name] = {"forwards": n[0], "x_forward": statistics.median(ratios), "forward_s": statistics.median(fwd)}
        print(f"{name:<10s} forwards {n[0]:4d}  time {rows[name]['x_forward']:7.1f} x a forward "
              f"({rows[name]['forward_s'] * 1e3:.1f} ms)")
    out = {"methods": rows, "threads": a.threads}
    if a.run and a.world:
        from mmit_interp.explain.table import run_explanations

        t0 = time.perf_counter()
        r = run_explanations(a.run, world=a.world, max_clips=a.max_clips, record=False)
        out["table_s"], out["n_clips"] = time.perf_counter() - t0, r["n_clips"]
        print(f"whole table: {r['n_clips']} clips, {out['table_s']:.1f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
