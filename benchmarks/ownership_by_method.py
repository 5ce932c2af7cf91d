"""Which action is where, read out of one model by every explanation method (issue 12's ownership).

`mmit-analyze localisation` scores the CAM only; this scores the same pooled records (own-map pointing,
max-of-maps ownership, box ownership; `localisation`'s rules, clip min-max normalisation) for CAM,
Grad-CAM at earlier stages, Grad-CAM++, occlusion (8x8 cells per frame), RISE (256 masks on an 8x8 grid
per frame), Integrated Gradients (16 steps; its positive part, its absolute value, that blurred by a
Gaussian) and contrastive CAMs (a class's CAM minus a mean of the classes' CAMs), so one can tell whether
a model's missing ownership is in the model or in the CAM's read-out. About 3.5 s per clip on 2 cores
for the demo's track model.

    python benchmarks/ownership_by_method.py demo_out/runs/showcase demo_out/world [--max-clips N]
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from mmit_interp.checkpoint import load_model
from mmit_interp.dataset import ClipTransform
from mmit_interp.explain.cam import GradCAM, cam_for
from mmit_interp.explain.localisation import boxes_from_truth, box_ownership, clip_inputs, ownership, pointing
from mmit_interp.explain.mcam import max_of_cams
from mmit_interp.explain.methods import RISE, GradCAMPlusPlus, IntegratedGradients, Occlusion, blurred
from mmit_interp.analysis.trunk import stages

BLURS = (2.0, 4.0)


def methods(model: torch.nn.Module) -> dict:
    """The read-outs compared: the CAM, Grad-CAM at each stage before the last, and the input-space methods."""
    out = {"cam": cam_for(model), "gradcam++": GradCAMPlusPlus(model)}
    out.update({f"gradcam@{s}": GradCAM(model, s) for s in stages(model)[1:-1]})
    out.update({"occlusion": Occlusion(model, cells=(1, 8, 8)), "rise": RISE(model, n_masks=256, cells=(1, 8, 8)),
                "ig": IntegratedGradients(model, steps=16)})
    return out


def variants(name: str, maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """One method's maps `(S, T, H, W)`, and for IG its positive part, absolute value and blurred absolute value."""
    if name != "ig":
        return {name: maps}
    a = maps.abs()
    return {"ig (positive part)": maps.clamp(min=0), "ig |.|": a,
            **{f"ig |.| blurred {s:g} px": blurred(a[:, None], s)[:, 0] for s in BLURS}}


def contrasts(model: torch.nn.Module, n_classes: int, inp: dict) -> dict[str, torch.Tensor]:
    """The scored classes' CAMs minus the mean CAM of every class, of the scored classes, or of every class
    weighted by its score: a read-out that removes what the classes' maps share (the actors' places)."""
    res = cam_for(model)(inp["video"], classes=list(range(n_classes)), **inp["extra"])
    every, p, sc = res.maps[0], torch.sigmoid(res.logits[0]), torch.as_tensor(inp["classes"])
    return {"cam - mean(all classes)": every[sc] - every.mean(0),
            "cam - mean(scored classes)": every[sc] - every[sc].mean(0),
            "cam - score-weighted mean": every[sc] - (p.view(-1, 1, 1, 1) * every).sum(0) / p.sum()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("world")
    ap.add_argument("--split", default="val")
    ap.add_argument("--max-clips", type=int)
    args = ap.parse_args()
    model, meta = load_model(args.run)
    vocab, tf = meta["vocab"], ClipTransform.from_dict(meta["transforms"])
    ms = methods(model)
    rec: dict[tuple[str, str], list[float]] = defaultdict(list)
    secs: dict[str, float] = defaultdict(float)
    clips = boxes_from_truth(args.world, args.split)[: args.max_clips]
    for clip in clips:
        inp = clip_inputs(model, vocab, clip, tf)
        if inp is None:
            continue
        masks, present = inp["masks"], inp["present"]
        for name, method in ms.items():
            t0 = time.perf_counter()
            res = method(inp["video"], classes=inp["classes"], **inp["extra"])
            secs[name] += time.perf_counter() - t0
            maps_by = variants(name, res.maps[0].detach())
            if name == "cam":
                maps_by.update(contrasts(model, len(vocab), inp))
            for label, maps in maps_by.items():
                base = max_of_cams(maps, res.classes[0], "clip")
                owner, norm = base.owner.numpy(), base.maps.numpy()
                for t in range(masks.shape[1]):
                    rec[label, "pointing"] += [pointing(norm[j, t], masks[j, t]) for j in range(len(norm)) if present[j, t]]
                    if present[:, t].sum() < 2:
                        continue
                    rec[label, "ownership"] += [acc for _, acc, _ in ownership(owner[t], masks[:, t]) if acc is not None]
                    rec[label, "box_ownership"] += [hit for _, hit in box_ownership(norm[:, t], masks[:, t])]
    print(f"{len(clips)} clips of {args.world}:{args.split}; pooled records as `mmit-analyze localisation`")
    print(f"{'read-out':28s} {'pointing':>9s} {'ownership':>10s} {'box own.':>9s} {'records':>8s} {'s/clip':>7s}")
    for label in dict.fromkeys(k[0] for k in rec):
        cost = secs.get(label.split(" ")[0], 0.0) / max(len(clips), 1)
        print(f"{label:28s} {np.mean(rec[label, 'pointing']):9.3f} {np.mean(rec[label, 'ownership']):10.3f} "
              f"{np.mean(rec[label, 'box_ownership']):9.3f} {len(rec[label, 'ownership']):8d} {cost:7.2f}")


if __name__ == "__main__":
    main()
