"""The embedded default: synthetic world -> models -> evaluation -> dissection -> analyses -> report.

`run_demo(DemoConfig(...))` runs every stage under `out/` (default `demo_out/`), reusing finished
stages whose inputs did not change (see `stages.py`); `mmit-demo` wraps it and then serves the
dashboard.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from mmit_interp.atomic import atomic_write_json

from .stages import Pipeline

LOSSES = ("wlsep", "lsep", "warp", "bce")
# TrainConfig fields that change how fast a run goes, not what it computes: left out of stage keys
RUNTIME_FIELDS = ("progress", "workers", "device", "clip_cache")

# The demo's world: the 10 most frequent catalogue actions (incl. the planted-bias action, a heard-only
# action and two look-alike pairs), a steeper tail so the head/tail ratio stays >= 20, and nuisances
# sized so that the small model learns within the 2-core budget (see docs/experiments.md). Every spinner
# is dotted (`bias_strength` 1): a shortcut as clean as the paper's polka dots, which the showcase
# model routes through `dotted` units (at 0.8 it learned the excess without them; docs/synth.md).
DEMO_CLASSES = ("sliding", "bouncing", "spinning", "falling", "beeping", "orbiting", "growing", "shaking",
                "jumping", "blinking")
DEMO_WORLD = dict(classes=DEMO_CLASSES, tail_exponent=1.3, actor_size=0.16, clutter=0.8, noise=5.0,
                  camera_shake=0.5, occlusion=0.15, bias_strength=1.0)

PRESETS: dict[str, dict] = {
    # CI-sized: every stage runs, in a few minutes on 2 cores
    "tiny": dict(train_clips=240, val_clips=60, images=120, action_frames=40, epochs=4, loss_epochs=4, width=8,
                 audio_width=0.25,
                 stills=160, pretrain_epochs=4,
                 cam_clips=3, synth=dict(DEMO_WORLD, classes=DEMO_CLASSES[:5], actor_size=0.2, clutter=0.0,
                                         noise=2.0, camera_shake=0.0, occlusion=0.0, tail_exponent=1.0)),
    # the README's default: the whole first run in under 15 minutes on 2 cores (the four loss runs, a
    # side table beside the shipped main run, train one epoch less than audio and fusion to fit)
    "default": dict(train_clips=1200, val_clips=300, images=800, action_frames=240, epochs=5, loss_epochs=4, width=8,
                    audio_width=0.5, cam_clips=8, stills=1200, pretrain_epochs=15, synth=DEMO_WORLD),
    # the full 30-class world of `mmit-synth`'s defaults, for a GPU or a patient CPU
    "large": dict(train_clips=2000, val_clips=500, images=1000, action_frames=300, epochs=12, loss_epochs=12, width=16,
                  audio_width=0.5, cam_clips=16, stills=2000, pretrain_epochs=15, synth={}),
}


@dataclass
class DemoConfig:
    """What the demo builds; `preset` fills the sizes, explicit fields override it."""

    out: str = "demo_out"
    preset: str = "default"
    seed: int = 0
    train_clips: int | None = None
    val_clips: int | None = None
    images: int | None = None
    action_frames: int | None = None
    epochs: int | None = None  # audio and fusion (and the loss runs, unless loss_epochs)
    loss_epochs: int | None = None  # the visual models trained one per loss
    width: int | None = None
    audio_width: float | None = None
    cam_clips: int | None = None
    stills: int | None = None
    pretrain_epochs: int | None = None
    synth: dict | None = None
    losses: tuple[str, ...] = LOSSES
    frames: int = 8
    size: int = 64
    batch_size: int = 8
    workers: int = 2
    device: str = "auto"
    skip: tuple[str, ...] = ()
    force: tuple[str, ...] = ()
    progress: bool = True
    showcase: bool = True  # install the shipped localising run (mmit_demo/showcase.py) where the world is its own

    def resolved(self) -> "DemoConfig":
        """The config with every size taken from the preset where not given."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        fill = {k: v for k, v in PRESETS[self.preset].items() if getattr(self, k) is None}
        return replace(self, **fill)


