"""`mmit-cam` and `mmit-analyze` command lines (heavy imports happen inside the commands: `--help` is fast)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .import_model import add_source_args, run_from_args


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def _fields(s: str) -> list[int | None]:
    return [None if v.strip() == "clip" else int(v) for v in s.split(",") if v.strip()]


def _class_list(s: str | None) -> list[int | str] | None:
    if not s:
        return None
    return [int(v) if v.strip().isdigit() else v.strip() for v in s.split(",") if v.strip()]


def cam_parser() -> argparse.ArgumentParser:
    """Arguments of `mmit-cam`."""
    p = argparse.ArgumentParser(prog="mmit-cam", description="Per-class CAMs and mCAM of one clip: frame images, "
                                "an overlay video, predictions (recorded in the run's results store).")
    p.add_argument("clip", help="video file")
    p.add_argument("--run", help="run dir or checkpoint file (with --torchvision/--timm/--authors: the run dir to import into)")
    p.add_argument("--top-k", type=int, default=5, help="CAMs of the k best classes (default 5)")
    p.add_argument("--classes", help="comma-separated class names or indices (instead of --top-k)")
    p.add_argument("--threshold", type=float, help="CAMs of classes with sigmoid score >= this (instead of --top-k)")
    p.add_argument("--out", help="output folder (default RUN/cams/<clip hash>)")
    p.add_argument("--delta", type=float, default=0.05, help="mCAM: suppress where two maps differ by less (0.05)")
    p.add_argument("--sigma", type=float, default=1.1, help="mCAM: sigma of the 5x5 Gaussian (1.1)")
    p.add_argument("--normalise", choices=("clip", "frame"), default="clip",
                   help="scale each class's CAM over the whole clip (default, DESIGN 7) or per frame")
    p.add_argument("--scale", choices=("minmax", "zscore"), default="minmax",
                   help="each CAM min-max scaled to [0, 1] (default, DESIGN 7), or standardised and all scaled "
                        "by one affine (zscore: mCAM's owners compared in standard units)")
    p.add_argument("--colormap", default="jet", help="matplotlib colormap of per-class CAMs (jet)")
    p.add_argument("--opacity", type=float, default=0.5, help="overlay opacity 0..1 (0.5)")
    p.add_argument("--display-size", type=int, help="side of drawn frames (default max(input size, 256))")
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="overlay video format")
    p.add_argument("--no-record", action="store_true", help="do not record the clip in the results store")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    add_source_args(p)
    return p


def cam_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mmit-cam`; run as the program (`argv` None) it ends the process as soon as it is done."""
    rc = _cam(cam_parser().parse_args(argv))
    if argv is None:
        _exit_now(rc)
    return rc


