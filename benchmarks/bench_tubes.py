"""Benchmark: tube dissection vs the forward passes it needs (issue 16 item 1).

A small synthetic world's action regions become a tube set (per-frame masks) and, for comparison,
the still action set of the same items. A small I3D (``i3d_r18``, width 16 or ``--width``, 8 frames of 64 px) is
dissected on both with ``time="frames"`` (two passes, features recomputed). The baseline is the
forward passes alone: two passes of the same loader (snippet decoding and still masks included)
running the model with the layers captured. The ratio tube / forward is the target (<= 1.5).
Run: ``python benchmarks/bench_tubes.py [--action-frames 160] [--layers layer3 layer4] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broden_actions.actions import build_action_regions, build_action_tubes  # noqa: E402
from dissect.engine import InputTransform, run_dissection  # noqa: E402
from mmit_interp.hooks import capture_activations  # noqa: E402
from mmit_interp.models import build_model  # noqa: E402


def timed(fn, repeats: int) -> float:
    """The best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> dict:
    """Build the sets (in a temporary folder, removed after), time forward passes, tube and still
    dissection; print and return the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", help="an existing synthetic world (default: generate one)")
    ap.add_argument("--action-frames", type=int, default=160)
    ap.add_argument("--layers", nargs="+", default=["layer3", "layer4"])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--width", type=int, default=16, help="i3d_r18 base width (small: data loading dominates)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers, for the baseline and dissection")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-tubes-") as tmp:
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> dict:
    """The benchmark proper, its sets written under ``tmp``."""
    world = Path(args.world) if args.world else tmp / "world"
    if not args.world:
        from mmit_interp.synth import SynthConfig, generate_world

        n = max(2, args.action_frames // 2)
        generate_world(world, SynthConfig(seed=0, train_clips=n, val_clips=0, images=2, action_frames=args.action_frames,
                                          workers=args.threads), progress=False)
    regions = world / "action_regions"
    tubes = build_action_tubes(world, tmp / "tubes", base=world / "broden")
    stills = build_action_regions(regions / "boxes.csv", regions / "frames", tmp / "stills", base=world / "broden")
    torch.manual_seed(0)
    model = build_model("i3d_r18", 4, width=args.width, layer4_stride=1).to(args.device).eval()
    transform = InputTransform(64, args.frames)
    ds = transform.dataset(tubes, tubes=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, collate_fn=ds.collate, num_workers=args.workers)

    def forwards():
        with torch.no_grad():
            for _ in range(2):  # dissection's two passes
                for batch in loader:
                    with capture_activations(model, args.layers):
                        model(batch["image"].to(args.device))

    def dissect(cs):
        return lambda: run_dissection(model, args.layers, [cs], time="frames", transform=transform,
                                      batch_size=args.batch_size, workers=args.workers, device=args.device,
                                      progress=False)

    forwards()  # warm-up
    t_fwd = timed(forwards, args.repeats)
    t_tube = timed(dissect(tubes), args.repeats)
    t_still = timed(dissect(stills), args.repeats)
    res = run_dissection(model, args.layers, [tubes, stills], time="frames", transform=transform,
                         batch_size=args.batch_size, device=args.device, progress=False)
    out = {
        "items": len(ds), "frames": args.frames, "width": args.width, "layers": args.layers, "threads": args.threads,
        "workers": args.workers, "device": args.device,
        "forward_s": round(t_fwd, 3), "tube_dissection_s": round(t_tube, 3), "still_dissection_s": round(t_still, 3),
        "tube_over_forward": round(t_tube / t_fwd, 3), "still_over_forward": round(t_still / t_fwd, 3),
        "interpretable_units": {Path(cs).name: {layer: sum(u.interpretable for u in r.unit_labels())
                                                for layer, r in layers.items()} for cs, layers in res.items()},
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
