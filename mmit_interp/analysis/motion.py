"""Motion vs appearance per unit (issue 16): how much a unit's response depends on motion, from paired
probes the synthetic world renders exactly (`mmit_interp.synth.probes`). Definitions: analysis.md,
"Motion vs appearance".

A unit's *response* r(x) to a clip is its map averaged over time, one value per spatial position.
Over N clips and P positions, with the original clip x, its T frozen versions f_t(x) (frame t
repeated), its time-shuffled version s(x) and its appearance swap a(x) (same motion and boxes,
other colours and textures):

    D_frozen     = mean |r(x) - mean_t r(f_t(x))|     (the clip vs its frames seen as stills)
    D_shuffled   = mean |r(x) - r(s(x))|              (the clip vs its frames in another order)
    D_appearance = mean |r(x) - r(a(x))|
    score        = D_motion / (D_motion + D_appearance),   D_motion = (D_frozen + D_shuffled) / 2

in [0, 1], unchanged by the unit's scale and offset; None where no probe moves the unit. A unit that
sees one frame at a time (no temporal receptive field) has D_frozen = D_shuffled = 0 exactly, so
score 0: the motion terms measure only what the unit draws from time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..models.base import call_block
from .trunk import resolve_block, stage_aliases, trunk_prefix

DEFAULT_LAYERS = ("layer1", "layer2", "layer3", "layer4")


def response(acts: torch.Tensor) -> torch.Tensor:
    """Per-unit responses `(N, K, P)`: a `(N, K, T, H, W)` map averaged over time (P = H W positions);
    a `(N, K, H, W)` map as it is; `(N, K)` features as one position."""
    if acts.dim() == 5:
        acts = acts.mean(2)
    return acts.reshape(acts.shape[0], acts.shape[1], -1)


class MotionStats:
    """Streaming sums of the per-unit response changes of `K` units (`add` per batch of clips, `merge`
    across shards, `state_dict` of plain tensors); read-outs `d_frozen`, `d_shuffled`, `d_appearance`, `score`."""

    def __init__(self, units: int):
        if units < 1:
            raise ValueError("units must be >= 1")
        self.units = units
        self.sums = torch.zeros(3, units, dtype=torch.float64)  # frozen, shuffled, appearance
        self.terms = 0  # (clip, position) pairs summed
        self.clips = 0

    def add(self, orig: torch.Tensor, frozen: torch.Tensor, shuffled: torch.Tensor, swapped: torch.Tensor) -> None:
        """Add a batch: responses `(N, K, P)` to the originals, shuffled and swapped clips, and `(N, F, K, P)`
        to each clip's F frozen versions (whose mean is the clip's still-frame baseline)."""
        n, k, p = orig.shape
        if k != self.units:
            raise ValueError(f"expected {self.units} units, got responses shaped {tuple(orig.shape)}")
        if frozen.dim() != 4 or frozen.shape[0] != n or frozen.shape[2:] != orig.shape[1:]:
            raise ValueError(f"frozen responses must be (N, F, K, P) = ({n}, F, {k}, {p}), got {tuple(frozen.shape)}")
        for name, v in (("shuffled", shuffled), ("swapped", swapped)):
            if v.shape != orig.shape:
                raise ValueError(f"{name} responses {tuple(v.shape)} do not match the originals' {tuple(orig.shape)}")
        orig = orig.double()
        for i, other in enumerate((frozen.double().mean(1), shuffled, swapped)):
            self.sums[i] += (orig - other.double()).abs().sum((0, 2))
        self.terms += n * p
        self.clips += n

    def merge(self, other: "MotionStats") -> None:
        """Add another shard's sums (exact: the statistics are sums)."""
        if other.units != self.units:
            raise ValueError(f"cannot merge MotionStats of {other.units} units into {self.units}")
        self.sums += other.sums
        self.terms += other.terms
        self.clips += other.clips

    def _mean(self, i: int) -> torch.Tensor:
        if not self.terms:
            raise RuntimeError("no clip added yet")
        return self.sums[i] / self.terms

    def d_frozen(self) -> torch.Tensor:
        """Per unit: mean |r(x) - mean_t r(f_t(x))| over clips and positions."""
        return self._mean(0)

    def d_shuffled(self) -> torch.Tensor:
        """Per unit: mean |r(x) - r(s(x))|."""
        return self._mean(1)

    def d_appearance(self) -> torch.Tensor:
        """Per unit: mean |r(x) - r(a(x))|."""
        return self._mean(2)

    def score(self) -> torch.Tensor:
        """Per unit: D_motion / (D_motion + D_appearance) in [0, 1]; NaN where every difference is 0."""
        motion = (self.d_frozen() + self.d_shuffled()) / 2
        total = motion + self.d_appearance()
        return torch.where(total > 0, motion / total.clamp_min(torch.finfo(torch.float64).tiny),
                           torch.full_like(total, float("nan")))

    def summary(self) -> dict[str, Any]:
        """The layer's distribution: units, units scored, mean and median score, share of scored units
        with score > 0.5 (motion-dominated), clips."""
        s = self.score()
        ok = s[~s.isnan()]
        return {"units": self.units, "scored": int(ok.numel()), "clips": self.clips,
                "mean": float(ok.mean()) if ok.numel() else None,
                "median": float(ok.median()) if ok.numel() else None,
                "share_motion": float((ok > 0.5).double().mean()) if ok.numel() else None}

    def rows(self) -> list[dict[str, Any]]:
        """Per-unit records `{unit, score, d_frozen, d_shuffled, d_appearance, n}` (the store's `unit_motion` rows)."""
        cols = [t.tolist() for t in (self.score(), self.d_frozen(), self.d_shuffled(), self.d_appearance())]
        return [{"unit": u, "score": None if np.isnan(s) else s, "d_frozen": f, "d_shuffled": sh, "d_appearance": a,
                 "n": self.clips} for u, (s, f, sh, a) in enumerate(zip(*cols))]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain-tensor state."""
        return {"sums": self.sums.clone(), "terms": torch.tensor(self.terms), "clips": torch.tensor(self.clips)}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "MotionStats":
        """Rebuild from `state_dict()`."""
        obj = cls(state["sums"].shape[1])
        obj.sums = state["sums"].clone().double()
        obj.terms, obj.clips = int(state["terms"]), int(state["clips"])
        return obj


@torch.no_grad()
def block_outputs(model: nn.Module, video: torch.Tensor, blocks: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the trunk's named `blocks()` for a video batch `(N, 3, T, H, W)`; stops after the last one."""
    want = set(blocks)
    out: dict[str, torch.Tensor] = {}
    trunk = model.trunk()
    x, guide = video, trunk.guide(video)
    for name, m in trunk.blocks():
        x = call_block(m, x, guide)
        if name in want:
            out[name] = x
            if len(out) == len(want):
                break
    return out


