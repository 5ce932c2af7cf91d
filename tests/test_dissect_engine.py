"""The streaming engine against a deliberately naive reference (loops, float64, np.sort quantile)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dissect.engine import dissect_stream, to_samples
from dissect.stats import LabelBatch, Tally, TopKImages, TopKQuantile

CATS = ["color", "part", "scene"]
SEG = 16


def naive_upsample(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Bilinear, align_corners=False, written out per output pixel in float64."""
    ih, iw = x.shape

    def src(d, i, o):
        s = max((d + 0.5) * i / o - 0.5, 0.0)
        i0 = min(int(math.floor(s)), i - 1)
        return i0, min(i0 + 1, i - 1), s - i0

    out = np.zeros((oh, ow))
    for y in range(oh):
        y0, y1, ly = src(y, ih, oh)
        for xx in range(ow):
            x0, x1, lx = src(xx, iw, ow)
            top = (1 - lx) * x[y0, x0] + lx * x[y0, x1]
            bot = (1 - lx) * x[y1, x0] + lx * x[y1, x1]
            out[y, xx] = (1 - ly) * top + ly * bot
    return out


def naive_dissect(feats, images, num_labels, primary, quantile, planes="lite"):
    """Reference: every image, every unit, every label in Python loops, float64 counts.

    A label's count per pixel is the number of planes carrying it (``planes="lite"``, whole-image
    labels adding one each) or 1 where any does (``"union"``). Lite: a map's area counts for c when
    it overlaps a label l with c(l) = c; original: when the image holds such a label."""
    n, u = feats.shape[:2]
    C = len(CATS)
    thr = np.zeros(u)
    for j in range(u):
        vals = np.sort(feats[:, j].astype(np.float64).ravel())
        k = int(math.floor(quantile * len(vals) + 1e-9))
        thr[j] = vals[len(vals) - 1 - k]
    inter = np.zeros((u, num_labels + 1))
    area = np.zeros(num_labels + 1)
    lite = np.zeros((u, C))
    orig = np.zeros((u, C))
    for i in range(n):
        img = images[i]
        counts = {}  # label -> planes carrying it, per pixel
        for plane, _ in img["planes"]:
            for lab in np.unique(plane):
                if lab:
                    counts[lab] = counts.get(lab, 0) + (plane == lab)
        for lab, _ in img["whole"]:
            counts[lab] = counts.get(lab, 0) + np.ones((SEG, SEG), int)
        if planes == "union":
            counts = {lab: (c > 0).astype(int) for lab, c in counts.items()}
        present = {primary[lab] for lab in counts}
        for lab, c in counts.items():
            area[lab] += c.sum()
        for j in range(u):
            act = naive_upsample(feats[i, j].astype(np.float64), SEG, SEG) > thr[j]
            a = act.sum()
            for lab, c in counts.items():
                inter[j, lab] += (act * c).sum()
            for cat in range(C):
                if cat in present:
                    orig[j, cat] += a
                if any(primary[lab] == cat and (act & (c > 0)).any() for lab, c in counts.items()):
                    lite[j, cat] += a
    res = {}
    for name, den, eps in (("lite", lite, 1e-10), ("original", orig, 1e-20)):
        iou = np.zeros((u, num_labels + 1))
        for j in range(u):
            for lab in range(1, num_labels + 1):
                if primary[lab] >= 0:
                    iou[j, lab] = inter[j, lab] / (den[j, primary[lab]] + area[lab] - inter[j, lab] + eps)
        res[name] = iou
    return thr, inter, area, lite, orig, res


def make_world(seed=0, n=13, u=7, h=4, w=4, num_labels=9):
    """Random dyadic features (exact in float32 and float64) and random multi-plane masks."""
    rng = np.random.default_rng(seed)
    feats = (rng.integers(-40, 40, size=(n, u, h, w)) / 8.0).astype(np.float32)
    feats[:, 0] += np.linspace(0, 3, h * w).reshape(h, w).astype(np.float32)  # a smoother unit
    # labels 1-4 colour, 3-7 part (3 and 4 in both), 8-9 scene (whole-image)
    images = []
    for i in range(n):
        planes = []
        p = np.zeros((SEG, SEG), np.int32)
        for lab in rng.choice([1, 2, 3, 4], size=2, replace=False):
            y, x = rng.integers(0, SEG - 4, size=2)
            p[y : y + rng.integers(2, 9), x : x + rng.integers(2, 9)] = lab
        planes.append((p, 0))
        for _ in range(rng.integers(0, 3)):
            q = np.zeros((SEG, SEG), np.int32)
            y, x = rng.integers(0, SEG - 4, size=2)
            q[y : y + rng.integers(2, 12), x : x + rng.integers(2, 12)] = rng.choice([3, 4, 5, 6, 7])
            planes.append((q, 1))
        whole = [(int(rng.choice([8, 9])), 2)] if rng.random() < 0.6 else []
        images.append({"planes": planes, "whole": whole})
    primary = np.array([-1, 0, 0, 1, 0, 1, 1, 1, 2, 2])
    return feats, images, num_labels, primary