def _exit_now(rc: int) -> None:
    """Flush and leave without interpreter teardown: unloading torch costs ~0.5 s of a ~3-s command,
    and every file and the results store are closed by then (`os._exit` skips only atexit work)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _cam(a: argparse.Namespace) -> int:
    """Run `mmit-cam` for parsed arguments: analyse the clip, print the predictions; the exit status."""
    from .analysis.clip_analysis import analyze_clip

    try:
        r = analyze_clip(run_from_args(a), a.clip, a.out, top_k=a.top_k, classes=_class_list(a.classes), threshold=a.threshold,
                         delta=a.delta, sigma=a.sigma, normalise_per=a.normalise, scale=a.scale, colormap=a.colormap,
                         opacity=a.opacity,
                         display_size=a.display_size, video_format=a.format, record=not a.no_record)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
        print(f"mmit-cam: error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['clip']}  ({r['n_frames']} frames, {'with' if r['has_audio'] else 'no'} audio, model {r['model']})")
    cam_ids = {c["class_idx"] for c in r["cam_classes"]}
    shown = r["predictions"][: max(a.top_k, 5)]
    for i, p in enumerate(shown, 1):
        print(f"{i:3d}. {'*' if p['class_idx'] in cam_ids else ' '} {p['name']:<30s} {p['score']:.4f}  "
              f"(logit {p['logit']:+.3f})")
    for c in r["cam_classes"]:
        if all(p["class_idx"] != c["class_idx"] for p in shown):
            print(f"   ... * {c['name']:<30s} {c['score']:.4f}")
    print(f"* = CAM drawn. Files in {r['out_dir']}; overlay video {r['overlay_video']} "
          f"({r['timings']['total_s']:.2f} s)")
    return 0


def _boxes_args(s: argparse.ArgumentParser, run: bool = True) -> None:
    """The run (unless `run` is False) and where its boxes come from (a synthetic world or a CSV): the
    verbs scored against boxes."""
    if run:
        s.add_argument("--run", required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--world", help="synthetic world folder (truth.jsonl)")
    g.add_argument("--boxes", help="CSV clip,frame,action,x1,y1,x2,y2")
    s.add_argument("--videos-root", help="root of the CSV's clip paths (default: the CSV's folder)")
    s.add_argument("--split", default="val")
    s.add_argument("--max-clips", type=int)


_RUN_HELP = "run dir (with --torchvision/--timm/--authors: the run dir to import into)"
_SOURCED = ("ablation", "selectivity", "relations", "concept-path")


def analyze_parser() -> argparse.ArgumentParser:
    """Arguments of `mmit-analyze` and its verbs."""
    p = argparse.ArgumentParser(prog="mmit-analyze", description="Representation analyses of a trained run; "
                                "results go to RUN/results.sqlite.")
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("ablation", help="zero a random fraction p of a block's units, re-evaluate (Fig. 9)")
    s.add_argument("--run", help=_RUN_HELP)
    add_source_args(s)
    s.add_argument("--block", help="block or stage (stage = its last block); default: the trunk's last stage "
                   "(layer4; attend for a track model)")
    s.add_argument("--data", help="data set folder (default: the run's training data)")
    s.add_argument("--split", default="val")
    s.add_argument("--ps", type=_floats, default=None, help="comma-separated fractions (default 0,0.1,...,1)")
    s.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    s.add_argument("--max-clips", type=int)

    s = sub.add_parser("selectivity", help="unit selectivity per residual block (Fig. 10, eq. 5) + unit/class relations")
    s.add_argument("--run", help=_RUN_HELP)
    add_source_args(s)
    s.add_argument("--blocks", help="comma-separated blocks (default: every residual block)")
    s.add_argument("--prob", choices=("softmax", "sigmoid"), default="softmax")
    s.add_argument("--top", type=int, default=10, help="relations kept per unit / class")

    s = sub.add_parser("relations", help="unit -> classes or class -> units of a block")
    s.add_argument("--run", help=_RUN_HELP)
    add_source_args(s)
    s.add_argument("--block", help="block or stage (stage = its last block); default: the trunk's last stage "
                   "(layer4; attend for a track model)")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--unit", type=int)
    g.add_argument("--class", dest="class_", help="class name or index")
    s.add_argument("--top", type=int, default=10)

    s = sub.add_parser("concept-path", help="the last block's units driving a class for a clip, the previous stage's units driving those")
    s.add_argument("clip")
    s.add_argument("--run", help=_RUN_HELP)
    add_source_args(s)
    s.add_argument("--class", dest="class_", help="class name or index (default: top prediction)")
    s.add_argument("--top-upper", type=int, default=5)
    s.add_argument("--top-lower", type=int, default=3)

    s = sub.add_parser("localisation", help="pointing game and energy-in-box of CAM / max-of-CAMs / mCAM")
    _boxes_args(s)
    s.add_argument("--delta", type=float, default=0.05)
    s.add_argument("--sigma", type=float, default=1.1)
    s.add_argument("--normalise", choices=("clip", "frame"), default="clip", help="scale CAMs per clip or per frame")
    s.add_argument("--scale", choices=("minmax", "zscore"), default="minmax",
                   help="each CAM min-max scaled (default, DESIGN 7), or standardised and scaled together (zscore)")
    s.add_argument("--json", action="store_true", help="print the summary {method: {score: value}} as JSON")

    s = sub.add_parser("ownership-ceiling", help="what exact maps of a given window and temporal field would "
                       "score on the boxes (window oracles; no model)")
    _boxes_args(s, run=False)
    s.add_argument("--frames", type=int, default=8, help="sampled frames the model sees (8)")
    s.add_argument("--size", type=int, default=64, help="frame side the model sees, in pixels (64)")
    s.add_argument("--grid", type=int, default=8, help="last map's side (8)")
    s.add_argument("--windows", type=_floats, default=[43.0],
                   help="comma-separated window sides in pixels of --size (box, meets) or Gaussian sigmas (gauss)")
    s.add_argument("--fields", type=_fields, default=[None],
                   help="comma-separated temporal half-fields in sampled frames, or 'clip' (the whole clip)")
    s.add_argument("--shape", choices=("box", "meets", "gauss"), default="box",
                   help="box: count the actor's pixels in the window; meets: 1 if any; gauss: Gaussian-weighted")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")

    s = sub.add_parser("bias", help="planted-bias test: lure excess, concept paths to texture units, ablating them")
    s.add_argument("--run", required=True)
    s.add_argument("--world", required=True, help="synthetic world folder (world.json names the bias, truth.jsonl)")
    s.add_argument("--split", default="val")
    s.add_argument("--max-clips", type=int, help="at most N lure and N control clips")
    s.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="random-unit control seeds (default 0,1,2)")
    s.add_argument("--action", help="biased action (default: the world's planted one)")
    s.add_argument("--texture", help="texture suspected to drive it (default: the world's planted one)")
    s.add_argument("--rule", choices=("set", "best"), default="set",
                   help="which units count as texture units: labelled so on at least one concept set (default), "
                        "or by their best label over every set; the summary gives both")
    s.add_argument("--blocks", nargs="+", default=["path"],
                   help="blocks whose texture units are zeroed: 'path' (default), the concept path's two blocks; "
                        "'all', every dissected residual block; or block/stage names (layer3 layer4)")
    s.add_argument("--no-twins", action="store_true",
                   help="skip the counterfactual test on texture twins of the control clips")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")

    s = sub.add_parser("explanations", help="explanation methods x metrics (localisation, faithfulness, sanity, cost)")
    _boxes_args(s)
    s.add_argument("--methods", help="comma-separated (default: cam,gradcam,gradcam++,occlusion,rise,ig; random always)")
    s.add_argument("--sanity-clips", type=int, default=4, help="clips of the randomisation test (default 4)")
    s.add_argument("--steps", type=int, default=10, help="deletion / insertion steps (default 10)")
    s.add_argument("--json", action="store_true", help="print {method: {metric: {mean, lo, hi}}} as JSON")

    s = sub.add_parser("motion", help="motion vs appearance per unit: frozen, shuffled and appearance-swapped "
                       "probes from a synthetic world, a motion score per unit and per layer")
    s.add_argument("--run", required=True)
    s.add_argument("--world", required=True, help="synthetic world folder (world.json: its clips are re-rendered)")
    s.add_argument("--layers", nargs="+", default=None, help="blocks or stages (default: layer1 layer2 layer3 layer4)")
    s.add_argument("--clips", type=int, default=32, help="clips with a visible actor to probe (default 32)")
    s.add_argument("--split", default="val")
    s.add_argument("--seed", type=int, default=0, help="seed of the frame shuffle and the appearance swaps")
    s.add_argument("--json", action="store_true", help="print the per-layer summary as JSON")

    s = sub.add_parser("figures", help="ablation / selectivity / per-class AP figures (SVG + PNG) across runs")
    s.add_argument("--run", required=True, nargs="+", help="one or more run dirs")
    s.add_argument("--out", required=True)
    s.add_argument("--metric", default="map_sample")
    s.add_argument("--prob", choices=("softmax", "sigmoid"), default="softmax")
    return p


def analyze_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mmit-analyze`."""
    a = analyze_parser().parse_args(argv)
    try:
        if a.verb in _SOURCED:
            a.run = run_from_args(a)
        return _VERBS[a.verb](a)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as e:
        print(f"mmit-analyze {a.verb}: error: {e}", file=sys.stderr)
        return 2


