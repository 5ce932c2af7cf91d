"""Window oracles (`mmit_interp.explain.ceiling`, `mmit-analyze ownership-ceiling`): geometry, ties, fields."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmit_interp.explain.ceiling import (axis_profile, ceiling_scores, oracle_maps, run_ceiling, shared_ownership,
                                         window_presence)
from mmit_interp.explain.localisation import ownership


def _square(t: int, at: list[tuple[int, int]], side: int = 8, size: int = 64) -> np.ndarray:
    """One action's masks `(T, size, size)`: a `side`-pixel square whose corner is at `at[t]`."""
    m = np.zeros((t, size, size), bool)
    for f, (y, x) in enumerate(at):
        m[f, y:y + side, x:x + side] = True
    return m


def test_window_presence_matches_brute_force():
    rng = np.random.default_rng(0)
    masks = rng.random((2, 3, 20, 20)) < 0.05
    for shape in ("box", "meets"):
        got = window_presence(masks, grid=4, window=7, shape=shape)
        for g in range(4):
            for k in range(4):
                lo_y, lo_x = int(np.floor((g + 0.5) * 5 - 3.5)), int(np.floor((k + 0.5) * 5 - 3.5))
                win = masks[:, :, max(lo_y, 0):max(lo_y + 7, 0), max(lo_x, 0):max(lo_x + 7, 0)].sum((2, 3))
                np.testing.assert_allclose(got[:, :, g, k], win if shape == "box" else win > 0)
    g = axis_profile(64, 8, 6.0, "gauss")
    assert g.shape == (8, 64) and g[0].argmax() == 3 and g[7].argmax() == 59
    assert g[0, 3] == pytest.approx(g[0, 4]) and g[7, 59] == pytest.approx(g[7, 60])  # centred at 4 and 60
    with pytest.raises(ValueError, match="window shape"):
        axis_profile(64, 8, 6.0, "disc")


def test_shared_ownership_splits_ties_and_matches_ownership_without_them():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :, :2], masks[1, :, 2:] = True, True
    tied = torch.ones(2, 4, 4)
    assert [(j, acc) for j, acc, _ in shared_ownership(tied, masks)] == [(0, 0.5), (1, 0.5)]
    maps = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    owner = torch.where(maps.max(0).values > 0, maps.argmax(0), -1).numpy()
    assert shared_ownership(maps, masks) == ownership(owner, masks)
    assert shared_ownership(torch.zeros(2, 4, 4), masks) == [(0, None, 0.0), (1, None, 0.0)]  # nobody owns


def test_small_windows_own_far_apart_actors_and_a_frame_wide_one_cannot():
    a = _square(8, [(4, 4)] * 8)
    b = _square(8, [(44, 44)] * 8)
    masks, present = np.stack([a, b]), np.ones((2, 8), bool)
    small = ceiling_scores(masks, present, grid=8, window=8, field=None)
    assert np.mean(small["ownership"]) == 1.0 and np.mean(small["pointing"]) == 1.0
    assert small["chance"] == [0.5] * 16
    wide = ceiling_scores(masks, present, grid=8, window=200, field=None, shape="meets")
    assert wide["ownership"] == [] and wide["coverage"] == [0.0] * 16  # every map constant: nobody owns


def test_a_whole_clip_field_blurs_a_moving_actor_over_its_path():
    a = _square(8, [(28, 8 * f) for f in range(8)])  # crosses the frame left to right
    b = _square(8, [(0, 0)] * 8)
    masks, present = np.stack([a, b]), np.ones((2, 8), bool)
    now = ceiling_scores(masks, present, grid=8, window=8, field=0)
    whole = ceiling_scores(masks, present, grid=8, window=8, field=None)
    assert np.mean(now["pointing"][::2]) == 1.0  # records alternate a, b per frame
    assert np.mean(whole["pointing"][::2]) <= 0.25  # the same map in every frame: right in one or two
    maps = oracle_maps(masks, grid=8, window=8, field=None)
    assert torch.allclose(maps[:, 0], maps[:, 7])


def test_run_ceiling_and_cli_on_a_boxes_csv(tmp_path, capsys):
    from mmit_interp.cli import analyze_main
    from mmit_interp.explain.render import write_video

    clip = tmp_path / "clip.mp4"  # 64 x 48, 12 frames; two actions side by side in every frame
    write_video([np.full((48, 64, 3), 90, np.uint8)] * 12, clip, fps=6)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("clip,frame,action,x1,y1,x2,y2\n" + "".join(
        f"{clip},{f},act1,0,0,24,48\n{clip},{f},act2,40,0,64,48\n" for f in range(12)))
    rows = run_ceiling(boxes_csv=boxes, windows=(8, 200), fields=(0, None), shape="meets")
    assert [(r["window"], r["field"]) for r in rows] == [(8, 0), (8, None), (200, 0), (200, None)]
    assert rows[0]["ownership"] == 1.0 and rows[0]["chance"] == 0.5 and rows[0]["n_ownership"] == 16
    assert rows[3]["ownership"] is None and rows[3]["coverage"] == 0.0
    assert analyze_main(["ownership-ceiling", "--boxes", str(boxes), "--windows", "8,200", "--fields", "0,clip",
                         "--shape", "meets", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == rows
    assert analyze_main(["ownership-ceiling", "--boxes", str(boxes), "--windows", "8"]) == 0
    assert "ownership 1.0000" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not both"):
        run_ceiling()
    with pytest.raises(ValueError, match="window shape"):
        run_ceiling(boxes_csv=boxes, shape="disc")
