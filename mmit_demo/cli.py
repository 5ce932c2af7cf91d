"""`mmit-demo`: build the embedded demo (reusing finished stages) and serve the dashboard.

A thin shell over `mmit_demo.run_demo`; heavy imports happen after argument parsing.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from .pipeline import LOSSES, PRESETS

    p = argparse.ArgumentParser(prog="mmit-demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo_out", help="folder for the world, runs, analyses and report")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="size of everything")
    p.add_argument("--seed", type=int, default=0)
    for k in ("train-clips", "val-clips", "images", "action-frames", "epochs", "loss-epochs", "width", "cam-clips",
              "stills", "pretrain-epochs"):
        p.add_argument(f"--{k}", type=int, help="override the preset")
    p.add_argument("--audio-width", type=float, help="SoundNet width multiplier (override the preset)")
    p.add_argument("--losses", default=",".join(LOSSES), help="visual models to train, one per loss")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--skip", default="", help="comma-separated stages to skip (e.g. train-bce,dissect)")
    p.add_argument("--force", default="", help="comma-separated stages to redo even if finished")
    p.add_argument("--no-serve", action="store_true", help="build only; do not start the dashboard")
    p.add_argument("--no-showcase", action="store_true",
                   help="do not install the shipped localising run (mmit_demo/showcase.py) as a candidate main run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--quiet", action="store_true", help="no progress bars (stage lines still print)")
    return p


def _csv(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mmit-demo`."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from .pipeline import DemoConfig, run_demo

    cfg = DemoConfig(out=args.out, preset=args.preset, seed=args.seed, train_clips=args.train_clips,
                     val_clips=args.val_clips, images=args.images, action_frames=args.action_frames,
                     epochs=args.epochs, loss_epochs=args.loss_epochs, width=args.width, audio_width=args.audio_width, cam_clips=args.cam_clips,
                     stills=args.stills, pretrain_epochs=args.pretrain_epochs, losses=_csv(args.losses),
                     workers=args.workers, device=args.device, skip=_csv(args.skip),
                     force=_csv(args.force), progress=not args.quiet, showcase=not args.no_showcase)
    p = run_demo(cfg)
    total = sum(r.seconds for r in p.results.values() if not r.cached)
    print(f"demo built in {Path(args.out).resolve()} ({total:.0f} s of work this time)", file=sys.stderr)
    if args.no_serve:
        return 0
    runs = Path(args.out).resolve() / "runs"
    os.environ["MMIT_RUNS"] = str(runs)
    from webapp.serve import serve

    serve(runs=[runs], host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