def _ablation(a: argparse.Namespace) -> int:
    from .analysis.ablation import DEFAULT_PS, run_ablation, summarise

    r = run_ablation(a.run, block=a.block, data=a.data, split=a.split, ps=a.ps or DEFAULT_PS, seeds=a.seeds,
                     max_clips=a.max_clips)
    print(f"block {r['block']} ({r['n_units']} units), {r['n_clips']} clips; unablated: "
          + "  ".join(f"{k} {v:.4f}" for k, v in r["baseline"].items()))
    for met, c in summarise(r["rows"]).items():
        print(f"{met:<11s} " + "  ".join(f"p={p:.2f}: {m:.3f}+-{s:.3f}" for p, m, s in zip(c["p"], c["mean"], c["std"])))
    return 0


def _selectivity(a: argparse.Namespace) -> int:
    from .analysis.selectivity import run_selectivity

    blocks = [b for b in a.blocks.split(",") if b] if a.blocks else None
    for r in run_selectivity(a.run, blocks=blocks, prob=a.prob, top=a.top):
        print(f"{r['block']:<10s} {len(r['units']):5d} units  mean selectivity ({a.prob}) {r['mean']:.4f}")
    return 0


def _relations(a: argparse.Namespace) -> int:
    from .checkpoint import cached_model
    from .analysis.relations import relation_tables
    from .analysis.selectivity import block_selectivity, input_like
    from .analysis.trunk import stages

    model, meta = cached_model(a.run)
    vocab = meta["vocab"]
    r = block_selectivity(model, a.block or stages(model)[-1], input_like(model, meta["transforms"]))
    u2c, c2u = relation_tables(r["logits"], r["baseline_logits"], top=a.top)
    if a.unit is not None:
        print(f"{r['block']} unit {a.unit} -> classes (logit rise when only this unit is on):")
        for c, v in u2c[a.unit]:
            print(f"  {vocab.names[c]:<30s} {v:+.4f}")
    else:
        c = int(a.class_) if a.class_.isdigit() else vocab.index(a.class_)
        print(f"class {vocab.names[c]} -> {r['block']} units (logit rise when only the unit is on):")
        for u, v in c2u[c]:
            print(f"  unit {u:5d} {v:+.4f}")
    return 0