def visual_kwargs(cfg: DemoConfig) -> dict:
    """The demo's small I3D: ResNet-18 shape, time kept, a 4x4 last map at 64x64 for CAMs."""
    return {"width": cfg.width, "layer4_stride": 1}


# pixel-level concepts only: the actions live in the actors, and scene labels are whole-image
PRETRAIN_CATEGORIES = ["color", "object", "texture"]


def demo_synth(cfg: DemoConfig):
    """The `SynthConfig` of a resolved demo config's world."""
    from mmit_interp.synth import SynthConfig

    return SynthConfig(seed=cfg.seed, train_clips=cfg.train_clips, val_clips=cfg.val_clips, images=cfg.images,
                       action_frames=cfg.action_frames, workers=cfg.workers, **cfg.synth)


def demo_stills(cfg: DemoConfig, synth):
    """The still-only concept set the visual twin pretrains on: the world's look with seed + 1, so the
    dissection probe images stay unseen, and 1-3 actors of up to 1.8x the clips' size per image (more
    labelled actors per image to learn from; the dissection set shows one at the clips' scale)."""
    return replace(synth, seed=cfg.seed + 1, train_clips=0, val_clips=0, images=cfg.stills, action_frames=0,
                   still_actors=3, still_scale=(1.0, 1.8))


