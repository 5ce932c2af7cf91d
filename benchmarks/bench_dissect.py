"""Benchmark: NetDissect-Lite-style naive tally vs the streaming engine (issue 4).

Same synthetic features and masks for both: 512 units, 7x7 maps, 112x112 masks, 5 categories,
~130 labels. The naive reference keeps every feature as float64 and loops per image and per unit
(PIL float bilinear upsampling, ``argwhere``, ``bincount``), like NetDissect-Lite's ``tally_job``;
ours is ``dissect_stream``. Both run single-threaded by default (``--threads``).
Both random and spatially smooth features are run, with the share of unit maps crossing the
threshold printed beside each figure. Peak memory of ours is measured in fresh subprocesses at
N and 4N images. Run: ``python benchmarks/bench_dissect.py [--images 2000] [--naive-images 150]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dissect.engine import dissect_stream  # noqa: E402

UNITS, H, SEG, BATCH = 512, 7, 112, 50
# category: (number of labels, planes per image, whole-image?)
CATS = {"color": (11, 1, False), "object": (60, 1, False), "part": (35, 2, False),
        "material": (20, 1, False), "scene": (5, 0, True)}


def label_ranges() -> dict[str, range]:
    """Global label numbers per category (1-based, contiguous)."""
    out, start = {}, 1
    for c, (n, _, _) in CATS.items():
        out[c] = range(start, start + n)
        start += n
    return out


NUM_LABELS = sum(n for n, _, _ in CATS.values())
PRIMARY = torch.tensor([-1] + [ci for ci, (n, _, _) in enumerate(CATS.values()) for _ in range(n)])


def make_batch(seed: int, n: int, smooth: bool) -> tuple[torch.Tensor, dict]:
    """Deterministic features (n, 512, 7, 7) and a collated label batch for images seed*n ..."""
    g = torch.Generator().manual_seed(seed)
    if smooth:
        base = torch.randn(n, UNITS, 3, 3, generator=g)
        feats = F.interpolate(base, size=(H, H), mode="bilinear", align_corners=False)
        feats = feats * torch.rand(n, UNITS, 1, 1, generator=g).pow(2) * 3
    else:
        feats = torch.randn(n, UNITS, H, H, generator=g)
    ranges = label_ranges()
    planes, pcat = [], []
    for ci, (c, (_, np_, whole)) in enumerate(CATS.items()):
        for k in range(np_):  # planes of one category draw from disjoint label subsets (no double counts)
            r = torch.tensor(list(ranges[c])[k::np_])
            choice = r[torch.randint(len(r), (n, 4), generator=g)]
            choice[:, 0] = 0
            grid = torch.gather(choice, 1, torch.randint(4, (n, 64), generator=g)).view(n, 8, 8)
            planes.append(grid.repeat_interleave(14, 1).repeat_interleave(14, 2).int())
            pcat.append(ci)
    scene = ranges["scene"]
    return feats, {
        "pixel": torch.stack(planes, 1),
        "plane_cat": torch.tensor(pcat).expand(n, -1).clone(),
        "whole": torch.randint(scene.start, scene.stop, (n, 1), generator=g),
        "whole_cat": torch.full((n, 1), len(CATS) - 1),
        "index": torch.arange(seed * n, seed * n + n),
    }


def run_ours(images: int, smooth: bool) -> tuple[float, float, dict]:
    """Time the engine over ``images`` images (features generated per batch, never stored)."""
    nb = images // BATCH

    def batches():
        for b in range(nb):
            f, lab = make_batch(b, BATCH, smooth)
            yield {"L": f}, lab

    gen = time.perf_counter()
    for _ in batches():
        pass
    gen = time.perf_counter() - gen
    t0 = time.perf_counter()
    res = dissect_stream(batches, nb * BATCH, PRIMARY, [str(i) for i in range(NUM_LABELS + 1)],
                         list(CATS), quantile=0.005)["L"]
    t = time.perf_counter() - t0 - 2 * gen  # data generation (both passes) is not the engine's cost
    return nb * BATCH / t, t, {"thr": res.thresholds, "inter": res.tally.inter, "lite": res.tally.act_lite}


def bilinear_matrix(out: int, inp: int) -> np.ndarray:
    """(out, inp) float64 matrix of bilinear align_corners=False weights."""
    m = np.zeros((out, inp))
    for d in range(out):
        s = max((d + 0.5) * inp / out - 0.5, 0.0)
        i0 = min(int(s), inp - 1)
        i1 = min(i0 + 1, inp - 1)
        m[d, i0] += 1 - (s - i0)
        m[d, i1] += s - i0
    return m


def run_naive(images: int, smooth: bool, upsample: str = "pil") -> tuple[float, float, dict]:
    """NetDissect-Lite's approach: all features kept in float64, per-image, per-unit Python loops.

    ``upsample="pil"`` resizes each map as Lite does (PIL bilinear in float32 mode, its
    ``imresize(..., mode='F')``); ``"matmul"`` uses exact float64 interpolation matrices instead
    (a faster, stronger baseline that is not Lite's code path).
    """
    nb = max(1, images // BATCH)
    feats, labels = [], []
    for b in range(nb):
        f, lab = make_batch(b, BATCH, smooth)
        feats.append(f.double().numpy())
        labels.append(lab)
    feats = np.concatenate(feats)
    t0 = time.perf_counter()
    n = feats.shape[0]
    k = int(0.005 * n * H * H)
    thr = np.array([np.sort(feats[:, u].ravel())[n * H * H - 1 - k] for u in range(UNITS)])
    R = bilinear_matrix(SEG, H)
    catof = np.zeros((NUM_LABELS + 1, len(CATS)))
    catof[np.arange(1, NUM_LABELS + 1), PRIMARY[1:].numpy()] = 1
    inter = np.zeros((UNITS, NUM_LABELS + 1))
    lite = np.zeros((UNITS, len(CATS)))
    for i in range(n):
        lab = labels[i // BATCH]
        j = i % BATCH
        pixels = lab["pixel"][j].numpy()
        scalars = [int(s) for s in lab["whole"][j] if s > 0]
        for u in range(UNITS):
            fm = feats[i, u]
            if fm.max() > thr[u]:
                if upsample == "pil":
                    up = np.asarray(Image.fromarray(fm.astype(np.float32), mode="F").resize((SEG, SEG), Image.BILINEAR))
                else:
                    up = R @ fm @ R.T
                idx = np.argwhere(up > thr[u])
                tally_bt = np.bincount(pixels[:, idx[:, 0], idx[:, 1]].ravel(), minlength=NUM_LABELS + 1)
                tally_bt[0] = 0
                tally_cat = tally_bt @ catof
                inter[u] += tally_bt
                for s in scalars:
                    tally_cat = tally_cat + catof[s]
                    inter[u, s] += len(idx)
                lite[u] += len(idx) * (tally_cat > 0)
    t = time.perf_counter() - t0
    return n / t, t, {"thr": thr, "inter": inter, "lite": lite}


def crossing_share(images: int, smooth: bool) -> float:
    """Share of (image, unit) raw maps whose max exceeds the unit's threshold."""
    nb = max(1, images // BATCH)
    f = torch.cat([make_batch(b, BATCH, smooth)[0] for b in range(nb)])
    vals = f.permute(1, 0, 2, 3).reshape(UNITS, -1)
    k = int(0.005 * vals.shape[1])
    thr = torch.sort(vals, 1, descending=True).values[:, k]
    return float((f.amax((2, 3)) > thr[None]).float().mean())


def peak_rss_mb(images: int, smooth: bool) -> float:
    """Peak RSS (MB) of a fresh process running ours on ``images`` images."""
    code = (f"import sys; sys.argv=['x']; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import bench_dissect as b, resource, torch; torch.set_num_threads(1); b.run_ours({images}, {smooth}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the comparison and print a summary table (and JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000, help="images for our engine")
    ap.add_argument("--naive-images", type=int, default=150, help="images for the (slow) naive reference")
    ap.add_argument("--memory-images", type=int, default=500, help="N for the N vs 4N peak-memory check")
    ap.add_argument("--naive-upsample", choices=["pil", "matmul"], default="pil",
                    help="naive upsampling: PIL float bilinear as NetDissect-Lite, or exact float64 matrices")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: fair vs the single-threaded naive loop); with more than 1 on a busy "
                         "machine set OMP_WAIT_POLICY=PASSIVE, or spinning OpenMP threads stall every small op")
    ap.add_argument("--json", type=str, default=None, help="write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = {"threads": torch.get_num_threads(), "images": args.images, "naive_images": args.naive_images,
              "naive_upsample": args.naive_upsample}
    for smooth in (False, True):
        kind = "smooth" if smooth else "random"
        share = crossing_share(args.images, smooth)
        naive_rate, naive_t, ref = run_naive(args.naive_images, smooth, args.naive_upsample)
        ours_small = run_ours(args.naive_images // BATCH * BATCH, smooth)[2]
        diff = float((ours_small["inter"].double().numpy() - ref["inter"]).__abs__().sum() / max(ref["inter"].sum(), 1))
        rate, t, _ = run_ours(args.images, smooth)
        report[kind] = {"crossing_share": share, "naive_img_s": naive_rate, "ours_img_s": rate,
                        "speedup": rate / naive_rate, "ours_seconds": t, "intersection_rel_diff": diff}
        print(f"{kind:7s} crossing {share:6.1%}  naive {naive_rate:7.1f} img/s ({args.naive_images} img)  "
              f"ours {rate:7.1f} img/s ({args.images} img, {t:.1f} s)  speedup {rate / naive_rate:5.1f}x  "
              f"|I_ours - I_naive| / |I_naive| = {diff:.1e}", flush=True)
    m1 = peak_rss_mb(args.memory_images, False)
    m4 = peak_rss_mb(4 * args.memory_images, False)
    report["peak_rss_mb"] = {str(args.memory_images): m1, str(4 * args.memory_images): m4, "ratio": m4 / m1}
    print(f"peak RSS ours: {m1:.0f} MB at {args.memory_images} images, {m4:.0f} MB at "
          f"{4 * args.memory_images} images (x{m4 / m1:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
