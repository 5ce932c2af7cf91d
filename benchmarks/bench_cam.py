"""CAM cost: top-5 CAMs of one clip vs one forward pass (target <= 1.2x) vs one backward per class
(the grad-cam way), and the whole `mmit-cam` on a 3-s clip (demo model; I3D-R50 at 16x224).

    python benchmarks/bench_cam.py [--reps 7] [--threads 1] [--no-r50] [--out DIR]

Forward, CAM and grad-cam are timed interleaved (one of each per rep, so load changes hit all
three alike); the ratios are medians of per-rep ratios (shared noisy machines: PERF-NOTES.md).
`mmit-cam` is timed twice: in-process and warm (`analyze_clip`, what the dashboard pays per
upload) and as a fresh process (includes `import torch`, model load and checkpoint hashing;
median and min).
`--threads` sets torch's thread count here and OMP_NUM_THREADS for the fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmit_interp.explain.cam import LinearCAM
from mmit_interp.checkpoint import save_checkpoint
from mmit_interp.analysis.clip_analysis import analyze_clip
from mmit_interp.dataset import ClipTransform
from mmit_interp.models import build_model, set_conv3d_format
from mmit_interp.explain.render import write_video
from mmit_interp.vocab import mmit_v1_vocabulary


def median_time(fn, reps: int) -> float:
    """Median wall time of `fn()` over `reps` runs after one warm-up."""
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def grad_cam_per_class(model: torch.nn.Module, x: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The grad-cam way: one forward, then one backward per class (retain_graph), weights = mean gradient."""
    f = model.forward_features(x)
    logits = model.forward_head(f)
    maps = []
    for c in logits[0].topk(k).indices.tolist():
        g = torch.autograd.grad(logits[0, c], f, retain_graph=True)[0]
        maps.append(torch.einsum("k,kthw->thw", g[0].flatten(1).mean(1), f[0].detach()))
    return torch.nn.functional.interpolate(torch.stack(maps)[None], size=x.shape[2:], mode="trilinear",
                                           align_corners=False)


def cam_costs(model: torch.nn.Module, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Forward, single-pass top-5 CAM (incl. upsampling to the frames), grad-cam way: interleaved reps."""
    def fwd():
        with torch.no_grad():
            model(x)

    def cam():
        LinearCAM(model)(x, top_k=5)

    fns = {"forward_s": fwd, "cam_top5_s": cam, "gradcam_5_backwards_s": lambda: grad_cam_per_class(model, x)}
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    out = {k: statistics.median(v) for k, v in times.items()}
    f = np.array(times["forward_s"])
    out["cam_over_forward"] = float(np.median(np.array(times["cam_top5_s"]) / f))
    out["gradcam_over_forward"] = float(np.median(np.array(times["gradcam_5_backwards_s"]) / f))
    return out


def make_run(root: Path, name: str, kwargs: dict, frames: int, size: int) -> Path:
    """A run dir with an untrained model over the 313 M-MiT classes (timing does not depend on training)."""
    torch.manual_seed(0)
    model = build_model(name, 313, **kwargs)
    save_checkpoint(root / "checkpoints" / "best.pt", model, model_name=name, model_kwargs=kwargs,
                    vocab=mmit_v1_vocabulary(), transforms=ClipTransform(frames, size).to_dict())
    return root


def make_clip(path: Path, seconds: float = 3.0, fps: int = 30, w: int = 340, h: int = 256) -> Path:
    """A 3-s H.264 clip with a moving square (decode cost like a small real clip)."""
    frames = []
    for i in range(int(seconds * fps)):
        f = np.full((h, w, 3), 60, np.uint8)
        x = 10 + 3 * i
        f[100:160, x: x + 60] = (220, 60, 40)
        frames.append(f)
    return write_video(frames, path, fps=fps)


def whole_cam(run: Path, clip: Path, reps: int, threads: int) -> dict[str, float]:
    """`analyze_clip` warm in-process (median) and `mmit-cam` as a fresh process (median and min of 3)."""
    warm = median_time(lambda: analyze_clip(run, clip, top_k=5), reps)
    fresh = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from mmit_interp.cli import cam_main; cam_main()", str(clip),
                        "--run", str(run)], check=True, capture_output=True, env=env)
        fresh.append(time.perf_counter() - t)
    return {"analyze_clip_warm_s": warm, "mmit_cam_process_s": statistics.median(fresh),
            "mmit_cam_process_min_s": min(fresh)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    ap.add_argument("--no-r50", action="store_true", help="skip the I3D-R50 16x224 part")
    ap.add_argument("--out", help="keep the temporary runs here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(a.out or tempfile.mkdtemp(prefix="bench-cam-"))
    clip = make_clip(work / "clip.mp4")
    res: dict[str, dict] = {"threads": {"torch": torch.get_num_threads()}, "load_avg": {"start": os.getloadavg()}}
    cases = [("demo i3d_r18 w16 8x64", "i3d_r18", {"width": 16}, 8, 64)]
    if not a.no_r50:
        cases.append(("i3d_r50 16x224", "i3d_r50", {}, 16, 224))
    for label, name, kw, t, s in cases:
        run = make_run(work / name, name, kw, t, s)
        model = set_conv3d_format(build_model(name, 313, **kw), True).eval()  # NDHWC, as load_model gives it
        x = torch.randn(1, 3, t, s, s)
        reps = a.reps if s <= 64 else max(3, a.reps // 2)
        res[label] = {**cam_costs(model, x, reps), **whole_cam(run, clip, reps, a.threads)}
        print(label, json.dumps({k: round(v, 4) for k, v in res[label].items()}), flush=True)
    res["load_avg"]["end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
