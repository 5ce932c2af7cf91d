"""Compositional labels against a naive reference: full boolean masks in NumPy, float64 IoU, the same
beam search written out with Python sets."""

from __future__ import annotations

import functools
import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from dissect.compose import (OPS, BeamSearch, FormulaCounts, FormulaLabel, PixelLabels, compose_stream, render,
                             truth_key)
from dissect.engine import dissect_stream
from test_dissect_engine import CATS, SEG, collate, make_world, naive_upsample
from test_dissect_tubes import collate_tubes, tube_world


def label_masks(images, num_labels) -> np.ndarray:
    """(L1, N, SEG, SEG) bool: a label's mask is the union of its planes; whole-image labels fill the image."""
    m = np.zeros((num_labels + 1, len(images), SEG, SEG), bool)
    for i, img in enumerate(images):
        for plane, _ in img["planes"]:
            for lab in np.unique(plane):
                if lab:
                    m[lab, i] |= plane == lab
        for lab, _ in img["whole"]:
            m[lab, i] = True
    return m


def unit_masks(feats, thresholds, rep=1) -> np.ndarray:
    """(U, M, SEG, SEG) bool: the naive float64 upsampling of every sample map, thresholded strictly."""
    m, u = feats.shape[:2]
    return np.array([[naive_upsample(feats[i, j].astype(np.float64), SEG, SEG) > thresholds[j] for i in range(m)]
                     for j in range(u)])


def evaluate(terms, masks) -> np.ndarray:
    """A formula's mask from the label masks (terms as (op name, label))."""
    f = np.ones(masks.shape[1:], bool)
    for op, lab in terms:
        f = f & masks[lab] if op == "and" else f | masks[lab] if op == "or" else f & ~masks[lab]
    return f


def iou(a: np.ndarray, x: np.ndarray) -> float:
    union = np.logical_or(a, x).sum(dtype=np.float64)
    return float(np.logical_and(a, x).sum(dtype=np.float64) / union) if union else 0.0


def naive_beam(a, masks, allowed, length, beam, ops=OPS):
    """The beam search on full masks: a pool of the beam plus every extension, ranked by IoU (ties: the
    beam first, then beam slot, label, op), one formula per truth table, positive IoU only."""
    singles = [(iou(a, masks[lab]), ((0, lab),)) for lab in range(len(masks)) if allowed[lab]]
    cur = pick([], sorted(singles, key=lambda t: -t[0]), beam)
    first = cur[0] if cur else (0.0, ())
    for _ in range(1, length):
        cands = []
        for _, f in cur:
            for lab in range(len(masks)):
                if allowed[lab] and lab not in {x for _, x in f}:
                    for o, name in enumerate(OPS):
                        if name in ops:
                            g = f + ((o, lab),)
                            cands.append((iou(a, evaluate([(OPS[p], x) for p, x in g], masks)), g))
        cur = pick(cur, sorted(cands, key=lambda t: -t[0]), beam)
    return first, cur


def pick(old, cands, beam):
    out, seen = [], set()
    for score, f in sorted(old + cands, key=lambda t: -t[0]):  # stable: old entries stay first on ties
        if score > 0 and truth_key(f) not in seen and len(out) < beam:
            seen.add(truth_key(f))
            out.append((score, f))
    return out


def world_batches(feats, images, batch=5, shard=None):
    ft = torch.from_numpy(feats)
    shard = list(range(len(images))) if shard is None else shard

    def batches():
        for s in range(0, len(shard), batch):
            idx = shard[s : s + batch]
            yield {"L": ft[idx]}, collate(images, idx)

    return batches


def dissect(feats, images, num_labels, primary, quantile, planes="lite", time="mean"):
    names = [f"l{i}" for i in range(num_labels + 1)]
    return dissect_stream(world_batches(feats, images), len(images), torch.tensor(primary), names, CATS,
                          quantile=quantile, planes=planes, time=time, settings={"time": time})["L"]


