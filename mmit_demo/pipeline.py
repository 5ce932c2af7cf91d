"""The embedded default: synthetic world -> models -> evaluation -> dissection -> analyses -> report.

`run_demo(DemoConfig(...))` runs every stage under `out/` (default `demo_out/`), reusing finished
stages whose inputs did not change (see `stages.py`); `mmit-demo` wraps it and then serves the
dashboard.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mmit_interp.checkpoint import atomic_write_json

from .stages import Pipeline

LOSSES = ("wlsep", "lsep", "warp", "bce")

PRESETS: dict[str, dict] = {
    # CI-sized: every stage runs, in a couple of minutes on 2 cores
    "tiny": dict(train_clips=160, val_clips=60, images=120, action_frames=40, epochs=2, width=8, audio_width=0.25,
                 cam_clips=3),
    # the README's default: the whole first run in under 15 minutes on 2 cores
    "default": dict(train_clips=1600, val_clips=400, images=800, action_frames=240, epochs=3, width=16,
                    audio_width=0.5, cam_clips=8),
    # closer to the suggested world size, for a GPU or a patient CPU
    "large": dict(train_clips=4000, val_clips=1000, images=2000, action_frames=600, epochs=8, width=24,
                  audio_width=0.5, cam_clips=16),
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
    epochs: int | None = None
    width: int | None = None
    audio_width: float | None = None
    cam_clips: int | None = None
    losses: tuple[str, ...] = LOSSES
    frames: int = 8
    size: int = 64
    batch_size: int = 16
    workers: int = 2
    device: str = "auto"
    skip: tuple[str, ...] = ()
    force: tuple[str, ...] = ()
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def resolved(self) -> "DemoConfig":
        """The config with every size taken from the preset where not given."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        fill = {k: v for k, v in PRESETS[self.preset].items() if getattr(self, k) is None}
        return replace(self, **fill)


def visual_kwargs(cfg: DemoConfig) -> dict:
    """The demo's small I3D: ResNet-18 shape, time kept, a 4x4 last map at 64x64 for CAMs."""
    return {"width": cfg.width, "layer4_stride": 1}


def run_demo(cfg: DemoConfig) -> Pipeline:
    """Run (or reuse) every stage of the demo; returns the pipeline with each stage's summary."""
    cfg = cfg.resolved()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    p = Pipeline(out, skip=set(cfg.skip), force=set(cfg.force))
    world = out / "world"
    runs = out / "runs"

    from mmit_interp.synth import SynthConfig, generate_world

    synth = SynthConfig(seed=cfg.seed, train_clips=cfg.train_clips, val_clips=cfg.val_clips, images=cfg.images,
                        action_frames=cfg.action_frames, workers=cfg.workers)

    def make_world() -> dict:
        s = generate_world(world, synth, force=True, progress=cfg.progress)
        return {k: v for k, v in asdict(s).items() if isinstance(v, (int, float, str, bool, list, dict))}

    p.run("world", asdict(synth), make_world)

    def train_stage(name: str, deps: tuple[str, ...] = (), **over) -> None:
        from train.loop import TrainConfig, train

        run = runs / name
        tc = TrainConfig(data=str(world), out=str(run), frames=cfg.frames, size=cfg.size, batch_size=cfg.batch_size,
                         epochs=cfg.epochs, workers=cfg.workers, seed=cfg.seed, device=cfg.device,
                         progress=cfg.progress, **over)
        key = {k: v for k, v in asdict(tc).items() if k not in ("progress", "workers", "device")}

        def fn() -> dict:
            resume = (run / "checkpoints" / "last.pt").is_file() and _same_config(run, tc)
            if not resume and run.exists():
                shutil.rmtree(run)
            res = train(tc, resume=resume)
            return {"metrics": {k: v for k, v in res.metrics.items() if k != "per_class_ap"}, "run": str(run),
                    "resumed": resume}

        p.run(f"train-{name}", key, fn, deps=("world",) + tuple(f"train-{d}" for d in deps))

    for loss in cfg.losses:
        train_stage(loss, model="i3d_r18", model_kwargs=visual_kwargs(cfg), loss=loss)
    train_stage("audio", model="soundnet", model_kwargs={"width_mult": cfg.audio_width}, loss="wlsep")
    if "train-wlsep" in p.results and "train-audio" in p.results:
        fusion_kw = {"visual": "i3d_r18", "visual_kwargs": visual_kwargs(cfg),
                     "audio": "soundnet", "audio_kwargs": {"width_mult": cfg.audio_width}}
        train_stage("fusion", model="fusion", model_kwargs=fusion_kw, loss="wlsep",
                    init_visual=str(runs / "wlsep"), init_audio=str(runs / "audio"), freeze_trunks=True,
                    lr=1e-2, deps=("wlsep", "audio"))

    p.run("table1", {"runs": sorted(r for r in p.results if r.startswith("train-"))},
          lambda: table1(out, runs), deps=tuple(r for r in p.results if r.startswith("train-")))
    atomic_write_json(out / "report" / "timings.json", p.timings())
    return p


def _same_config(run: Path, tc) -> bool:
    """Whether an interrupted run dir was started with this very config (so it can resume)."""
    f = run / "config.json"
    if not f.is_file():
        return False
    saved = json.loads(f.read_text())
    return all(saved.get(k) == v for k, v in asdict(tc).items() if k not in ("progress", "workers", "device"))


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
