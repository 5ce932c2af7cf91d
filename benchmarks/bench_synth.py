"""Time the generation of the default demo world (issue 3 target: under 2 minutes on 2 cores).

Usage: python benchmarks/bench_synth.py [--out DIR] [--workers N] [--scale F]
Prints the wall time, the CPU time of all processes (on a shared machine, CPU time / 2 estimates the
wall time on 2 idle cores), the per-clip rate and the label statistics of the generated world.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time

from mmit_interp.synth import SynthConfig, generate_world, load_truth


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the worker pool)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    """Generate the default world (optionally scaled down) and report timings and statistics."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="keep the world here (default: a temporary folder, deleted)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every count by this (e.g. 0.1 for a smoke run)")
    args = p.parse_args()
    d = SynthConfig()
    config = SynthConfig(train_clips=round(d.train_clips * args.scale), val_clips=round(d.val_clips * args.scale),
                         images=round(d.images * args.scale), action_frames=round(d.action_frames * args.scale),
                         workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or os.path.join(tmp, "world")
        t0, c0 = time.perf_counter(), _cpu_seconds()
        summary = generate_world(out, config, force=True, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        truth = load_truth(out)
        size_mb = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs) / 2**20
    st = summary.train_stats
    report = {
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "clips": summary.train_clips + summary.val_clips,
        "images": summary.images,
        "action_frames": summary.action_frames,
        "seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "load_average_1min_after": round(os.getloadavg()[0], 1),
        "clips_per_second": round((summary.train_clips + summary.val_clips) / wall, 1),
        "megabytes": round(size_mb, 1),
        "train_tail_ratio": st["tail_ratio"],
        "train_multi_label_share": round(st["multi_label_share"], 3),
        "train_missing_share": round(st["missing_share"], 3),
        "train_labels_per_clip": round(st["labels_per_clip"], 3),
        "clips_with_audio": sum(c.has_audio for c in truth),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
