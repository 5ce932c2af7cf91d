"""The ``lite`` tallies against NetDissect-Lite's rules, re-implemented from its source on a Broden folder.

The reference reads the folder as Lite's ``loader/data_loader.py`` does (``decode_index_dict``,
``resolve_segmentation``, ``primary_categories_per_index``, ``onehot``) and tallies as its
``feature_operation.py`` ``tally_job`` / ``tally`` do: per image, per unit, per plane, in float64.
The original NetDissect's ``count_act_with_labelcat`` gives the ``original`` activation area.
Where ours differs on purpose (docs/dissect.md) the reference follows ours and says so.
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
from PIL import Image

from broden_actions.broden import BrodenDataset
from dissect import report
from dissect.engine import dissect_stream
from mmit_interp.broden_format import BrodenWriter
from tests.test_dissect_engine import lite_best_label, naive_upsample

CATS = ["color", "object", "part", "scene"]
SEG, H, UNITS, QUANTILE = 16, 4, 8, 0.1


def write_folder(root):
    """A Broden folder with every case of issue 14: a label in two categories' tables ('red'), a label on
    two planes of one image ('wheel'), a coverage tie ('tie', drawn alike in object and part), a G-channel
    label (>= 256), an image with no data, whole-image labels (also repeated, and one in a category
    that has a PNG plane), and an image with whole-image labels only."""
    w = BrodenWriter(root, CATS, image_size=(32, 32), seg_size=(SEG, SEG))
    red, blue = w.add_label("red", "color"), w.add_label("blue", "color")
    assert w.add_label("red", "part") == red
    wheel, door = w.add_label("wheel", "part"), w.add_label("door", "part")
    tie = w.add_label("tie", "object")
    assert w.add_label("tie", "part") == tie
    for k in range(260):
        w.add_label(f"thing{k}", "object")
    big = w.add_label("big", "object")
    street, beach = w.add_label("street", "scene"), w.add_label("beach", "scene")
    assert big >= 256
    rng = np.random.default_rng(7)

    def box(lab, plane=None):
        p = np.zeros((SEG, SEG), np.int32) if plane is None else plane
        y, x = rng.integers(0, SEG - 4, size=2)
        p[y : y + rng.integers(3, 9), x : x + rng.integers(3, 9)] = lab
        return p

    img = np.zeros((32, 32, 3), np.uint8)
    for i in range(12):
        color = np.zeros((SEG, SEG), np.int32)
        color[:10] = red  # red covers more in color than in part: c(red) = color
        color = box(blue, color)
        t = box(tie)  # tie drawn alike in object and part: equal coverage, c(tie) = part (listed last)
        p1 = box(wheel, box(red))
        p2 = box(door)
        if i % 3 == 0:
            p2[p1 == wheel] = wheel  # wheel on two planes of the same pixels
        obj = t.copy()
        b = box(big)
        obj[(b == big) & (obj == 0)] = big
        pixel = {"color": [color], "object": [obj], "part": [p1, p2, t]}
        whole = {"scene": [street, street] if i % 4 == 1 else [(street, beach)[i % 2]]}
        if i == 5:
            whole["object"] = [big]  # an int beside a PNG: a constant plane in Lite
        w.add_image(img, pixel=pixel, whole=whole)
    w.add_image(img)  # no data
    w.add_image(img, whole={"scene": [beach]})  # whole-image labels only
    w.close()
    return root


def lite_reference(root, feats, thr):
    """NetDissect-Lite's tally on ``root`` with our features and thresholds, as its source does it."""
    rows = list(csv.DictReader(open(root / "index.csv")))
    labels = {int(r["number"]): r["name"] for r in csv.DictReader(open(root / "label.csv"))}
    L = max(labels) + 1
    names = [labels.get(j, "") for j in range(L)]  # build_dense_label_array: '' for missing rows
    code, cov = {}, {}
    for cat in CATS:
        code[cat], cov[cat] = np.zeros(L, int), np.zeros(L)
        for r in csv.DictReader(open(root / f"c_{cat}.csv")):
            code[cat][int(r["number"])], cov[cat][int(r["number"])] = int(r["code"]), float(r["coverage"])
    primary = np.array([max((cov[cat][i] if code[cat][i] else 0, ic) for ic, cat in enumerate(CATS))[1] for i in range(L)])
    labelcat = np.zeros((L, len(CATS)))
    labelcat[np.arange(L), primary] = 1  # Lite's onehot; the original zeroes label 0's row
    labelcat_orig = labelcat.copy()
    labelcat_orig[0] = 0
    inter, truth = np.zeros((UNITS, L)), np.zeros(L)
    act_lite, act_orig = np.zeros((UNITS, len(CATS))), np.zeros((UNITS, len(CATS)))
    for i, row in enumerate(rows):
        items = {cat: [int(v) if re.match(r"^\d+$", v) else v for v in row[cat].split(";") if v] for cat in CATS}
        if not any(v for vs in items.values() for v in vs):
            continue  # index_has_any_data: Lite drops the image
        scalars, pixels = [], []
        for cat, d in items.items():
            if all(isinstance(v, int) for v in d):
                scalars += d
                continue
            for v in d:
                if isinstance(v, int):
                    pixels.append(np.full((SEG, SEG), v))
                else:
                    rgb = np.asarray(Image.open(root / "images" / v)).astype(np.int64)
                    pixels.append(rgb[:, :, 0] + rgb[:, :, 1] * 256)
        pixels = np.stack(pixels) if pixels else None
        g = np.zeros(L)
        for s in scalars:
            g[s] += SEG * SEG
        if pixels is not None:
            bc = np.bincount(pixels.ravel(), minlength=L)
            bc[0] = 0
            g += bc
        truth += g
        present = (g @ labelcat_orig) > 0  # count_act_with_labelcat
        for u in range(UNITS):
            fm = feats[i, u].astype(np.float64)
            if fm.max() > thr[u]:
                idx = np.argwhere(naive_upsample(fm, SEG, SEG) > thr[u])
                tally_cat = np.zeros(len(CATS))  # Lite keeps the previous map's tally_cat when there are no pixels
                if pixels is not None:
                    bt = np.bincount(pixels[:, idx[:, 0], idx[:, 1]].ravel(), minlength=L)
                    bt[0] = 0
                    tally_cat = bt @ labelcat
                    inter[u] += bt
                for s in scalars:
                    tally_cat = tally_cat + labelcat[s]
                    inter[u, s] += len(idx)
                act_lite[u] += len(idx) * (tally_cat > 0)
                act_orig[u] += len(idx) * present
    return {"inter": inter, "truth": truth, "act_lite": act_lite, "act_orig": act_orig, "primary": primary,
            "labelcat": labelcat, "names": names}


