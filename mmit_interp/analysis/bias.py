"""The planted bias as a causal test (the paper's Fig. 12-14, "why juggling? polka dots").

A synthetic world plants a bias (`world.json` -> `bias`: actors doing `action` mostly carry
`texture`). On the validation clips:
- *lure* clips: `action` is not a label and a visible actor has `texture`; *control* clips:
  `action` is not a label and no visible actor has it. The *lure excess* is the mean sigmoid score
  of `action` on lure clips minus that on control clips: the bias the model has learned.
- The concept path of `action` on each lure clip (`relations.concept_path`): how many paths reach
  a *texture unit*, a unit labelled `texture` that the store marks interpretable (IoU >=
  dissection's threshold, 0.04 by default); for comparison, how many reach a unit whose best label
  over every set is `texture` at any IoU. Which label counts is the *rule* (`UNIT_RULES`): `set`
  (default), labelled `texture` on at least one concept set, since Network Dissection labels a unit
  per probe dataset and IoUs of different sets are taken at different thresholds on different
  images; or `best`, the best label over every set (what a concept path shows). The summary gives
  the figures of both.
- Causal test: the texture units of the concept path's two blocks (`relations.path_blocks`; `blocks`
  picks others, `"all"` every dissected residual block) are zeroed with forward hooks and the scores
  recomputed. The path's blocks by default, because the test asks whether the units the path reaches
  carry the bias, and because a unit of a narrow early stage (8 channels in the demo's layer1) is an
  eighth of everything later blocks see, so zeroing it moves every class, not the bias. Figures: the
  lure excess after, the share removed `(before - after) / before`, and the other classes' scores on
  control clips (mean absolute change over clips and classes, and the largest per-class mean change),
  so one sees whether the ablation is specific; a 95 % bootstrap interval of the share removed (lure
  and control clips resampled), as lure sets are small. Chance level: as many random dissected
  non-texture units per block, for a few seeds.
- Counterfactual (texture twins): lure and control clips differ in more than the texture (which
  actions, how many actors), and lure sets are small. So each control clip showing an actor is
  rendered again with its first visible actor wearing `texture`, everything else identical
  (`synth.probes.render_texture_pair`); the *twin excess* is the mean change of `action`'s score,
  and the same ablation (units, other classes, random units) runs on these pairs, with intervals
  that resample pairs.
"""
from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .ablation import drop_order
from ..hooks import replace_output
from ..models import forward_batch
from .trunk import find_block, residual_blocks, resolve_block, stage_aliases, trunk_prefix


def planted_pair(world: str | Path) -> tuple[str, str]:
    """`(action, texture)` of a synthetic world's planted bias (`world.json` -> `bias`)."""
    desc = json.loads((Path(world) / "world.json").read_text())["bias"]
    return desc["action"], desc["texture"]


def lure_and_control(clips: Iterable, action: str, texture: str) -> tuple[list, list]:
    """Clip truths without `action`, split into those with a visible `texture` actor (lure) and the rest."""
    lure, control = [], []
    for c in clips:
        if action not in c.labels:
            textured = any(a.visible and a.texture == texture for a in c.actors)
            (lure if textured else control).append(c)
    return lure, control


UNIT_RULES = ("set", "best")


def ablation_blocks(model: nn.Module, blocks: str | Sequence[str] = "path") -> list[str]:
    """The residual blocks whose texture units the bias test zeroes, in execution order: `"path"`, the
    concept path's two blocks (`relations.path_blocks`); `"all"`, every residual block; or block or
    stage names (a stage means its last block)."""
    from .relations import path_blocks

    order = residual_blocks(model)
    if blocks == "path":
        chosen = set(path_blocks(model))
    elif blocks == "all":
        chosen = set(order)
    elif isinstance(blocks, str):
        raise ValueError(f"unknown block set {blocks!r}: expected 'path', 'all' or a list of block names")
    else:
        chosen = {resolve_block(model, b) for b in blocks}
    return [b for b in order if b in chosen]


