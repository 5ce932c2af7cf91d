"""Probes 38-52 of issue 12 (docs/synth.md, "Gathering each actor's motion along its track" and the next
section): `loc_probe.py` with the model `i3d_r18_attend` (`mmit_interp.models.attention`: a trunk with a
3-frame temporal field whose last map gathers, by attention, the features of the positions that belong to
the same actor in every frame).

    python benchmarks/track_attention.py OUT NAME [loc_probe options] --kwargs '{"attention_dim": 32, ...}'
    python benchmarks/track_attention.py mass RUN WORLD [MAX_CLIPS]   # where the attention looks

`mass` prints, for query positions inside one action's box in clips with two or more boxed actions, the share
of their attention on that action's boxes (any frame), on the other actions' boxes and on the background, next
to those regions' shares of the positions (a last-map cell belongs to a box it is at least 30 % covered by).
Runs 38-47 used the block while it lived here, with the learned-key convs built (unused) in guided mode too;
the library's guided block has none, so it rebuilds those runs up to initialisation.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn


def attention_mass(run: str | Path, world: str | Path, max_clips: int = 80) -> dict[str, list[float]]:
    """Attention shares `{"mass": [own, other, background], "area": [...]}` of a run's `TrackAttention`
    on a synthetic world's validation clips (see the module doc)."""
    from mmit_interp.checkpoint import load_model
    from mmit_interp.dataset import ClipTransform
    from mmit_interp.explain.localisation import boxes_from_truth, clip_inputs

    model, meta = load_model(run)
    tf = ClipTransform.from_dict(meta["transforms"])
    seen: list[torch.Tensor] = []
    plain = model.attend.attention

    def spy(f: torch.Tensor, guide: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a, v = plain(f, guide)
        seen.append(a[0])
        return a, v

    model.attend.attention = spy
    mass, area = np.zeros(3), np.zeros(3)
    for clip in boxes_from_truth(world)[:max_clips]:
        inp = clip_inputs(model, meta["vocab"], clip, tf)
        if inp is None or len(inp["actions"]) < 2:
            continue
        seen.clear()
        with torch.no_grad():
            f = model.forward_features(inp["video"])
        a = seen[0].numpy()
        m = torch.tensor(inp["masks"], dtype=torch.float32)  # (S, T, H, W) boxes on the input grid
        cells = nn.functional.adaptive_avg_pool2d(m.flatten(0, 1), f.shape[-2:]).view(len(m), -1).numpy() > 0.3
        for s in range(len(m)):
            own = cells[s]
            other = cells[np.arange(len(m)) != s].any(0) & ~own
            bg = ~cells.any(0)
            if own.any():
                rows = a[own]
                mass += [rows[:, r].sum(1).mean() for r in (own, other, bg)]
                area += [r.mean() for r in (own, other, bg)]
    return {"mass": (mass / mass.sum()).round(3).tolist(), "area": (area / area.sum()).round(3).tolist()}


if __name__ == "__main__":
    if sys.argv[1] == "mass":
        print(attention_mass(sys.argv[2], sys.argv[3], *(int(x) for x in sys.argv[4:5])))
    else:
        import loc_probe

        sys.argv += ["--model", "i3d_r18_attend"]
        loc_probe.main()
