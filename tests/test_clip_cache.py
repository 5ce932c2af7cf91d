"""The decoded-clip cache: a cached clip gives exactly what decoding gives, a hit does not decode, a
changed file is decoded again, a broken clip is never cached, and training with the cache ends with
the same weights as without it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mmit_interp import clip_cache as cc
from mmit_interp.clip_cache import ClipCache
from mmit_interp.dataset import ClipTransform, load_clip
from mmit_interp.synth import SynthConfig, generate_world, load_truth
from mmit_interp.video import ClipDecodeError


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "world"
    generate_world(out, SynthConfig(seed=5, train_clips=24, val_clips=8, images=0, action_frames=0,
                                    classes=("sliding", "bouncing", "spinning", "beeping"), workers=1), progress=False)
    return out


def _clips(world: Path) -> list[Path]:
    return [world / "videos" / t.path for t in load_truth(world)]


def test_cached_clips_equal_decoded_ones(world, tmp_path, monkeypatch):
    cache = ClipCache(tmp_path / "cache")
    tf = ClipTransform(frames=8, size=48)
    clips = _clips(world)[:10]
    assert any(load_clip(c, tf)["has_audio"] for c in clips) and not all(load_clip(c, tf)["has_audio"] for c in clips)
    for rounds in range(2):  # first round fills the cache, the second reads it
        for i, c in enumerate(clips):
            for seed in (None, 0, 7):
                rng = lambda: None if seed is None else np.random.default_rng([seed, i])  # noqa: E731
                a, b = load_clip(c, tf, rng()), load_clip(c, tf, rng(), cache=cache)
                assert np.array_equal(a["frame_indices"], b["frame_indices"]) and np.array_equal(a["frames"], b["frames"])
                assert torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
                assert a["has_audio"] == b["has_audio"]
        if rounds == 0:
            def no_decoding(*a, **k):
                raise AssertionError("a cached clip was decoded again")

            monkeypatch.setattr(cc, "decode_all_frames", no_decoding)
            monkeypatch.setattr(cc, "decode_audio", no_decoding)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 2 * len(clips)  # frames + sound track, one each


def test_a_changed_file_is_decoded_again(world, tmp_path):
    cache = ClipCache(tmp_path / "cache")
    a, b = _clips(world)[:2]
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(a.read_bytes())
    tf = ClipTransform(frames=4, size=32)
    first = cache.frames(clip, 4, 32)[0]
    clip.write_bytes(b.read_bytes())
    os.utime(clip, ns=(1, 1))  # even with an older time stamp: the size or the time differs
    assert np.array_equal(cache.frames(clip, 4, 32)[0], load_clip(b, tf)["frames"])
    assert not np.array_equal(first, load_clip(b, tf)["frames"])
    assert np.array_equal(cache.frames(a, 4, 24)[0], load_clip(a, ClipTransform(frames=4, size=24))["frames"])


def test_a_broken_clip_raises_every_time_and_is_not_cached(tmp_path):
    cache = ClipCache(tmp_path / "cache")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    for _ in range(2):
        with pytest.raises(ClipDecodeError, match="bad.mp4"):
            cache.frames(bad, 4, 32)
    assert not list((tmp_path / "cache").rglob("*.npz"))


def test_training_with_the_cache_gives_the_same_weights(world, tmp_path):
    from train.loop import TrainConfig, train

    common = dict(data=str(world), model="i3d_r18", model_kwargs={"width": 4}, loss="bce", frames=4, size=32,
                  batch_size=4, epochs=2, workers=0, device="cpu", progress=False, channels_last=False)
    plain = train(TrainConfig(out=str(tmp_path / "plain"), **common))
    cached = train(TrainConfig(out=str(tmp_path / "cached"), clip_cache=str(tmp_path / "cache"), **common))
    assert list((tmp_path / "cache").rglob("*.npz"))
    for (k, v), (k2, v2) in zip(plain.model.state_dict().items(), cached.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert plain.metrics["map_sample"] == cached.metrics["map_sample"]
