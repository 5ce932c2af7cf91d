"""The showcase main run (issue 12): a shipped checkpoint of the recipe whose CAMs follow the actors.

The demo's 2-core budget trains each visual model for 4-5 epochs. The recipe that localises and whose
planted bias runs through `dotted` units is the track model `i3d_r18_attend` (`models/attention.py`: a
trunk with 1x1 spatial kernels after layer1, an 8x8 last map that sees 3 frames, then an attention over
every (t, y, x) position keyed by each cell's input colour, so each position gathers its own actor's
motion along its track; a class-map head pooled by log-sum-exp, r = 5; docs/synth.md, probes 38-56).
It needs 90 epochs (~33 min on 2 cores), which the budget cannot pay for. So its BCE run is trained once
by `python -m mmit_demo.showcase OUT` (from scratch: world, still set, 2-D twin, 90 epochs) and kept in
`mmit_demo/showcase/` (0.2 MB) with a card of its provenance and validation numbers. The demo installs
it as the run `showcase` when its world is the one the checkpoint was trained on (the card stores that
world's config key), re-evaluates it, and refuses numbers that differ from the card's, so a changed
world or a changed pipeline cannot pass the shipped weights off as something else.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmit_interp.atomic import atomic_write_json

SHOWCASE = Path(__file__).parent / "showcase"
CHECKPOINT = SHOWCASE / "bce_track_attend.pt"
CARD = SHOWCASE / "showcase.json"
HISTORY = SHOWCASE / "metrics.jsonl"  # its training curves, for the dashboard's run page
METRICS = ("hit@1", "hit@5", "map_sample", "map_class", "map_micro")
TOLERANCE = 0.005  # evaluation on another machine may differ in the last float bits, not more
RECIPE: dict[str, Any] = dict(
    model="i3d_r18_attend",
    model_kwargs={"width": 8, "layer3_stride": 1, "layer4_stride": 1, "spatial_kernels": [3, 1, 1, 1],
                  "temporal_kernels": [1, 1, 1, 1], "head_r": 5.0, "attention_dim": 32, "attention_locality": 12.0,
                  "attention_guided": True},
    loss="bce", epochs=90, frames=8, size=64, batch_size=8, lr=3e-3, warmup_epochs=0.2, seed=0)


class ShowcaseMismatch(ValueError):
    """The shipped checkpoint does not belong to this world, or does not evaluate to its card's numbers."""


def world_key(synth: dict) -> str:
    """Key of a world's generation config (`asdict(SynthConfig)`); worker count does not change the world."""
    return hashlib.sha256(json.dumps({k: v for k, v in synth.items() if k != "workers"}, sort_keys=True,
                                     default=list).encode()).hexdigest()[:16]


def card() -> dict:
    """The shipped checkpoint's card: recipe, world key, validation metrics, rebuild command and time."""
    return json.loads(CARD.read_text())


def applies(synth: dict) -> bool:
    """Whether the shipped checkpoint was trained on the world this config generates."""
    return CARD.is_file() and CHECKPOINT.is_file() and HISTORY.is_file() and card()["world_key"] == world_key(synth)


