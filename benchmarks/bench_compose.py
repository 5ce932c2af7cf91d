"""Benchmark: compositional unit labels (``dissect.compose.compose_stream``, issue 16 item 2).

64 units of 7x7 maps upsampled to 112x112 masks, 100 labels (three pixel categories on one plane
each, from blocky grids of ``--grid`` x ``--grid`` cells, 8 by default; 112 draws every pixel on its own,
so no run of equal label lists is left to compress), and one whole-image category), 500 items,
formulas of length 3, beam 5.
The features are smooth random maps (3x3 noise upsampled to 7x7, per-map gain), so each unit fires
on a few blobs. The synthetic batches are made once before timing; the engine's own two passes
(``dissect_stream``) are reported beside. Run: ``OMP_NUM_THREADS=2 python benchmarks/bench_compose.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dissect.compose import compose_stream  # noqa: E402
from dissect.engine import dissect_stream  # noqa: E402

H, SEG, BATCH = 7, 112, 50
CATS = {"object": (45, False), "part": (30, False), "color": (15, False), "scene": (10, True)}  # labels, whole?
NUM_LABELS = sum(n for n, _ in CATS.values())
PRIMARY = torch.tensor([-1] + [ci for ci, (n, _) in enumerate(CATS.values()) for _ in range(n)])


def make_batch(seed: int, n: int, units: int, grid: int = 8) -> tuple[torch.Tensor, dict]:
    """Deterministic smooth features (n, units, 7, 7) and a collated label batch."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, units, 3, 3, generator=g)
    feats = F.interpolate(base, size=(H, H), mode="bilinear", align_corners=False)
    feats = feats * torch.rand(n, units, 1, 1, generator=g).pow(2) * 3
    planes, start, whole = [], 1, None
    for n_labels, is_whole in CATS.values():
        if is_whole:
            whole = torch.randint(start, start + n_labels, (n, 1), generator=g)
        else:
            choice = torch.randint(start, start + n_labels, (n, 4), generator=g)
            choice[:, 0] = 0
            cells = torch.gather(choice, 1, torch.randint(4, (n, grid * grid), generator=g)).view(n, grid, grid)
            planes.append(cells.repeat_interleave(SEG // grid, 1).repeat_interleave(SEG // grid, 2).int())
        start += n_labels
    return feats, {"pixel": torch.stack(planes, 1), "plane_cat": torch.arange(len(planes)).expand(n, -1).clone(),
                   "whole": whole, "whole_cat": torch.full((n, 1), len(CATS) - 1),
                   "index": torch.arange(seed * n, seed * n + n)}


def main() -> None:
    """Time the engine and the compositional search; print (and with --json write) the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--length", type=int, default=3)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--grid", type=int, default=8, help="label regions: a grid of this many cells per side "
                    "(a divisor of 112)")
    ap.add_argument("--planes", choices=["lite", "union"], default="lite",
                    help="union: step 0 comes from the engine's tally (one pass fewer)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    nb = args.images // BATCH

    data = [make_batch(b, BATCH, args.units, args.grid) for b in range(nb)]  # made once: not timed

    def batches():
        for f, lab in data:
            yield {"L": f}, lab

    t0 = time.perf_counter()
    res = dissect_stream(batches, nb * BATCH, PRIMARY, [f"l{i}" for i in range(NUM_LABELS + 1)], list(CATS),
                         quantile=0.005, planes=args.planes)["L"]
    t_engine = time.perf_counter() - t0
    passes = args.length - (args.planes == "union")
    t0 = time.perf_counter()
    recs = compose_stream(batches, {"L": res}, length=args.length, beam=args.beam)["L"]
    t_compose = time.perf_counter() - t0
    gains = torch.tensor([r.gain for r in recs])
    report = {"threads": torch.get_num_threads(), "images": nb * BATCH, "units": args.units, "labels": NUM_LABELS,
              "length": args.length, "beam": args.beam, "grid": args.grid, "planes": args.planes, "passes": passes,
              "engine_s": round(t_engine, 2),
              "compose_s": round(t_compose, 2), "mean_iou_single": round(sum(r.label_iou for r in recs) / len(recs), 4),
              "mean_iou_formula": round(sum(r.iou for r in recs) / len(recs), 4),
              "median_gain": round(float(gains.median()), 4), "examples": [r.formula for r in recs[:3]]}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
