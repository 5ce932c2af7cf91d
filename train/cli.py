"""`mmit-train`: train, evaluate or resume a model on a data set in the Multi-Moments layout.

Everything here is a thin shell over `train.loop` (`train`, `evaluate_run`); torch is imported
only after the arguments are parsed, so `--help` is instant.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

LOSS_NAMES = ("bce", "warp", "lsep", "wlsep")


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="mmit-train", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", help="data root in the M-MiT layout (moments_categories.txt, trainingSet.csv, ...)")
    p.add_argument("--out", help="run dir to create (or continue with --resume)")
    p.add_argument("--model", default="i3d_r18", help="registered model: i3d_r18, i3d_r50, resnet3d50, soundnet, fusion")
    p.add_argument("--model-kwargs", default="{}", help='JSON keyword arguments of the model, e.g. \'{"width": 16}\'')
    p.add_argument("--loss", default="wlsep", choices=LOSS_NAMES)
    p.add_argument("--class-weights", default="auto", choices=("auto", "none", "min_over_n"),
                   help="auto = min_k n_k / n_c for wlsep, none for the others")
    p.add_argument("--frames", type=int, default=8, help="frames sampled per clip")
    p.add_argument("--size", type=int, default=64, help="frame side after resizing (no crop)")
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--schedule", default="cosine", choices=("cosine", "constant"))
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", help="checkpoint/run dir to fine-tune from (new head when the classes differ)")
    p.add_argument("--inflate-from", help="local 2-D ResNet state_dict to inflate into the video trunk "
                   "(torchvision's, or one written by mmit-pretrain)")
    p.add_argument("--init-visual", help="fusion: run dir of the visual trunk")
    p.add_argument("--init-audio", help="fusion: run dir of the audio trunk")
    p.add_argument("--freeze-trunks", action="store_true", help="fusion: train only the linear head")
    p.add_argument("--strict", action="store_true", help="stop at the first undecodable clip instead of skipping it")
    p.add_argument("--allow-missing", action="store_true", help="skip annotation rows whose clip file is missing")
    p.add_argument("--max-train-clips", type=int)
    p.add_argument("--max-val-clips", type=int)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--no-channels-last", action="store_true",
                   help="keep the default NCDHW layout for 3-D convs (NDHWC is ~1.5x faster on CPU)")
    p.add_argument("--clip-cache", metavar="DIR", help="keep decoded clips in DIR: each clip is decoded once for "
                   "all epochs and all runs sharing DIR (same results, faster when decoding is a large share)")
    p.add_argument("--map-separation", type=float, default=0.0, metavar="W",
                   help="add W x the overlap of co-occurring classes' pooling weights to the loss (LSE-head "
                        "video ResNets; docs/training.md)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--evaluate", metavar="RUN", help="only evaluate RUN's best checkpoint (on --split of --data or its own data)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `mmit-train`."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from .loop import TrainConfig, evaluate_run, summarize, train

    if args.evaluate:
        m = evaluate_run(args.evaluate, args.data, args.split, args.batch_size, args.workers, args.device,
                         not args.no_progress)
        print(summarize(m))
        return 0
    if args.resume and args.out and not args.data:
        with open(f"{args.out}/config.json") as f:
            saved = json.load(f)
        saved.pop("class_weights_resolved", None)
        saved.pop("world_size", None)
        cfg = TrainConfig(**saved)
    else:
        if not args.data or not args.out:
            print("mmit-train: --data and --out are required (or --resume with --out, or --evaluate RUN)", file=sys.stderr)
            return 2
        try:
            kwargs = json.loads(args.model_kwargs)
        except json.JSONDecodeError as e:
            print(f"mmit-train: --model-kwargs is not JSON: {e}", file=sys.stderr)
            return 2
        cfg = TrainConfig(data=args.data, out=args.out, model=args.model, model_kwargs=kwargs, loss=args.loss,
                          class_weights=args.class_weights, frames=args.frames, size=args.size,
                          batch_size=args.batch_size, epochs=args.epochs, optimizer=args.optimizer, lr=args.lr,
                          weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, schedule=args.schedule,
                          workers=args.workers, seed=args.seed, init_from=args.init_from,
                          inflate_from=args.inflate_from,
                          init_visual=args.init_visual, init_audio=args.init_audio,
                          freeze_trunks=args.freeze_trunks, strict=args.strict, allow_missing=args.allow_missing,
                          max_train_clips=args.max_train_clips, max_val_clips=args.max_val_clips,
                          device=args.device, amp=not args.no_amp, channels_last=not args.no_channels_last,
                          clip_cache=args.clip_cache, map_separation=args.map_separation,
                          progress=not args.no_progress)
    res = train(cfg, resume=args.resume)
    if res.metrics:
        print(f"{res.run_dir}: {summarize(res.metrics)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
