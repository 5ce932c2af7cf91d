"""The track-attention probe model (benchmarks/track_attention.py, probes 38-47 of docs/synth.md): its
colour-guided attention stays on the cells of its own colour, and the model runs on clips and stills."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "track_attention", Path(__file__).parents[1] / "benchmarks" / "track_attention.py")
track_attention = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(track_attention)


def test_guided_attention_gathers_from_its_own_colour_across_frames():
    torch.manual_seed(0)
    att = track_attention.ActorAttention(channels=8, dim=4, locality=1.0, guided=True)
    guide = torch.zeros(1, 3, 4, 6, 6)  # a red actor moving right over a grey floor, and a blue one standing
    for t in range(4):  # (colours as the normalised input has them: a saturated channel is ~2.2 from grey)
        guide[0, 0, t, 1, t] = 2.2
    guide[0, 2, :, 4, 4] = 2.2
    a, v = att.attention(torch.rand(1, 8, 4, 6, 6), guide)
    assert a.shape == (1, 144, 144) and v.shape == (1, 8, 144)
    assert torch.allclose(a.sum(2), torch.ones(1, 144))
    red = guide[0, 0].flatten() > 0
    blue = guide[0, 2].flatten() > 0
    assert (a[0][red][:, red].sum(1) > 0.9).all()  # the red actor's cells, in every frame, gather from each other
    assert (a[0][red][:, blue].sum(1) < 0.01).all()
    assert (a[0][blue][:, blue].sum(1) > 0.9).all()


def test_attended_model_runs_on_clips_and_stills():
    net = track_attention.i3d_r18_attend(num_classes=5, width=4, layer3_stride=1, layer4_stride=1,
                                         spatial_kernels=[3, 1, 1, 1], temporal_kernels=[1, 1, 1, 1], head_r=5.0,
                                         attention_locality=12.0, attention_guided=True)
    assert net(torch.rand(2, 3, 8, 32, 32)).shape == (2, 5)
    assert net(torch.rand(1, 3, 1, 32, 32)).shape == (1, 5)  # the still-image twin it is pretrained as
    assert net.forward_features(torch.rand(1, 3, 8, 32, 32)).shape == (1, 32, 8, 4, 4)


def test_map_separation_refuses_a_trunk_whose_last_block_is_not_the_heads_map(tmp_path):
    """The separation penalty hooks the trunk's last block, so a model that changes the map after it (this one)
    is refused before training instead of penalising a map the head does not read."""
    import pytest

    from mmit_interp.vocab import Vocabulary
    from train.loop import TrainConfig, build

    kw = {"width": 4, "layer3_stride": 1, "layer4_stride": 1, "spatial_kernels": [3, 1, 1, 1], "head_r": 5.0,
          "attention_locality": 12.0}
    cfg = TrainConfig(data=str(tmp_path), out=str(tmp_path), model="i3d_r18_attend", model_kwargs=kw,
                      map_separation=1.0, frames=4, size=32)
    with pytest.raises(ValueError, match="blocks"):
        build(cfg, Vocabulary(["a", "b"]))
    build(TrainConfig(**{**cfg.__dict__, "map_separation": 0.0}), Vocabulary(["a", "b"]))
