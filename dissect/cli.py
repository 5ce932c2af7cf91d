"""``mmit-dissect``: Network Dissection of a checkpoint / run dir (or a torchvision model) on concept sets.

Examples::

    mmit-dissect runs/i3d --list-layers
    mmit-dissect --torchvision r2plus1d_18 --weights r2plus1d_18.pth --vocab kinetics400.txt --layers layer4 --concept-set broden/
    mmit-dissect runs/i3d --layers layer3 layer4 --concept-set broden/ actions/ broden+actions/
    torchrun --nproc_per_node=2 -m dissect.cli runs/i3d --layers layer4 --concept-set broden/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from mmit_interp.import_model import LEGACY, add_source_args, import_run, source_from_args


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept free of torch imports so ``--help`` is instant)."""
    ap = argparse.ArgumentParser(prog="mmit-dissect", description="Label every unit of chosen layers with the "
                                 "concept it detects (Network Dissection, actions included).")
    ap.add_argument("model", nargs="?", help="checkpoint file or run dir (with --torchvision NAME/--timm/--authors: "
                    "the run dir to import into); with a bare --torchvision, a torchvision image model name")
    ap.add_argument("--layers", nargs="+", default=[], help="module paths to dissect (see --list-layers)")
    ap.add_argument("--list-layers", action="store_true", help="print module paths with output shapes and exit")
    ap.add_argument("--concept-set", nargs="+", default=[], help="Broden-format concept-set folder(s)")
    ap.add_argument("--categories", nargs="+", help="restrict to these categories (default: all in category.csv)")
    ap.add_argument("--quantile", type=float, default=0.005, help="top activation quantile defining T_u")
    ap.add_argument("--iou-threshold", type=float, default=0.04, help="IoU for a unit to count as interpretable")
    ap.add_argument("--denominator", choices=["lite", "original"], default="lite",
                    help="activation area in IoU: NetDissect-Lite's (images where the unit overlaps category c) "
                    "or the original's (every image holding c)")
    ap.add_argument("--planes", choices=["lite", "union"], default="lite",
                    help="a pixel carrying a label on two planes counts twice (NetDissect-Lite) or once (union)")
    ap.add_argument("--time", choices=["mean", "frames"], default="mean",
                    help="5-D video features: pool over time, or dissect every frame as a sample")
    ap.add_argument("--frames", type=int, help="clip length T for video models (default: the checkpoint's)")
    ap.add_argument("--size", type=int, help="input size (default: the checkpoint's, else the concept set's)")
    ap.add_argument("--no-snippets", action="store_true", help="feed T still copies even where a <stem>.mp4 exists")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=8, help="gallery images per unit")
    ap.add_argument("--no-gallery", action="store_true", help="skip the JPEG tiles")
    ap.add_argument("--gallery-clips", action="store_true", help="video models: also render every unit's top items "
                    "as a looping WebP strip, region outlined per frame (the dashboard renders them on demand otherwise)")
    ap.add_argument("--out", help="output folder (default: <run dir>/dissect, else ./dissect_out)")
    ap.add_argument("--no-cache", action="store_true", help="recompute even if a cached result exists")
    ap.add_argument("--store", action="store_true", help="also write unit labels into the run dir's results store")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on busy shared machines)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--formulas", action="store_true", help="also label units by formulas of concepts (AND, OR, "
                    "AND NOT; Mu & Andreas 2020), scored by plain IoU beside the best single label")
    ap.add_argument("--formula-length", type=int, default=3, help="most concepts in a formula (one data pass each)")
    ap.add_argument("--beam", type=int, default=5, help="formulas kept per unit at each step of the search")
    ap.add_argument("--formula-candidates", type=int, help="extend formulas only by a unit's N best single labels "
                    "(default: every label present)")
    add_source_args(ap, legacy_torchvision=True, transform_flags=False)
    return ap


