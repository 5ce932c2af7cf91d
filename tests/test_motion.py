"""Motion vs appearance per unit: the world's paired probes, the streaming score, the `motion` verb."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mmit_interp.analysis.motion import MotionStats, motion_scores, probe_batches, response
from mmit_interp.dataset import ClipTransform
from mmit_interp.models.base import ModelBase
from mmit_interp.synth import SynthConfig, generate_world
from mmit_interp.synth.probes import (derangement, freeze_each, probe_specs, render_pair, render_texture_pair,
                                      shuffle, swap_appearance, with_texture, world_config)
from mmit_interp.synth.render import render_clip

TINY = dict(seed=5, train_clips=0, val_clips=14, images=0, action_frames=0, size=32, frames=8, workers=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("motion") / "world"
    generate_world(out, SynthConfig(**TINY), progress=False)
    return out


class FrameUnits(nn.Module):
    """Units 0-2: |x_t - x_{t-1}| of the R, G, B channel (0 at t = 0); units 3-5: the R, G, B value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = torch.cat([torch.zeros_like(x[:, :, :1]), (x[:, :, 1:] - x[:, :, :-1]).abs()], 2)
        return torch.cat([diff, x], 1)


class HandBuilt(ModelBase):
    """A one-block video model whose block is `FrameUnits`."""

    inputs = ("video",)

    def __init__(self) -> None:
        super().__init__()
        self.units = FrameUnits()

    def trunk(self) -> "HandBuilt":
        return self

    def blocks(self) -> list[tuple[str, nn.Module]]:
        return [("units", self.units)]


def test_world_config_round_trips(world):
    assert world_config(world).to_dict() == SynthConfig(**TINY).to_dict()


def test_world_config_refuses_a_folder_without_world_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="world.json"):
        world_config(tmp_path)


def test_swap_changes_every_look_and_keeps_the_motion(world):
    config = world_config(world)
    specs = probe_specs(config, "val", 6)
    assert specs and all(any(a.visible for a in s.actors) for s in specs)
    for spec in specs:
        swapped = swap_appearance(spec, seed=1)
        worn = [a.colour for a in swapped.actors if a.visible]
        assert len(set(worn)) == len(worn)
        for a, b in zip(spec.actors, swapped.actors):
            if a.visible:
                assert b.colour not in {x.colour for x in spec.actors} and b.texture != a.texture
                assert (a.action, a.shape) == (b.action, b.shape)
            else:
                assert a == b
        assert render_clip(spec, config).boxes == render_clip(swapped, config).boxes
        orig, other = render_pair(spec, config, seed=1)
        assert orig.shape == other.shape and (orig != other).any()
        np.testing.assert_array_equal(orig, render_clip(spec, config).frames)  # deterministic from spec.seed


def test_texture_twin_changes_only_the_dressed_actor(world):
    config = world_config(world)
    for spec in probe_specs(config, "val", 6):
        actor = next(i for i, a in enumerate(spec.actors) if a.visible and a.texture != "dotted")
        twin = with_texture(spec, actor, "dotted")
        assert twin.actors[actor].texture == "dotted" and spec.actors[actor].texture != "dotted"
        assert [a for i, a in enumerate(twin.actors) if i != actor] == [a for i, a in enumerate(spec.actors) if i != actor]
        orig, dressed = render_texture_pair(spec, config, actor, "dotted")
        ref = render_clip(spec, config)
        np.testing.assert_array_equal(orig, ref.frames)
        changed = (orig != dressed).any(-1)
        assert changed.any()
        # pixel noise aside (the same stream, so equal), only pixels the dressed actor owns may differ
        visible = [i for i, a in enumerate(spec.actors) if a.visible]
        assert not (changed & (ref.owner != visible.index(actor))).any()
    spec = probe_specs(config, "val", 1)[0]
    with pytest.raises(ValueError, match="unknown texture 'tartan'"):
        with_texture(spec, 0, "tartan")
    with pytest.raises(ValueError, match="not a visible actor"):
        with_texture(spec, len(spec.actors), "dotted")


def test_freeze_and_shuffle():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4, 1, 1)
    f = freeze_each(x)
    assert f.shape == (2, 4, 3, 4, 1, 1)
    for n in range(2):
        for t in range(4):
            assert torch.equal(f[n, t], x[n, :, t:t + 1].expand(3, 4, 1, 1))
    p = derangement(4, seed=3)
    assert torch.equal(p, derangement(4, seed=3)) and sorted(p.tolist()) == [0, 1, 2, 3]
    assert (p != torch.arange(4)).all()
    assert torch.equal(shuffle(x, p)[:, :, 1], x[:, :, int(p[1])])
    with pytest.raises(ValueError, match="2"):
        derangement(1)


def _reference(orig, frozen, shuffled, swapped):
    """The score written out in NumPy, float64, from the definition (analysis.md)."""
    o = orig.numpy().astype(np.float64)
    d = [np.abs(o - frozen.numpy().astype(np.float64).mean(1)).mean((0, 2)),
         np.abs(o - shuffled.numpy()).mean((0, 2)), np.abs(o - swapped.numpy()).mean((0, 2))]
    motion = (d[0] + d[1]) / 2
    return d, motion / (motion + d[2])