def labelled_units(store, model: nn.Module, label: str, rule: str = "set",
                   blocks: str | Sequence[str] = "all") -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per dissected residual block among `blocks` (`ablation_blocks`): the interpretable units labelled
    `label`, and the other dissected units. Rule `set`: so labelled on at least one concept set (each
    set's own best label); `best`: the best label over every set is `label` (what concept paths show)."""
    if rule not in UNIT_RULES:
        raise ValueError(f"unknown unit rule {rule!r}: expected one of {', '.join(UNIT_RULES)}")
    dissected = {find_block(model, d["layer"]) for d in store.layers()}  # None: no block of this trunk
    tex, rest = {}, {}
    for b in (b for b in ablation_blocks(model, blocks) if b in dissected):
        aliases = stage_aliases(model, b)
        tables = [store.unit_labels(aliases)] if rule == "best" else list(store.unit_labels_by_set(aliases).values())
        tex[b] = sorted({u for t in tables for u, r in t.items() if r["label"] == label and r["interpretable"]})
        rest[b] = sorted({u for t in tables for u in t} - set(tex[b]))
    return tex, rest


def twin_specs(world: str | Path, action: str, texture: str, split: str = "val",
               max_clips: int | None = None) -> list[tuple[Any, int]]:
    """The counterfactual pairs of a synthetic world: `(spec, actor)` for each clip of `split` without
    `action` and without a visible `texture` actor (the control clips) that shows an actor; `actor` is
    its first visible one, which the twin dresses in `texture`."""
    from ..synth.probes import probe_specs, world_config

    out = []
    for spec in probe_specs(world_config(world), split):
        if action in spec.labels or any(a.visible and a.texture == texture for a in spec.actors):
            continue
        out.append((spec, next(i for i, a in enumerate(spec.actors) if a.visible)))
    return out[:max_clips]


def load_twins(world: str | Path, pairs: Sequence[tuple[Any, int]], texture: str, transform,
               audio: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Stacked model inputs of the pairs' clips and of their texture twins, both rendered without the
    H.264 round trip (`probes.render_texture_pair`), so they differ in the dressed actor's pixels only;
    a hearing model gets each clip's decoded sound track on both sides (a texture makes no sound)."""
    from ..synth.probes import model_input, render_texture_pair, world_config

    world = Path(world)
    config = world_config(world)
    orig, twin = [], []
    for spec, actor in pairs:
        a, b = render_texture_pair(spec, config, actor, texture)
        orig.append(model_input(a, transform))
        twin.append(model_input(b, transform))
    if not orig:
        return {"video": torch.zeros(0)}, {"video": torch.zeros(0)}
    xo, xt = {"video": torch.stack(orig)}, {"video": torch.stack(twin)}
    if audio:
        sound = load_clips([world / "videos" / spec.path for spec, _ in pairs], transform, True)
        for x in (xo, xt):
            x.update(audio=sound["audio"], has_audio=sound["has_audio"])
    return xo, xt


@contextmanager
def zeroed(model: nn.Module, units: Mapping[str, Sequence[int]]) -> Iterator[None]:
    """Within the block, the given units of each residual block's output are 0 (forward hooks)."""
    prefix = trunk_prefix(model)
    with ExitStack() as stack:
        for block, us in units.items():
            if len(us):
                idx = torch.as_tensor(list(us), dtype=torch.long)
                stack.enter_context(replace_output(model, prefix + resolve_block(model, block),
                                                   lambda out, idx=idx: out.index_fill(1, idx, 0.0)))
        yield


def load_clips(paths: Sequence[str | Path], transform, audio: bool) -> dict[str, torch.Tensor]:
    """Stacked model inputs `{video, audio, has_audio}` of clip files (audio decoded only if `audio`)."""
    from ..dataset import load_clip

    ds = [load_clip(p, transform, want_audio=audio) for p in paths]
    if not ds:
        return {"video": torch.zeros(0)}
    return {"video": torch.stack([d["video"] for d in ds]), "audio": torch.stack([d["audio"] for d in ds]),
            "has_audio": torch.tensor([float(d["has_audio"]) for d in ds])}


@torch.no_grad()
def class_scores(model: nn.Module, clips: Mapping[str, torch.Tensor], batch_size: int = 16) -> torch.Tensor:
    """Sigmoid scores `(N, C)` of stacked clips (`load_clips`)."""
    v = clips["video"]
    out = []
    for i in range(0, v.shape[0], batch_size):
        s = slice(i, i + batch_size)
        logits = forward_batch(model, {k: x[s] for k, x in clips.items()})
        out.append(torch.sigmoid(logits))
    return torch.cat(out) if out else torch.zeros(0, 0)


def _class_mean(scores: torch.Tensor, c: int) -> float | None:
    return float(scores[:, c].mean()) if scores.shape[0] else None


def _excess(lure: torch.Tensor, control: torch.Tensor, c: int) -> float | None:
    a, b = _class_mean(lure, c), _class_mean(control, c)
    return None if a is None or b is None else a - b


def _removed(before: float | None, after: float | None) -> float | None:
    return (before - after) / before if before is not None and after is not None and before > 0 else None


def _resample(n_lure: int, n_control: int, n: int, seed: int, paired: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Bootstrap indices `(n, n_lure)` and `(n, n_control)`; paired groups (`n_lure == n_control`, row i of
    one the twin of row i of the other) share theirs."""
    if paired and n_lure != n_control:
        raise ValueError(f"paired groups must be as long: {n_lure} vs {n_control}")
    g = torch.Generator().manual_seed(seed)
    il = torch.randint(n_lure, (n, n_lure), generator=g)
    return il, il if paired else torch.randint(n_control, (n, n_control), generator=g)


def _interval(v: torch.Tensor) -> list[float]:
    q = torch.quantile(v.double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    return [float(q[0]), float(q[1])]


def excess_interval(lure: torch.Tensor, control: torch.Tensor, c: int, n: int = 2000, seed: int = 0,
                    paired: bool = False) -> list[float] | None:
    """95 % bootstrap interval of the excess `mean(lure[:, c]) - mean(control[:, c])` (None if a group is empty)."""
    if not lure.shape[0] or not control.shape[0]:
        return None
    il, ic = _resample(lure.shape[0], control.shape[0], n, seed, paired)
    return _interval(lure[:, c][il].mean(1) - control[:, c][ic].mean(1))


def removed_interval(lure: tuple[torch.Tensor, torch.Tensor], control: tuple[torch.Tensor, torch.Tensor],
                     c: int, n: int = 2000, seed: int = 0, paired: bool = False) -> list[float] | None:
    """95 % bootstrap interval of the share of the lure excess removed: lure and control clips are
    resampled with replacement (each group on its own, or together when `paired`), each group given as
    (scores before, after); resamples without a positive excess are left out. None when a group is
    empty or no resample has one."""
    (l0, l1), (c0, c1) = lure, control
    if not l0.shape[0] or not c0.shape[0]:
        return None
    il, ic = _resample(l0.shape[0], c0.shape[0], n, seed, paired)
    before = l0[:, c][il].mean(1) - c0[:, c][ic].mean(1)
    after = l1[:, c][il].mean(1) - c1[:, c][ic].mean(1)
    ok = before > 0
    return _interval(((before - after) / before)[ok]) if ok.any() else None


def random_like(units: Mapping[str, Sequence[int]], pool: Mapping[str, Sequence[int]], seed: int) -> dict[str, list[int]]:
    """As many units of `pool` per block as `units` has there, drawn by `seed` (the chance-level control)."""
    return {b: [pool[b][i] for i in drop_order(len(pool[b]), seed)[: len(us)].tolist()] for b, us in units.items()}


def ablation_test(model: nn.Module, lure: Mapping[str, torch.Tensor], control: Mapping[str, torch.Tensor],
                  class_idx: int, units: Mapping[str, Sequence[int]], pool: Mapping[str, Sequence[int]], *,
                  seeds: Sequence[int] = (0, 1, 2), names: Sequence[str] | None = None,
                  paired: bool = False, memo: dict | None = None) -> dict[str, Any]:
    """Lure excess of `class_idx` before and after zeroing `units`, its specificity on the other
    classes (control clips), and the excess removed by as many random units of `pool` per block, per seed.
    `paired`: lure clip i is the twin of control clip i (the intervals resample pairs). `memo`: a dict
    kept across calls on the same clips, so a unit set (the unablated model first) is scored once."""
    memo = {} if memo is None else memo

    def measure(ablate: Mapping[str, Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(sorted((b, tuple(sorted(us))) for b, us in ablate.items() if len(us)))
        if key not in memo:
            with zeroed(model, ablate):
                memo[key] = class_scores(model, lure), class_scores(model, control)
        return memo[key]

    l0, c0 = measure({})
    l1, c1 = measure(units)
    before, after = _excess(l0, c0, class_idx), _excess(l1, c1, class_idx)
    other = {}
    if c0.shape[0]:
        keep = [k for k in range(c0.shape[1]) if k != class_idx]
        per_class = (c1 - c0)[:, keep].abs().mean(0)
        worst = int(per_class.argmax())
        other = {"mean_before": float(c0[:, keep].mean()), "mean_after": float(c1[:, keep].mean()),
                 "mean_abs_change": float(per_class.mean()), "max_abs_change": float(per_class[worst]),
                 "max_class": names[keep[worst]] if names else keep[worst]}
    rand = {"seeds": list(seeds), "excess": [], "removed": []}
    for seed in seeds:
        ex = _excess(*measure(random_like(units, pool, seed)), class_idx)
        rand["excess"].append(ex)
        rand["removed"].append(_removed(before, ex))
    got = [r for r in rand["removed"] if r is not None]
    rand.update(removed_mean=float(np.mean(got)) if got else None, removed_max=max(got) if got else None)
    return {"score": {"lure": _class_mean(l0, class_idx), "control": _class_mean(c0, class_idx)},
            "excess": before, "excess_ci": excess_interval(l0, c0, class_idx, paired=paired),
            "ablated": {"score": {"lure": _class_mean(l1, class_idx), "control": _class_mean(c1, class_idx)},
                        "excess": after, "removed": _removed(before, after),
                        "removed_ci": removed_interval((l0, l1), (c0, c1), class_idx, paired=paired),
                        "other_classes": other},
            "random": rand}


def path_hits(rows: Sequence[Mapping[str, Any]], texture: str, units: Mapping[str, Sequence[int]]) -> tuple[bool, bool]:
    """Whether a labelled concept path reaches an interpretable texture unit, and a unit labelled `texture` at any IoU."""
    return (any(r["unit"] in units.get(r["layer"], ()) for r in rows),
            any(r.get("label") == texture for r in rows))


def _notes(s: Mapping[str, Any]) -> list[str]:
    """Why figures of a summary are undefined (no lure or control clip, nothing to ablate, no excess)."""
    out = []
    if not s["n_lure"]:
        out.append(f"no lure clip: no {s['dataset']} clip shows a visible {s['texture']!r} actor without {s['action']!r}")
    if not s["n_control"]:
        out.append(f"no control clip: every {s['dataset']} clip without {s['action']!r} shows a {s['texture']!r} actor")
    if not s["n_units"]:
        out.append(f"dissection labels no interpretable unit {s['texture']!r} in {', '.join(s['layers'])}: "
                   "nothing to ablate")
    if s["excess"] is not None and s["excess"] <= 0:
        out.append(f"no lure excess to remove: {s['action']!r} does not score higher on lure clips")
    cf = s.get("counterfactual")
    if cf is not None and not cf["n_pairs"]:
        out.append(f"no texture twin: no {s['dataset']} control clip shows an actor")
    elif cf is not None and cf["excess"] is not None and cf["excess"] <= 0:
        out.append(f"no twin excess to remove: dressing an actor in {s['texture']!r} does not raise {s['action']!r}")
    return out


def _counterfactual(res: Mapping[str, Any], n_pairs: int) -> dict[str, Any]:
    """The twin test's figures under the summary's names: `score` of the twins and of the originals."""
    return {"n_pairs": n_pairs, "score": {"twin": res["score"]["lure"], "original": res["score"]["control"]},
            **{k: v for k, v in res.items() if k != "score"}}


def _rule_brief(units: Mapping[str, Sequence[int]], reached: int, n_paths: int, res: Mapping[str, Any],
                cf: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One unit rule's figures, side by side with the other rule's in a summary's `by_rule`."""
    ab, oc = res["ablated"], res["ablated"]["other_classes"]
    out = {"texture_units": dict(units), "n_units": sum(map(len, units.values())), "paths_reaching": reached,
           "paths_share": reached / n_paths if n_paths else None, "excess_after": ab["excess"],
           "removed": ab["removed"], "removed_ci": ab["removed_ci"], "other_mean_abs_change": oc.get("mean_abs_change"),
           "other_max_abs_change": oc.get("max_abs_change"), "random_removed_mean": res["random"]["removed_mean"]}
    if cf is not None:
        out.update(cf_removed=cf["ablated"]["removed"], cf_removed_ci=cf["ablated"]["removed_ci"],
                   cf_random_removed_mean=cf["random"]["removed_mean"])
    return out


def run_bias(run_dir: str | Path, *, world: str | Path, split: str = "val", max_clips: int | None = None,
             seeds: Sequence[int] = (0, 1, 2), action: str | None = None, texture: str | None = None,
             top_upper: int = 5, top_lower: int = 3, rule: str = "set", blocks: str | Sequence[str] = "path",
             counterfactual: bool = True, record: bool = True) -> dict[str, Any]:
    """The planted-bias test of a run on a synthetic world (default pair: the world's planted one),
    recorded in the run's store under the world's `name:split`; a JSON-able summary. Its top-level
    figures take the texture units of `blocks` (`ablation_blocks`: the concept path's by default) by
    `rule`; `by_rule` gives every rule's (`UNIT_RULES`). With
    `counterfactual`, the same test on texture twins of the control clips (`twin_specs`): the excess
    is then the mean change of `action`'s score when one actor of an otherwise identical clip wears `texture`."""
    from ..checkpoint import load_model
    from ..dataset import ClipTransform
    from .relations import concept_path
    from ..store import open_run_store
    from ..synth.truth import load_truth

    if rule not in UNIT_RULES:
        raise ValueError(f"unknown unit rule {rule!r}: expected one of {', '.join(UNIT_RULES)}")
    world = Path(world)
    planted = planted_pair(world)
    action, texture = action or planted[0], texture or planted[1]
    model, meta = load_model(run_dir)
    if "video" not in model.inputs:
        raise ValueError(f"{run_dir}: an audio model has no visual units to test a texture bias on")
    vocab = meta["vocab"]
    if action not in vocab:
        raise ValueError(f"{run_dir}: the biased action {action!r} is not one of the run's classes")
    c = vocab.index(action)
    lure, control = lure_and_control((t for t in load_truth(world) if t.split == split), action, texture)
    lure, control = lure[:max_clips], control[:max_clips]
    tf = ClipTransform.from_dict(meta["transforms"])
    hears = "audio" in model.inputs
    lure_x, control_x = (load_clips([world / "videos" / t.path for t in ts], tf, hears) for ts in (lure, control))
    st, rid = open_run_store(run_dir, meta)
    with st:
        chosen = ablation_blocks(model, blocks)
        by_rule = {r: labelled_units(st, model, texture, r, chosen) for r in UNIT_RULES}
        if not by_rule[rule][0]:
            stage_names = list(dict.fromkeys(b.split(".")[0] for b in chosen))
            raise ValueError(f"{run_dir}: none of the blocks {', '.join(chosen)} is dissected in the results store; "
                             f"run `mmit-dissect {run_dir} --layers {' '.join(stage_names)} --concept-set BRODEN_DIR "
                             "--store` first")
        paths = [st.label_path_rows(concept_path(model, v[None], c, top_upper=top_upper, top_lower=top_lower))
                 for v in lure_x["video"]]
        twins = None
        if counterfactual:
            pairs = twin_specs(world, action, texture, split, max_clips)
            twins = load_twins(world, pairs, texture, tf, hears)
        tests: dict[str, dict] = {}
        cf: dict[str, dict] = {}
        memo: dict = {}
        cf_memo: dict = {}
        for r in (rule,) + tuple(x for x in UNIT_RULES if x != rule):  # the chosen rule first; equal sets run once
            units, pool = by_rule[r]
            same = next((q for q in tests if by_rule[q][0] == units), None)
            tests[r] = tests[same] if same else ablation_test(model, lure_x, control_x, c, units, pool, seeds=seeds,
                                                              names=vocab.names, memo=memo)
            if twins is not None:
                cf[r] = cf[same] if same else ablation_test(model, twins[1], twins[0], c, units, pool, seeds=seeds,
                                                            names=vocab.names, paired=True, memo=cf_memo)
        units = by_rule[rule][0]
        hits_by = {r: [path_hits(rows, texture, by_rule[r][0]) for rows in paths] for r in UNIT_RULES}
        hits, n_paths = hits_by[rule], len(paths)
        summary = {"dataset": f"{world.name}:{split}", "action": action, "texture": texture,
                   "planted": (action, texture) == planted, "n_lure": len(lure), "n_control": len(control),
                   "rule": rule, "blocks": blocks if isinstance(blocks, str) else list(blocks),
                   "paths": {"n": n_paths, "reaching_texture_unit": sum(h[0] for h in hits),
                             "share": sum(h[0] for h in hits) / n_paths if n_paths else None,
                             "reaching_texture_label_any_iou": sum(h[1] for h in hits),
                             "top_upper": top_upper, "top_lower": top_lower},
                   "layers": list(units), "texture_units": units, "n_units": sum(map(len, units.values())),
                   **tests[rule],
                   "counterfactual": _counterfactual(cf[rule], len(twins[0]["video"])) if twins is not None else None,
                   "by_rule": {r: _rule_brief(by_rule[r][0], sum(h[0] for h in hits_by[r]), n_paths, tests[r],
                                              cf.get(r))
                               for r in UNIT_RULES}}
        summary["notes"] = _notes(summary)
        if record:
            st.write_bias(summary["dataset"], action, texture, summary, run_id=rid)
    return summary
