"""Broden I/O: writer -> reader round trip, R + 256*G planes, file:line errors, the torch dataset."""

from __future__ import annotations

import numpy as np
import pytest

from broden_actions.broden import BrodenDataset, load_broden
from mmit_interp.broden_format import BrodenFormatError, BrodenWriter, decode_label_plane, encode_label_plane


def write_small(root, n=3, seg=(8, 8)):
    """A three-category set: colour (pixel), part (two planes), scene (whole); 'red' in two categories."""
    w = BrodenWriter(root, ["color", "part", "scene"], image_size=(16, 16), seg_size=seg)
    red = w.add_label("red", "color")
    wheel = w.add_label("wheel", "part")
    assert w.add_label("red", "part") == red
    street = w.add_label("street", "scene")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        c = np.zeros(seg, np.int32)
        c[: 2 + i] = red
        p1 = np.zeros(seg, np.int32)
        p1[4:, :4] = wheel
        p2 = np.zeros(seg, np.int32)
        p2[6:, :] = red
        img = rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)
        paths.append(w.add_image(img, split="train" if i else "val", pixel={"color": [c], "part": [p1, p2]},
                                 whole={"scene": [street]}))
    w.close()
    return paths, (red, wheel, street)


def test_round_trip(tmp_path):
    paths, (red, wheel, street) = write_small(tmp_path)
    b = load_broden(tmp_path)
    assert b.categories == ["color", "part", "scene"]
    assert [r.image for r in b.rows] == paths
    assert b.labels[red].categories == {"color": 3, "part": 3}
    assert b.labels[street].frequency == 3 and b.labels[street].coverage == pytest.approx(3.0)
    cov = {cl.name: cl.coverage for cl in b.category_labels["color"]}
    assert cov["red"] == pytest.approx((2 + 3 + 4) * 8 / 64)
    m = b.load_masks(b.rows[1])
    assert m["color"].dtype == np.int32 and m["part"].shape == (2, 8, 8)
    assert (m["color"][0][:3] == red).all() and (m["color"][0][3:] == 0).all()
    assert b.rows[0].whole == {"scene": [street]} and b.rows[0].split == "val"
    assert b.primary_categories()[red] == 0  # colour coverage 1.125 beats part's
    import csv

    with open(tmp_path / "category.csv") as f:
        cats = {r["name"]: r for r in csv.DictReader(f)}
    assert cats["part"]["first"] == str(red) and cats["part"]["count"] == "2" and cats["scene"]["frequency"] == "3"


def test_planes_decode_r_plus_256g():
    plane = np.array([[0, 1, 255], [256, 1197, 65535]], np.int32)
    rgb = encode_label_plane(plane)
    assert rgb[1, 1, 0] == 1197 % 256 and rgb[1, 1, 1] == 1197 // 256
    assert np.array_equal(decode_label_plane(rgb), plane)
    assert decode_label_plane(np.dstack([rgb, np.full(plane.shape, 255, np.uint8)])).dtype == np.int32


def test_writer_rejects_bad_input(tmp_path):
    w = BrodenWriter(tmp_path, ["object"], image_size=(8, 8), seg_size=(4, 4))
    with pytest.raises(ValueError, match="unknown category"):
        w.add_label("x", "scene")
    n = w.add_label("car", "object")
    with pytest.raises(ValueError, match="shape"):
        w.add_image(np.zeros((8, 8, 3), np.uint8), pixel={"object": [np.zeros((5, 5), np.int32)]})
    with pytest.raises(ValueError, match="not added"):
        w.add_image(np.zeros((8, 8, 3), np.uint8), pixel={"object": [np.full((4, 4), n + 1, np.int32)]})