@pytest.mark.parametrize("planes", ["lite", "union"])
def test_beam_search_matches_naive(planes, monkeypatch):
    monkeypatch.setattr(BeamSearch, "advance", functools.partialmethod(BeamSearch.advance, units_per_chunk=3))
    feats, images, L, primary = make_world(seed=2, n=12)
    res = dissect(feats, images, L, primary, 0.1, planes)
    got = compose_stream(world_batches(feats, images), {"L": res}, length=3, beam=3)["L"]
    masks = label_masks(images, L)
    allowed = [lab > 0 and primary[lab] >= 0 and masks[lab].any() for lab in range(L + 1)]
    acts = unit_masks(feats, res.thresholds.numpy().astype(np.float64))
    for rec in got:
        (s_iou, s), final = naive_beam(acts[rec.unit], masks, allowed, 3, 3)
        best_iou, best = final[0] if final else (0.0, ())
        assert rec.terms == tuple((OPS[o], lab) for o, lab in best)
        assert rec.iou == best_iou == iou(acts[rec.unit], evaluate(rec.terms, masks))
        assert (rec.label_number, rec.label_iou) == (s[0][1] if s else 0, s_iou)
        assert rec.formula == render(best, res.label_names) and rec.gain >= 0
    assert any(rec.length > 1 and rec.gain > 0 for rec in got)


