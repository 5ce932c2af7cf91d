"""One localisation probe of issue 12: a demo-sized world, the visual model's 2-D twin, a training
run and `mmit-analyze localisation`, with one thing changed (model kwargs, world knobs, epochs).

    python benchmarks/loc_probe.py OUT NAME [--model M] [--kwargs JSON] [--synth JSON] [--train JSON] [--epochs N] [--seed S]
                                   [--size PX] [--scratch]

Worlds and twins are cached under OUT by what they depend on, so probes that change only the
training reuse them; decoded clips too (OUT/clip-cache, same weights as decoding each epoch). Prints (and writes to OUT/NAME/probe.json) the validation metrics of the best
checkpoint, the localisation summary and the seconds each step took; docs/synth.md keeps the table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path


def _key(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("name")
    p.add_argument("--model", default="i3d_r18", help="a registered video model (e.g. i3d_r18_attend, benchmarks/track_attention.py)")
    p.add_argument("--kwargs", default="{}", help="model keyword arguments on top of the demo's")
    p.add_argument("--synth", default="{}", help="SynthConfig fields on top of the demo world's")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0, help="training seed (the world and the twin keep theirs)")
    p.add_argument("--loss", default="bce")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--size", type=int, default=64, help="frame side the model sees (the world's `size` is set by --synth)")
    p.add_argument("--scratch", action="store_true", help="no still-image twin")
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--train", default="{}", help="other TrainConfig fields, e.g. '{\"map_separation\": 1.0}'")
    a = p.parse_args()

    from mmit_demo.pipeline import PRETRAIN_CATEGORIES, DemoConfig, demo_stills, demo_synth
    from mmit_interp.explain.localisation import run_localisation
    from mmit_interp.models import build_model
    from mmit_interp.synth import generate_world
    from train.loop import TrainConfig, train
    from train.pretrain import PretrainConfig, pretrain_stills

    pre = DemoConfig().resolved()
    out = Path(a.out)
    secs: dict[str, float] = {}
    synth = replace(demo_synth(pre), **json.loads(a.synth))
    world = out / f"world-{_key(asdict(synth))}"
    t0 = time.time()
    if not (world / "world.json").is_file():
        generate_world(world, synth, force=True, progress=False)
    secs["world"] = time.time() - t0
    kw = {"width": pre.width, "layer4_stride": 1, **json.loads(a.kwargs)}
    twin = None
    if not a.scratch:
        stills_cfg = demo_stills(pre, synth)
        stills = out / f"stills-{_key(asdict(stills_cfg))}"
        if not (stills / "world.json").is_file():
            generate_world(stills, stills_cfg, force=True, progress=False)
        arch = [(k, list(v.shape)) for k, v in build_model(a.model, 1, **kw).state_dict().items()]  # a changed model gets its own twin
        twin_key = {"s": asdict(stills_cfg), "kw": kw, "e": a.pretrain_epochs, "arch": arch,
                    **({"size": a.size} if a.size != 64 else {}),
                    **({"model": a.model} if a.model != "i3d_r18" else {})}
        twin = out / f"twin-{_key(twin_key)}.pth"
        t0 = time.time()
        if not twin.is_file():
            pretrain_stills(PretrainConfig(concepts=str(stills / "broden"), out=str(twin), model=a.model,
                                           model_kwargs=kw, size=a.size,
                                           epochs=a.pretrain_epochs, categories=PRETRAIN_CATEGORIES,
                                           progress=False))
        secs["twin"] = time.time() - t0
    run = out / a.name
    t0 = time.time()
    res = train(TrainConfig(data=str(world), out=str(run), model=a.model, model_kwargs=kw, loss=a.loss,
                            frames=8, size=a.size, batch_size=8, epochs=a.epochs, lr=a.lr, warmup_epochs=0.2, seed=a.seed,
                            inflate_from=str(twin) if twin else None, clip_cache=str(out / "clip-cache"), progress=False,
                            **json.loads(a.train)))
    secs["train"] = time.time() - t0
    t0 = time.time()
    loc = run_localisation(run, world=world)
    secs["localisation"] = time.time() - t0
    summary = loc["summary"]
    r = {"name": a.name, "model": a.model, "kwargs": kw, "synth": json.loads(a.synth), "train": json.loads(a.train), "epochs": a.epochs,
         "seed": a.seed, "loss": a.loss,
         "twin": bool(twin), "metrics": {k: v for k, v in res.metrics.items() if k != "per_class_ap"},
         "localisation": summary, "seconds": secs}
    (run / "probe.json").write_text(json.dumps(r, indent=1))
    m = r["metrics"]
    print(f"{a.name}: map_class {m['map_class']:.3f} map_sample {m['map_sample']:.3f} epoch {m.get('epoch')} | "
          f"pointing cam {summary['cam'].get('pointing', 0):.3f} | ownership max {summary['cam_max'].get('ownership', 0):.3f}"
          f" mcam {summary['mcam'].get('ownership', 0):.3f} chance {summary['chance'].get('ownership', 0):.3f} | "
          f"{ {k: round(v) for k, v in secs.items()} }")


if __name__ == "__main__":
    main()
