"""`mmit-synth OUT`: generate a synthetic multi-action world from the command line."""

from __future__ import annotations

import argparse
import sys

from .world import CATALOGUE, MARKS, SynthConfig


def _classes(value: str) -> tuple[str, ...] | None:
    """Parse --classes: a count N (the N most frequent catalogue classes) or comma-separated names."""
    if value.isdigit():
        n = int(value)
        if not 1 <= n <= len(CATALOGUE):
            raise argparse.ArgumentTypeError(f"--classes N must lie in 1..{len(CATALOGUE)}")
        return tuple(c.name for c in CATALOGUE[:n])
    return tuple(v.strip() for v in value.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every default comes from SynthConfig."""
    d = SynthConfig()
    p = argparse.ArgumentParser(
        prog="mmit-synth",
        description="Generate a deterministic synthetic multi-action world (M-MiT layout clips with sound, "
                    "complete truth, a Broden-format concept set and action-region frames).")
    p.add_argument("out", help="output folder (must be empty or absent unless --force)")
    p.add_argument("--seed", type=int, default=d.seed, help="world seed (default %(default)s)")
    p.add_argument("--train-clips", type=int, default=d.train_clips, help="training clips (default %(default)s)")
    p.add_argument("--val-clips", type=int, default=d.val_clips, help="validation clips (default %(default)s)")
    p.add_argument("--images", type=int, default=d.images, help="Broden concept images (default %(default)s)")
    p.add_argument("--action-frames", type=int, default=d.action_frames,
                   help="action-region frames (default %(default)s)")
    p.add_argument("--size", type=int, default=d.size, help="frame side in pixels, even (default %(default)s)")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per clip (default %(default)s)")
    p.add_argument("--fps", type=int, default=d.fps, help="frames per second (default %(default)s)")
    p.add_argument("--classes", type=_classes, default=None,
                   help="N (the N most frequent classes) or comma-separated class names (default: all 30)")
    p.add_argument("--missing-rate", type=float, default=d.missing_rate,
                   help="share of true labels left out of trainingSet.csv (default %(default)s)")
    p.add_argument("--tail-exponent", type=float, default=d.tail_exponent,
                   help="class frequency ~ (rank+1)^-exponent (default %(default)s)")
    p.add_argument("--bias-strength", type=float, default=d.bias_strength,
                   help=f"P({d.bias_texture} | {d.bias_action}); 0 turns the planted bias off (default %(default)s)")
    p.add_argument("--shape-affinity", type=float, default=d.shape_affinity,
                   help="probability that an actor has its action's typical shape (default %(default)s)")
    p.add_argument("--bias-leak", type=float, default=d.bias_leak,
                   help=f"P({d.bias_texture} | other action) (default %(default)s)")
    g = p.add_argument_group("difficulty")
    g.add_argument("--actor-size", type=float, default=d.actor_size,
                   help="mean actor radius as a share of the frame side (default %(default)s)")
    g.add_argument("--clutter", type=float, default=d.clutter,
                   help="mean number of drifting distractor shapes per clip (default %(default)s)")
    g.add_argument("--noise", type=float, default=d.noise, help="pixel noise sigma, 0-255 scale (default %(default)s)")
    g.add_argument("--camera-shake", type=float, default=d.camera_shake,
                   help="camera shake sigma in pixels (default %(default)s)")
    g.add_argument("--occlusion", type=float, default=d.occlusion,
                   help="probability of an occluding bar in a clip (default %(default)s)")
    g.add_argument("--texture-scale", type=float, default=d.texture_scale,
                   help="texture period relative to the default (dots, stripes, checks, waves; default %(default)s)")
    g.add_argument("--marks", choices=MARKS, default=d.marks,
                   help="texture marks in a shade of the actor's colour, or one grey on every actor "
                   "(default %(default)s)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="concept image side (default %(default)s)")
    p.add_argument("--still-actors", type=int, default=d.still_actors,
                   help="concept images hold 1..N actors (default %(default)s)")
    p.add_argument("--still-scale", type=float, nargs=2, default=d.still_scale, metavar=("LOW", "HIGH"),
                   help="concept actors' radius range in actor sizes (default: the clips' %(default)s)")
    p.add_argument("--seg-size", type=int, default=d.seg_size, help="concept mask side (default %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="worker processes (default %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite the world in a non-empty OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mmit-synth` console script."""
    args = build_parser().parse_args(argv)
    try:
        config = SynthConfig(
            seed=args.seed, train_clips=args.train_clips, val_clips=args.val_clips, images=args.images,
            action_frames=args.action_frames, size=args.size, frames=args.frames, fps=args.fps, classes=args.classes,
            missing_rate=args.missing_rate, tail_exponent=args.tail_exponent, bias_strength=args.bias_strength,
            bias_leak=args.bias_leak, shape_affinity=args.shape_affinity, actor_size=args.actor_size, clutter=args.clutter, noise=args.noise,
            camera_shake=args.camera_shake, occlusion=args.occlusion, texture_scale=args.texture_scale,
            marks=args.marks, image_size=args.image_size, still_actors=args.still_actors, still_scale=tuple(args.still_scale),
            seg_size=args.seg_size, workers=args.workers)
    except ValueError as e:
        print(f"mmit-synth: error: {e}", file=sys.stderr)
        return 2
    from .generate import generate_world

    try:
        summary = generate_world(args.out, config, force=args.force, progress=not args.quiet)
    except FileExistsError as e:
        print(f"mmit-synth: error: {e}", file=sys.stderr)
        return 1
    st = summary.train_stats
    print(f"wrote {summary.out}: {summary.train_clips} training + {summary.val_clips} validation clips, "
          f"{summary.images} concept images, {summary.action_frames} action frames ({summary.action_boxes} boxes) "
          f"in {summary.seconds:.1f} s; training labels: tail ratio {st['tail_ratio']}, "
          f"{st['multi_label_share']:.0%} multi-label, {st['missing_share']:.0%} left out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