def run_demo(cfg: DemoConfig) -> Pipeline:
    """Run (or reuse) every stage of the demo; returns the pipeline with each stage's summary."""
    cfg = cfg.resolved()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    p = Pipeline(out, skip=set(cfg.skip), force=set(cfg.force))
    world = out / "world"
    runs = out / "runs"

    from mmit_interp.synth import generate_world

    synth = demo_synth(cfg)

    def make_world() -> dict:
        s = generate_world(world, synth, force=True, progress=cfg.progress)
        return {k: v for k, v in asdict(s).items() if isinstance(v, (int, float, str, bool, list, dict))}

    p.run("world", asdict(synth), make_world)

    # the stand-in for ImageNet inflation: a separate still-image concept set (seed + 1, so the
    # dissection probe images stay unseen), the visual trunk's 2-D twin trained on it, then inflated
    stills_cfg = demo_stills(cfg, synth)
    p.run("stills", asdict(stills_cfg),
          lambda: {"images": generate_world(out / "stills", stills_cfg, force=True, progress=cfg.progress).images})
    still2d = out / "pretrain" / "still2d.pth"

    def pretrain() -> dict:
        from train.pretrain import PretrainConfig, pretrain_stills

        s = pretrain_stills(PretrainConfig(concepts=str(out / "stills" / "broden"), out=str(still2d),
                                           model_kwargs=visual_kwargs(cfg), size=cfg.size, epochs=cfg.pretrain_epochs,
                                           categories=PRETRAIN_CATEGORIES, device=cfg.device,
                                           progress=cfg.progress))
        return {"file": str(still2d), "concept_map_class": s["history"][-1]["map_class"], "seconds": s["seconds"]}

    p.run("pretrain", {"epochs": cfg.pretrain_epochs, "kwargs": visual_kwargs(cfg), "size": cfg.size,
                       "categories": PRETRAIN_CATEGORIES}, pretrain,
          deps=("stills",))

    def train_stage(name: str, deps: tuple[str, ...] = (), code: dict | None = None, **over) -> None:
        from train.loop import TrainConfig, train

        run = runs / name
        tc = TrainConfig(data=str(world), out=str(run), frames=cfg.frames, size=cfg.size, batch_size=cfg.batch_size,
                         epochs=over.pop("epochs", cfg.epochs), workers=cfg.workers, seed=cfg.seed, device=cfg.device,
                         progress=cfg.progress, lr=3e-3, warmup_epochs=0.2, clip_cache=str(out / "cache" / "clips"),
                         **over)
        key = {k: v for k, v in asdict(tc).items() if k not in RUNTIME_FIELDS} | (code or {})  # code: model revisions

        def fn() -> dict:
            resume = p.claim(run) and (run / "checkpoints" / "last.pt").is_file()
            res = train(tc, resume=resume)
            return {"metrics": {k: v for k, v in res.metrics.items() if k != "per_class_ap"}, "run": str(run),
                    "resumed": resume}

        p.run(f"train-{name}", key, fn, deps=("world",) + deps)

    for loss in cfg.losses:
        train_stage(loss, model="i3d_r18", model_kwargs=visual_kwargs(cfg), loss=loss, inflate_from=str(still2d),
                    epochs=cfg.loss_epochs, deps=("pretrain",))
    from mmit_interp.checkpoint import file_sha256
    from mmit_interp.models.fusion import FusionNet

    from .showcase import CHECKPOINT, applies, card, install_showcase, world_key

    if cfg.showcase and applies(asdict(synth)):  # keyed by the weights: a rebuilt checkpoint reinstalls
        p.run("showcase", {"weights": file_sha256(CHECKPOINT)[:16]},
              lambda: install_showcase(world, runs / "showcase", asdict(synth), workers=cfg.workers,
                                       device=cfg.device, progress=cfg.progress), deps=("world",))
    elif cfg.showcase:
        p.log(f"[skip] showcase: the shipped checkpoint was trained on the world of key {card()['world_key']}, this "
              f"one's is {world_key(asdict(synth))} (another preset, or the world's config changed since: rebuild "
              f"it with python -m mmit_demo.showcase OUT)")
    visual = _visual_runs(cfg, p)
    if visual:
        stages = tuple(_stage(r) for r in visual)
        p.run("main", {"runs": list(stages)}, lambda: pick_main_run(runs, visual), deps=stages)
    main = p.results["main"].summary["run"] if "main" in p.results else None
    train_stage("audio", model="soundnet", model_kwargs={"width_mult": cfg.audio_width}, loss="wlsep")
    if main and "train-audio" in p.results:
        main_cfg = json.loads((runs / main / "config.json").read_text())
        fusion_kw = {"visual": main_cfg["model"], "visual_kwargs": main_cfg["model_kwargs"],
                     "audio": "soundnet", "audio_kwargs": {"width_mult": cfg.audio_width}}
        train_stage("fusion", model="fusion", model_kwargs=fusion_kw, loss="wlsep",
                    init_visual=str(runs / main), init_audio=str(runs / "audio"), freeze_trunks=True,
                    deps=("main", _stage(main), "train-audio"), code={"fusion_head": FusionNet.head_version})

    trained = tuple(r for r in p.results if r.startswith("train-") or r == "showcase")
    p.run("table1", {"runs": sorted(trained)}, lambda: table1(out, runs), deps=trained)
    analyse(p, cfg, out, world, runs)
    atomic_write_json(out / "report" / "timings.json", p.timings())
    return p


FORMULAS = {"length": 3, "beam": 5}


def trunk_stages(run: Path) -> tuple[str, ...]:
    """The stages of a run's trunk that the demo dissects (`layer1` .. `layer4`, plus `attend` for a track
    model); the last two also on the action tubes (issue 16)."""
    from mmit_interp.analysis.trunk import stages
    from mmit_interp.checkpoint import cached_model

    return tuple(stages(cached_model(run)[0]))


def _stage(run: str) -> str:
    """Stage that makes a visual run folder: `bce` -> `train-bce`; `showcase` -> `showcase`."""
    return run if run == "showcase" else f"train-{run}"


def _visual_runs(cfg: DemoConfig, p: Pipeline) -> list[str]:
    """The visual run folders made so far: one per trained loss, then the shipped showcase."""
    return [r for r in cfg.losses if f"train-{r}" in p.results] + (["showcase"] if "showcase" in p.results else [])


