"""Clip galleries: a unit's top-k concept items as one looping animated WebP strip, the region where the
unit's map exceeds T_u outlined on every frame (issue 16, item 4); on a tube set, the unit's concept's
own per-frame mask outlined too, in another colour.

Each frame shows the map of the layer time step that covers it (``time="frames"``) or the time-pooled
map (``time="mean"``), upsampled bilinear (align_corners=False) and thresholded strictly at T_u, as
dissection scored it. Animated WebP is an ``<img>`` that loops by itself in every current browser (no
player, no script) and can be lossless (tests read outline pixels back exactly). A layer's
``ClipSource`` (``gallery/clips.json``) holds what its clips are rendered from, so the dashboard renders
any unit later without the dissection's cache; each clip file is named by a key over everything it
depends on, so a second request is a file lookup.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dissect.engine import TIME_MODES, InputTransform, LayerResult, concept_set_fingerprint

SOURCE_NAME = "clips.json"
REGION_COLOUR = (255, 220, 0)  # the JPEG strips' outline colour
CONCEPT_COLOUR = (0, 200, 255)  # a tube item's mask of the unit's concept
DIM = 0.3  # brightness outside the region, as the JPEG strips
GAP = 3  # white pixels between tiles
RENDER_VERSION = 2  # bump when the drawing changes, so cached clips are redrawn
FPS = 8.0  # playback rate of the T frames
ITEM_CACHE = 128  # decoded items kept while drawing (units share items)


@dataclass(frozen=True)
class ClipSource:
    """What one layer's clip galleries are rendered from: the dissection's settings (checkpoint, concept set
    path, frames, size, normalisation, time mode, snippets), the concept set's fingerprint, and per unit
    T_u, its top items and its label's number (0: none; a tube item's mask of it is outlined). Plain JSON,
    written beside the JPEG strips."""

    layer: str
    settings: dict
    fingerprint: str
    thresholds: list[float]
    top: list[list[int]]
    labels: list[int] = field(default_factory=list)

    @classmethod
    def from_result(cls, result: LayerResult, k: int, labels: Sequence[int] = ()) -> "ClipSource":
        """The source of a dissected layer's clips (its top ``k`` items per unit; ``labels``: each unit's label
        number, e.g. ``UnitLabel.label_number``)."""
        if labels and len(labels) != result.units:
            raise ValueError(f"layer {result.layer}: {len(labels)} labels for {result.units} units")
        if "concept_set" not in result.settings:
            raise ValueError(f"layer {result.layer}: the result does not name its concept set (run_dissection's "
                             "results do)")
        root = str(Path(result.settings["concept_set"]).resolve())  # the dashboard runs elsewhere
        return cls(result.layer, {**result.settings, "concept_set": root}, concept_set_fingerprint(root),
                   [float(t) for t in result.thresholds], [[int(i) for i in row[:k]] for row in result.top_images.images],
                   [int(n) for n in labels])

    @property
    def units(self) -> int:
        """Number of units of the layer."""
        return len(self.thresholds)

    @property
    def checkpoint(self) -> str | None:
        """Hash of the checkpoint the layer was dissected with (None when the caller gave none)."""
        return self.settings.get("checkpoint")

    def write(self, path: str | os.PathLike) -> Path:
        """Write as JSON (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ClipSource":
        """Read ``write``'s JSON, naming the file when it is not a clip source."""
        try:
            d = json.loads(Path(path).read_text())
            return cls(d["layer"], d["settings"], d["fingerprint"], d["thresholds"], d["top"], d.get("labels", []))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a clip-gallery source ({e})") from None

    def transform(self) -> InputTransform:
        """The input transform the layer was dissected with."""
        return InputTransform.from_settings(self.settings)

    def dataset(self):
        """The concept set as dissection read it (``BrodenDataset``); an error when the folder changed since."""
        root = self.settings["concept_set"]
        if concept_set_fingerprint(root) != self.fingerprint:
            raise ValueError(f"concept set {root} changed (or moved) since layer {self.layer} was dissected; "
                             "dissect it again to render its clip galleries")
        if not self.settings.get("frames"):
            raise ValueError(f"layer {self.layer} was dissected on still images (no frames): clip galleries need "
                             "a video model")
        return self.transform().dataset(root, use_snippets=self.settings.get("snippets", True))

    def key(self, unit: int, fps: float = FPS) -> str:
        """Cache key of a unit's clip: checkpoint, layer, unit, concept set fingerprint, T_u, its items, its
        label, the dissection's settings (frames, size, normalisation, time mode, tubes) and the drawing
        (version, fps). The tile size follows from the settings and the concept set (``tile_size``), so the
        key needs no data."""
        blob = json.dumps({"v": RENDER_VERSION, "layer": self.layer, "unit": unit, "cs": self.fingerprint,
                           "threshold": self.thresholds[unit], "items": self.top[unit], "settings": self.settings,
                           "label": self.label(unit), "fps": fps}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self, unit: int) -> int:
        """The unit's label number (0 when the source names none)."""
        return self.labels[unit] if self.labels else 0

    def clip_path(self, out_dir: str | os.PathLike, unit: int, fps: float = FPS) -> Path:
        """Where unit ``unit``'s clip strip lives: ``<out_dir>/unit_<u>-<key>.webp``."""
        return Path(out_dir) / f"unit_{unit:04d}-{self.key(unit, fps)}.webp"


def tile_size(dataset) -> tuple[int, int]:
    """Tile size of a gallery: the model input size, at least 112 px a side (the JPEG strips' rule)."""
    return tuple(max(112, s) for s in dataset.size)


def frame_steps(frames: int, steps: int) -> torch.Tensor:
    """For each of ``frames`` input frames, the layer time step covering it: floor(t * steps / frames)
    (the step whose centre frame dissection scores is inside that step's span)."""
    return torch.div(torch.arange(frames) * steps, frames, rounding_mode="floor")


def unit_regions(maps: torch.Tensor, threshold: float, frames: int, size: tuple[int, int]) -> np.ndarray:
    """``(k, T, H, W)`` bool: per item and frame, where the map of the step covering the frame, upsampled
    bilinear (align_corners=False) to ``size``, exceeds ``threshold`` strictly. ``maps (k, S, h, w)`` holds S
    layer steps (1 for a 2-D layer or a time-pooled map). The upsampling is the engine's own arithmetic
    (float64, ``a + w * (b - a)`` per axis), so a map equal to T_u is never active, as in dissection."""
    k, s, h, w = maps.shape
    up = bilinear(maps.double().reshape(k * s, h, w), size).view(k, s, *size)
    return (up > threshold)[:, frame_steps(frames, s)].numpy()


def bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps ``(n, h, w)`` upsampled to ``size`` bilinearly with align_corners=False (PyTorch's sample
    positions and border clamping), each axis as ``a + w * (b - a)`` like ``engine.BilinearBlocks``: a
    constant stretch stays exactly constant."""
    (y0, y1, wy), (x0, x1, wx) = (_axis(n_in, n_out, x.dtype) for n_in, n_out in zip(x.shape[1:], size))
    left = x.index_select(2, x0)
    across = left + wx * (x.index_select(2, x1) - left)  # every input row along x first: (n, h, W)
    top = across.index_select(1, y0)
    return top + wy[:, None] * (across.index_select(1, y1) - top)


def _axis(n_in: int, n_out: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output index along one axis: the two input samples and the weight of the second
    (source position (d + 0.5) * n_in / n_out - 0.5, clamped to the first sample below 0)."""
    src = [(d + 0.5) * n_in / n_out - 0.5 for d in range(n_out)]
    lo = [0 if v < 0 else min(int(v), n_in - 1) for v in src]
    hi = [min(i + 1, n_in - 1) for i in lo]
    lam = [0.0 if v < 0 else v - i for v, i in zip(src, lo)]
    return torch.tensor(lo), torch.tensor(hi), torch.tensor(lam, dtype=dtype)


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary of boolean regions ``(..., H, W)``: region pixels with a 4-neighbour outside the region
    (beyond the image border counts as outside, so a region touching the border is closed there)."""
    p = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    inner = p[..., :-2, 1:-1] & p[..., 2:, 1:-1] & p[..., 1:-1, :-2] & p[..., 1:-1, 2:]
    return mask & ~inner


def compose_strip(clips: np.ndarray, regions: np.ndarray, concept: np.ndarray | None = None) -> np.ndarray:
    """Frames ``(T, H, k*W + (k-1)*GAP, 3)`` uint8 of a strip from ``clips (k, T, H, W, 3)`` uint8 and
    ``regions (k, T, H, W)`` bool: the region kept bright and outlined, the rest dimmed, tiles side by side;
    ``concept (k, T, H, W)`` bool, where given, outlined on top in ``CONCEPT_COLOUR``."""
    if clips.shape[:4] != regions.shape or (concept is not None and concept.shape != regions.shape):
        raise ValueError(f"clips {clips.shape}, regions {regions.shape} and concept masks "
                         f"{None if concept is None else concept.shape} disagree")
    k, t, h, w, _ = clips.shape
    tiles = np.where(regions[..., None], clips, _DIMMED[clips])
    tiles[outline(regions)] = REGION_COLOUR
    if concept is not None:
        tiles[outline(concept)] = CONCEPT_COLOUR
    padded = np.full((t, h, k, w + GAP, 3), 255, np.uint8)
    padded[:, :, :, :w] = tiles.transpose(1, 2, 0, 3, 4)
    return padded.reshape(t, h, k * (w + GAP), 3)[:, :, : k * (w + GAP) - GAP]


_DIMMED = (np.arange(256) * DIM).astype(np.uint8)  # uint8 -> dimmed uint8, as the JPEG strips compute it


def save_animation(frames: np.ndarray, path: str | os.PathLike, *, fps: float = FPS, quality: int = 80,
                   lossless: bool = False) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as a looping animated WebP (temp file, then rename)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    tmp = path.with_name(path.name + ".tmp")
    images[0].save(tmp, format="WEBP", save_all=True, append_images=images[1:], loop=0,
                   duration=round(1000 / fps), quality=quality, lossless=lossless)
    tmp.replace(path)
    return path


def item_maps(model: nn.Module, dataset, layer: str, needs: Mapping[int, Sequence[int]], *, time: str = "frames",
              input_adapter: Callable[[torch.Tensor], tuple] | None = None, batch_size: int = 16,
              device: torch.device | str = "cpu") -> dict[int, torch.Tensor]:
    """Per item ``i``, the maps ``(len(needs[i]), S, h, w)`` of the units ``needs[i]`` as dissection saw them
    (S = the layer's time steps under ``time="frames"``, else 1): one forward pass per batch of items, every
    unit at once, only the needed maps kept."""
    from mmit_interp.hooks import capture_activations

    if time not in TIME_MODES:
        raise ValueError(f"time must be one of {TIME_MODES}, got {time!r}")
    adapter = input_adapter or (lambda x: (x,))
    items = sorted(needs)
    out: dict[int, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(items), batch_size):
                idx = items[s : s + batch_size]
                x = torch.stack([dataset[i]["image"] for i in idx]).to(device)
                with capture_activations(model, [layer]) as acts:
                    model(*adapter(x))
                feats = acts[layer].float()
                if feats.dim() == 4:
                    feats = feats[:, :, None]
                elif feats.dim() == 5 and time == "mean":
                    feats = feats.mean(2, keepdim=True)
                elif feats.dim() != 5:
                    raise ValueError(f"layer {layer}: output of shape {tuple(feats.shape)} has no unit maps")
                for j, i in enumerate(idx):
                    out[i] = feats[j, list(needs[i])].cpu()
    finally:
        model.train(was_training)
    return out


def render_clip_gallery(model: nn.Module, source: ClipSource, dataset, out_dir: str | os.PathLike, *,
                        units: Sequence[int] | None = None, input_adapter: Callable[[torch.Tensor], tuple] | None = None,
                        batch_size: int = 16, device: torch.device | str = "cpu", fps: float = FPS,
                        quality: int = 80, lossless: bool = False) -> dict[int, Path]:
    """Each unit's clip strip ``unit_<u>-<key>.webp`` in ``out_dir``; units whose file exists are cache
    hits (no forward pass), the others share one forward pass per batch of their items. On a tube set
    (``dataset.tubes``) each tube item's mask of the unit's label is outlined per frame too. Returns unit -> path."""
    units = list(range(source.units)) if units is None else [int(u) for u in units]
    bad = [u for u in units if not 0 <= u < source.units]
    if bad:
        raise ValueError(f"layer {source.layer} has units 0..{source.units - 1}, not {bad}")
    paths = {u: source.clip_path(out_dir, u, fps) for u in units}
    todo = [u for u in units if not paths[u].is_file() and source.top[u]]
    needs: dict[int, list[int]] = {}
    for u in todo:
        for i in source.top[u]:
            needs.setdefault(i, []).append(u)
    maps = item_maps(model, dataset, source.layer, needs, time=source.settings.get("time", "mean"),
                     input_adapter=input_adapter, batch_size=batch_size, device=device) if todo else {}
    pos = {i: {u: p for p, u in enumerate(us)} for i, us in needs.items()}
    size = tile_size(dataset)

    @functools.lru_cache(maxsize=ITEM_CACHE)  # units share items: decode each once while it is recent
    def clip(i: int) -> np.ndarray:
        return _resized(dataset.read_clip(i), size)

    @functools.lru_cache(maxsize=ITEM_CACHE)
    def tube(i: int) -> list[dict] | None:
        return dataset[i]["frame_masks"] if dataset.broden.tubes.get(dataset.row(i).image) is not None else None

    for u in todo:
        items = source.top[u]
        regions = unit_regions(torch.stack([maps[i][pos[i][u]] for i in items]), source.thresholds[u],
                               dataset.frames, size)
        clips = np.stack([clip(i) for i in items])
        concept = None
        if dataset.tubes and source.label(u):
            concept = np.stack([concept_masks(tube(i), source.label(u), dataset.seg_size, size, dataset.frames)
                                for i in items])
        for stale in Path(out_dir).glob(f"unit_{u:04d}-*.webp"):
            stale.unlink(missing_ok=True)
        save_animation(compose_strip(clips, regions, concept), paths[u], fps=fps, quality=quality, lossless=lossless)
    return {u: p for u, p in paths.items() if p.is_file()}


def concept_masks(frame_masks: Sequence[Mapping[str, torch.Tensor]] | None, label: int, seg_size: tuple[int, int],
                  size: tuple[int, int], frames: int) -> np.ndarray:
    """``(T, H, W)`` bool: where label ``label`` is on any plane of each frame's masks (``{cat: (planes, sh, sw)}``,
    a tube item's ``frame_masks``), nearest-upsampled to ``size``; all False for an item without a tube (None)."""
    if frame_masks is None:
        return np.zeros((frames, *size), bool)
    hit = torch.stack([torch.cat([m == label for m in f.values()]).any(0) if f else
                       torch.zeros(seg_size, dtype=torch.bool) for f in frame_masks])
    return torch.nn.functional.interpolate(hit[:, None].float(), size=tuple(size), mode="nearest")[:, 0].bool().numpy()


def _resized(clip: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(T, h, w, 3)`` uint8 frames resized (bilinear) to ``size`` (H, W)."""
    if clip.shape[1:3] == tuple(size):
        return clip
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], Image.BILINEAR)) for f in clip])
