"""Generate a whole synthetic world folder (layout in docs/CONTRACTS.md and docs/synth.md)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .clips import write_clip
from .concepts import ConceptRecord, add_record, concept_record, open_broden, write_action_regions, write_boxes_csv
from .render import render_clip, render_still
from .truth import ActorTruth, ClipTruth
from .world import CLASSES, ClipSpec, SynthConfig, class_weights, label_stats, sample_clips

FORMAT = "mmit-synth/1"
OUTPUTS = ("world.json", "moments_categories.txt", "trainingSet.csv", "validationSet.csv", "truth.jsonl",
           "videos", "broden", "action_regions")


@dataclass
class WorldSummary:
    """What ``generate_world`` wrote and how long it took."""

    out: Path
    train_clips: int
    val_clips: int
    images: int
    action_frames: int
    action_boxes: int
    seconds: float
    train_stats: dict
    val_stats: dict


_JOB: dict = {}


def _init_worker(out: str, config: SynthConfig) -> None:
    """Pool initializer: remember the output folder and configuration in the worker."""
    _JOB["out"], _JOB["config"] = Path(out), config


def _run_task(task: tuple) -> tuple:
    """Render one concept image (``("still", i)``) or one clip with its action-region frames."""
    out, config = _JOB["out"], _JOB["config"]
    if task[0] == "still":
        i = task[1]
        still = render_still(np.random.default_rng(np.random.SeedSequence([config.seed, 3, i])), config)
        return ("still", i, concept_record(still, i, config))
    _, spec, n_regions = task
    rendered = render_clip(spec, config)
    path = out / "videos" / spec.path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clip(path, rendered.frames, config.fps, rendered.audio, config.audio_rate, config.crf)
    rows = write_action_regions(out / "action_regions" / "frames", spec, rendered, n_regions, config) if n_regions else []
    return ("clip", spec, rendered.boxes, rendered.audio is not None, rows)


def _region_counts(clips: list[ClipSpec], total: int) -> dict[str, int]:
    """Spread ``total`` action-region frames over clips with a visible actor, validation clips first."""
    cands = [c for c in clips if c.split == "val" and any(a.visible for a in c.actors)]
    cands += [c for c in clips if c.split == "train" and any(a.visible for a in c.actors)]
    if not cands or total <= 0:
        return {}
    base, extra = divmod(total, len(cands))
    counts = {c.name: base + (1 if j < extra else 0) for j, c in enumerate(cands)}
    return {k: v for k, v in counts.items() if v}


def _clip_truth(spec: ClipSpec, boxes: list, has_audio: bool, config: SynthConfig) -> ClipTruth:
    """Assemble the truth record of a rendered clip."""
    it = iter(boxes)
    actors = [ActorTruth(a.action, a.shape, a.colour, a.texture, a.visible, a.audible, next(it) if a.visible else None)
              for a in spec.actors]
    return ClipTruth(spec.path, spec.split, list(spec.labels), list(spec.train_labels), spec.scene, config.frames,
                     config.fps, config.size, config.size, has_audio, spec.audible, actors)


def world_description(config: SynthConfig, clips: list[ClipSpec]) -> dict:
    """The content of world.json: config, classes with flags and weights, bias, conventions, stats."""
    weights = class_weights(config)
    bias = {
        "active": config.bias_active,
        "action": config.bias_action,
        "texture": config.bias_texture,
        "strength": config.bias_strength,
        "leak": config.bias_leak,
        "description": (f"actors doing '{config.bias_action}' carry texture '{config.bias_texture}' with probability "
                        f"{config.bias_strength} (else another texture); actors doing any other action carry it "
                        f"with probability {config.bias_leak}; unbiased chance would be 1/5"
                        if config.bias_active else "off: every actor's texture is uniform over the 5 textures"),
    }
    return {
        "format": FORMAT,
        "seed": config.seed,
        "config": config.to_dict(),
        "classes": [
            {"index": i, "name": n, "visible": CLASSES[n].visible, "audible": CLASSES[n].audible,
             "similar": CLASSES[n].similar, "description": CLASSES[n].description, "weight": round(float(w), 6)}
            for i, (n, w) in enumerate(zip(config.class_names, weights))
        ],
        "bias": bias,
        "labels": {
            "training": f"incomplete: {config.missing_rate:.0%} of the true (clip, action) pairs left out, "
                        "at least one label kept per clip",
            "validation": "complete (every true action)",
            "truth": "truth.jsonl holds the complete labels of every clip",
        },
        "boxes": "x1,y1,x2,y2 in frame pixels, x2/y2 exclusive, bounding the actor's visible pixels; null if unseen",
        "audio": "mono AAC at audio_rate where the clip has an audible action; no audio stream otherwise",
        "stats": {
            "train": label_stats([c for c in clips if c.split == "train"], config),
            "val": label_stats([c for c in clips if c.split == "val"], config),
        },
    }


def _prepare(out: Path, force: bool) -> None:
    """Create ``out``; refuse a non-empty folder unless ``force``, then clear only our own outputs."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"{out} is not empty; pass force=True (--force) to overwrite the world in it")
        for name in OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "action_regions" / "frames").mkdir(parents=True, exist_ok=True)


