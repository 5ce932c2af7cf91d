"""Difficulty and learnability of a synthetic world: train the demo's small model, compare to the prior.

Usage: python benchmarks/bench_synth_learn.py WORLD [--epochs 6] [--inflate-from still2d.pth] [--run DIR]
Runs `mmit-train` (the demo's i3d_r18, width 8, 8 x 64 x 64, batch 8; `--inflate-from` the 2-D twin
written by `mmit-pretrain`, as the demo does) on WORLD (made with `mmit-synth`), then prints map_sample
and map_class against the label-prior baseline and the mean per-class AP of the head, middle and
tail thirds of the classes (by training frequency) and of the heard-only classes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def summarise(world: Path, run: Path) -> dict:
    """Compare a finished run's eval.json with its baseline.json, per-class AP grouped by frequency."""
    ev = json.loads((run / "eval.json").read_text())
    base = json.loads((run / "baseline.json").read_text())
    classes = json.loads((world / "world.json").read_text())["classes"]
    counts = np.array(json.loads((run / "class_weights.json").read_text())["train_counts"])
    ap = np.array(ev["per_class_ap"], float)
    order = np.argsort(-counts, kind="stable")
    thirds = np.array_split(order, 3)
    heard = [c["index"] for c in classes if not c["visible"]]
    return {
        "map_sample": round(ev["map_sample"], 3), "map_sample_prior": round(base["map_sample"], 3),
        "map_class": round(ev["map_class"], 3), "map_class_prior": round(base["map_class"], 3),
        "hit@1": round(ev["hit@1"], 3),
        "ap_head_third": round(float(np.nanmean(ap[thirds[0]])), 3),
        "ap_middle_third": round(float(np.nanmean(ap[thirds[1]])), 3),
        "ap_tail_third": round(float(np.nanmean(ap[thirds[2]])), 3),
        "ap_heard_only": round(float(np.nanmean(ap[heard])), 3),
        "per_class_ap": {classes[i]["name"]: round(float(ap[i]), 3) for i in order},
    }


def main() -> None:
    """Train on the world and print the comparison as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("world")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--model-kwargs", default='{"width": 8, "layer4_stride": 1}')
    p.add_argument("--inflate-from", help="2-D weights to inflate (e.g. demo_out/pretrain/still2d.pth)")
    p.add_argument("--max-train-clips", type=int)
    p.add_argument("--run", help="run dir to keep (default: temporary)")
    p.add_argument("--loss", default="bce")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run or Path(tmp) / "run")
        cmd = [sys.executable, "-m", "train.cli", "--data", args.world, "--out", str(run), "--model", "i3d_r18",
               "--model-kwargs", args.model_kwargs, "--frames", "8", "--size", "64", "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lr", "3e-3", "--warmup-epochs", "0.2", "--loss", args.loss,
               "--workers", "1", "--no-progress"]
        if args.inflate_from:
            cmd += ["--inflate-from", args.inflate_from]
        if args.max_train_clips:
            cmd += ["--max-train-clips", str(args.max_train_clips)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        report = {"epochs": args.epochs, "inflate_from": args.inflate_from, "train_seconds": round(time.perf_counter() - t0, 1),
                  **summarise(Path(args.world), run)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