def collate(images, idx):
    pmax = max(1, max(len(images[i]["planes"]) for i in idx))
    wmax = max(1, max(len(images[i]["whole"]) for i in idx))
    pixel = torch.zeros((len(idx), pmax, SEG, SEG), dtype=torch.int32)
    plane_cat = torch.full((len(idx), pmax), -1)
    whole = torch.zeros((len(idx), wmax), dtype=torch.long)
    whole_cat = torch.full((len(idx), wmax), -1)
    for b, i in enumerate(idx):
        for k, (p, c) in enumerate(images[i]["planes"]):
            pixel[b, k], plane_cat[b, k] = torch.from_numpy(p), c
        for k, (lab, c) in enumerate(images[i]["whole"]):
            whole[b, k], whole_cat[b, k] = lab, c
    return {"pixel": pixel, "plane_cat": plane_cat, "whole": whole, "whole_cat": whole_cat,
            "index": torch.tensor(idx)}


def run_engine(feats, images, num_labels, primary, quantile, batch=5, time="mean", shard=None, planes="lite"):
    """Our engine over all images, or over the image indices ``shard`` (with the global count kept)."""
    n = len(images)
    ft = torch.from_numpy(feats)
    shard = list(range(n)) if shard is None else shard

    def batches():
        for s in range(0, len(shard), batch):
            idx = shard[s : s + batch]
            yield {"L": ft[idx]}, collate(images, idx)

    names = [f"l{i}" for i in range(num_labels + 1)]
    return dissect_stream(batches, n, torch.tensor(primary), names, CATS, quantile=quantile, time=time,
                          planes=planes)["L"]


@pytest.mark.parametrize("planes", ["lite", "union"])
@pytest.mark.parametrize("quantile", [0.005, 0.05, 0.2])
def test_engine_matches_naive(quantile, planes):
    feats, images, L, primary = make_world()
    res = run_engine(feats, images, L, primary, quantile, planes=planes)
    thr, inter, area, lite, orig, iou = naive_dissect(feats, images, L, primary, quantile, planes)
    assert np.array_equal(res.thresholds.numpy().astype(np.float64), thr)
    assert np.array_equal(res.tally.inter.numpy(), inter)
    assert np.array_equal(res.tally.label_area.numpy(), area)
    assert np.array_equal(res.tally.act_lite.numpy(), lite)
    assert np.array_equal(res.tally.act_orig.numpy(), orig)
    for den in ("lite", "original"):
        assert np.array_equal(res.iou(den).numpy(), iou[den])
        for rec in res.unit_labels(den):
            assert rec.label_number == lite_best_label(iou[den][rec.unit], primary, len(CATS))
            assert rec.iou == iou[den][rec.unit].max()


def lite_best_label(iou_row, primary, num_categories):
    """NetDissect-Lite's unit label: each category's first best label, then the last category with
    the top score (its reversed stable ``argsort``)."""
    best, top = None, -1.0
    for c in range(num_categories):
        cols = [lab for lab in range(len(iou_row)) if lab and primary[lab] == c]
        if cols:
            j = cols[int(np.argmax(iou_row[cols]))]
            if iou_row[j] >= top:
                best, top = j, iou_row[j]
    return best


def test_active_share_matches_quantile():
    feats, images, L, primary = make_world(seed=3, n=20)
    ft = torch.from_numpy(feats)
    res = run_engine(feats, images, L, primary, 0.05)
    raw = ft.permute(1, 0, 2, 3).reshape(ft.shape[1], -1)
    above = (raw > res.thresholds[:, None]).sum(1)
    assert (above <= math.floor(0.05 * raw.shape[1])).all()