def _concept_path(a: argparse.Namespace) -> int:
    from .analysis.relations import clip_concept_path

    cls = None if a.class_ is None else (int(a.class_) if a.class_.isdigit() else a.class_)
    r = clip_concept_path(a.run, a.clip, cls, top_upper=a.top_upper, top_lower=a.top_lower)
    print(f"concept path of {r['class']!r} for {r['clip']}:")
    for row in r["path"]:
        if row["step"] == 0:
            print(f"  {row['layer']} unit {row['unit']:4d}  {row['contribution']:+.4f}  {_path_label(row)}")
            for sub in (x for x in r["path"] if x["step"] == 1 and x["parent"] == row["unit"]):
                print(f"      <- {sub['layer']} unit {sub['unit']:4d}  {sub['contribution']:+.4f}  {_path_label(sub)}")
    return 0


def _path_label(row: dict) -> str:
    """A path unit's label, then the other labels other concept sets give it."""
    also = "".join(f"; {x['label']} on {x['concept_set']} ({x['iou']:.3f})" for x in row.get("also") or [])
    return row["label"] + also


def _localisation(a: argparse.Namespace) -> int:
    from .explain.localisation import run_localisation

    r = run_localisation(a.run, world=a.world, boxes_csv=a.boxes, videos_root=a.videos_root, split=a.split,
                         max_clips=a.max_clips, delta=a.delta, sigma=a.sigma, normalise=a.normalise,
                         scale=a.scale)
    if a.json:
        print(json.dumps(r["summary"], indent=1))
        return 0
    print(f"{r['dataset']}: {r['n_clips']} clips, {r['n_records']} (class, frame, method) records")
    for m, s in r["summary"].items():
        print(f"  {m:<8s} " + "  ".join(f"{k} {v:.4f}" for k, v in s.items()))
    return 0