def planted_world(seed=0, n=10):
    """Random label blobs at mask resolution, and units planted as exact formulas of them (values 1
    inside, 0 outside; quantile 0.5 puts T_u at 0, so the unit's mask is the formula's)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        planes = []
        for labs in ([1, 2], [3, 4], [5, 6]):
            p = np.zeros((SEG, SEG), np.int32)
            for lab in labs:
                y, x = rng.integers(0, SEG - 6, size=2)
                p[y : y + rng.integers(4, 10), x : x + rng.integers(4, 10)] = lab
            planes.append((p, 0))
        whole = [(7, 2)] if rng.random() < 0.3 else []
        images.append({"planes": planes, "whole": whole})
    primary = np.array([-1, 0, 0, 1, 1, 0, 1, 2])
    masks = label_masks(images, 7)
    formulas = [(("and", 1), ("and", 3)), (("and", 2), ("or", 4)), (("and", 3), ("and not", 5)),
                (("and", 1), ("and", 4), ("and not", 6))]
    feats = np.stack([evaluate(f, masks) for f in formulas], 1).astype(np.float32)
    return feats, images, primary, masks, formulas


@pytest.mark.parametrize("planes", ["lite", "union"])
def test_planted_formulas_are_recovered_exactly(planes):
    feats, images, primary, masks, formulas = planted_world()
    assert all(0 < feats[:, j].mean() < 0.5 for j in range(len(formulas)))
    res = dissect(feats, images, 7, primary, 0.5, planes)
    assert (res.thresholds == 0).all()
    got = compose_stream(world_batches(feats, images, batch=3), {"L": res}, length=3, beam=5)["L"]
    for rec, planted in zip(got, formulas):
        assert truth_key(tuple((OPS.index(o), lab) for o, lab in rec.terms)) == \
            truth_key(tuple((OPS.index(o), lab) for o, lab in planted)), (rec.formula, planted)
        assert rec.iou == 1.0 and rec.label_iou < 1.0
        best = max(iou(feats[:, rec.unit] > 0, masks[lab]) for lab in range(1, 8))
        assert rec.label_iou == best


def test_silent_units_get_no_formula():
    """A unit that never fires has no positive IoU: an empty formula, no further pass."""
    feats, images, L, primary = make_world(seed=2, n=6)
    feats[:, 1:] = 0.0  # only unit 0 varies; the others are constant, so nothing exceeds T_u
    res = dissect(feats, images, L, primary, 0.1)
    got = compose_stream(world_batches(feats, images), {"L": res}, length=3, beam=2)["L"]
    assert got[0].length >= 1 and all(r.terms == () and r.iou == 0.0 and r.label == "" for r in got[1:])
    feats[:, 0] = 0.0
    res = dissect(feats, images, L, primary, 0.1)
    calls = []
    batches = world_batches(feats, images)
    assert all(r.formula == "" for r in compose_stream(lambda: calls.append(1) or batches(), {"L": res})["L"])
    assert len(calls) == 1  # step 0 found nothing to extend


def test_formula_strings():
    names = ["-", "spinning", "dotted", "red"]
    assert render(((0, 1), (0, 2), (2, 3)), names) == "(spinning AND dotted) AND NOT red"
    assert render(((0, 1), (1, 3)), names) == "spinning OR red"
    assert truth_key(((0, 1), (0, 2))) == truth_key(((0, 2), (0, 1)))
    assert truth_key(((0, 1), (1, 2))) != truth_key(((0, 1), (0, 2)))


def test_frames_mode_counts_every_step():
    feats, images, L, primary = make_world(seed=4, n=6)
    rng = np.random.default_rng(1)
    video = (rng.integers(-40, 40, size=(6, feats.shape[1], 3, 4, 4)) / 8.0).astype(np.float32)
    res = dissect(video, images, L, primary, 0.1, time="frames")
    got = compose_stream(world_batches(video, images), {"L": res}, length=2, beam=2)["L"]
    flat = video.transpose(0, 2, 1, 3, 4).reshape(18, feats.shape[1], 4, 4)
    acts = unit_masks(flat, res.thresholds.numpy().astype(np.float64))
    masks = label_masks([images[i // 3] for i in range(18)], L)
    for rec in got:
        if rec.terms:
            assert rec.iou == iou(acts[rec.unit], evaluate(rec.terms, masks))


def test_tube_set_scores_each_step_against_its_frame():
    """Tube labels: step t' of a clip is scored against frame floor((t' + 0.5) T / T') (the engine's
    alignment); the search equals the naive one on those per-frame masks."""
    frames, steps = 4, 2
    clips, L, primary = tube_world(seed=3, n=6, frames=frames)
    rng = np.random.default_rng(4)
    video = torch.from_numpy((rng.integers(-40, 40, size=(len(clips), 5, steps, 4, 4)) / 8.0).astype(np.float32))

    def batches():
        for s in range(0, len(clips), 4):
            idx = list(range(s, min(s + 4, len(clips))))
            yield {"L": video[idx]}, collate_tubes(clips, idx)

    names = [f"l{i}" for i in range(L + 1)]
    res = dissect_stream(batches, len(clips), torch.tensor(primary), names, CATS, quantile=0.1, time="frames",
                         settings={"time": "frames"})["L"]
    got = compose_stream(batches, {"L": res}, length=2, beam=3)["L"]
    images = [clips[n][(2 * t + 1) * frames // (2 * steps)] for n in range(len(clips)) for t in range(steps)]
    masks = label_masks(images, L)
    flat = video.numpy().transpose(0, 2, 1, 3, 4).reshape(-1, 5, 4, 4)
    acts = unit_masks(flat, res.thresholds.numpy().astype(np.float64))
    allowed = [lab > 0 and primary[lab] >= 0 and masks[lab].any() for lab in range(L + 1)]
    for rec in got:
        _, final = naive_beam(acts[rec.unit], masks, allowed, 2, 3)
        assert rec.terms == tuple((OPS[o], lab) for o, lab in (final[0][1] if final else ()))
        assert rec.iou == (final[0][0] if final else 0.0)
    assert any(rec.length == 2 for rec in got)
    with pytest.raises(ValueError, match="time='frames'"):
        compose_stream(batches, {"L": res}, time="mean")


def test_layers_share_the_passes():
    """Two layers in one search take ``length`` passes in all and get what each gets alone."""
    feats, images, L, primary = make_world(seed=2, n=12)
    ft, other = torch.from_numpy(feats), torch.from_numpy(feats[:, ::-1] * 0.5 + 1)
    calls = []

    def batches():
        calls.append(1)
        for s in range(0, len(images), 5):
            idx = list(range(s, min(s + 5, len(images))))
            yield {"L": ft[idx], "M": other[idx]}, collate(images, idx)

    res = dissect_stream(batches, len(images), torch.tensor(primary), [f"l{i}" for i in range(L + 1)], CATS,
                         quantile=0.1)
    calls.clear()
    both = compose_stream(batches, res, length=3, beam=3)
    assert len(calls) == 3
    for name in ("L", "M"):
        assert both[name] == compose_stream(batches, {name: res[name]}, length=3, beam=3)[name]


def test_counts_merge_equals_one_pass():
    feats, images, L, primary = make_world(seed=5, n=9)
    res = dissect(feats, images, L, primary, 0.1)
    formulas = [((0, 1),), ((0, 3), (2, 4)), ((0, 8), (1, 2))]
    beams = torch.tensor([[0, 1], [2, -1]] * 3 + [[1, 2]])

    def count(idx):
        from dissect.compose import _active_pixels
        from dissect.engine import BilinearBlocks

        c = FormulaCounts(formulas, beams, L + 1)
        b = collate(images, idx)
        pl = PixelLabels(b)
        f = c.evaluate(pl)
        c.add_labels(pl, f)
        for row, unit, pixel in _active_pixels(torch.from_numpy(feats[idx]), res.thresholds, 1,
                                               BilinearBlocks(4, 4, SEG, SEG)):
            c.add_units(pl, f, row, unit, pixel)
        return c

    one, a, b = count(list(range(9))), count([0, 1, 2, 3]), count([4, 5, 6, 7, 8])
    a.merge(FormulaCounts.from_state_dict(b.state_dict()))
    for k, v in one.state_dict().items():
        assert v == a.state_dict()[k] if k == "formulas" else torch.equal(v, a.state_dict()[k]), k
    masks = label_masks(images, L)
    for d, f in enumerate(formulas):
        fm = evaluate([(OPS[o], x) for o, x in f], masks)
        assert one.f[d] == fm.sum() and all(one.fl[d, lab] == (fm & masks[lab]).sum() for lab in range(L + 1))
    with pytest.raises(ValueError, match="different beam steps"):
        a.merge(FormulaCounts(formulas[:2], beams.clamp(max=1), L + 1))


def test_candidate_limit_and_bad_arguments():
    feats, images, L, primary = make_world(seed=2, n=12)
    res = dissect(feats, images, L, primary, 0.1)
    batches = world_batches(feats, images)
    limited = compose_stream(batches, {"L": res}, length=2, beam=2, candidates=2)["L"]
    masks = label_masks(images, L)
    acts = unit_masks(feats, res.thresholds.numpy().astype(np.float64))
    for rec in limited:
        singles = sorted(((iou(acts[rec.unit], masks[lab]), -lab) for lab in range(1, L + 1)
                          if primary[lab] >= 0 and masks[lab].any()), reverse=True)
        assert {lab for _, lab in rec.terms} <= {-lab for _, lab in singles[:2]}
    for kwargs in ({"length": 0}, {"beam": 0}, {"ops": ("xor",)}, {"candidates": 0}):
        with pytest.raises(ValueError):
            compose_stream(batches, {"L": res}, **kwargs)
    only_and = compose_stream(batches, {"L": res}, length=2, beam=2, ops=("and",))["L"]
    assert all(op == "and" for rec in only_and for op, _ in rec.terms)


def test_exhaustive_pairs_bound_the_beam():
    """Length 2 with a beam wide enough for every label is an exhaustive search over pairs."""
    feats, images, L, primary = make_world(seed=6, n=8)
    res = dissect(feats, images, L, primary, 0.1)
    got = compose_stream(world_batches(feats, images), {"L": res}, length=2, beam=L)["L"]
    masks = label_masks(images, L)
    acts = unit_masks(feats, res.thresholds.numpy().astype(np.float64))
    labs = [lab for lab in range(1, L + 1) if primary[lab] >= 0 and masks[lab].any()]
    for rec in got:
        best = max([iou(acts[rec.unit], masks[x]) for x in labs]
                   + [iou(acts[rec.unit], evaluate([("and", x), (op, y)], masks))
                      for x, y in itertools.permutations(labs, 2) for op in OPS])
        assert rec.iou == best


class Mix(nn.Module):
    """features: the 2x2-pooled mean of the red and green channels, high on both the red square and
    the green disc of ``make_concepts``: its mask is "square OR disc"."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.features = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([0.5, 0.5, 0.0]).view(1, 3, 1, 1))

    def forward(self, x):
        return self.features(self.pool(x)).mean((2, 3))


