"""`mmit-cam` on an imported torchvision model: R(2+1)D-18 at 16x112x112 on a 3-s clip vs its forward
pass (target: within 2x the forward time).

    python benchmarks/bench_own_model.py [--reps 5] [--threads 2] [--arch r2plus1d_18] [--out DIR]

The model is imported as `mmit-import --torchvision ARCH` does (random weights: the cost does not
depend on them) over the 313 M-MiT classes, then timed interleaved per rep (PERF-NOTES: shared
machines): one forward of the clip tensor (the model as `load_model` gives it, NDHWC convs), the
top-5 CAMs (`cam_for`), and `analyze_clip` warm (decode, CAMs, mCAM, every frame image, the overlay
video, the store: what `mmit-cam` and the dashboard pay per clip). Ratios are medians of per-rep
ratios. `mmit-cam` as a fresh process (incl. `import torch` and the model load) is timed 3 times.
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

from mmit_interp.analysis.clip_analysis import analyze_clip
from mmit_interp.checkpoint import load_model
from mmit_interp.explain.cam import cam_for
from mmit_interp.import_model import ModelSource, import_run
from mmit_interp.vocab import mmit_v1_vocabulary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cam import make_clip  # noqa: E402  (the same 3-s 340x256 H.264 clip as bench_cam)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    ap.add_argument("--arch", default="r2plus1d_18")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--out", help="keep the run and clip here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(a.out or tempfile.mkdtemp(prefix="bench-own-"))
    work.mkdir(parents=True, exist_ok=True)
    clip = make_clip(work / "clip.mp4")
    vocab = work / "classes.txt"
    mmit_v1_vocabulary().to_file(vocab)
    torch.manual_seed(0)
    run = import_run(ModelSource("torchvision", a.arch, str(vocab), frames=a.frames, size=a.size), work / a.arch)
    model, _ = load_model(run)
    x = torch.randn(1, 3, a.frames, a.size, a.size)

    def forward():
        with torch.no_grad():
            model(x)

    fns = {"forward_s": forward, "cam_top5_s": lambda: cam_for(model)(x, top_k=5),
           "analyze_clip_s": lambda: analyze_clip(run, clip, top_k=5)}
    for fn in fns.values():
        fn()
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(a.reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    f = np.array(times["forward_s"])
    res = {k: statistics.median(v) for k, v in times.items()}
    res["cam_over_forward"] = float(np.median(np.array(times["cam_top5_s"]) / f))
    res["analyze_clip_over_forward"] = float(np.median(np.array(times["analyze_clip_s"]) / f))
    fresh = []
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from mmit_interp.cli import cam_main; cam_main()", str(clip),
                        "--run", str(run)], check=True, capture_output=True, env=env)
        fresh.append(time.perf_counter() - t)
    res["mmit_cam_process_s"] = statistics.median(fresh)
    res["mmit_cam_process_over_forward"] = res["mmit_cam_process_s"] / res["forward_s"]
    out = {"arch": a.arch, "input": [a.frames, a.size, a.size], "threads": torch.get_num_threads(),
           "load_avg": {"start": load0, "end": os.getloadavg()}, **{k: round(v, 4) for k, v in res.items()}}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
