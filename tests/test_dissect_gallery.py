"""Clip galleries: per-frame regions against a naive reference, the strip's pixels, the WebP, the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dissect import report
from dissect.engine import InputTransform, run_dissection
from dissect.gallery import (CONCEPT_COLOUR, DIM, GAP, REGION_COLOUR, SOURCE_NAME, ClipSource, compose_strip,
                             bilinear, frame_steps, outline, render_clip_gallery, unit_regions)
from test_dissect_engine import naive_upsample
from test_dissect_models import SEG, SIDE, Q, Toy3d, make_concepts
from tinydata import write_clip


def webp_frames(path) -> np.ndarray:
    """Every frame of an animated WebP as (T, H, W, 3) uint8."""
    im = Image.open(path)
    out = []
    for t in range(im.n_frames):
        im.seek(t)
        out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)


def test_frame_steps_cover_the_input_frames():
    assert frame_steps(8, 2).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert frame_steps(4, 4).tolist() == [0, 1, 2, 3]
    assert frame_steps(5, 1).tolist() == [0] * 5


def test_regions_follow_the_step_covering_each_frame():
    """Two items, two layer steps, four frames: frames 0-1 show step 0's region, 2-3 step 1's, each the
    naive float64 bilinear upsampling thresholded strictly."""
    maps = torch.zeros((2, 2, 3, 3), dtype=torch.float64)
    maps[0, 0, 0, 0], maps[0, 1, 2, 2] = 10.0, 10.0  # item 0: top-left, then bottom-right
    maps[1, 0, 1, 1], maps[1, 1] = 4.0, 9.0  # item 1: the centre barely, then everywhere
    thr = 3.0
    regions = unit_regions(maps, thr, frames=4, size=(12, 12))
    assert regions.shape == (2, 4, 12, 12)
    for k in range(2):
        for t in range(4):
            want = naive_upsample(maps[k, t // 2].numpy(), 12, 12) > thr
            assert np.array_equal(regions[k, t], want), (k, t)
    assert regions[0, 0, 0, 0] and not regions[0, 0, 11, 11] and regions[0, 3, 11, 11] and not regions[0, 3, 0, 0]
    assert regions[1, 3].all() and 0 < regions[1, 0].sum() < 144


def test_a_map_equal_to_the_threshold_is_never_active():
    """Dissection thresholds strictly and its upsampling keeps a constant stretch exact; so must the
    gallery (a 1x1 or flat map at exactly T_u, common at a layer's top-k ties, draws no region)."""
    values = torch.randn(48, generator=torch.Generator().manual_seed(0))  # ~1 in 4 rounds up under w0*a + w1*a
    for h, w in ((1, 1), (2, 2), (7, 5)):
        for v in values.tolist():
            maps = torch.full((1, 1, h, w), v, dtype=torch.float32)
            assert not unit_regions(maps, float(maps[0, 0, 0, 0]), frames=2, size=(112, 112)).any(), (h, w, v)
    x = torch.rand(3, 5, 4, dtype=torch.float64)
    ref = torch.nn.functional.interpolate(x[:, None], size=(17, 9), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(bilinear(x, (17, 9)), ref, rtol=0, atol=1e-12)  # PyTorch's sample positions


def test_strip_pixels_region_bright_outline_coloured_rest_dimmed():
    clips = np.full((2, 3, 6, 6, 3), 200, np.uint8)
    regions = np.zeros((2, 3, 6, 6), bool)
    regions[0, :, 1:4, 1:4] = True  # a 3x3 square: its centre pixel is inside, the 8 around it outline
    regions[1, 2] = True  # the whole frame: the outline runs along the border
    strip = compose_strip(clips, regions)
    assert strip.shape == (3, 6, 2 * 6 + GAP, 3) and strip.dtype == np.uint8
    tile0, tile1 = strip[:, :, :6], strip[:, :, 6 + GAP:]
    assert (strip[:, :, 6 : 6 + GAP] == 255).all()
    assert tuple(tile0[0, 2, 2]) == (200, 200, 200)  # inside, not on the edge: untouched
    for y, x in [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2), (3, 3)]:
        assert tuple(tile0[1, y, x]) == REGION_COLOUR, (y, x)
    assert tuple(tile0[2, 0, 0]) == (int(200 * DIM),) * 3 and tuple(tile0[2, 5, 5]) == (int(200 * DIM),) * 3
    assert (tile1[:2] == int(200 * DIM)).all()  # frames without a region: all dimmed
    assert np.array_equal(outline(regions[1, 2]), ~np.pad(np.ones((4, 4), bool), 1))
    assert tuple(tile1[2, 0, 3]) == REGION_COLOUR and tuple(tile1[2, 3, 3]) == (200, 200, 200)
    with pytest.raises(ValueError, match="disagree"):
        compose_strip(clips, regions[:, :2])
    ringed = compose_strip(clips, regions, concept=np.roll(regions, 1, axis=2))  # a concept mask, a row lower
    assert tuple(ringed[0, 4, 1]) == CONCEPT_COLOUR and tuple(ringed[0, 1, 1]) == REGION_COLOUR


SHIFT = 2  # seg px the squares move right between a snippet's two frames


@pytest.fixture(scope="module")
def dissected(tmp_path_factory):
    """The red/green squares concept set, each image with a 2-frame snippet in which the squares move right
    by SHIFT seg px, dissected on the video toy (unit 0 = red) frame by frame."""
    concepts = make_concepts(tmp_path_factory.mktemp("concepts"))
    for img in (concepts / "images").rglob("*.jpg"):
        still = np.asarray(Image.open(img).convert("RGB"))
        write_clip(img.with_suffix(".mp4"), np.stack([still, np.roll(still, 2 * SHIFT, axis=1)]))
    res = run_dissection(Toy3d(), ["features"], [concepts], quantile=Q, transform=InputTransform(frames=2),
                         time="frames", top_k=3, checkpoint_hash="toy", progress=False)
    return concepts, res


def test_rendered_clips_outline_the_planted_square_and_are_cached(dissected, tmp_path):
    concepts, res = dissected
    result = res[str(concepts)]["features"]
    source = ClipSource.from_result(result, k=3)
    ds = source.dataset()
    paths = render_clip_gallery(Toy3d(), source, ds, tmp_path, units=[0, 1], lossless=True)
    assert set(paths) == {0, 1} and paths[0].name.startswith("unit_0000-") and paths[0].suffix == ".webp"
    frames = webp_frames(paths[0])
    assert frames.shape == (2, 112, 3 * 112 + 2 * GAP, 3)  # T frames; k tiles of at least 112 px
    for j, item in enumerate(source.top[0]):
        mask = ds.broden.load_masks(ds.row(item))["object"][0] == 1  # label 1: the red square
        squares = [np.kron(np.roll(mask, SHIFT * t, axis=1), np.ones((112 // SEG, 112 // SEG), bool)) for t in (0, 1)]
        for t in range(2):  # the region follows the square from frame to frame
            tile = frames[t, :, j * (112 + GAP) : j * (112 + GAP) + 112]
            lit = tile[..., 0] >= 200  # the square's red kept bright, or the outline's yellow
            iou = [(lit & sq).sum() / (lit | sq).sum() for sq in squares]
            assert iou[t] > 0.6 and iou[t] > iou[1 - t] + 0.3, (item, t, iou)
            assert (tile == REGION_COLOUR).all(-1).sum() >= 3 * SIDE * 112 // SEG  # an outline round the square

    class Boom(Toy3d):
        def forward(self, x):
            raise AssertionError("a cached clip must not run the model")

    mtime = paths[0].stat().st_mtime_ns
    again = render_clip_gallery(Boom(), source, ds, tmp_path, units=[0, 1], lossless=True)
    assert again == paths and paths[0].stat().st_mtime_ns == mtime
    moved = ClipSource(source.layer, source.settings, source.fingerprint, [t + 1.0 for t in source.thresholds], source.top)
    assert moved.clip_path(tmp_path, 0) != source.clip_path(tmp_path, 0)  # another T_u is another key
    with pytest.raises(ValueError, match="units 0..2"):
        render_clip_gallery(Toy3d(), source, ds, tmp_path, units=[3])


def test_source_round_trip_and_changed_concept_set(dissected, tmp_path):
    concepts, res = dissected
    source = ClipSource.from_result(res[str(concepts)]["features"], k=2)
    back = ClipSource.read(source.write(tmp_path / SOURCE_NAME))
    assert back == source and back.checkpoint == "toy" and all(len(t) == 2 for t in back.top)
    assert back.transform() == InputTransform(frames=2)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a clip-gallery source"):
        ClipSource.read(tmp_path / "bad.json")
    stale = ClipSource(source.layer, source.settings, "0" * 16, source.thresholds, source.top)
    with pytest.raises(ValueError, match="changed"):
        stale.dataset()


class Toy3dHead(Toy3d):
    """The video toy with parameters (the report finds the model's device through them)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 2)


def test_write_outputs_writes_the_source_and_with_clips_every_strip(dissected, tmp_path):
    concepts, res = dissected
    results = {str(concepts): res[str(concepts)]}
    labels = report.label_units(results)
    report.write_outputs(results, labels, tmp_path,
                         gallery={"model": Toy3dHead(), "k": 2, "transform": InputTransform(frames=2), "clips": True})
    g = tmp_path / concepts.name / "features" / "gallery"
    assert len(list(g.glob("unit_*.jpg"))) == 3 and len(list(g.glob("unit_*-*.webp"))) == 3
    src = json.loads((g / SOURCE_NAME).read_text())
    assert src["layer"] == "features" and len(src["thresholds"]) == 3 and src["settings"]["time"] == "frames"
    assert src["labels"] == [r.label_number for r in labels[str(concepts)]["features"]] and src["labels"][0] == 1


def test_tube_items_outline_the_units_concept_frame_by_frame(tmp_path):
    """On a tube set, each frame of a tube item outlines that frame's mask of the unit's label (drawn last,
    so exactly its outline pixels carry CONCEPT_COLOUR in a lossless strip)."""
    from mmit_interp.broden_format import BrodenWriter

    root, rng, written = tmp_path / "tubes", np.random.default_rng(3), {}
    with BrodenWriter(root, ["object"], image_size=(32, 32), seg_size=(SEG, SEG)) as w:
        sq = w.add_label("square", "object")
        for _ in range(4):
            y, x = (int(v) for v in rng.integers(0, SEG - SIDE - SHIFT, 2))
            frames, masks = [], []
            for t in range(2):
                img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
                img[2 * y : 2 * (y + SIDE), 2 * (x + SHIFT * t) : 2 * (x + SHIFT * t + SIDE), 0] = 250
                m = np.zeros((SEG, SEG), np.int32)
                m[y : y + SIDE, x + SHIFT * t : x + SHIFT * t + SIDE] = sq
                frames.append(img)
                masks.append({"object": [m]})
            rel = w.add_image(frames[0], pixel={"object": masks[0]["object"]}, tube=masks)
            written[rel] = [m["object"][0] == sq for m in masks]
            write_clip((root / "images" / rel).with_suffix(".mp4"), np.stack(frames))
    res = run_dissection(Toy3d(), ["features"], [root], quantile=Q, transform=InputTransform(frames=2), time="frames",
                         top_k=2, progress=False)
    source = ClipSource.from_result(res[str(root)]["features"], k=2, labels=[sq, 0, 0])
    ds = source.dataset()
    assert ds.tubes and source.label(0) == sq
    frames = webp_frames(render_clip_gallery(Toy3d(), source, ds, tmp_path / "out", units=[0], lossless=True)[0])
    for j, item in enumerate(source.top[0]):
        for t in range(2):
            want = outline(np.kron(written[ds.row(item).image][t], np.ones((112 // SEG, 112 // SEG), bool)))
            tile = frames[t, :, j * (112 + GAP) : j * (112 + GAP) + 112]
            assert want.sum() > 0
            assert np.array_equal((tile == CONCEPT_COLOUR).all(-1), want), (item, t)
    plain = webp_frames(render_clip_gallery(Toy3d(), ClipSource(**{**source.__dict__, "labels": []}), ds,
                                            tmp_path / "plain", units=[0], lossless=True)[0])
    assert not (plain == CONCEPT_COLOUR).all(-1).any()  # no label named: no concept outline


def test_cli_gallery_clips_writes_every_units_strip_beside_the_jpegs(dissected, tmp_path):
    """`mmit-dissect RUN --time frames --gallery-clips` on a video checkpoint: a strip per unit, then the
    source; without the flag, the source alone (the dashboard draws on demand)."""
    from dissect.cli import main
    from mmit_interp.checkpoint import save_checkpoint
    from mmit_interp.dataset import ClipTransform
    from mmit_interp.models import build_model
    from mmit_interp.vocab import Vocabulary

    concepts, _ = dissected
    torch.manual_seed(0)
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best.pt", build_model("i3d_r18", 2, width=4), model_name="i3d_r18",
                    model_kwargs={"width": 4}, vocab=Vocabulary(["a", "b"]), transforms=ClipTransform(2, 32).to_dict())
    args = [str(run), "--layers", "layer2", "--concept-set", str(concepts), "--time", "frames", "--top-k", "2",
            "--quantile", "0.05", "--workers", "0", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    plain = tmp_path / "plain" / concepts.name / "layer2" / "gallery"
    assert (plain / SOURCE_NAME).is_file() and not list(plain.glob("*.webp"))
    assert main(args + ["--gallery-clips"]) == 0
    g = run / "dissect" / concepts.name / "layer2" / "gallery"
    source = ClipSource.read(g / SOURCE_NAME)
    strips = sorted(g.glob("unit_*-*.webp"))
    assert len(strips) == source.units == len(list(g.glob("unit_*.jpg"))) > 0
    assert strips[0] == source.clip_path(g, 0) and Image.open(strips[0]).n_frames >= 1