def install_showcase(world: str | Path, run: str | Path, synth: dict, *, workers: int = 2, device: str = "auto",
                     progress: bool = False) -> dict:
    """Install the shipped checkpoint as run dir `run` on `world`, evaluate it on the validation split and
    check the metrics against the card (within `TOLERANCE`); returns what the demo reports."""
    from train.loop import evaluate_run

    from mmit_interp.checkpoint import file_sha256, read_checkpoint
    from mmit_interp.vocab import Vocabulary

    world, run = Path(world), Path(run)
    if not applies(synth):
        raise ShowcaseMismatch(f"{CHECKPOINT.name} was trained on another world (key {card()['world_key']}, "
                               f"this one {world_key(synth)})")
    ckpt = read_checkpoint(CHECKPOINT)
    vocab = Vocabulary.from_file(world / "moments_categories.txt")
    if list(ckpt["vocab"]) != list(vocab):
        raise ShowcaseMismatch(f"{CHECKPOINT.name}: classes {ckpt['vocab']} differ from {world}'s {list(vocab)}")
    if run.exists():
        shutil.rmtree(run)
    (run / "checkpoints").mkdir(parents=True)
    shutil.copyfile(CHECKPOINT, run / "checkpoints" / "best.pt")
    shutil.copyfile(HISTORY, run / "metrics.jsonl")
    vocab.to_file(run / "moments_categories.txt")
    atomic_write_json(run / "config.json", {**ckpt["config"], "data": str(world), "out": str(run),
                                            "showcase": str(CHECKPOINT)})
    m = evaluate_run(run, data=str(world), split="val", workers=workers, device=device, progress=progress)
    documented = card()["metrics"]
    off = {k: round(m[k] - documented[k], 6) for k in METRICS if abs(m[k] - documented[k]) > TOLERANCE}
    if off:
        raise ShowcaseMismatch(f"{CHECKPOINT.name} evaluates differently from its card on {world} (differences "
                               f"{off}): the world or the evaluation changed; rebuild it with "
                               f"`python -m mmit_demo.showcase OUT`")
    atomic_write_json(run / "eval.json", {"checkpoint": "best.pt", "showcase": str(CHECKPOINT), **m})
    return {"weights": str(CHECKPOINT), "sha256": file_sha256(CHECKPOINT),
            "metrics": {k: m[k] for k in METRICS}, "card": {k: documented[k] for k in METRICS}}


def rebuild_showcase(out: str | Path, *, write: bool = True, workers: int = 2, device: str = "auto",
                     progress: bool = True) -> dict:
    """Train the showcase run from nothing in `out` (the demo's world and still set, the recipe's 2-D twin,
    `RECIPE`) and, with `write`, replace the shipped checkpoint and card; returns the card."""
    from train.loop import TrainConfig, train
    from train.pretrain import PretrainConfig, pretrain_stills

    from mmit_interp.synth import generate_world

    from .pipeline import PRETRAIN_CATEGORIES, DemoConfig, demo_stills, demo_synth

    out = Path(out)
    t0 = time.time()
    cfg = DemoConfig(workers=workers, device=device, progress=progress).resolved()
    synth = demo_synth(cfg)
    stills = demo_stills(cfg, synth)
    generate_world(out / "world", synth, force=True, progress=progress)
    generate_world(out / "stills", stills, force=True, progress=progress)
    twin = out / "pretrain" / "still2d.pth"
    pretrain_stills(PretrainConfig(concepts=str(out / "stills" / "broden"), out=str(twin),
                                   model=RECIPE["model"], model_kwargs=RECIPE["model_kwargs"], size=RECIPE["size"],
                                   epochs=cfg.pretrain_epochs, categories=PRETRAIN_CATEGORIES, device=device,
                                   progress=progress))
    res = train(TrainConfig(data=str(out / "world"), out=str(out / "run"), inflate_from=str(twin), workers=workers,
                            device=device, progress=progress, **RECIPE))
    ev = json.loads((out / "run" / "eval.json").read_text())
    new = {"recipe": RECIPE, "world_key": world_key(asdict(synth)), "preset": cfg.preset, "seed": cfg.seed,
           "best_epoch": res.metrics.get("epoch", ev.get("epoch")), "metrics": {k: ev[k] for k in METRICS},
           "seconds": round(time.time() - t0, 1), "built": time.strftime("%Y-%m-%d"),
           "command": "python -m mmit_demo.showcase OUT"}
    if write:
        SHOWCASE.mkdir(exist_ok=True)
        shutil.copyfile(out / "run" / "checkpoints" / "best.pt", CHECKPOINT)
        shutil.copyfile(out / "run" / "metrics.jsonl", HISTORY)
        atomic_write_json(CARD, new)
    return new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmit_demo.showcase", description=__doc__.splitlines()[0])
    p.add_argument("out", help="scratch folder for the world, still set, twin and run")
    p.add_argument("--no-write", action="store_true", help="train and report, but keep the shipped checkpoint")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    c = rebuild_showcase(a.out, write=not a.no_write, workers=a.workers, device=a.device)
    print(json.dumps(c, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
