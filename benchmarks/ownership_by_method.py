"""Which action is where, read out of one model by every explanation method (issue 12's ownership).

`mmit-analyze localisation` scores the CAM only; this scores the same pooled records (own-map pointing,
max-of-maps ownership, box ownership; `localisation`'s rules, clip min-max normalisation) for CAM,
Grad-CAM at earlier stages, Grad-CAM++, occlusion (8x8 cells per frame), RISE (256 masks on an 8x8 grid
per frame), Integrated Gradients (16 steps; its positive part, its absolute value, that blurred by a
Gaussian) and contrastive CAMs (a class's CAM minus a mean of the classes' CAMs), so one can tell whether
a model's missing ownership is in the model or in the CAM's read-out. About 3.5 s per clip on 2 cores
for the demo's track model; `--cam-only` skips the other methods (~0.2 s per clip).

Then the CAM's own diagnostics (`diagnose`): for an action and another action's actor in the same clip,
whether the action's CAM is higher on its own actor (mean over exclusive box pixels, all sampled frames)
and how much its score drops when either actor's exclusive box is replaced by the blurred clip (the
model's own answer to "which actor is this action's"); max-of-CAMs under other per-class
normalisations; and, in two-action clips, the best per-clip affine rescaling of one map against the
other chosen with the truth (an upper bound for any such normalisation rule).

    python benchmarks/ownership_by_method.py demo_out/runs/showcase demo_out/world [--max-clips N] [--cam-only]
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
from mmit_interp.explain.mcam import max_of_cams, normalise
from mmit_interp.explain.methods import RISE, GradCAMPlusPlus, IntegratedGradients, Occlusion, blurred
from mmit_interp.models import forward_batch
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


def rules(maps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class normalisations of CAMs `(S, T, H, W)` whose cross-class argmax is an owner map."""
    f = maps.flatten(1)
    q = {p: torch.quantile(f, p, dim=1, keepdim=True) for p in (0.5, 0.99)}
    out = {f"{scale} per {per}": normalise(maps, per, scale) for scale in ("minmax", "zscore") for per in ("clip", "frame")}
    out["median to 99th percentile"] = ((f - q[0.5]) / (q[0.99] - q[0.5]).clamp(min=1e-12)).view_as(maps)
    out.update({f"softmax over positions, T {tau:g}": torch.softmax(f / tau, 1).view_as(maps) for tau in (1.0, 2.0, 4.0)})
    return out


def score_owners(norm: np.ndarray, owner: np.ndarray, masks: np.ndarray, present: np.ndarray,
                 rec: dict[str, list], label: str) -> None:
    """Append `label`'s own-map pointing records, and its pixel and box ownership records in multi-action frames,
    of normalised maps `(S, T, H, W)` and their owner map `(T, H, W)`."""
    for t in range(masks.shape[1]):
        rec[label, "pointing"] += [pointing(norm[j, t], masks[j, t]) for j in range(len(norm)) if present[j, t]]
        if present[:, t].sum() >= 2:
            rec[label, "ownership"] += [acc for _, acc, _ in ownership(owner[t], masks[:, t]) if acc is not None]
            rec[label, "box_ownership"] += [hit for _, hit in box_ownership(norm[:, t], masks[:, t])]


def affine_oracle(norm: torch.Tensor, masks: np.ndarray, present: np.ndarray) -> tuple[list, list]:
    """Two-action clip: ownership of `owner = 0 where m0 > a m1 + b` at (1, 0) and at the truth's best (a, b)."""
    frames = [t for t in range(masks.shape[1]) if present[:, t].all()]
    m = norm.numpy()

    def score(a: float, b: float) -> list:
        return [acc for t in frames for _, acc, _ in ownership(np.where(m[0, t] > a * m[1, t] + b, 0, 1), masks[:, t])
                if acc is not None]

    grid = [score(a, b) for a in np.linspace(0.5, 2.0, 16) for b in np.linspace(-0.5, 0.5, 21)]
    return score(1.0, 0.0), max(grid, key=lambda r: np.mean(r) if r else -1.0)


