"""Tube dissection (per-frame masks): the engine against a naive float64 reference, planted units,
the tube format (writer, reader, dataset) and the builder from a world's truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dissect.engine import dissect_stream, sample_labels
from tests.test_dissect_engine import CATS, SEG, collate, make_world, naive_dissect


def tube_world(seed: int = 0, n: int = 5, frames: int = 4):
    """``n`` clips of ``frames`` frames, every frame with its own random planes (make_world's images)."""
    _, images, num_labels, primary = make_world(seed=seed, n=n * frames)
    return [images[i * frames:(i + 1) * frames] for i in range(n)], num_labels, primary


def collate_tubes(clips, idx):
    """Tube labels as BrodenDataset.collate gives them: ``pixel (N, T, P, sh, sw)`` etc."""
    per = [collate(clips[i], list(range(len(clips[i])))) for i in idx]
    pmax = max(b["pixel"].shape[1] for b in per)
    wmax = max(b["whole"].shape[1] for b in per)
    frames = len(clips[idx[0]])
    out = {"pixel": torch.zeros((len(idx), frames, pmax, SEG, SEG), dtype=torch.int32),
           "plane_cat": torch.full((len(idx), frames, pmax), -1),
           "whole": torch.zeros((len(idx), frames, wmax), dtype=torch.long),
           "whole_cat": torch.full((len(idx), frames, wmax), -1),
           "index": torch.tensor(idx)}
    for b, lab in enumerate(per):
        for k in ("pixel", "plane_cat", "whole", "whole_cat"):
            out[k][b, :, : lab[k].shape[1]] = lab[k]
    return out


def run_tubes(video, clips, num_labels, primary, quantile, batch=2, time="frames"):
    ft = torch.from_numpy(video)

    def batches():
        for s in range(0, len(clips), batch):
            idx = list(range(s, min(s + batch, len(clips))))
            yield {"L": ft[idx]}, collate_tubes(clips, idx)

    names = [f"l{i}" for i in range(num_labels + 1)]
    return dissect_stream(batches, len(clips), torch.tensor(primary), names, CATS, quantile=quantile, time=time)["L"]


@pytest.mark.parametrize("steps", [4, 2, 3])
def test_tube_tallies_match_naive(steps):
    """Every (unit, step) map is scored against the mask of frame floor((t' + 0.5) T / T')."""
    frames = 4
    clips, L, primary = tube_world(frames=frames)
    rng = np.random.default_rng(2)
    video = (rng.integers(-40, 40, size=(len(clips), 6, steps, 4, 4)) / 8.0).astype(np.float32)
    res = run_tubes(video, clips, L, primary, 0.05)
    flat = video.transpose(0, 2, 1, 3, 4).reshape(len(clips) * steps, 6, 4, 4)
    images = [clips[n][int(math.floor((t + 0.5) * frames / steps))] for n in range(len(clips)) for t in range(steps)]
    thr, inter, area, lite, orig, iou = naive_dissect(flat, images, L, primary, 0.05)
    assert np.array_equal(res.thresholds.numpy().astype(np.float64), thr)
    assert np.array_equal(res.tally.inter.numpy(), inter)
    assert np.array_equal(res.tally.label_area.numpy(), area)
    assert np.array_equal(res.tally.act_lite.numpy(), lite)
    assert np.array_equal(res.tally.act_orig.numpy(), orig)
    assert int(res.tally.samples) == len(clips) * steps
    for den in ("lite", "original"):
        assert np.array_equal(res.iou(den).numpy(), iou[den])
    # top images are clips, by the maximum over every step
    best = video.max((2, 3, 4)).argmax(0)
    assert res.top_images.images[:, 0].tolist() == best.tolist()


def test_planted_tube_unit_has_iou_one():
    """A unit that IS one label's per-frame mask (features at mask size) scores IoU 1 on the tube set;
    scored against one still mask per clip (the old frames mode) it does not."""
    frames = 4
    clips, L, primary = tube_world(seed=4, frames=frames)
    label = 3
    video = np.zeros((len(clips), 2, frames, SEG, SEG), np.float32)
    for n, clip in enumerate(clips):
        for t, im in enumerate(clip):
            video[n, 0, t] = sum((p == label) for p, _ in im["planes"]) > 0
    video[:, 1] = np.random.default_rng(0).random(video[:, 1].shape)
    assert video[:, 0].any()
    res = run_tubes(video, clips, L, primary, 0.3)
    assert float(res.thresholds[0]) == 0.0
    for den in ("lite", "original"):
        assert res.iou(den)[0, label].item() == pytest.approx(1.0, abs=1e-9)
    assert res.unit_labels()[0].label_number == label

    def still_batches():  # every step against the clip's first frame, as a still set scores clips
        yield {"L": torch.from_numpy(video)}, collate([c[0] for c in clips], list(range(len(clips))))

    still = dissect_stream(still_batches, len(clips), torch.tensor(primary), [str(i) for i in range(L + 1)], CATS,
                           quantile=0.3, time="frames")["L"]
    assert still.iou()[0, label].item() < 0.99


def test_sample_labels_alignment():
    clips, _, _ = tube_world(n=3, frames=4)
    lab = collate_tubes(clips, [0, 1, 2])
    out, rep = sample_labels(lab, 2)
    assert rep == 1 and out["pixel"].shape == (6, *lab["pixel"].shape[2:])
    assert torch.equal(out["pixel"][3], lab["pixel"][1, 3]) and torch.equal(out["pixel"][2], lab["pixel"][1, 1])
    assert torch.equal(out["whole"][5], lab["whole"][2, 3])
    assert out["index"].tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_labels(lab, 1)[0]["plane_cat"].shape == (3, lab["plane_cat"].shape[2])  # the centre frame
    still = collate(clips[0], [0, 1])
    assert sample_labels(still, 3) == (still, 3)
    with pytest.raises(ValueError, match="layer_steps"):
        sample_labels(lab, 0)


def test_tubes_need_frames_mode():
    clips, L, primary = tube_world(n=2)
    video = np.zeros((2, 3, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="time='frames'"):
        run_tubes(video, clips, L, primary, 0.05, time="mean")
