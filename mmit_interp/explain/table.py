"""`run_explanations`: every method x every metric on a data set with boxes, one table (`mmit-analyze explanations`).

Per clip, the explained classes are its true actions boxed in a sampled frame (as `localisation`),
each method's maps come from one call (named classes) at the model's input size, and each metric is
first averaged over the clip's (action, frame) or (action) records, then over clips: mean and a 95 %
t-interval over clips. Metrics:
- `pointing`, `energy`: the action's own map, min-max normalised over the clip (`localisation`);
- `ownership`, `ownership_mcam`: which action is where, through max-of-CAMs and mCAM built on the
  method's maps (`localisation.method_maps` / `ownership`; frames with two or more boxed actions);
- `deletion`, `insertion`: AUC of the action's own sigmoid score while the voxels are removed from /
  inserted into the blurred clip in the map's order (`faithfulness`); `deletion_others`,
  `insertion_others`: the same curves read for the clip's *other* boxed actions (a good per-action
  map removes its own action, not the others: high `deletion_others` is good);
- `rank_corr`: mean Spearman correlation between the maps of co-occurring actions (lower = the maps
  tell the actions apart), next to ownership;
- `sanity`: Spearman correlation between the maps of the trained and the fully randomised model
  (`sanity`; on the first `sanity_clips` clips); a method with mean >= 0.5 fails and is flagged;
- `forwards`: the method's cost per clip in clip forward passes (gradient methods add a backward).
`random` (`methods.RandomMap`) is always a row: the chance level of every metric.
Fusion runs also get `modality`: the audio share `|phi_a| / (|phi_v| + |phi_a|)` of each true
action's score (`modality.shapley_split`), by the world's class kind (seen, seen+heard, heard).
"""
from __future__ import annotations

import copy
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .cam import BaseCAM
from .localisation import clip_inputs, energy, method_maps, ownership, pointing
from .mcam import normalise
from .faithfulness import auc, pairwise_rank_correlation, perturbation_curve, rank_correlation
from .methods import METHODS, blurred, clip_forward, make_method
from .sanity import cascading_randomisation

DEFAULT_METHODS = tuple(m for m in METHODS if m != "random")
METRICS = ("pointing", "energy", "ownership", "ownership_mcam", "deletion", "insertion", "deletion_others",
           "insertion_others", "rank_corr", "sanity", "forwards")
SANITY_LIMIT = 0.5


@contextmanager
def count_forwards(model: nn.Module) -> Iterator[list[int]]:
    """`with count_forwards(model) as n:` ... `n[0]` = clips that went through the (visual) trunk's first conv."""
    trunk = model.trunk()
    n = [0]
    h = trunk.conv1.register_forward_pre_hook(lambda _m, inp: n.__setitem__(0, n[0] + inp[0].shape[0]))
    try:
        yield n
    finally:
        h.remove()


def interval(values: Sequence[float]) -> dict[str, float | int | None]:
    """`{mean, lo, hi, n}`: the mean and its 95 % t-interval (lo = hi = None for fewer than 2 values)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    m = float(v.mean())
    if v.size < 2:
        return {"mean": m, "lo": None, "hi": None, "n": 1}
    from scipy.stats import t

    half = float(t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return {"mean": m, "lo": m - half, "hi": m + half, "n": int(v.size)}


def _mean(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def clip_scores(model: nn.Module, method: BaseCAM, inp: dict[str, Any], *, steps: int = 10, delta: float = 0.05,
                sigma: float = 1.1) -> tuple[dict[str, float | None], torch.Tensor]:
    """Every metric but `sanity` for one clip and method, averaged over the clip's actions, and the maps `(S, T, H, W)`."""
    with count_forwards(model) as n:
        res = method(inp["video"], classes=inp["classes"], **inp["extra"])
    maps = res.maps[0].detach()
    masks, present, classes = inp["masks"], inp["present"], inp["classes"]
    norm = normalise(maps).numpy()
    owners: dict[str, np.ndarray] = {}
    method_maps(maps, res.classes[0], delta=delta, sigma=sigma, owners=owners)
    rec: dict[str, list[float | None]] = defaultdict(list)
    for j in range(len(classes)):
        frames = np.nonzero(present[j])[0]
        rec["pointing"].append(_mean([pointing(norm[j, t], masks[j, t]) for t in frames]))
        rec["energy"].append(_mean([energy(norm[j, t], masks[j, t]) for t in frames]))
    for t in np.nonzero(present.sum(0) >= 2)[0]:
        for key, own in (("ownership", owners["cam_max"]), ("ownership_mcam", owners["mcam"])):
            rec[key] += [acc for _, acc, _ in ownership(own[t], masks[:, t]) if acc is not None]
    fwd = clip_forward(model, **inp["extra"])
    clip = inp["video"][0]
    base = blurred(clip[None])[0]
    for j, c in enumerate(classes):
        others = [o for o in classes if o != c]
        for mode in ("deletion", "insertion"):
            a = auc(perturbation_curve(fwd, clip, base, maps[j], mode=mode, steps=steps))
            rec[mode].append(float(a[c]))
            if others:
                rec[f"{mode}_others"].append(float(np.mean(a[others])))
    out = {k: _mean(v) for k, v in rec.items()}
    out["rank_corr"] = pairwise_rank_correlation(maps.numpy()) if len(classes) > 1 else None
    out["forwards"] = float(n[0])
    return out, maps