def _ownership_ceiling(a: argparse.Namespace) -> int:
    from .explain.ceiling import run_ceiling

    rows = run_ceiling(world=a.world, boxes_csv=a.boxes, videos_root=a.videos_root, split=a.split,
                       max_clips=a.max_clips, frames=a.frames, size=a.size, grid=a.grid, windows=a.windows,
                       fields=a.fields, shape=a.shape)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"window oracles ({a.shape}), {a.grid}x{a.grid} map over {a.frames} frames of {a.size} px")
    for r in rows:
        field = "clip" if r["field"] is None else f"+-{r['field']}"
        print(f"  window {r['window']:g}  field {field:5s}  pointing {_fmt(r['pointing'])}  ownership "
              f"{_fmt(r['ownership'])}  (chance {_fmt(r['chance'])}, {r['n_ownership']} records)")
    return 0


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _ci(v: list[float] | None) -> str:
    return "[95 % interval -]" if v is None else f"[95 % interval {v[0]:.2f}, {v[1]:.2f}]"


def _bias(a: argparse.Namespace) -> int:
    from .analysis.bias import run_bias

    r = run_bias(a.run, world=a.world, split=a.split, max_clips=a.max_clips, seeds=a.seeds, action=a.action,
                 texture=a.texture, rule=a.rule, blocks=a.blocks[0] if a.blocks in (["path"], ["all"]) else a.blocks,
                 counterfactual=not a.no_twins)
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    p, ab, rnd = r["paths"], r["ablated"], r["random"]
    print(f"{r['dataset']}: {r['action']!r} <- {r['texture']!r}{' (the planted bias)' if r['planted'] else ''}; "
          f"{r['n_lure']} lure clips, {r['n_control']} control clips")
    print(f"  score of {r['action']!r}: lure {_fmt(r['score']['lure'])}, control {_fmt(r['score']['control'])}, "
          f"excess {_fmt(r['excess'])}")
    print(f"  concept paths reaching an interpretable {r['texture']!r} unit (rule {r['rule']!r}): "
          f"{p['reaching_texture_unit']} of {p['n']} (best label {r['texture']!r} at any IoU: "
          f"{p['reaching_texture_label_any_iou']})")
    blocks = "the concept path's blocks" if r["blocks"] == "path" else "every dissected block" if r["blocks"] == "all" \
        else "the blocks asked for"
    print(f"  ablating {r['n_units']} {r['texture']!r} unit(s) of {blocks}, {', '.join(r['layers'])} "
          f"({'; '.join(f'{b}: {u}' for b, u in r['texture_units'].items() if u) or 'none labelled'}): "
          f"excess {_fmt(ab['excess'])}, removed {_fmt(ab['removed'])} {_ci(ab['removed_ci'])}")
    oc = ab["other_classes"]
    if oc:
        print(f"  other classes on control clips: mean |change| {_fmt(oc['mean_abs_change'])}, "
              f"largest {_fmt(oc['max_abs_change'])} ({oc['max_class']})")
    print(f"  random units, seeds {rnd['seeds']}: removed " + ", ".join(map(_fmt, rnd["removed"])))
    cf = r.get("counterfactual")
    if cf is not None:
        print(f"  texture twins ({cf['n_pairs']} control clips, one actor dressed in {r['texture']!r}): "
              f"{r['action']!r} {_fmt(cf['score']['original'])} -> {_fmt(cf['score']['twin'])}, excess "
              f"{_fmt(cf['excess'])} {_ci(cf['excess_ci'])}; ablating the units: removed "
              f"{_fmt(cf['ablated']['removed'])} {_ci(cf['ablated']['removed_ci'])}, random units "
              + ", ".join(map(_fmt, cf["random"]["removed"])))
    for name, b in r["by_rule"].items():
        print(f"  rule {name!r}: {b['n_units']} unit(s), paths {b['paths_reaching']} of {p['n']}, removed "
              f"{_fmt(b['removed'])} {_ci(b['removed_ci'])}, other classes {_fmt(b['other_mean_abs_change'])}, random units "
              f"{_fmt(b['random_removed_mean'])}" + (f"; twins: removed {_fmt(b['cf_removed'])} {_ci(b['cf_removed_ci'])}, "
                                                     f"random units {_fmt(b['cf_random_removed_mean'])}"
                                                     if "cf_removed" in b else ""))
    for note in r["notes"]:
        print(f"  note: {note}")
    return 0