def test_frames_mode_equals_flattened_images():
    feats, images, L, primary = make_world(seed=1, n=6)
    t = 3
    rng = np.random.default_rng(5)
    video = (rng.integers(-40, 40, size=(6, feats.shape[1], t, 4, 4)) / 8.0).astype(np.float32)
    ours = run_engine(video, images, L, primary, 0.05, time="frames")
    flat = video.transpose(0, 2, 1, 3, 4).reshape(6 * t, feats.shape[1], 4, 4)
    rep_images = [images[i // t] for i in range(6 * t)]
    thr, inter, area, lite, orig, _ = naive_dissect(flat, rep_images, L, primary, 0.05)
    assert np.array_equal(ours.thresholds.numpy().astype(np.float64), thr)
    assert np.array_equal(ours.tally.inter.numpy(), inter)
    assert np.array_equal(ours.tally.label_area.numpy(), area)
    assert np.array_equal(ours.tally.act_lite.numpy(), lite)
    pooled = run_engine(video, images, L, primary, 0.05, time="mean")
    thr_m = naive_dissect(video.mean(2), images, L, primary, 0.05)[0]
    np.testing.assert_allclose(pooled.thresholds.numpy(), thr_m, rtol=1e-6)


def _empty_rank_worker(rank, init, out):
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        feats, images, L, primary = make_world()
        res = run_engine(feats, images, L, primary, 0.05, shard=list(range(len(images))) if rank == 0 else [])
        torch.save({"thr": res.thresholds, "tally": res.tally.state_dict(), "top": res.top_images.images},
                   out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_rank_without_images_joins_the_merge(tmp_path):
    """Under torch.distributed a rank that gets no image still takes part (it used to hang the others)."""
    import torch.multiprocessing as mp

    mp.spawn(_empty_rank_worker, args=(f"file://{tmp_path / 'init'}", tmp_path), nprocs=2)
    feats, images, L, primary = make_world()
    one = run_engine(feats, images, L, primary, 0.05)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert torch.equal(got["thr"], one.thresholds) and torch.equal(got["top"], one.top_images.images)
        for k, v in one.tally.state_dict().items():
            assert torch.equal(got["tally"][k], v), k


def test_batch_without_planes_equals_one_empty_plane():
    """Whole-image labels only: a batch with no label plane tallies like one with an empty plane."""
    feats, images, L, primary = make_world(n=6)
    images = [{"planes": [], "whole": im["whole"]} for im in images]
    ft = torch.from_numpy(feats)
    one = collate(images, list(range(6)))  # pads one empty plane
    none = dict(one, pixel=one["pixel"][:, :0], plane_cat=one["plane_cat"][:, :0])
    res = [dissect_stream(lambda b=b: [({"L": ft}, b)], 6, torch.tensor(primary), [str(i) for i in range(L + 1)], CATS,
                          quantile=0.05)["L"] for b in (one, none)]
    for k, v in res[0].tally.state_dict().items():
        assert torch.equal(res[1].tally.state_dict()[k], v), k
    assert res[0].tally.inter.sum() > 0


def test_to_samples_layouts():
    x = torch.arange(2 * 3 * 4 * 5 * 5, dtype=torch.float32).view(2, 3, 4, 5, 5)
    s, rep = to_samples(x, "frames")
    assert rep == 4 and s.shape == (8, 3, 5, 5) and torch.equal(s[1 * 4 + 2], x[1, :, 2])
    assert to_samples(x, "mean")[0].shape == (2, 3, 5, 5)
    with pytest.raises(ValueError):
        to_samples(x[0, 0], "mean")


def test_stats_merge_and_state_roundtrip():
    rng = torch.Generator().manual_seed(0)
    x = torch.randn(4, 300, generator=rng)
    whole, a, b = TopKQuantile(4, 7), TopKQuantile(4, 7), TopKQuantile(4, 7)
    whole.add(x)
    a.add(x[:, :120])
    b.add(x[:, 120:])
    a.merge(TopKQuantile.from_state_dict(b.state_dict()))
    assert torch.equal(a.threshold(), whole.threshold()) and a.count == 300
    assert torch.equal(whole.threshold(), torch.sort(x, 1, descending=True).values[:, 6])
    s = torch.tensor([[1.0, 2.0], [3.0, 2.0], [3.0, 0.0]])
    t1, t2 = TopKImages(2, 2), TopKImages(2, 2)
    t1.add(s[:2], torch.tensor([0, 1]))
    t2.add(s[2:], torch.tensor([2]))
    t1.merge(t2)
    assert t1.images.tolist() == [[1, 2], [0, 1]]
    feats, images, L, primary = make_world(n=4)
    lb = LabelBatch(collate(images, [0, 1, 2, 3]))
    t = Tally(7, torch.tensor(primary), len(CATS))
    t.add_labels(lb)
    t2 = Tally.from_state_dict(t.state_dict())
    t2.merge(t)
    assert torch.equal(t2.label_area, 2 * t.label_area)