def lite_tally_rows(ref, act, eps=1e-10):
    """Lite's ``tally()`` after the tally job: IoU, per-category bests, the rows of tally.csv (as text);
    ``eps=1e-20`` gives the original's IoU (makeresult.py)."""
    units_cat = act @ ref["labelcat"].T
    iou = ref["inter"] / (units_cat + ref["truth"][None] - ref["inter"] + eps)
    pciou = np.array([iou * (ref["primary"] == ci)[None] for ci in range(len(CATS))])
    label_pciou = pciou.argmax(axis=2)
    score_pciou = pciou[np.arange(len(CATS))[:, None], np.arange(UNITS)[None], label_pciou]
    bestcat = score_pciou.argsort(axis=0, kind="stable")[::-1]  # Lite's numpy: insertion sort for <= 16 items
    rows = {}
    for unit in range(UNITS):
        bc = bestcat[0, unit]
        data = {"unit": unit + 1, "category": CATS[bc], "label": ref["names"][label_pciou[bc][unit]],
                "score": score_pciou[bc][unit]}
        for ci, cat in enumerate(CATS):
            lab = label_pciou[ci][unit]
            data.update({f"{cat}-label": ref["names"][lab], f"{cat}-truth": ref["truth"][lab],
                         f"{cat}-activation": units_cat[unit, lab], f"{cat}-intersect": ref["inter"][unit, lab],
                         f"{cat}-iou": score_pciou[ci][unit]})
        rows[str(unit + 1)] = {k: str(v) for k, v in data.items()}
    return iou, rows