def sanity_scores(model: nn.Module, methods: dict[str, BaseCAM], inputs: list[dict[str, Any]],
                  trained: dict[str, list[torch.Tensor]], seed: int = 0) -> tuple[dict[str, list[float | None]], dict]:
    """Per method: each clip's mean rank correlation with the trained maps at full randomisation, and the
    curve `{method: [(group, mean correlation)]}` along the cascade."""
    curve: dict[str, list] = defaultdict(list)
    last: dict[str, list[float | None]] = {}
    for group, rand in cascading_randomisation(model, seed):
        for name, meth in methods.items():
            m2 = copy.copy(meth)
            m2.model = rand
            per_clip = []
            for inp, ref in zip(inputs, trained[name]):
                maps = m2(inp["video"], classes=inp["classes"], **inp["extra"]).maps[0].detach()
                per_clip.append(_mean([rank_correlation(maps[j], ref[j]) for j in range(len(ref))]))
            curve[name].append((group, _mean(per_clip)))
            last[name] = per_clip
    return last, dict(curve)


def modality_records(model: nn.Module, inp: dict[str, Any], labels: Sequence[str], vocab) -> list[tuple[str, float]]:
    """`(action, audio share)` for each true action of a clip: `|phi_audio| / (|phi_video| + |phi_audio|)`."""
    from .modality import shapley_split

    sp = shapley_split(model, inp["video"], inp["extra"]["audio"], inp["extra"]["audio_mask"])
    out = []
    for a in labels:
        if a in vocab:
            c = vocab.index(a)
            v, au = abs(float(sp["video"][0, c])), abs(float(sp["audio"][0, c]))
            if v + au > 0:
                out.append((a, au / (v + au)))
    return out


def class_kinds(world: str | Path) -> dict[str, str]:
    """`{action: seen | seen+heard | heard}` from a synthetic world's `world.json`."""
    import json

    meta = json.loads((Path(world) / "world.json").read_text())
    kinds = {(True, False): "seen", (True, True): "seen+heard", (False, True): "heard", (False, False): "neither"}
    return {c["name"]: kinds[(bool(c.get("visible")), bool(c.get("audible")))] for c in meta["classes"]}


def run_explanations(run_dir: str | Path, *, world: str | Path | None = None, boxes_csv: str | Path | None = None,
                     videos_root: str | Path | None = None, split: str = "val", methods: Sequence[str] | None = None,
                     max_clips: int | None = None, sanity_clips: int = 4, steps: int = 10, delta: float = 0.05,
                     sigma: float = 1.1, seed: int = 0, record: bool = True) -> dict[str, Any]:
    """The method x metric table of a run on a world's truth or a boxes CSV: `{dataset, n_clips, table
    {method: {metric: {mean, lo, hi, n}}}, sanity {method: {passed, curve}}, modality?}`; stored unless
    `record` is False."""
    from ..checkpoint import cached_model
    from ..dataset import ClipTransform
    from .localisation import boxes_from_csv, boxes_from_truth
    from ..store import open_run_store

    if (world is None) == (boxes_csv is None):
        raise ValueError("give exactly one of world= (synthetic truth) or boxes_csv=")
    names = [m for m in (methods or DEFAULT_METHODS) if m != "random"] + ["random"]
    clips = boxes_from_truth(world, split) if world is not None else boxes_from_csv(boxes_csv, videos_root)
    clips = clips[:max_clips] if max_clips else clips
    model, meta = cached_model(run_dir)
    vocab, tf = meta["vocab"], ClipTransform.from_dict(meta["transforms"])
    meths = {m: make_method(m, model) for m in names}
    fusion = {"video", "audio"} <= set(model.inputs)  # both seen and heard: the Shapley split applies
    labels: dict[str, list[str]] = {}
    if fusion and world is not None:
        from ..synth.truth import load_truth

        labels = {str(Path(world) / "videos" / t.path): list(t.labels) for t in load_truth(Path(world))}
    per: dict[str, dict[str, list]] = {m: defaultdict(list) for m in names}
    inputs, trained, shares = [], defaultdict(list), []
    for clip in clips:
        inp = clip_inputs(model, vocab, clip, tf)
        if inp is None:
            continue
        keep = len(inputs) < sanity_clips
        if keep:
            inputs.append(inp)
        for name, meth in meths.items():
            scores, maps = clip_scores(model, meth, inp, steps=steps, delta=delta, sigma=sigma)
            for k, v in scores.items():
                per[name][k].append(v)
            if keep:
                trained[name].append(maps)
        if fusion:
            shares += modality_records(model, inp, labels.get(str(clip.path), inp["actions"]), vocab)
    last, curves = sanity_scores(model, meths, inputs, trained, seed) if inputs else ({}, {})
    for name, vals in last.items():
        per[name]["sanity"] = vals
    table = {m: {k: interval(per[m][k]) for k in METRICS} for m in names}
    sanity = {m: {"passed": (table[m]["sanity"]["mean"] or 0.0) < SANITY_LIMIT, "curve": curves.get(m, [])}
              for m in names}
    for m in names:
        table[m]["sanity"]["passed"] = sanity[m]["passed"]
    dataset = f"{Path(world).name}:{split}" if world is not None else Path(boxes_csv).name
    out: dict[str, Any] = {"dataset": dataset, "n_clips": len(per[names[0]]["forwards"]), "table": table,
                           "sanity": sanity, "params": {"steps": steps, "sanity_clips": len(inputs), "seed": seed}}
    if fusion:
        kinds = class_kinds(world) if world is not None else {}
        by: dict[str, list[float]] = defaultdict(list)
        for a, s in shares:
            by[kinds.get(a, "all")].append(s)
        out["modality"] = {k: interval(v) for k, v in sorted(by.items())}
    if record:
        st, rid = open_run_store(run_dir, meta)
        with st:
            st.write_explanations(dataset, [{"method": m, "metric": k, **v} for m, row in table.items()
                                            for k, v in row.items()], run_id=rid)
    return out