def pick_main_run(runs: Path, names: list[str]) -> dict:
    """The visual run the analyses explain and fusion builds on: the shipped `showcase` run when it is
    among `names` (the recipe whose CAMs follow the actors, issue 12), else the best validation
    map_sample of `eval.json` (its `best.pt`, the metric that picked it), the first of `names` on ties.
    The paper analyses its best model (wLSEP there); on the synthetic world another loss may win."""
    scores = {n: json.loads((runs / n / "eval.json").read_text())["map_sample"] for n in names}
    if "showcase" in names:
        return {"run": "showcase", "map_sample": scores, "selected_by": "showcase"}
    best = max(names, key=lambda n: scores[n])
    return {"run": best, "map_sample": scores, "selected_by": "map_sample"}


def analyse(p: Pipeline, cfg: DemoConfig, out: Path, world: Path, runs: Path) -> None:
    """Concept sets, dissection, ablation, selectivity/relations, CAMs, localisation, bias, figures."""
    if "main" not in p.results:
        p.log("[skip] analyses: no visual run was trained")
        return
    main_name = p.results["main"].summary["run"]
    main = runs / main_name
    concepts = out / "concepts"
    visual = _visual_runs(cfg, p)
    main_dep = ("main", _stage(main_name))
    dissected = trunk_stages(main)

    def make_concepts() -> dict:
        from broden_actions.actions import build_action_regions, merge_concept_sets

        if concepts.exists():
            shutil.rmtree(concepts)
        actions = build_action_regions(world / "action_regions" / "boxes.csv", world / "action_regions" / "frames",
                                       concepts / "actions", base=world / "broden")
        both = merge_concept_sets([world / "broden", actions], concepts / "broden+actions")
        return {"broden": str(world / "broden"), "actions": str(actions), "broden+actions": str(both)}

    p.run("concepts", {}, make_concepts, deps=("world",))

    def dissect_main() -> dict:
        from dissect import report, run_dissection
        from dissect.engine import InputTransform
        from mmit_interp.checkpoint import load_model
        from mmit_interp.store import ResultsStore

        model, meta = load_model(main)
        sets = [world / "broden", concepts / "actions", concepts / "broden+actions"]
        transform = InputTransform.from_checkpoint(meta["transforms"])
        results = run_dissection(model, list(dissected), [str(s) for s in sets], transform=transform,
                                 batch_size=32, workers=cfg.workers, progress=cfg.progress,
                                 checkpoint_hash=meta["sha256"][:16], cache_dir=out / "cache" / "dissect")
        dest = main / "dissect"
        if dest.exists():
            shutil.rmtree(dest)
        labels = report.label_units(results)
        summary = report.write_outputs(results, labels, dest, gallery={"model": model, "k": 8, "transform": transform})
        with ResultsStore(main) as st:
            st.register_run(meta)
            for cs, layers in labels.items():
                for layer, recs in layers.items():
                    st.write_units(layer, Path(cs).name, recs)
        return {"counts": summary}

    p.run("dissect", {"layers": dissected}, dissect_main, deps=("concepts",) + main_dep)

    tubes = out / "tubes"  # beside concepts/, which its stage replaces as a whole

    def make_tubes() -> dict:
        from broden_actions.actions import build_action_tubes

        if tubes.exists():
            shutil.rmtree(tubes)
        return {"tubes": str(build_action_tubes(world, tubes, base=world / "broden", render=True))}

    p.run("tubes", {"render": True}, make_tubes, deps=("world",))

    def dissect_video() -> dict:
        return video_dissection(main, tubes, concepts / "broden+actions", layers=dissected[-2:],
                                cache=out / "cache" / "dissect", workers=cfg.workers, progress=cfg.progress)

    p.run("dissect-video", {"layers": dissected[-2:], "formulas": FORMULAS}, dissect_video,
          deps=("dissect", "tubes") + main_dep)

    def motion() -> dict:
        from mmit_interp.analysis.motion import run_motion

        return _brief(run_motion(main, world=world, layers=("stem",) + dissected, clips=128))

    p.run("motion", {"clips": 128, "layers": ("stem",) + dissected}, motion, deps=main_dep)

    def ablate() -> dict:
        from mmit_interp.analysis.ablation import run_ablation

        return {r: _brief(run_ablation(runs / r, seeds=(0, 1, 2))) for r in visual}  # each run's last stage

    p.run("ablation", {"runs": visual, "seeds": 3}, ablate, deps=tuple(_stage(r) for r in visual))

    def selectivity() -> dict:
        from mmit_interp.analysis.selectivity import run_selectivity

        return {r: _brief(run_selectivity(runs / r, prob="softmax")) for r in visual}

    p.run("selectivity", {"runs": visual}, selectivity, deps=tuple(_stage(r) for r in visual))

    def cams() -> dict:
        from mmit_interp.analysis.clip_analysis import analyze_clip

        clips = pick_cam_clips(world, cfg.cam_clips)
        done = [analyze_clip(main, world / "videos" / c.path)["clip_key"] for c in clips]
        return {"clips": [c.path for c in clips], "keys": done}

    p.run("cams", {"n": cfg.cam_clips}, cams, deps=main_dep + ("dissect",))

    def localise() -> dict:
        from mmit_interp.explain.localisation import run_localisation_scales

        # DESIGN's min-max maps, and the same CAMs compared in standard units (owner maps by z-score), one pass
        r = run_localisation_scales(main, world=world, scales=("minmax", "zscore"))
        return {**_brief(r["minmax"]), "zscore": r["zscore"]["summary"]}

    p.run("localisation", {"scales": ["minmax", "zscore"]}, localise, deps=main_dep)

    def bias() -> dict:
        from mmit_interp.analysis.bias import run_bias

        # paths reaching texture units, the lure and texture-twin excess their ablation removes
        return run_bias(main, world=world, rule="set", counterfactual=True)

    # the store's labels come from every dissection that ran, the tubes' included
    labels_from = ("dissect",) + (("dissect-video",) if "dissect-video" in p.results else ())
    p.run("bias", {"analysis": "mmit_interp.analysis.bias", "rule": "set", "twins": True}, bias,
          deps=main_dep + labels_from)

    def figures() -> dict:
        from mmit_interp.analysis.figures import run_figures

        files = run_figures([runs / r for r in visual], out / "report" / "figures")
        return {"files": [str(f) for f in files]}

    p.run("figures", {"runs": visual}, figures, deps=("ablation", "selectivity"))
    p.run("report", {"sections": 2}, lambda: write_report(out, p), deps=("table1",))


