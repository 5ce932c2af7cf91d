"""Bring your own model: a torchvision or timm classifier (or the M-MiT authors' release) and its weights -> a run dir.

`ModelSource` says which model, which local state_dict (`torch.load(weights_only=True)`: nothing is
downloaded, nothing executed), which vocabulary and which input transform. `build_model_from` builds it
in memory (the registry's `torchvision_video` / `torchvision_frames` / `timm_frames` / `resnet3d50`,
models/adapters.py) and checks the weights against it; `import_run` writes it as a run dir (checkpoint
+ config + vocabulary), so `load_model`, `mmit-cam`, `mmit-analyze`, `mmit-dissect` and the dashboard
use it unchanged. `mmit-import` is the command; `--torchvision/--timm/--authors` on the other commands
import into a run dir first (`run_from_args`) and then work on that run: one code path.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (frames, size, mean, std) torchvision's video weights were trained with; MViT takes only 16x224x224
VIDEO_DEFAULTS = {
    "r3d_18": (16, 112), "mc3_18": (16, 112), "r2plus1d_18": (16, 112), "s3d": (16, 224),
    "swin3d_t": (16, 224), "swin3d_s": (16, 224), "swin3d_b": (16, 224), "mvit_v1_b": (16, 224), "mvit_v2_s": (16, 224),
}
FRAMES_2D = 8
LEGACY = "\0legacy"  # `mmit-dissect MODEL --torchvision` with no name: the plain 2-D image model of old


@dataclass(frozen=True)
class ModelSource:
    """Which model to import: `source` "torchvision", "timm" or "authors" (the M-MiT `resnet3d50` release),
    the architecture name, a local state_dict file (None: random weights), a vocabulary file (one class
    name a line, or `name,index` lines as `moments_categories.txt`) and the input transform (None: the
    architecture's defaults)."""

    source: str
    arch: str
    vocab: str
    weights: str | None = None
    frames: int | None = None
    size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def registry(self) -> tuple[str, dict[str, Any]]:
        """The registered model name and kwargs that rebuild this model (what the checkpoint records)."""
        from .models.adapters import VIDEO_ARCHS

        if self.source == "authors":
            return "resnet3d50", {}
        if self.source == "torchvision":
            return ("torchvision_video" if self.arch in VIDEO_ARCHS else "torchvision_frames"), {"arch": self.arch}
        if self.source == "timm":
            return "timm_frames", {"arch": self.arch}
        raise ValueError(f"source must be torchvision, timm or authors, not {self.source!r}")

    def transforms(self) -> dict[str, Any]:
        """The clip transform as a checkpoint stores it: given values, else the architecture's defaults."""
        from .dataset import ClipTransform

        if self.source == "authors":
            frames, size, mean, std = 16, 224, IMAGENET_MEAN, IMAGENET_STD
        elif self.source == "torchvision" and self.arch in VIDEO_DEFAULTS:
            (frames, size), mean, std = VIDEO_DEFAULTS[self.arch], KINETICS_MEAN, KINETICS_STD
        elif self.source == "timm":
            frames, (size, mean, std) = FRAMES_2D, timm_defaults(self.arch)
        else:
            frames, size, mean, std = FRAMES_2D, 224, IMAGENET_MEAN, IMAGENET_STD
        return ClipTransform(self.frames or frames, self.size or size, tuple(self.mean or mean),
                             tuple(self.std or std)).to_dict()


def timm_defaults(arch: str) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(input size, mean, std) of a timm architecture's default pretrained config, read from timm's
    registry (nothing is downloaded): e.g. 0.5/0.5 for the TensorFlow-ported `tf_efficientnet_lite0`."""
    try:
        import timm
    except ImportError:
        raise ValueError("--timm needs the timm package (pip install 'mmit-interp[own-models]')") from None
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return 224, IMAGENET_MEAN, IMAGENET_STD
    return int(cfg.input_size[-1]), tuple(cfg.mean), tuple(cfg.std)


def check_class_count(model, state: dict, n_classes: int, source: str) -> None:
    """A clear error when the weights' classifier has another class count than the vocabulary."""
    for k, own in model.state_dict().items():
        theirs = state.get(k)
        if (theirs is not None and own.dim() >= 1 and own.shape[0] == n_classes and theirs.dim() == own.dim()
                and theirs.shape[0] != n_classes and theirs.shape[1:] == own.shape[1:]):
            raise ValueError(f"{source}: the weights' classifier ({k}) has {theirs.shape[0]} classes but the "
                             f"vocabulary has {n_classes}; give the vocabulary the weights were trained with")


def build_model_from(src: ModelSource):
    """`(model.eval(), vocab)` for a source, its weights loaded and checked (missing, unexpected or
    misshapen keys and a class count other than the vocabulary's are errors naming the file)."""
    from .checkpoint import load_authors_state_dict, load_state_checked, read_state_dict
    from .models import build_model
    from .vocab import Vocabulary

    vocab = Vocabulary.from_file(src.vocab)
    name, kwargs = src.registry()
    model = build_model(name, len(vocab), **kwargs)
    if src.weights:
        if src.source == "authors":
            load_authors_state_dict(model, src.weights)
        else:
            state = read_state_dict(src.weights)
            check_class_count(model, state, len(vocab), src.weights)
            load_state_checked(model, state, source=src.weights, expected=f"{src.source} {src.arch!r}")
    return model.eval(), vocab


def source_fingerprint(src: ModelSource) -> dict[str, Any]:
    """What makes an imported run what it is: the source, the weights' and vocabulary's content hashes, the transform."""
    from .checkpoint import file_sha256

    return {"source": src.source, "arch": src.arch, "weights_sha256": file_sha256(src.weights) if src.weights else None,
            "vocab_sha256": file_sha256(src.vocab), "transforms": src.transforms()}


def import_run(src: ModelSource, out: str | Path | None = None) -> Path:
    """Write `src` as a run dir (`checkpoints/best.pt`, `config.json`, `moments_categories.txt`) and return
    it; a run dir already imported from the same source (same hashes) is reused as is. `out` None:
    `runs/imported/<arch>-<8 hex digits of the source fingerprint>`, one dir per distinct import."""
    from .atomic import atomic_write_json
    from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint

    fp = source_fingerprint(src)
    if out is None:
        digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:8]
        out = Path("runs") / "imported" / f"{src.arch}-{digest}"
    out = Path(out)
    ck = out / "checkpoints" / "best.pt"
    if ck.is_file():
        try:
            if read_checkpoint(ck)["config"].get("import") == fp:
                return out
        except CheckpointError:
            pass
    model, vocab = build_model_from(src)
    name, kwargs = src.registry()
    tf = src.transforms()
    config = {"out": str(out), "model": name, "model_kwargs": kwargs, "frames": tf["frames"], "size": tf["size"],
              "import": fp, "import_source": {k: v for k, v in asdict(src).items() if v is not None}}
    save_checkpoint(ck, model, model_name=name, model_kwargs=kwargs, vocab=vocab, transforms=tf, config=config)
    atomic_write_json(out / "config.json", config)
    vocab.to_file(out / "moments_categories.txt")
    return out


