"""A tiny trained model on a tiny synthetic world, built once and cached, for end-to-end analysis tests.

`trained_world()` returns `(world_dir, run_dir)` or calls `pytest.skip` with the reason when the
synthetic world generator or the training loop is not available. The pair is cached under
`$MMIT_TEST_CACHE` (default: the temp dir) keyed by the settings below, built in a scratch folder
and renamed into place under a file lock (concurrent sessions wait for one build), so later
sessions reuse it. The build uses one torch thread: on shared 2-core machines two threads run
5-10x slower than one when other processes compete for the cores.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

CLASSES = ("sliding", "bouncing", "spinning", "growing")
WORLD = dict(seed=3, train_clips=500, val_clips=60, images=240, action_frames=40, size=64, frames=16, fps=8,
             classes=CLASSES, missing_rate=0.0, actions_per_clip=(0.5, 0.5), bias_strength=0.9, bias_leak=0.0,
             clutter=0.0, noise=2.0, camera_shake=0.0, occlusion=0.0, actor_size=0.2, still_actors=1,
             still_scale=(0.8, 1.25), workers=2)
TRAIN = dict(model="i3d_r18", model_kwargs={"width": 16, "layer4_stride": 1}, loss="wlsep", frames=8, size=64,
             batch_size=16, epochs=12, lr=3e-3, workers=0, seed=0, device="cpu", amp=False, progress=False)


def _key() -> str:
    return hashlib.sha256(json.dumps([WORLD, TRAIN], sort_keys=True, default=str).encode()).hexdigest()[:12]


def trained_world() -> tuple[Path, Path]:
    """(world dir, trained run dir), built on first use."""
    try:
        from mmit_interp.synth import SynthConfig, generate_world
        from train.loop import TrainConfig, train
    except ImportError as e:
        pytest.skip(f"needs mmit_interp.synth and train.loop: {e}")
    root = Path(os.environ.get("MMIT_TEST_CACHE", tempfile.gettempdir())) / f"mmit-trained-{_key()}"
    world, run = root / "world", root / "run"
    done = run / "checkpoints" / "best.pt"
    if done.is_file():
        return world, run
    import torch

    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".mmit-trained-{_key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return world, run
        scratch = Path(tempfile.mkdtemp(prefix=".mmit-trained-build-", dir=root.parent))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            generate_world(scratch / "world", SynthConfig(**WORLD), progress=False)
            train(TrainConfig(data=str(scratch / "world"), out=str(scratch / "run"), **TRAIN))
            root.mkdir(parents=True, exist_ok=True)
            for name in ("world", "run"):
                os.replace(scratch / name, root / name)
        finally:
            torch.set_num_threads(threads)
            shutil.rmtree(scratch, ignore_errors=True)
    return world, run