def load_target(args):
    """Return ``(model, InputTransform, checkpoint hash, run dir or None)`` for the CLI's model argument."""
    import torch

    from dissect.engine import InputTransform, model_fingerprint

    if args.torchvision == LEGACY:
        import torchvision

        if not args.model:
            raise SystemExit("mmit-dissect: a bare --torchvision needs MODEL, a torchvision image model name")
        model = torchvision.models.get_model(args.model, weights=None)
        if args.weights:
            model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
        return model.eval(), InputTransform(size=args.size or 224), model_fingerprint(model), None
    from mmit_interp.checkpoint import load_model

    try:
        src = source_from_args(args)
    except ValueError as e:
        raise SystemExit(f"mmit-dissect: {e}") from None
    if src is not None:  # import with the architecture's own transform; --frames/--size apply to the dissection
        src = replace(src, frames=None, size=None)
        try:
            args.model = str(import_run(src, args.model))
        except (OSError, ValueError, ImportError) as e:
            raise SystemExit(f"mmit-dissect: {e}") from None
    elif not args.model:
        raise SystemExit("mmit-dissect: name a checkpoint or run dir, or a model with --torchvision/--timm/--authors")
    model, meta = load_model(args.model)
    transform = InputTransform.from_checkpoint(meta.get("transforms") or {}, video=model.inputs == ("video",),
                                               frames=args.frames, size=args.size)
    run_dir = Path(args.model) if Path(args.model).is_dir() else None
    return model, transform, meta["sha256"][:16], run_dir


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mmit-dissect``."""
    args = build_parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from dissect import report
    from dissect.capture import list_layers
    from dissect.engine import run_dissection

    model, transform, ckpt, run_dir = load_target(args)
    if args.list_layers:
        s = transform.size if isinstance(transform.size, int) else 112
        example = torch.zeros((1, 3, transform.frames, s, s) if transform.frames else (1, 3, s, s))
        for name, kind, shape in list_layers(model, example):
            print(f"{name:40s} {kind:22s} {'x'.join(map(str, shape)) if shape else '-'}")
        return 0
    if not args.layers or not args.concept_set:
        print("mmit-dissect: --layers and --concept-set are required (try --list-layers)", file=sys.stderr)
        return 2
    dist_on = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if dist_on:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        if torch.cuda.is_available() and not args.device:
            args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
            torch.cuda.set_device(args.device)
    out = Path(args.out) if args.out else (run_dir / "dissect" if run_dir else Path("dissect_out"))
    try:
        results = run_dissection(
            model, args.layers, args.concept_set, categories=args.categories, quantile=args.quantile, time=args.time,
            planes=args.planes, transform=transform, batch_size=args.batch_size, workers=args.workers,
            top_k=max(args.top_k, 1),
            device=args.device, cache_dir=None if args.no_cache else out / "cache", checkpoint_hash=ckpt,
            use_snippets=not args.no_snippets, progress=not args.no_progress,
        )
    except ValueError as e:  # a malformed concept set, a tube set with --time mean, ...
        print(f"mmit-dissect: {e}", file=sys.stderr)
        return 2
    formulas = None
    if args.formulas:
        from dissect.compose import run_formulas

        formulas = run_formulas(model, results, transform=transform, length=args.formula_length, beam=args.beam,
                                candidates=args.formula_candidates, batch_size=args.batch_size, workers=args.workers,
                                device=args.device, cache_dir=None if args.no_cache else out / "cache",
                                progress=not args.no_progress)
    rank0 = not dist_on or torch.distributed.get_rank() == 0
    if rank0:
        labels = report.label_units(results, args.denominator, args.iou_threshold)
        summary = report.write_outputs(
            results, labels, out, denominator=args.denominator, iou_threshold=args.iou_threshold,
            gallery=None if args.no_gallery else {"model": model, "k": args.top_k, "time": args.time,
                                                  "transform": transform, "clips": args.gallery_clips},
        )
        print(json.dumps(summary, indent=2))
        if formulas is not None:
            print(json.dumps({"formulas": {Path(cs).name: {
                layer: report.write_formulas(layer, recs, labels[cs][layer], out / Path(cs).name / layer / "formulas")
                for layer, recs in layers.items()} for cs, layers in formulas.items()}}, indent=2))
        if args.store:
            from mmit_interp.store import ResultsStore, StoreError

            if run_dir is None:
                print("mmit-dissect: --store needs a run dir as MODEL", file=sys.stderr)
                return 1
            try:
                with ResultsStore(run_dir) as store:
                    for cs, layers in labels.items():
                        for layer, recs in layers.items():
                            store.write_units(layer, Path(cs).name, recs)
                            if formulas is not None:
                                store.write_unit_formulas(layer, Path(cs).name,
                                                          [f.as_dict() for f in formulas[cs][layer]])
            except StoreError as e:
                print(f"mmit-dissect: results written to {out}, but not to the store: {e}", file=sys.stderr)
                return 1
    if dist_on:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
