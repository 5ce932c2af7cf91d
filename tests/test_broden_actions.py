"""Action-region builder and concept-set merge (by reference, no image copies)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from broden_actions.actions import build_action_regions, merge_concept_sets
from broden_actions.broden import BrodenDataset, BrodenFormatError, load_broden
from tests.test_broden import write_small


@pytest.fixture
def world(tmp_path):
    write_small(tmp_path / "broden")
    frames = tmp_path / "frames"
    frames.mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(frames / f"{stem}.png")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,action,x1,y1,x2,y2\n"
                     "a.png,running,0,0,20,16\n"
                     "a.png,running,20,16,40,32\n"
                     "a.png,jumping,0,16,10,32\n"
                     "b.png,jumping,10,4,30,12\n")
    return tmp_path, frames, boxes


def test_build_appends_labels_and_masks(world):
    root, frames, boxes = world
    out = build_action_regions(boxes, frames, root / "acts", base=root / "broden")
    s = load_broden(out)
    assert s.categories == ["action"]
    assert {n: lab.name for n, lab in s.labels.items()} == {4: "running", 5: "jumping"}
    a = s.rows[0]
    assert (a.ih, a.iw, a.sh, a.sw) == (32, 40, 8, 8)
    m = s.load_masks(a)["action"]
    assert m.shape == (2, 8, 8)
    run = m[0]
    assert (run[:4, :4] == 4).all() and (run[4:, 4:] == 4).all() and (run[:4, 4:] == 0).all()
    jump = m[1]
    assert (jump[4:, :2] == 5).all() and jump.sum() == 5 * 8
    cov = {cl.name: (cl.frequency, cl.coverage) for cl in s.category_labels["action"]}
    assert cov["jumping"][0] == 2 and cov["running"] == (1, pytest.approx(0.5))
    assert (s.root / "images" / a.image).resolve() == (frames / "a.png").resolve()  # referenced, not copied
    assert not list((out / "images").glob("*.png.jpg"))


def test_merge_by_reference(world):
    root, frames, boxes = world
    acts = build_action_regions(boxes, frames, root / "acts", base=root / "broden")
    merged = merge_concept_sets([root / "broden", acts], root / "merged")
    s = load_broden(merged)
    assert s.categories == ["color", "part", "scene", "action"]
    assert len(s) == 5 and s.num_labels == 5
    assert not [p for p in (merged / "images").rglob("*") if p.is_file()]  # nothing copied
    ds = BrodenDataset(merged, size=16)
    batch = ds.collate([ds[i] for i in range(len(ds))])
    assert batch["pixel"].shape[0] == 5 and (batch["pixel"] == 5).any()
    with open(merged / "category.csv") as f:
        cats = {r["name"]: r for r in csv.DictReader(f)}
    assert cats["action"]["first"] == "4" and cats["action"]["frequency"] == "2" and cats["color"]["frequency"] == "3"
    assert s.primary_categories().tolist() == [-1, 0, 1, 2, 3, 3]


@pytest.mark.parametrize("row, message", [
    ("a.png,running,0,0,41,16", r"boxes\.csv:3: box .* outside the 40x32 image"),
    ("c.png,running,0,0,4,4", r"boxes\.csv:3: unknown image 'c\.png'"),
    ("a.png,running,0,0,4", r"boxes\.csv:3: expected 6 cells"),
    ("a.png,running,0,0,x,4", r"boxes\.csv:3: box coordinates must be numbers"),
    ("a.png,running,5,0,4,4", r"boxes\.csv:3: box .* needs x1 < x2"),
])
def test_builder_errors_name_line(world, row, message):
    root, frames, boxes = world
    boxes.write_text("image,action,x1,y1,x2,y2\na.png,running,0,0,20,16\n" + row + "\n")
    with pytest.raises(BrodenFormatError, match=message):
        build_action_regions(boxes, frames, root / "acts")


def test_merge_rejects_clashing_numbers(world):
    root, frames, boxes = world
    acts = build_action_regions(boxes, frames, root / "acts")  # numbered from 1: clashes with the base
    with pytest.raises(BrodenFormatError, match="base="):
        merge_concept_sets([root / "broden", acts], root / "merged")


def test_cli_build_merge_info(world, capsys):
    from broden_actions.cli import main

    root, frames, boxes = world
    assert main(["build", str(boxes), str(frames), str(root / "acts"), "--base", str(root / "broden")]) == 0
    assert main(["merge", str(root / "broden"), str(root / "acts"), "--out", str(root / "m")]) == 0
    assert "action" in capsys.readouterr().out
    boxes.write_text("image,action,x1,y1,x2,y2\nnope.png,running,0,0,1,1\n")
    assert main(["build", str(boxes), str(frames), str(root / "x")]) == 1
    assert "boxes.csv:2: unknown image" in capsys.readouterr().err