def video_dissection(run: Path, tubes: Path, still: Path, *, layers: Sequence[str], cache: Path | None = None,
                     workers: int = 2, progress: bool = False) -> dict:
    """Dissection for video on the main run (issue 16): `layers` on the action tubes with every time
    step against its own frame, then compositional formulas on the tubes and on the `still` set; all
    written beside the still dissection (`<run>/dissect/tubes/...`, `formulas.{csv,json}`) and into the
    run's store, so the unit pages show the tube labels, formulas and clip galleries."""
    from dissect import report, run_dissection
    from dissect.compose import run_formulas
    from dissect.engine import InputTransform
    from mmit_interp.checkpoint import load_model
    from mmit_interp.store import ResultsStore

    model, meta = load_model(run)
    transform = InputTransform.from_checkpoint(meta["transforms"])
    ckpt = meta["sha256"][:16]
    common = dict(transform=transform, batch_size=32, workers=workers, progress=progress, checkpoint_hash=ckpt,
                  cache_dir=cache)
    tube_res = run_dissection(model, list(layers), [str(tubes)], time="frames", **common)
    still_res = run_dissection(model, list(layers), [str(still)], **common)
    formulas = run_formulas(model, {**tube_res, **still_res}, transform=transform, batch_size=32, workers=workers,
                            progress=progress, cache_dir=cache, **FORMULAS)
    dest = run / "dissect"
    tube_labels = report.label_units(tube_res)
    counts = report.write_outputs(tube_res, tube_labels, dest, gallery={"model": model, "k": 8, "time": "frames",
                                                                     "transform": transform})
    labels = {**tube_labels, **report.label_units(still_res)}
    summary = {}
    with ResultsStore(run) as st:
        for cs, layers in formulas.items():
            name = Path(cs).name
            for layer, recs in layers.items():
                summary[f"{name}/{layer}"] = report.write_formulas(layer, recs, labels[cs][layer],
                                                                   dest / name / layer / "formulas")
                st.write_unit_formulas(layer, name, [f.as_dict() for f in recs])
        for cs, layers in tube_labels.items():
            for layer, recs in layers.items():
                st.write_units(layer, Path(cs).name, recs)
    return {"counts": counts, "formulas": summary}