@torch.no_grad()
def motion_batch(model: nn.Module, stats: dict[str, MotionStats], blocks: Sequence[str], orig: torch.Tensor,
                 swapped: torch.Tensor, perm: torch.Tensor, frozen_chunk: int = 64) -> None:
    """Add a batch of clips `(N, 3, T, H, W)` and their appearance swaps to each block's `MotionStats` in `stats`
    (created on first use); originals, shuffles and swaps run as one batch, the N T frozen clips about
    `frozen_chunk` at a time (whole clips per chunk)."""
    from ..synth.probes import freeze_each, shuffle

    n, t = orig.shape[0], orig.shape[2]
    both = block_outputs(model, torch.cat([orig, shuffle(orig, perm), swapped]), blocks)
    r = {b: response(v).unflatten(0, (3, n)) for b, v in both.items()}
    for b in blocks:
        stats.setdefault(b, MotionStats(r[b].shape[2]))
    g = max(1, frozen_chunk // t)
    for i in range(0, n, g):
        m = min(g, n - i)
        fz = block_outputs(model, freeze_each(orig[i:i + m]).reshape(m * t, *orig.shape[1:]), blocks)
        for b in blocks:
            o, sh, sw = r[b][:, i:i + m]
            stats[b].add(o, response(fz[b]).view(m, t, *o.shape[1:]), sh, sw)


def motion_scores(model: nn.Module, clips: Iterable[tuple[torch.Tensor, torch.Tensor]], blocks: Sequence[str], *,
                  perm: torch.Tensor, frozen_chunk: int = 64) -> dict[str, MotionStats]:
    """`MotionStats` per block (`blocks()` or stage names) over `(orig, swapped)` model-input batches
    `(N, 3, T, H, W)`."""
    blocks = list(dict.fromkeys(resolve_block(model, b) for b in blocks))
    stats: dict[str, MotionStats] = {}
    for orig, swapped in clips:
        motion_batch(model, stats, blocks, orig, swapped, perm, frozen_chunk)
    if not stats:
        raise ValueError("no clip to probe")
    return stats


def probe_batches(world: str | Path, transform, *, split: str = "val", clips: int = 32, batch_size: int = 8,
                  seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`(orig, swapped)` model-input batches of a world's first `clips` clips of a split with a visible actor."""
    from ..synth.probes import model_input, probe_specs, render_pair, world_config

    config = world_config(world)
    specs = probe_specs(config, split, clips)
    if not specs:
        raise ValueError(f"{world}: no {split} clip with a visible actor to probe")
    for i in range(0, len(specs), batch_size):
        pairs = [render_pair(s, config, seed) for s in specs[i:i + batch_size]]
        yield (torch.stack([model_input(a, transform) for a, _ in pairs]),
               torch.stack([model_input(b, transform) for _, b in pairs]))


def run_motion(run_dir: str | Path, *, world: str | Path, layers: Sequence[str] = DEFAULT_LAYERS,
               split: str = "val", clips: int = 32, batch_size: int = 8, seed: int = 0,
               record: bool = True) -> dict[str, Any]:
    """Motion scores of a run's units on a synthetic world's probes, per layer, recorded in the run's store
    (`unit_motion`, dataset `world:split`, layers under their dissected names); a JSON-able summary."""
    from ..checkpoint import load_model
    from ..dataset import ClipTransform
    from ..store import open_run_store
    from ..synth.probes import derangement

    world = Path(world)
    model, meta = load_model(run_dir)
    if "video" not in model.inputs:
        raise ValueError(f"{run_dir}: an audio model has no visual units to probe for motion")
    if clips < 1:
        raise ValueError("clips must be >= 1")
    tf = ClipTransform.from_dict(meta["transforms"])
    perm = derangement(tf.frames, seed)
    blocks = list(dict.fromkeys(resolve_block(model, name) for name in layers))
    stats = motion_scores(model, probe_batches(world, tf, split=split, clips=clips, batch_size=batch_size, seed=seed),
                          blocks, perm=perm)
    prefix = trunk_prefix(model)
    names = {b: prefix + stage_aliases(model, b)[-1] for b in blocks}
    dataset = f"{world.name}:{split}"
    if record:
        st, rid = open_run_store(run_dir, meta)
        with st:
            for b in blocks:
                st.write_unit_motion(dataset, names[b], stats[b].rows(), run_id=rid)
    return {"dataset": dataset, "clips": stats[blocks[0]].clips, "perm": perm.tolist(), "seed": seed,
            "layers": [{"layer": names[b], "block": b, **stats[b].summary()} for b in blocks]}
