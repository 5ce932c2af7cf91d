"""End to end on hooked toy models: planted units, video layouts, cache, CLI, reports, 2-process runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dissect import report
from dissect.engine import InputTransform, run_dissection
from mmit_interp.broden_format import BrodenWriter

N_IMG, SIZE, SEG, SIDE = 12, 32, 16, 4  # each image: a 4x4 (seg px) red square and a 4x4 green square


def make_concepts(root):
    """Red 'square' and green 'disc' objects (8x8 image px = 4x4 seg px each) on a dim background."""
    w = BrodenWriter(root, ["object", "scene"], image_size=(SIZE, SIZE), seg_size=(SEG, SEG))
    sq, disc = w.add_label("square", "object"), w.add_label("disc", "object")
    scenes = [w.add_label("street", "scene"), w.add_label("beach", "scene")]
    rng = np.random.default_rng(0)
    for i in range(N_IMG):
        img = rng.integers(0, 60, size=(SIZE, SIZE, 3), dtype=np.uint8)
        mask = np.zeros((SEG, SEG), np.int32)
        y, x = rng.integers(0, SEG - SIDE, size=2)
        mask[y : y + SIDE, x : x + SIDE] = sq
        img[2 * y : 2 * (y + SIDE), 2 * x : 2 * (x + SIDE), 0] = 250
        m2 = np.zeros((SEG, SEG), np.int32)
        while True:
            y2, x2 = rng.integers(0, SEG - SIDE, size=2)
            if abs(int(y2) - int(y)) >= SIDE or abs(int(x2) - int(x)) >= SIDE:
                break
        m2[y2 : y2 + SIDE, x2 : x2 + SIDE] = disc
        img[2 * y2 : 2 * (y2 + SIDE), 2 * x2 : 2 * (x2 + SIDE), 1] = 250
        w.add_image(img, pixel={"object": [mask + m2]}, whole={"scene": [scenes[i % 2]]})
    w.close()
    return root


class Toy2d(nn.Module):
    """features: 2x2 average of the RGB channels (unit 0 = red, 1 = green, 2 = blue): a 16x16 map."""

    def __init__(self):
        super().__init__()
        self.features = nn.AvgPool2d(2)
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class Toy3d(nn.Module):
    """Video toy: (N, 3, T, H, W) -> features (N, 3, T, 16, 16)."""

    def __init__(self):
        super().__init__()
        self.features = nn.AvgPool3d((1, 2, 2))

    def forward(self, x):
        return self.features(x).mean((2, 3, 4))


Q = SIDE * SIDE / (SEG * SEG)  # the square covers exactly this share of all positions


@pytest.fixture(scope="module")
def concepts(tmp_path_factory):
    return make_concepts(tmp_path_factory.mktemp("concepts"))


def test_planted_units_get_their_concepts(concepts):
    res = run_dissection(Toy2d(), ["features"], [concepts], quantile=Q, batch_size=5, progress=False)
    r = res[str(concepts)]["features"]
    for den in ("lite", "original"):
        rows = r.unit_labels(den)
        assert rows[0].label == "square" and rows[0].iou == pytest.approx(1.0)
        assert rows[1].label == "disc" and rows[1].iou == pytest.approx(1.0)
        assert rows[0].category == "object" and rows[0].interpretable


@pytest.mark.parametrize("time", ["mean", "frames"])
def test_video_model_planted_unit(concepts, time):
    res = run_dissection(Toy3d(), ["features"], [concepts], quantile=Q, transform=InputTransform(frames=2), time=time,
                         progress=False)
    rows = res[str(concepts)]["features"].unit_labels()
    assert rows[0].label == "square" and rows[0].iou == pytest.approx(1.0)


def test_cache_is_used_and_keyed(concepts, tmp_path):
    run_dissection(Toy2d(), ["features"], [concepts], quantile=Q, cache_dir=tmp_path, checkpoint_hash="abc", progress=False)

    class Boom(Toy2d):
        def forward(self, x):
            raise AssertionError("should have come from the cache")

    again = run_dissection(Boom(), ["features"], [concepts], quantile=Q, cache_dir=tmp_path, checkpoint_hash="abc",
                           progress=False)
    assert again[str(concepts)]["features"].unit_labels()[0].label == "square"
    with pytest.raises(AssertionError, match="cache"):  # another quantile is another key
        run_dissection(Boom(), ["features"], [concepts], quantile=0.01, cache_dir=tmp_path, checkpoint_hash="abc",
                       progress=False)


def test_reports(concepts, tmp_path):
    model = Toy2d()
    res = run_dissection(model, ["features"], [concepts], quantile=Q, progress=False)
    results = {"A": res[str(concepts)], "B": res[str(concepts)]}
    summary = report.write_outputs(results, report.label_units(results), tmp_path, gallery={"model": model, "k": 3})
    d = tmp_path / "A" / "features"
    header = (d / "tally.csv").read_text().splitlines()[0]
    assert header == ("unit,category,label,score,object-label,object-truth,object-activation,object-intersect,"
                      "object-iou,scene-label,scene-truth,scene-activation,scene-intersect,scene-iou")
    first = (d / "tally.csv").read_text().splitlines()[1].split(",")
    assert first[0] in ("1", "2") and first[1] == "object" and float(first[3]) == pytest.approx(1.0)
    assert summary["A"]["features"]["object"]["concepts"] == 2  # the blue unit may match weakly too
    assert len(list((d / "gallery").glob("unit_*.jpg"))) == 3
    t3 = json.loads((tmp_path / "table3.json").read_text())
    assert [r["concept_set"] for r in t3] == ["A", "B"] and t3[0]["interpretable_units"] >= 2
    for f in ("table3.png", "table3.svg", "A/blockwise.png", "A/blockwise.svg", "A/blockwise.csv", "A/features/units.csv"):
        assert (tmp_path / f).is_file(), f
    # a later run into the same folder (e.g. tubes beside the stills) adds its sets to summary.json
    report.write_outputs({"C": res[str(concepts)]}, report.label_units({"C": res[str(concepts)]}), tmp_path)
    assert sorted(json.loads((tmp_path / "summary.json").read_text())["counts"]) == ["A", "B", "C"]
    report.write_outputs({"C": res[str(concepts)]}, report.label_units({"C": res[str(concepts)]}, "original"), tmp_path,
                         denominator="original")
    assert sorted(json.loads((tmp_path / "summary.json").read_text())["counts"]) == ["C"]  # other settings: replaced


def test_cli_list_layers_and_run(concepts, tmp_path, capsys):
    from dissect.cli import main

    assert main(["resnet18", "--torchvision", "--size", "32", "--list-layers"]) == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and "1x512x1x1" in out
    assert main(["resnet18", "--torchvision", "--size", "32", "--layers", "layer1", "layer2", "--quantile", "0.05", "--concept-set",
                 str(concepts), "--out", str(tmp_path), "--workers", "0", "--no-progress", "--top-k", "2"]) == 0
    assert (tmp_path / concepts.name / "layer2" / "tally.csv").is_file()
    assert (tmp_path / concepts.name / "layer1" / "gallery" / "unit_0000.jpg").is_file()


def _worker(rank, world, init, concepts, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        res = run_dissection(model, ["0", "2"], [concepts], quantile=0.02, batch_size=4, progress=False)
        if rank == 0:
            torch.save({k: v.state_dict() for k, v in res[str(concepts)].items()}, out)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(concepts, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'init'}", concepts, tmp_path / "two.pt"), nprocs=2)
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
    one = run_dissection(model, ["0", "2"], [concepts], quantile=0.02, batch_size=5, progress=False)[str(concepts)]
    for layer in ("0", "2"):
        assert torch.equal(two[layer]["thresholds"], one[layer].thresholds)
        for k, v in one[layer].tally.state_dict().items():
            assert torch.equal(two[layer]["tally"][k], v), k
        assert torch.equal(two[layer]["top_images"]["images"], one[layer].top_images.images)


def test_synthetic_world_actions_end_to_end(tmp_path):
    """The synthetic world's boxes + frames -> action set -> merge -> dissect an I3D on all three sets."""
    synth = pytest.importorskip("mmit_interp.synth")
    models = pytest.importorskip("mmit_interp.models")
    from broden_actions.actions import build_action_regions, merge_concept_sets

    w = tmp_path / "world"
    synth.generate_world(w, synth.SynthConfig(seed=1, train_clips=2, val_clips=1, images=6, action_frames=4, size=32,
                                              frames=8, fps=8, workers=1), progress=False)
    acts = build_action_regions(w / "action_regions" / "boxes.csv", w / "action_regions" / "frames", tmp_path / "acts",
                                base=w / "broden")
    merged = merge_concept_sets([w / "broden", acts], tmp_path / "merged")
    torch.manual_seed(0)
    model = models.build_model("i3d_r18", 4, width=8)
    res = run_dissection(model, ["layer2", "layer3"], [w / "broden", acts, merged], transform=InputTransform(32, 4),
                         quantile=0.1, progress=False)
    summary = report.write_outputs(res, report.label_units(res), tmp_path / "out")
    assert set(summary) == {"broden", "acts", "merged"}
    assert "action" in summary["merged"]["layer3"] and (tmp_path / "out" / "table3.svg").is_file()
    rows = res[str(merged)]["layer3"].unit_labels()
    assert {r.category for r in rows} <= {"color", "object", "scene", "texture", "action"}


@pytest.mark.slow
def test_trained_model_has_action_units_in_last_block(tmp_path):
    """A model trained on the synthetic clips: layer4 has interpretable units on the action concept set."""
    from broden_actions.actions import build_action_regions
    from mmit_interp.checkpoint import load_model
    from tests._trained import trained_world

    world, run = trained_world()
    model, meta = load_model(run)
    acts = build_action_regions(world / "action_regions" / "boxes.csv", world / "action_regions" / "frames",
                                tmp_path / "acts", base=world / "broden")
    res = run_dissection(model, ["layer4"], [acts], transform=InputTransform.from_checkpoint(meta["transforms"]),
                         progress=False)
    rows = res[str(acts)]["layer4"].unit_labels()
    assert sum(r.interpretable and r.category == "action" for r in rows) >= 1
