"""Tube dissection (per-frame masks): the engine against a naive float64 reference, planted units,
the tube format (writer, reader, dataset) and the builder from a world's truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

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


# ----------------------------------------------------------------------------- the format and the builder


def _write_tube_set(root, frames=6, seg=8):
    """A hand-built tube set: 3 items, label 1 a square moving one cell per frame, label 2 on even frames."""
    from mmit_interp.broden_format import BrodenWriter
    from mmit_interp.synth.clips import write_clip

    rng = np.random.default_rng(0)
    with BrodenWriter(root, ["thing"], image_size=(16, 16), seg_size=(seg, seg)) as w:
        w.add_label("mover", "thing"), w.add_label("blinker", "thing")
        for i in range(3):
            tube = []
            for t in range(frames):
                p = np.zeros((seg, seg), np.int32)
                p[i : i + 3, t % seg : t % seg + 2] = 1
                q = np.full((seg, seg), 2 * (t % 2 == 0), np.int32)
                tube.append({"thing": [p, q] if t % 2 == 0 else [p]})
            clip = rng.integers(0, 255, size=(frames, 16, 16, 3), dtype=np.uint8)
            rel = w.add_image(clip[frames // 2], pixel={"thing": tube[frames // 2]["thing"]}, name=f"item{i}", tube=tube)
            write_clip(root / "images" / rel.replace(".jpg", ".mp4"), clip, 8)
    return root


def test_tube_format_roundtrip(tmp_path):
    from broden_actions.broden import BrodenDataset, load_broden

    root = _write_tube_set(tmp_path / "tubes")
    b = load_broden(root)
    assert len(b) == 3 and sorted(b.tubes) == ["item0.jpg", "item1.jpg", "item2.jpg"]
    assert [t.frames for t in b.tubes.values()] == [6, 6, 6]
    assert Image.open(root / "images" / b.tubes["item0.jpg"].pixel["thing"][0]).size == (8, 48)  # a filmstrip
    m = b.load_masks(b.rows[1], frame=4)["thing"]
    assert m.shape == (2, 8, 8) and (m[0] == 1).sum() == 6 and m[0][1, 4] == 1 and (m[1] == 2).all()
    ds = BrodenDataset(root, frames=2)  # snippet frames sample_indices(6, 2) = 1, 4
    assert ds.tubes
    batch = ds.collate([ds[0], ds[2]])
    assert batch["pixel"].shape == (2, 2, 2, 8, 8) and batch["image"].shape == (2, 3, 2, 16, 16)
    for t, f in enumerate([1, 4]):
        expect = torch.from_numpy(b.load_masks(b.rows[2], frame=f)["thing"][0])
        assert torch.equal(batch["pixel"][1, t, 0], expect)
    assert (batch["pixel"][:, 0, 1] == 0).all() and (batch["pixel"][:, 1, 1] == 2).all()
    assert batch["plane_cat"][0].tolist() == [[0, 0], [0, 0]]  # a filmstrip plane exists in every frame
    plain = BrodenDataset(root, frames=2, tubes=False)
    assert plain.collate([plain[0]])["pixel"].shape == (1, 1, 8, 8)  # the still: centre frame 3
    assert not BrodenDataset(root, frames=None).tubes and not BrodenDataset(root, frames=3, use_snippets=False).tubes
    (root / "tubes.csv").unlink()  # what an old reader sees: a plain Broden set of the centre stills
    with pytest.raises(ValueError, match="tube labels need a tube set"):
        BrodenDataset(root, frames=3, tubes=True)
    assert BrodenDataset(root, frames=3)[0]["masks"]["thing"].shape == (1, 8, 8)


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows + ["nowhere.jpg,6,"], "tubes.csv:5: image 'nowhere.jpg' is not a row of index.csv"),
    (lambda rows: rows + [rows[1]], "tubes.csv:5: repeated tube 'item1.jpg' \\(first on line 3\\)"),
    (lambda rows: [rows[0].replace(",6,", ",0,")] + rows[1:], "tubes.csv:2: frames must be >= 1"),
    (lambda rows: [rows[0].replace(",6,", ",x,")] + rows[1:], "tubes.csv:2: frames must be an integer"),
])
def test_tube_table_errors_name_the_problem(tmp_path, edit, message):
    from broden_actions.broden import BrodenFormatError, load_broden

    root = _write_tube_set(tmp_path / "tubes")
    head, *rows = (root / "tubes.csv").read_text().splitlines()
    (root / "tubes.csv").write_text("\n".join([head, *edit(rows)]) + "\n")
    with pytest.raises(BrodenFormatError, match=message):
        load_broden(root)


def test_tube_frames_must_fit_the_filmstrips(tmp_path):
    from broden_actions.broden import BrodenDataset, BrodenFormatError, load_broden

    root = _write_tube_set(tmp_path / "tubes")
    b = load_broden(root)
    with pytest.raises(BrodenFormatError, match="has no tube frame 6 \\(6 frames\\)"):
        b.load_masks(b.rows[0], frame=6)
    text = (root / "tubes.csv").read_text()
    (root / "tubes.csv").write_text(text.replace("item0.jpg,6,", "item0.jpg,5,"))
    b = load_broden(root)
    with pytest.raises(BrodenFormatError, match="48 px high, not a multiple of its 5 frames"):
        b.load_masks(b.rows[0], frame=0)
    (root / "tubes.csv").write_text(text.replace("item0.jpg,6,", "item0.jpg,3,"))  # 16-px frames: resized to 8
    m = load_broden(root).load_masks(b.rows[0], frame=1)["thing"]
    strip = Image.open(root / "images" / "item0_tube_thing_1.png")
    expect = np.asarray(strip.crop((0, 16, 8, 32)).resize((8, 8), Image.NEAREST))[..., 0]
    assert m.shape == (2, 8, 8) and np.array_equal(m[0], expect) and m[0].any()
    with pytest.raises(BrodenFormatError, match="has no tube frame"):  # the 6-frame snippet outruns the tube
        BrodenDataset(root, frames=6)[0]


@pytest.fixture(scope="module")
def tube_world_dir(tmp_path_factory):
    """A tiny synthetic world and its action tube set (labels after the world's Broden set)."""
    from broden_actions.actions import build_action_tubes
    from mmit_interp import synth

    tmp = tmp_path_factory.mktemp("tubes")
    synth.generate_world(tmp / "world", synth.SynthConfig(seed=1, train_clips=3, val_clips=2, images=2, action_frames=5,
                                                          size=32, frames=12, fps=8, workers=1), progress=False)
    return tmp / "world", build_action_tubes(tmp / "world", tmp / "tubes", base=tmp / "world" / "broden")


def _truth_tubes(world, ds):
    """Per item: its clip's truth, the clip frame of snippet frame 0 (snippet_frames 8 -> centre - 4)."""
    import re

    from mmit_interp.synth.truth import load_truth

    truth = {c.path.split("/")[-1][:-4]: c for c in load_truth(world)}
    out = []
    for i in range(len(ds)):
        m = re.fullmatch(r"(.+)_f(\d+)\.png", ds.row(i).image.split("/")[-1])
        out.append((truth[m.group(1)], int(m.group(2)) - 4))
    return out


def test_action_tubes_follow_the_truth(tube_world_dir, tmp_path):
    """Still rows as build_action_regions writes them; tube frame j = the truth boxes of clip frame f - 4 + j."""
    from broden_actions.actions import build_action_regions
    from broden_actions.broden import BrodenDataset, load_broden
    from mmit_interp.boxes import box_mask

    world, tubes = tube_world_dir
    regions = build_action_regions(world / "action_regions" / "boxes.csv", world / "action_regions" / "frames",
                                   tmp_path / "regions", base=world / "broden")
    b, still = load_broden(tubes), load_broden(regions)
    assert [(b.image_path(r).resolve(), r.pixel) for r in b.rows] == \
        [(still.image_path(r).resolve(), r.pixel) for r in still.rows]
    ds = BrodenDataset(tubes, frames=8, use_snippets=True)
    numbers = {lab.name: n for n, lab in b.labels.items()}
    moved = 0
    for i, (clip, first) in enumerate(_truth_tubes(world, ds)):
        assert b.tubes[ds.row(i).image].frames == 8
        tube = []
        for j in range(8):
            masks = b.load_masks(ds.row(i), frame=j).get("action", np.zeros((0, 32, 32), np.int32))
            got = {int(p.max()): p > 0 for p in masks if p.any()}  # filmstrip planes may be empty in a frame
            want = {numbers[a]: box_mask([bx], (32, 32), (32, 32)) for a, bx in clip.boxes_at(first + j).items()}
            assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
            tube.append(got)
        moved += any(tube[0].keys() != t.keys() or any(not np.array_equal(t[k], tube[0][k]) for k in t) for t in tube)
    assert moved  # the tubes move: one still mask per clip would not do


def test_merge_carries_tubes(tube_world_dir, tmp_path):
    """Broden + action tubes: a tube set whose Broden items are stills (their masks in every frame)."""
    from broden_actions.actions import merge_concept_sets
    from broden_actions.broden import BrodenDataset, load_broden

    world, tubes = tube_world_dir
    merged = load_broden(merge_concept_sets([world / "broden", tubes], tmp_path / "merged"))
    source = load_broden(tubes)
    assert len(merged.tubes) == len(source.tubes) == len(source)
    ds = BrodenDataset(merged, frames=4)
    by_path = {merged.image_path(r).resolve(): i for i, r in enumerate(merged.rows)}
    for r in source.rows:
        i = by_path[source.image_path(r).resolve()]
        for t in range(8):
            a, b = merged.load_masks(merged.rows[i], frame=t), source.load_masks(r, frame=t)
            assert a.keys() == b.keys() and all(np.array_equal(a[c], b[c]) for c in a)
    still = next(i for i, r in enumerate(merged.rows) if r.image not in merged.tubes)
    item = ds[still]
    assert all(set(f) == set(item["masks"]) and all(torch.equal(f[c], item["masks"][c]) for c in f)
               for f in item["frame_masks"])
    merge_concept_sets([world / "broden"], tmp_path / "merged")  # a merge without tubes drops the stale table
    assert not load_broden(tmp_path / "merged").tubes


def test_planted_action_tube_unit_on_a_world(tube_world_dir):
    """Features = one action's truth boxes at the frames the dataset samples: IoU 1 for that action."""
    from broden_actions.broden import BrodenDataset, load_broden
    from mmit_interp.boxes import box_mask
    from mmit_interp.video import sample_indices

    world, tubes = tube_world_dir
    b = load_broden(tubes)
    ds = BrodenDataset(tubes, frames=4)
    action = max(b.labels.values(), key=lambda lab: lab.frequency).name
    number = {lab.name: n for n, lab in b.labels.items()}[action]
    want = sample_indices(8, 4)
    feats = torch.zeros((len(ds), 2, 4, 32, 32))
    for i, (clip, first) in enumerate(_truth_tubes(world, ds)):
        for t, j in enumerate(want):
            box = clip.boxes_at(first + int(j)).get(action)
            if box is not None:
                feats[i, 0, t] = torch.from_numpy(box_mask([box], (32, 32), (32, 32)).astype(np.float32))
    feats[:, 1] = torch.rand(feats[:, 1].shape, generator=torch.Generator().manual_seed(0))
    assert feats[:, 0].any()

    def batches():
        for s in range(0, len(ds), 2):
            idx = list(range(s, min(s + 2, len(ds))))
            yield {"L": feats[idx]}, ds.collate([ds[i] for i in idx])

    prim = torch.from_numpy(b.primary_categories()).long()
    res = dissect_stream(batches, len(ds), prim, b.label_names(), b.categories, quantile=0.2, time="frames")["L"]
    assert float(res.thresholds[0]) == 0.0
    for den in ("lite", "original"):
        assert res.iou(den)[0, number].item() == pytest.approx(1.0, abs=1e-9)
    assert res.unit_labels()[0].label == action


def test_run_dissection_on_a_tube_set(tube_world_dir, tmp_path):
    """A video model on the tube set: frames mode runs and caches under its own key; mean mode is refused."""
    from broden_actions.broden import load_broden
    from dissect.engine import InputTransform, run_dissection
    from mmit_interp.hooks import capture_activations
    from mmit_interp.models import build_model

    world, tubes = tube_world_dir
    torch.manual_seed(0)
    model = build_model("i3d_r18", 4, width=8)
    kw = dict(transform=InputTransform(32, 4), quantile=0.1, progress=False, cache_dir=tmp_path / "cache")
    res = run_dissection(model, ["layer3"], [tubes], time="frames", **kw)[str(tubes)]["layer3"]
    with capture_activations(model, ["layer3"]) as acts:
        model(torch.zeros(1, 3, 4, 32, 32))
    assert res.settings["tubes"] and int(res.tally.samples) == len(load_broden(tubes)) * acts["layer3"].shape[2]
    assert res.tally.inter.sum() > 0
    still = run_dissection(model, ["layer3"], [tubes], time="frames", use_snippets=False, **kw)[str(tubes)]["layer3"]
    assert not still.settings["tubes"] and len(list((tmp_path / "cache").glob("*.pt"))) == 2
    with pytest.raises(ValueError, match="time='frames'"):
        run_dissection(model, ["layer3"], [tubes], time="mean", **kw)



def test_rendered_tubes_are_pixel_exact(tube_world_dir, tmp_path):
    """render=True: each action's per-frame mask is the pixels its actor shows (their bounding box is the
    truth box, at mask size = frame size), with the actor's shape and colour under it."""
    from broden_actions.actions import build_action_tubes
    from broden_actions.broden import BrodenDataset, load_broden

    world, _ = tube_world_dir
    b = load_broden(build_action_tubes(world, tmp_path / "exact", base=world / "broden", render=True))
    assert b.categories == ["action", "color", "object", "texture"]
    numbers = {lab.name: n for n, lab in b.labels.items()}
    ds = BrodenDataset(b, frames=8)
    checked = 0
    for i, (clip, first) in enumerate(_truth_tubes(world, ds)):
        for j in range(8):
            masks = b.load_masks(ds.row(i), frame=j)
            for a in (a for a in clip.actors if a.visible):
                box = a.boxes[first + j]
                m = (masks["action"] == numbers[a.action]).any(0) if "action" in masks else np.zeros((32, 32), bool)
                assert m.any() == (box is not None)
                if box is not None:
                    ys, xs = np.nonzero(m)
                    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box)
                    assert (m <= (masks["object"] == numbers[a.shape]).any(0)).all()  # two actors may share a shape
                    assert ((masks["color"] == numbers[a.colour]).any(0) <= m).all()
                    checked += 1
    assert checked


@pytest.mark.slow
def test_cli_dissects_a_trained_model_on_its_worlds_tubes(tmp_path, capsys):
    """End to end: the cached tiny trained world -> action tubes -> ``mmit-dissect RUN --concept-set TUBES
    --time frames``; --time mean is refused with a message."""
    import csv

    from broden_actions.cli import main as concepts_main
    from dissect.cli import main
    from tests._trained import trained_world

    world, run = trained_world()
    tubes = tmp_path / "tubes"
    assert concepts_main(["tubes", str(world), str(tubes), "--base", str(world / "broden")]) == 0
    args = [str(run), "--layers", "layer4", "--concept-set", str(tubes), "--out", str(tmp_path / "out"), "--workers",
            "0", "--no-progress", "--no-gallery", "--threads", "1"]
    assert main(args + ["--time", "frames"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "tubes" / "layer4" / "units.csv")))
    assert rows and {r["category"] for r in rows} == {"action"} and max(float(r["iou"]) for r in rows) > 0
    assert main(args + ["--time", "mean"]) == 2
    assert "use time='frames'" in capsys.readouterr().err