def generate_world(out: str | os.PathLike, config: SynthConfig | None = None, force: bool = False,
                   progress: bool = True) -> WorldSummary:
    """Write a complete synthetic world to ``out``; the same config (seed) gives the same files."""
    config = config or SynthConfig()
    start = time.perf_counter()
    out = Path(out)
    _prepare(out, force)
    clips = sample_clips(config)
    regions = _region_counts(clips, config.action_frames)
    tasks: list[tuple] = [("still", i) for i in range(config.images)]
    tasks += [("clip", c, regions.get(c.name, 0)) for c in clips]

    truths: dict[str, ClipTruth] = {}
    rows: list[tuple] = []
    writer = open_broden(out / "broden", config) if config.images else None
    bar = tqdm(total=len(tasks), desc="mmit-synth", unit="item", disable=not progress)

    def consume(result: tuple) -> None:
        if result[0] == "still":
            record: ConceptRecord = result[2]
            add_record(writer, record, result[1])
        else:
            _, spec, boxes, has_audio, region_rows = result
            truths[spec.name] = _clip_truth(spec, boxes, has_audio, config)
            rows.extend(region_rows)
        bar.update()

    if config.workers > 1:
        with mp.get_context("fork").Pool(config.workers, _init_worker, (str(out), config)) as pool:
            for result in pool.imap(_run_task, tasks, chunksize=8):
                consume(result)
    else:
        _init_worker(str(out), config)
        for task in tasks:
            consume(_run_task(task))
    bar.close()
    if writer is not None:
        writer.close()

    names = config.class_names
    index = {n: i for i, n in enumerate(names)}
    (out / "moments_categories.txt").write_text("".join(f"{n},{i}\n" for i, n in enumerate(names)), encoding="utf-8")
    for split, fname in (("train", "trainingSet.csv"), ("val", "validationSet.csv")):
        lines = [",".join([c.path] + [str(index[lab]) for lab in c.train_labels]) + "\n" for c in clips if c.split == split]
        (out / fname).write_text("".join(lines), encoding="utf-8")
    with open(out / "truth.jsonl", "w", encoding="utf-8") as f:
        for c in clips:
            f.write(truths[c.name].to_json() + "\n")
    write_boxes_csv(out / "action_regions" / "boxes.csv", rows)
    desc = world_description(config, clips)
    (out / "world.json").write_text(json.dumps(desc, indent=1) + "\n", encoding="utf-8")
    return WorldSummary(out, config.train_clips, config.val_clips, config.images, len({r[0] for r in rows}), len(rows),
                        time.perf_counter() - start, desc["stats"]["train"], desc["stats"]["val"])