@pytest.fixture(scope="module")
def concepts(tmp_path_factory):
    from test_dissect_models import make_concepts

    return make_concepts(tmp_path_factory.mktemp("concepts"))


def test_run_formulas_end_to_end(concepts, tmp_path):
    """A model unit on two objects gets "square OR disc" (IoU 1, single label ~0.5); files, store, cache."""
    from dissect import report
    from dissect.compose import run_formulas
    from dissect.engine import run_dissection
    from mmit_interp.store import ResultsStore
    from test_dissect_models import Q
    from test_store import _meta

    res = run_dissection(Mix(), ["features"], [concepts], quantile=2 * Q, progress=False)
    got = run_formulas(Mix(), res, length=2, beam=3, cache_dir=tmp_path / "cache", progress=False)
    rec = got[str(concepts)]["features"][0]
    assert rec.formula in ("square OR disc", "disc OR square") and rec.iou == 1.0
    assert rec.label in ("square", "disc") and 0.4 < rec.label_iou < 0.6
    labels = report.label_units(res)[str(concepts)]["features"]
    summary = report.write_formulas("features", [rec], labels, tmp_path / "formulas")
    assert summary["compositional"] == 1 and summary["mean_gain"] == rec.gain
    row = json.loads((tmp_path / "formulas.json").read_text())[0]
    assert row["formula"] == rec.formula and row["dissection_label"] == labels[0].label
    with ResultsStore(tmp_path) as store:
        store.register_run(_meta())
        assert store.write_unit_formulas("features", "concepts", [rec.as_dict()]) == 1
        back = store.unit_formulas("features")
    assert back[0]["formula"] == rec.formula and back[0]["terms"] == [list(t) for t in rec.terms]
    assert FormulaLabel.from_dict(rec.as_dict()) == rec

    class Boom(Mix):
        def forward(self, x):
            raise AssertionError("should have come from the cache")

    assert run_formulas(Boom(), res, length=2, beam=3, cache_dir=tmp_path / "cache", progress=False) == got
    with pytest.raises(AssertionError, match="cache"):  # another beam is another key
        run_formulas(Boom(), res, length=2, beam=4, cache_dir=tmp_path / "cache", progress=False)