def _brief(obj):
    """A JSON-able digest of an analysis result for the stage marker (big arrays left out)."""
    if isinstance(obj, dict):
        return {k: _brief(v) for k, v in obj.items() if not (isinstance(v, list) and len(v) > 64)}
    if isinstance(obj, list):
        return [_brief(v) for v in obj[:64]]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)


def pick_cam_clips(world: Path, n: int):
    """Validation clips with two or more visible actions (what mCAM is for), in file order."""
    from mmit_interp.synth import load_truth

    val = [c for c in load_truth(world) if c.split == "val"]
    multi = [c for c in val if sum(a.visible for a in c.actors) >= 2]
    return (multi + [c for c in val if c not in multi])[:n]


def write_report(out: Path, p: Pipeline) -> dict:
    """`report/experiments.md`: the tables and numbers every stage produced, in one page."""
    r = {k: v.summary for k, v in p.results.items()}
    lines = ["# Experiments on the synthetic world (generated by mmit-demo)", ""]
    if (out / "report" / "table1.md").is_file():
        lines += ["## Table 1 analog", "", (out / "report" / "table1.md").read_text(), ""]
    main = r.get("main", {}).get("run")
    t3 = out / "runs" / str(main) / "dissect" / "table3.csv"
    if main and t3.is_file():
        lines += [f"## Table 3 analog (dissection of the {main} model, the main run)", "", "```",
                  t3.read_text().strip(), "```", ""]
    for key in ("localisation", "bias", "dissect-video", "motion", "ablation", "selectivity"):
        if key in r:
            lines += [f"## {key}", "", "```json", json.dumps(r[key], indent=1)[:6000], "```", ""]
    lines += ["## Stage timings", "", "| stage | seconds | reused |", "|---|---|---|"]
    lines += [f"| {t['stage']} | {t['seconds']} | {t['reused']} |" for t in p.timings()]
    (out / "report").mkdir(parents=True, exist_ok=True)
    (out / "report" / "experiments.md").write_text("\n".join(lines) + "\n")
    return {"file": str(out / "report" / "experiments.md")}


def table1(out: Path, runs: Path) -> dict:
    """The Table 1 analog: every named metric of every trained run, plus the label-prior baseline."""
    rows = []
    for run in sorted(runs.iterdir()):
        if not (run / "eval.json").is_file():
            continue
        m = json.loads((run / "eval.json").read_text())
        cfg = json.loads((run / "config.json").read_text())
        rows.append({"run": run.name, "model": cfg["model"], "loss": cfg["loss"],
                     **{k: m[k] for k in ("hit@1", "hit@5", "map_sample", "map_class", "map_micro")}})
    base = next((json.loads((r / "baseline.json").read_text()) for r in sorted(runs.iterdir())
                 if (r / "baseline.json").is_file()), None)
    if base:
        rows.append({"run": "label-prior baseline", "model": "-", "loss": "-",
                     **{k: base[k] for k in ("hit@1", "hit@5", "map_sample", "map_class", "map_micro")}})
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report / "table1.json", rows)
    cols = ("hit@1", "hit@5", "map_sample", "map_class", "map_micro")
    md = ["| run | model | loss | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    md += [f"| {r['run']} | {r['model']} | {r['loss']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |"
           for r in rows]
    (report / "table1.md").write_text("\n".join(md) + "\n")
    return {"rows": rows}