def test_stats_match_the_definition_and_merge_equals_one_pass():
    g = torch.Generator().manual_seed(0)
    n, f, k, p = 7, 4, 5, 6
    orig, shuffled, swapped = (torch.randn(n, k, p, generator=g) for _ in range(3))
    frozen = torch.randn(n, f, k, p, generator=g)
    one = MotionStats(k)
    one.add(orig, frozen, shuffled, swapped)
    d, score = _reference(orig, frozen, shuffled, swapped)
    for got, want in zip((one.d_frozen(), one.d_shuffled(), one.d_appearance()), d):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(one.score().numpy(), score, rtol=1e-6)

    a, b = MotionStats(k), MotionStats(k)
    a.add(orig[:3], frozen[:3], shuffled[:3], swapped[:3])
    b.add(orig[3:], frozen[3:], shuffled[3:], swapped[3:])
    a = MotionStats.from_state_dict(a.state_dict())
    a.merge(b)
    torch.testing.assert_close(a.sums, one.sums)
    assert (a.terms, a.clips) == (one.terms, one.clips) == (n * p, n)
    assert a.rows() == one.rows()


def test_unmoved_unit_has_no_score_and_shapes_are_checked():
    st = MotionStats(2)
    x = torch.zeros(3, 2, 4)
    st.add(x, torch.zeros(3, 5, 2, 4), x, x)
    assert st.score().isnan().all() and [r["score"] for r in st.rows()] == [None, None]
    assert st.summary()["scored"] == 0 and st.summary()["mean"] is None
    with pytest.raises(ValueError, match="units"):
        st.add(torch.zeros(3, 4, 4), torch.zeros(3, 5, 4, 4), torch.zeros(3, 4, 4), torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="frozen"):
        st.add(x, torch.zeros(3, 2, 4), x, x)
    with pytest.raises(RuntimeError, match="no clip"):
        MotionStats(2).score()


def test_response_pools_time_only():
    a = torch.randn(2, 3, 4, 5, 6)
    torch.testing.assert_close(response(a), a.mean(2).flatten(2))
    assert response(torch.randn(2, 3)).shape == (2, 3, 1)


def test_hand_built_units_are_classified(world):
    """Frame-difference units are motion units, colour units appearance units, with a wide margin."""
    tf = ClipTransform(frames=8, size=32)
    batches = probe_batches(world, tf, clips=12, batch_size=5)
    stats = motion_scores(HandBuilt(), batches, ["units"], perm=derangement(8), frozen_chunk=16)["units"]
    score = stats.score()
    print("hand-built scores:", [round(v, 4) for v in score.tolist()])
    assert stats.clips == 12
    assert (score[:3] > 0.65).all(), score
    assert (score[3:] < 0.05).all(), score
    assert (stats.d_appearance() > 0).all()  # the colour units do see the swap
    s = stats.summary()
    assert s["share_motion"] == pytest.approx(0.5) and s["scored"] == 6


@pytest.mark.slow
def test_motion_cli_on_the_trained_world(tmp_path, capsys):
    from _trained import trained_world

    from mmit_interp.cli import analyze_main
    from mmit_interp.store import ResultsStore

    world, run = trained_world()
    assert analyze_main(["motion", "--run", str(run), "--world", str(world), "--clips", "6", "--layers", "layer1",
                         "layer4", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    print("trained world:", r)
    assert r["dataset"] == f"{world.name}:val" and r["clips"] == 6
    assert [x["layer"] for x in r["layers"]] == ["layer1", "layer4"]
    with ResultsStore(run) as st:
        for x in r["layers"]:
            scores = st.unit_motion(x["layer"])
            assert len(scores) == x["units"] > 0
            got = [v for v in scores.values() if v is not None]
            assert len(got) == x["scored"] and all(0 <= v <= 1 for v in got)
            assert np.mean(got) == pytest.approx(x["mean"])
        summary = {d["layer"]: d for d in st.motion_layers(f"{world.name}:val")}
        assert summary["layer4"]["share_motion"] == pytest.approx(r["layers"][1]["share_motion"])
    assert analyze_main(["motion", "--run", str(run), "--world", str(tmp_path)]) == 2
    assert "world.json" in capsys.readouterr().err


def test_store_unit_motion_replaces_and_reads_the_latest_dataset(tmp_path):
    from mmit_interp.store import ResultsStore

    def rows(scores):
        return [{"unit": u, "score": s, "d_frozen": 1.0, "d_shuffled": 2.0, "d_appearance": 0.5, "n": 3}
                for u, s in enumerate(scores)]

    with ResultsStore(tmp_path) as st:
        st.register_run({"vocab": ["a", "b"], "sha256": "0" * 64})
        assert st.unit_motion("layer4") == {}
        st.write_unit_motion("w:val", "layer4", rows([0.9, None, 0.2]))
        st.write_unit_motion("w:val", "layer4", rows([0.8, 0.1]))  # replaces the layer's rows
        st.write_unit_motion("w:val", "layer1", rows([0.3]))
        assert st.unit_motion("layer4") == {0: 0.8, 1: 0.1}
        st.write_unit_motion("v:val", "layer4", rows([0.6, float("nan")]))
        assert st.unit_motion("layer4") == {0: 0.6, 1: None}  # the dataset analysed last
        assert st.unit_motion("layer4", dataset="w:val") == {0: 0.8, 1: 0.1}
        summary = st.motion_layers("w:val")
        assert [d["layer"] for d in summary] == ["layer1", "layer4"]
        assert summary[1]["n_units"] == summary[1]["n_scored"] == 2
        assert summary[1]["mean"] == pytest.approx(0.45) and summary[1]["share_motion"] == pytest.approx(0.5)
        v = st.motion_layers("v:val")[0]
        assert (v["n_units"], v["n_scored"], v["share_motion"]) == (2, 1, 1.0)
