"""Paired probes from the synthetic world: the same clip with its motion removed or scrambled, and the
same motion with another appearance, rendered exactly (motion vs appearance per unit, analysis.md).

- *original*: `render_clip(spec, config)`, the clip as the world renders it (no H.264 round trip).
- *swapped*: the same spec and seed with each visible actor's colour and texture replaced by others.
  An actor's look is an input of the renderer, not a draw from the clip's random stream, so the stream
  and with it every motion, radius, depth order, the scene, distractors, occluder and noise stay as
  they were: `render_pair` checks that every box is equal. (The scene cannot be swapped this way: the
  background draws a scene-dependent number of values from the stream and would shift every later draw.)
- *texture twin*: the same spec and seed with one visible actor wearing another texture
  (`with_texture`, `render_texture_pair`): the planted-bias test's counterfactual (analysis/bias.py).
- *frozen* and *shuffled* act on model input `(N, 3, T, H, W)`, after frame sampling and resizing:
  `freeze_each` gives, per clip, the T clips made of one of its frames repeated; `shuffle` reorders the
  frames by one fixed permutation without fixed points (`derangement`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..dataset import ClipTransform
from ..video import resize_frame, sample_indices
from .render import render_clip
from .world import COLOURS, TEXTURES, ClipSpec, SynthConfig, sample_clips


def world_config(world: str | Path) -> SynthConfig:
    """The `SynthConfig` a world folder was generated with (its `world.json`), to re-render its clips."""
    path = Path(world) / "world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{world}: no world.json (not a synthetic world folder made by mmit-synth)")
    config = json.loads(path.read_text())["config"]
    known = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{path}: config keys this version does not know: {', '.join(unknown)}")
    return SynthConfig(**config)


def probe_specs(config: SynthConfig, split: str = "val", n: int | None = None) -> list[ClipSpec]:
    """The first `n` clips of a split (all if None) that show at least one actor (a swap changes nothing else)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    specs = [s for s in sample_clips(config) if s.split == split and any(a.visible for a in s.actors)]
    return specs if n is None else specs[:n]


def swap_appearance(spec: ClipSpec, seed: int = 0) -> ClipSpec:
    """The spec with every visible actor's colour and texture replaced: a colour none of the clip's
    actors wears (distinct per actor) and another texture, drawn from `(seed, spec.index)`."""
    rng = np.random.default_rng([seed, spec.index])
    free = [c for c in COLOURS if c not in {a.colour for a in spec.actors}]
    actors = []
    for a in spec.actors:
        if a.visible:
            colour = str(free.pop(int(rng.integers(len(free)))))
            texture = str(rng.choice([t for t in TEXTURES if t != a.texture]))
            a = dataclasses.replace(a, colour=colour, texture=texture)
        actors.append(a)
    return dataclasses.replace(spec, actors=actors)


def render_pair(spec: ClipSpec, config: SynthConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames `(T, H, W, 3) uint8` of the clip and of its appearance swap (`swap_appearance`); raises if
    the swap moved any box (the renderer would then draw appearance from the clip's random stream)."""
    a, b = render_clip(spec, config), render_clip(swap_appearance(spec, seed), config)
    if a.boxes != b.boxes:
        raise RuntimeError(f"{spec.name}: the appearance swap changed the actors' boxes; the swap no longer "
                           "keeps the motion (the renderer draws appearance from the clip's random stream)")
    return a.frames, b.frames


def with_texture(spec: ClipSpec, actor: int, texture: str) -> ClipSpec:
    """The spec with its `actor`-th actor (index into `spec.actors`, a visible one) wearing `texture`."""
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}: expected one of {', '.join(TEXTURES)}")
    if not 0 <= actor < len(spec.actors) or not spec.actors[actor].visible:
        raise ValueError(f"{spec.name}: actor {actor} is not a visible actor of the clip")
    actors = list(spec.actors)
    actors[actor] = dataclasses.replace(actors[actor], texture=texture)
    return dataclasses.replace(spec, actors=actors)


def render_texture_pair(spec: ClipSpec, config: SynthConfig, actor: int, texture: str) -> tuple[np.ndarray, np.ndarray]:
    """Frames `(T, H, W, 3) uint8` of the clip and of its twin whose `actor` wears `texture` (`with_texture`);
    raises if the twin moved any box, as `render_pair` does."""
    a, b = render_clip(spec, config), render_clip(with_texture(spec, actor, texture), config)
    if a.boxes != b.boxes:
        raise RuntimeError(f"{spec.name}: the texture twin changed the actors' boxes; the renderer draws "
                           "appearance from the clip's random stream")
    return a.frames, b.frames


def model_input(frames: np.ndarray, transform: ClipTransform) -> torch.Tensor:
    """Rendered frames `(T0, H0, W0, 3) uint8` -> model input `(3, T, H, W)`: the frames and the resizing
    `decode_frames` would pick from the clip's video (segment centres; area down, linear up), normalised."""
    picked = frames[sample_indices(len(frames), transform.frames)]
    return transform.normalise(np.stack([resize_frame(f, transform.size) for f in picked]))


def freeze_each(x: torch.Tensor) -> torch.Tensor:
    """`(N, C, T, H, W)` -> `(N, T, C, T, H, W)`: `[n, t]` is clip n with every frame replaced by its frame t."""
    n, c, t, h, w = x.shape
    return x.transpose(1, 2)[:, :, :, None].expand(n, t, c, t, h, w)


def derangement(n: int, seed: int = 0) -> torch.Tensor:
    """A permutation of `range(n)` that moves every frame (n >= 2), drawn from `seed`."""
    if n < 2:
        raise ValueError(f"cannot shuffle {n} frame(s): need at least 2")
    g = torch.Generator().manual_seed(int(seed))
    while True:
        p = torch.randperm(n, generator=g)
        if bool((p != torch.arange(n)).all()):
            return p


def shuffle(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Frames of `(N, C, T, H, W)` clips in the order `perm` (output frame t is input frame `perm[t]`)."""
    return x.index_select(2, perm)