def diagnose(model: torch.nn.Module, vocab, tf: ClipTransform, clips: list) -> None:
    """Print the CAM's pair test, the removal test, the normalisation rules and the affine bound."""
    pairs, drop_own, drop_other, beaten = [], [], [], []
    rec: dict[tuple[str, str], list] = defaultdict(list)
    oracle: dict[str, list] = defaultdict(list)
    for clip in clips:
        inp = clip_inputs(model, vocab, clip, tf)
        if inp is None:
            continue
        masks, present, classes = inp["masks"], inp["present"], inp["classes"]
        with torch.no_grad():
            cams = cam_for(model)(inp["video"], classes=classes, **inp["extra"]).maps[0]
        for name, norm in rules(cams).items():
            n = norm.numpy()
            score_owners(n, n.argmax(0), masks, present, rec, name)
        if len(classes) == 2 and present.all(0).any():
            base, best = affine_oracle(normalise(cams), masks, present)
            oracle["min-max"] += base
            oracle["best affine (truth)"] += best
        if len(classes) < 2:
            continue
        only = torch.as_tensor(masks & (masks.sum(0, keepdims=True) == 1))
        v, s = inp["video"], len(classes)
        variants = torch.cat([v] + [torch.where(only[j][None, None], blurred(v), v) for j in range(s)])
        batch = {"video": variants}
        if "audio" in model.inputs:
            batch.update(audio=inp["extra"]["audio"].expand(s + 1, -1, -1), has_audio=inp["extra"]["audio_mask"].expand(s + 1))
        with torch.no_grad():
            score = torch.sigmoid(forward_batch(model, batch))
        for i, c in enumerate(classes):
            if not only[i].any():
                continue
            drop_own.append(float(score[0, c] - score[1 + i, c]))
            for j in range(s):
                if j != i and only[j].any():
                    pairs.append(float(cams[i][only[i]].mean()) > float(cams[i][only[j]].mean()))
                    drop_other.append(float(score[0, c] - score[1 + j, c]))
                    beaten.append(drop_other[-1] > drop_own[-1])
    print(f"\nThe CAM's own diagnostics ({len(pairs)} (action, other actor) pairs):")
    print(f"  the action's CAM is higher on its own actor than on the other: {np.mean(pairs):.3f}")
    print(f"  score drop, its own actor blurred out: {np.mean(drop_own):.3f}; the other actor: {np.mean(drop_other):.3f}; "
          f"the other's drop larger: {np.mean(beaten):.3f}")
    print(f"{'max-of-CAMs normalised by':34s} {'ownership':>10s} {'box own.':>9s}")
    for name in dict.fromkeys(k[0] for k in rec):
        print(f"{name:34s} {np.mean(rec[name, 'ownership']):10.3f} {np.mean(rec[name, 'box_ownership']):9.3f}")
    print("two-action clips, " + "; ".join(f"{k}: {np.mean(v):.3f}" for k, v in oracle.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("world")
    ap.add_argument("--split", default="val")
    ap.add_argument("--max-clips", type=int)
    ap.add_argument("--cam-only", action="store_true", help="only the CAM and its contrasts among the read-outs")
    args = ap.parse_args()
    model, meta = load_model(args.run)
    vocab, tf = meta["vocab"], ClipTransform.from_dict(meta["transforms"])
    ms = {"cam": cam_for(model)} if args.cam_only else methods(model)
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
                score_owners(base.maps.numpy(), base.owner.numpy(), masks, present, rec, label)
    print(f"{len(clips)} clips of {args.world}:{args.split}; pooled records as `mmit-analyze localisation`")
    print(f"{'read-out':28s} {'pointing':>9s} {'ownership':>10s} {'box own.':>9s} {'records':>8s} {'s/clip':>7s}")
    for label in dict.fromkeys(k[0] for k in rec):
        cost = secs.get(label.split(" ")[0], 0.0) / max(len(clips), 1)
        print(f"{label:28s} {np.mean(rec[label, 'pointing']):9.3f} {np.mean(rec[label, 'ownership']):10.3f} "
              f"{np.mean(rec[label, 'box_ownership']):9.3f} {len(rec[label, 'ownership']):8d} {cost:7.2f}")
    diagnose(model, vocab, tf, clips)


if __name__ == "__main__":
    main()