@pytest.fixture(scope="module")
def dissected(tmp_path_factory):
    root = write_folder(tmp_path_factory.mktemp("lite"))
    ds = BrodenDataset(root)
    rng = np.random.default_rng(3)
    feats = (rng.integers(-40, 40, size=(len(ds), UNITS, H, H)) / 8.0).astype(np.float32)  # dyadic: exact upsampling
    batch_idx = [list(range(s, min(s + 5, len(ds)))) for s in range(0, len(ds), 5)]

    def batches():
        for idx in batch_idx:
            yield {"L": torch.from_numpy(feats[idx])}, ds.collate([ds[i] for i in idx])

    names = [""] * (ds.broden.num_labels + 1)
    for num, lab in ds.broden.labels.items():
        names[num] = lab.name
    prim = torch.from_numpy(ds.broden.primary_categories(ds.categories))
    res = dissect_stream(batches, len(ds), prim, names, CATS, quantile=QUANTILE)["L"]
    return root, feats, res


def test_folder_has_every_case(dissected):
    root, _, res = dissected
    prim = res.primary.tolist()
    red, tie, big = (res.label_names.index(n) for n in ("red", "tie", "big"))
    assert prim[red] == CATS.index("color") and prim[tie] == CATS.index("part") and big >= 256
    b = BrodenDataset(root).broden
    cov = {c: {cl.number: cl.coverage for cl in b.category_labels[c]} for c in ("object", "part")}
    assert cov["object"][tie] == cov["part"][tie] > 0  # a tie, broken towards the category listed last
    part = b.load_masks(b.rows[0])["part"]
    assert ((part[0] == part[1]) & (part[0] == res.label_names.index("wheel"))).any()  # one label, two planes
    assert (b.load_masks(b.rows[0])["object"] == big).any()  # decoded from R + 256 * G
    assert not b.rows[12].pixel and not b.rows[12].whole and not b.rows[13].pixel  # no data; whole-image only
    assert res.tally.inter.sum() > 0


def test_lite_tallies_match_lites_rules(dissected):
    root, feats, res = dissected
    thr = res.thresholds.double().numpy()
    for u in range(UNITS):  # our threshold: the exact order statistic over every image (docs/dissect.md)
        vals = np.sort(feats[:, u].astype(np.float64).ravel())
        assert thr[u] == vals[len(vals) - 1 - int(QUANTILE * len(vals))]
    ref = lite_reference(root, feats, thr)
    assert np.array_equal(ref["primary"][1:], np.where(res.primary.numpy() < 0, len(CATS) - 1, res.primary.numpy())[1:])
    assert np.array_equal(res.tally.inter.numpy(), ref["inter"])
    assert np.array_equal(res.tally.label_area.numpy(), ref["truth"])
    assert np.array_equal(res.tally.act_lite.numpy(), ref["act_lite"])
    assert np.array_equal(res.tally.act_orig.numpy(), ref["act_orig"])


@pytest.mark.parametrize("denominator", ["lite", "original"])
def test_unit_labels_and_tally_csv_match_lite(dissected, tmp_path, denominator):
    root, feats, res = dissected
    ref = lite_reference(root, feats, res.thresholds.double().numpy())
    lite = denominator == "lite"
    iou, rows = lite_tally_rows(ref, ref["act_lite"], 1e-10) if lite else lite_tally_rows(ref, ref["act_orig"], 1e-20)
    ours = res.iou(denominator).numpy()
    valid = res.primary.numpy() >= 0
    assert np.array_equal(ours[:, valid], iou[:, valid])
    labels = res.unit_labels(denominator)
    for rec in labels:
        assert rec.label_number == lite_best_label(iou[rec.unit], res.primary.numpy(), len(CATS))
        if rec.iou > 0:
            assert rec.label == rows[str(rec.unit + 1)]["label"]
    if lite:  # the original writes label 0's activation as 0 in its result.csv; Lite's tally.csv is the format
        path = report.write_tally_csv(res, labels, tmp_path / "tally.csv", denominator)
        got = {r["unit"]: r for r in csv.DictReader(open(path))}
        assert got == rows