def _explanations(a: argparse.Namespace) -> int:
    from .explain.table import run_explanations

    methods = [m for m in a.methods.split(",") if m] if a.methods else None
    r = run_explanations(a.run, world=a.world, boxes_csv=a.boxes, videos_root=a.videos_root, split=a.split,
                         methods=methods, max_clips=a.max_clips, sanity_clips=a.sanity_clips, steps=a.steps)
    if a.json:
        print(json.dumps({m: {k: {x: v[x] for x in ("mean", "lo", "hi")} for k, v in row.items()}
                          for m, row in r["table"].items()}, indent=1))
        return 0
    print(f"{r['dataset']}: {r['n_clips']} clips, mean [95 % interval] over clips; sanity on {r['params']['sanity_clips']}")
    metrics = list(next(iter(r["table"].values())))
    print(f"{'method':<10s} " + " ".join(f"{k:>22s}" for k in metrics))
    for m, row in r["table"].items():
        cells = ["-" if v["mean"] is None else f"{v['mean']:.3f} [{_fmt(v['lo'])[:6]},{_fmt(v['hi'])[:6]}]"
                 for v in row.values()]
        flag = "" if r["sanity"][m]["passed"] else "  FAILS SANITY"
        print(f"{m:<10s} " + " ".join(f"{c:>22s}" for c in cells) + flag)
    for kind, v in r.get("modality", {}).items():
        print(f"audio share of {kind} actions: {_fmt(v['mean'])} [{_fmt(v['lo'])}, {_fmt(v['hi'])}] ({v['n']} pairs)")
    return 0


def _motion(a: argparse.Namespace) -> int:
    from .analysis.motion import DEFAULT_LAYERS, run_motion

    r = run_motion(a.run, world=a.world, layers=a.layers or DEFAULT_LAYERS, split=a.split, clips=a.clips, seed=a.seed)
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['dataset']}: {r['clips']} clips; motion score = D_motion / (D_motion + D_appearance) per unit")
    print(f"{'layer':<16s} {'units':>5s} {'scored':>6s} {'mean':>7s} {'median':>7s} {'share>0.5':>9s}")
    for x in r["layers"]:
        share = "-" if x["share_motion"] is None else f"{x['share_motion']:.3f}"
        print(f"{x['layer']:<16s} {x['units']:5d} {x['scored']:6d} {_fmt(x['mean']):>7s} {_fmt(x['median']):>7s} "
              f"{share:>9s}")
    return 0


def _figures(a: argparse.Namespace) -> int:
    from .analysis.figures import run_figures

    for p in run_figures(a.run, a.out, metric=a.metric, prob=a.prob):
        print(p)
    return 0


_VERBS = {"ablation": _ablation, "selectivity": _selectivity, "relations": _relations,
          "concept-path": _concept_path, "localisation": _localisation, "bias": _bias,
          "ownership-ceiling": _ownership_ceiling,
          "explanations": _explanations, "motion": _motion, "figures": _figures}