def test_reader_errors_name_file_and_line(tmp_path):
    write_small(tmp_path)
    idx = (tmp_path / "index.csv").read_text().splitlines()
    bad = idx[2].split(",")
    bad[2] = "big"
    (tmp_path / "index.csv").write_text("\n".join(idx[:2] + [",".join(bad)] + idx[3:]) + "\n")
    with pytest.raises(BrodenFormatError, match=r"index\.csv:3: ih must be an integer"):
        load_broden(tmp_path)
    (tmp_path / "index.csv").write_text("\n".join(idx[:3] + [idx[3].rsplit(",", 1)[0] + ",99"]) + "\n")
    with pytest.raises(BrodenFormatError, match=r"index\.csv:4: scene label number 99"):
        load_broden(tmp_path)
    (tmp_path / "index.csv").write_text("\n".join(idx) + "\n")
    lab = (tmp_path / "label.csv").read_text().splitlines()
    (tmp_path / "label.csv").write_text("\n".join(lab[:2] + ["2,wheel,tyres(1),1,0.1,"] + lab[3:]) + "\n")
    with pytest.raises(BrodenFormatError, match=r"label\.csv:3: category 'tyres'"):
        load_broden(tmp_path)
    (tmp_path / "label.csv").write_text("\n".join(lab) + "\n")
    (tmp_path / "c_part.csv").unlink()
    with pytest.raises(BrodenFormatError, match=r"c_part\.csv: file not found"):
        load_broden(tmp_path)
    with pytest.raises(BrodenFormatError, match="not found"):
        load_broden(tmp_path / "nope")


def test_reader_accepts_real_broden_quirks(tmp_path):
    """Label 0 rows, a scene 0 cell, extra columns and 'cat(count)' lists as in broden1_224."""
    (tmp_path / "images").mkdir()
    (tmp_path / "category.csv").write_text("name,first,last,count,frequency\ncolor,1,1,1,1\nscene,2,2,1,1\n")
    (tmp_path / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n0,-,-,0,0.0,\n1,black-c,color(1),1,0.5,\n2,street-s,scene(1),1,1.0,road;lane\n")
    (tmp_path / "c_color.csv").write_text("code,number,name,frequency,coverage\n1,1,black-c,1,0.5\n")
    (tmp_path / "c_scene.csv").write_text("code,number,name,frequency,coverage\n1,2,street-s,1,1.0\n")
    (tmp_path / "index.csv").write_text(
        "image,split,ih,iw,sh,sw,color,scene\nade/a.jpg,train,224,224,112,112,ade/a_color.png,0;2\n")
    b = load_broden(tmp_path)
    assert b.rows[0].whole == {"scene": [2]} and b.rows[0].pixel == {"color": ["ade/a_color.png"]}
    assert b.labels[2].syns == ["road", "lane"] and 0 not in b.labels


def test_dataset_items_and_collate(tmp_path):
    write_small(tmp_path)
    ds = BrodenDataset(tmp_path, size=12)
    it = ds[0]
    assert it["image"].shape == (3, 12, 12) and set(it["masks"]) == {"color", "part"}
    batch = ds.collate([ds[0], ds[1]])
    assert batch["pixel"].shape == (2, 3, 8, 8) and batch["plane_cat"].tolist() == [[0, 1, 1], [0, 1, 1]]
    assert batch["whole_cat"].tolist() == [[2], [2]]
    video = BrodenDataset(tmp_path, size=12, frames=4)
    clip = video[1]["image"]
    assert clip.shape == (3, 4, 12, 12) and (clip == clip[:, :1]).all()  # a still is T identical frames
    assert BrodenDataset(tmp_path, split="val").indices == [0]


def test_dataset_uses_snippet_beside_image(tmp_path):
    cv2 = pytest.importorskip("cv2")
    paths, _ = write_small(tmp_path, n=1)
    snip = (tmp_path / "images" / paths[0]).with_suffix(".mp4")
    vw = cv2.VideoWriter(str(snip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (16, 16))
    for k in range(8):
        vw.write(np.full((16, 16, 3), 30 * k, np.uint8))
    vw.release()
    if not snip.is_file() or snip.stat().st_size == 0:
        pytest.skip("no mp4 encoder in this OpenCV build")
    ds = BrodenDataset(tmp_path, size=16, frames=4)
    clip = ds[0]["image"]
    means = clip.mean((0, 2, 3))
    assert (means[1:] > means[:-1]).all()  # frames sampled through the snippet, not repeated
    still = BrodenDataset(tmp_path, size=16, frames=4, use_snippets=False)[0]["image"]
    assert (still == still[:, :1]).all()


def test_primary_category_within_a_category_subset(tmp_path):
    _, (red, wheel, street) = write_small(tmp_path)
    b = load_broden(tmp_path)
    assert b.primary_categories(["part", "scene"])[[red, wheel, street]].tolist() == [0, 0, 1]