def _triple(s: str) -> tuple[float, float, float]:
    v = tuple(float(x) for x in s.split(",") if x.strip())
    if len(v) != 3:
        raise argparse.ArgumentTypeError(f"need three comma-separated numbers, got {s!r}")
    return v


def add_source_args(p: argparse.ArgumentParser, *, legacy_torchvision: bool = False, transform_flags: bool = True) -> None:
    """The `--torchvision/--timm/--authors`, `--weights`, `--vocab` and (`transform_flags`) transform flags,
    shared by every command; `legacy_torchvision`: a bare `--torchvision` means `LEGACY` (mmit-dissect's 2-D form)."""
    g = p.add_argument_group("bring your own model (docs/own_model.md)")
    m = g.add_mutually_exclusive_group()
    if legacy_torchvision:
        m.add_argument("--torchvision", metavar="NAME", nargs="?", const=LEGACY,
                       help="a torchvision model: a video model, or an image model applied per frame (without NAME: "
                       "MODEL names a 2-D image model dissected on images)")
    else:
        m.add_argument("--torchvision", metavar="NAME", help="a torchvision video model (r2plus1d_18, s3d, mvit_v2_s, ...) "
                       "or an image model applied per frame (resnet18, ...)")
    m.add_argument("--timm", metavar="NAME", help="a timm image model applied per frame (needs the own-models extra)")
    m.add_argument("--authors", action="store_true", help="the M-MiT authors' resnet3d50 release (give --weights)")
    g.add_argument("--weights", help="local state_dict file (read weights-only; nothing is downloaded)")
    g.add_argument("--vocab", help="class names, one a line, or moments_categories.txt")
    if transform_flags:
        g.add_argument("--frames", type=int, help="frames per clip (default: the architecture's)")
        g.add_argument("--size", type=int, help="frame side in pixels (default: the architecture's)")
    g.add_argument("--mean", type=_triple, help="normalisation mean r,g,b (default: the weights' data set's)")
    g.add_argument("--std", type=_triple, help="normalisation std r,g,b")


def source_from_args(a: argparse.Namespace) -> ModelSource | None:
    """The `ModelSource` the flags name, or None when none of `--torchvision/--timm/--authors` is given."""
    tv, tm, au = getattr(a, "torchvision", None), getattr(a, "timm", None), getattr(a, "authors", False)
    if tv == LEGACY or not (tv or tm or au):
        return None
    if not a.vocab:
        raise ValueError("--vocab is required with --torchvision/--timm/--authors (class names, one a line)")
    if au and not a.weights:
        raise ValueError("--authors needs --weights (the released resnet3d50 state_dict)")
    source, arch = ("torchvision", tv) if tv else ("timm", tm) if tm else ("authors", "resnet3d50")
    return ModelSource(source, arch, a.vocab, a.weights, getattr(a, "frames", None), getattr(a, "size", None),
                       getattr(a, "mean", None), getattr(a, "std", None))


def run_from_args(a: argparse.Namespace) -> str:
    """The run dir a command works on: `--run`, or the import its source flags name (into `--run` if given,
    else `runs/imported/...`)."""
    src = source_from_args(a)
    if src is None:
        if not getattr(a, "run", None):
            raise ValueError("give --run RUN, or a model with --torchvision/--timm/--authors and --vocab")
        return a.run
    return str(import_run(src, a.run))


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `mmit-import`."""
    p = argparse.ArgumentParser(prog="mmit-import", description="Make a run dir from a torchvision/timm model (or the "
                                "M-MiT authors' resnet3d50) and local weights: mmit-cam, mmit-analyze, mmit-dissect "
                                "and the dashboard then use it like a trained run.")
    p.add_argument("--out", help="run dir to write (default runs/imported/<arch>-<hash>)")
    add_source_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mmit-import`: prints the run dir."""
    a = build_parser().parse_args(argv)
    try:
        src = source_from_args(a)
        if src is None:
            raise ValueError("name a model: --torchvision NAME, --timm NAME or --authors")
        run = import_run(src, a.out)
    except (OSError, ValueError, KeyError, ImportError) as e:
        print(f"mmit-import: error: {e}", file=sys.stderr)
        return 2
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
