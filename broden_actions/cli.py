"""``python -m broden_actions.cli``: build an action concept set from boxes (or an action tube set from a
synthetic world), merge concept sets, inspect one."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``build``, ``tubes``, ``merge`` or ``info``."""
    ap = argparse.ArgumentParser(prog="python -m broden_actions.cli", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="boxes.csv + frames -> a Broden concept set with an `action` category")
    b.add_argument("boxes", help="CSV with image,action,x1,y1,x2,y2 (pixel coords in the frame)")
    b.add_argument("frames", help="folder the boxes' image paths are relative to")
    b.add_argument("out", help="new concept-set folder")
    b.add_argument("--base", help="concept set whose label numbers the actions follow (and whose seg size they use)")
    b.add_argument("--seg-size", type=int, help="mask side (default: the base's, else 112)")
    b.add_argument("--split", default="train")
    t = sub.add_parser("tubes", help="a synthetic world -> an `action` tube set (per-frame masks of each snippet)")
    t.add_argument("world", help="world folder made by mmit-synth (action_regions/, truth.jsonl, world.json)")
    t.add_argument("out", help="new concept-set folder")
    t.add_argument("--base", help="concept set whose label numbers the actions follow (and whose seg size they use)")
    t.add_argument("--seg-size", type=int, help="mask side (default: the base's, else 112)")
    t.add_argument("--split", default="train")
    t.add_argument("--render", action="store_true",
                   help="re-render the clips: pixel-exact action, color, object and texture masks per frame")
    m = sub.add_parser("merge", help="one concept set holding the categories of several (images by reference)")
    m.add_argument("sources", nargs="+")
    m.add_argument("--out", required=True)
    i = sub.add_parser("info", help="categories, label and image counts of a concept set")
    i.add_argument("root")
    args = ap.parse_args(argv)

    from broden_actions.actions import build_action_regions, build_action_tubes, merge_concept_sets
    from broden_actions.broden import BrodenFormatError, load_broden

    try:
        if args.cmd == "build":
            seg = (args.seg_size, args.seg_size) if args.seg_size else None
            out = build_action_regions(args.boxes, args.frames, args.out, base=args.base, seg_size=seg, split=args.split)
        elif args.cmd == "tubes":
            seg = (args.seg_size, args.seg_size) if args.seg_size else None
            out = build_action_tubes(args.world, args.out, base=args.base, seg_size=seg, split=args.split,
                                     render=args.render)
        elif args.cmd == "merge":
            out = merge_concept_sets(args.sources, args.out)
        else:
            out = args.root
        s = load_broden(out)
    except BrodenFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    tubes = f", {len(s.tubes)} tubes of {sum(t.frames for t in s.tubes.values())} frames" if s.tubes else ""
    print(f"{out}: {len(s)} images, {len(s.labels)} labels{tubes}")
    for c in s.categories:
        print(f"  {c:10s} {len(s.category_labels[c]):5d} labels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