def test_cli_formulas(concepts, tmp_path, capsys):
    from dissect.cli import main

    assert main(["resnet18", "--torchvision", "--size", "32", "--layers", "layer1", "--quantile", "0.05",
                 "--concept-set", str(concepts), "--out", str(tmp_path), "--workers", "0", "--no-progress",
                 "--no-gallery", "--formulas", "--formula-length", "2", "--beam", "2"]) == 0
    rows = json.loads((tmp_path / concepts.name / "layer1" / "formulas.json").read_text())
    assert len(rows) == 64 and all(r["iou"] >= r["label_iou"] for r in rows)
    assert '"formulas"' in capsys.readouterr().out


def _shard_worker(rank, init, out):
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        feats, images, L, primary = make_world(seed=2, n=12)
        shard = list(range(rank, len(images), 2))
        batches = world_batches(feats, images, batch=4, shard=shard)
        res = dissect_stream(batches, len(images), torch.tensor(primary), [f"l{i}" for i in range(L + 1)], CATS,
                             quantile=0.1)
        got = compose_stream(batches, res, length=3, beam=3)["L"]
        (out / f"rank{rank}.json").write_text(json.dumps([r.as_dict() for r in got]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters importing torch: ~6 s quiet, ~18 s on a busy VM
def test_two_processes_equal_one(tmp_path):
    """Under torch.distributed each rank counts its shard; the merged counts give every rank the search
    of one process over all items."""
    import torch.multiprocessing as mp

    mp.spawn(_shard_worker, args=(f"file://{tmp_path / 'init'}", tmp_path), nprocs=2)
    feats, images, L, primary = make_world(seed=2, n=12)
    one = compose_stream(world_batches(feats, images), {"L": dissect(feats, images, L, primary, 0.1)}, length=3,
                         beam=3)["L"]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [r.as_dict() for r in one]


def test_formulas_read_the_images_as_the_dissection_did():
    """`run_formulas` without a transform rebuilds the dissection's own from its settings (size, frames, mean/std)."""
    from dissect.engine import InputTransform

    for tf in (InputTransform(), InputTransform(64, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), InputTransform((48, 64))):
        assert InputTransform.from_settings(json.loads(json.dumps(tf.settings()))) == tf
