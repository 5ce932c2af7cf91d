"""Results store: schema creation, idempotent (replacing) writes, transactions, read helpers."""
from __future__ import annotations

import pytest

from mmit_interp.store import NOT_DISSECTED, ResultsStore, StoreError
from mmit_interp.unit_labels import Concept, UnitLabel


def _meta(sha: str = "abc", n: int = 3) -> dict:
    return {"sha256": sha, "path": "/run/checkpoints/best.pt", "vocab": [f"c{i}" for i in range(n)],
            "model": {"name": "i3d_r18", "kwargs": {"width": 8}}, "transforms": {"frames": 4, "size": 32},
            "config": {}, "metrics": {}}


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path)
    s.register_run(_meta())
    yield s
    s.close()


def _unit(unit: int, label: str, iou: float, category: str = "texture", interpretable: bool | None = None,
          runner_ups: tuple[Concept, ...] = (), bests: tuple[Concept, ...] = ()) -> UnitLabel:
    """A dissection record; interpretable at IoU >= 0.04 unless given."""
    return UnitLabel(unit, category, label, 1, iou, iou >= 0.04 if interpretable is None else interpretable, 1.5,
                     runner_ups, bests)


def _count(store: ResultsStore, table: str) -> int:
    return store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_register_run_is_idempotent_and_keyed_by_sha(tmp_path):
    with ResultsStore(tmp_path) as s:
        a = s.register_run(_meta())
        assert s.register_run(_meta()) == a
        assert s.classes() == ["c0", "c1", "c2"]
        b = s.register_run(_meta("def", 2))
        assert b != a and s.run_id() == b and s.classes() == ["c0", "c1"]
        assert len(s.runs()) == 2 and _count(s, "classes") == 5
    assert (tmp_path / "results.sqlite").is_file()


def test_empty_store_read_is_a_clear_error(tmp_path):
    with ResultsStore(tmp_path / "results.sqlite") as s, pytest.raises(StoreError, match="no run"):
        s.classes()


def test_eval_rewrite_replaces(store):
    m = {"hit@1": 0.5, "map_class": 0.25, "per_class_ap": [0.1, float("nan"), 0.4], "n_clips": 7}
    store.write_eval(m)
    store.write_eval({**m, "hit@1": 0.75})
    assert store.metrics()["hit@1"] == 0.75 and _count(store, "metrics") == 3
    ap = store.class_ap()
    assert [r["ap"] for r in ap] == [0.1, None, 0.4] and ap[2]["name"] == "c2"


def test_units_ingest_filters_and_replace(store):
    striped = Concept("striped", "texture", 0.03, 7)
    recs = [_unit(0, "dotted", 0.09, runner_ups=(striped,), bests=(Concept("dotted", "texture", 0.09, 1),)),
            _unit(1, "ball", 0.01, category="object")]
    assert store.write_units("layer4", "broden", recs) == 2
    store.write_units("layer4", "broden", recs)
    assert _count(store, "units") == 2
    rows = store.units("layer4")
    assert rows[0]["label"] == "dotted" and rows[0]["interpretable"]
    assert rows[0]["runner_ups"] == [{"label": "striped", "category": "texture", "iou": 0.03}]
    assert rows[0]["per_category"] == [{"label": "dotted", "category": "texture", "iou": 0.09}]
    assert rows[1]["extra"] == {"label_number": 1, "threshold": 1.5} and not rows[1]["interpretable"]
    assert [r["unit"] for r in store.units("layer4", search="ball")] == [1]
    assert store.category_counts("layer4") == {"texture": 1}
    assert store.layers()[0] == {"layer": "layer4", "concept_set": "broden", "n_units": 2, "n_interpretable": 1}


def test_schema_1_units_are_migrated_on_open(tmp_path):
    """A store written before the typed record: per-category bests and runner-ups come back in today's shape."""
    import json
    import sqlite3

    with ResultsStore(tmp_path) as s:
        s.register_run(_meta())
    con = sqlite3.connect(tmp_path / "results.sqlite")
    con.executescript("DROP TABLE units; CREATE TABLE units (run_id INTEGER NOT NULL, layer TEXT NOT NULL, "
                      "concept_set TEXT NOT NULL, unit INTEGER NOT NULL, category TEXT, label TEXT, iou REAL, "
                      "interpretable INTEGER NOT NULL, runner_ups TEXT NOT NULL, extra TEXT NOT NULL, "
                      "PRIMARY KEY (run_id, layer, concept_set, unit)); UPDATE meta SET value = '1';")
    extra = {"layer": "layer4", "label_number": 3, "threshold": 0.5, "color_label": "red", "color_iou": 0.02,
             "texture_label": "dotted", "texture_iou": 0.09}
    con.execute("INSERT INTO units VALUES (1, 'layer4', 'broden', 0, 'texture', 'dotted', 0.09, 1, ?, ?)",
                (json.dumps([["striped", 0.03], {"name": "red", "category": "color", "iou": 0.02}]), json.dumps(extra)))
    con.commit()
    con.close()
    for _ in range(2):  # the second open finds the store migrated
        with ResultsStore(tmp_path) as s:
            row = s.units("layer4")[0]
            assert row["per_category"] == [{"label": "red", "category": "color", "iou": 0.02},
                                           {"label": "dotted", "category": "texture", "iou": 0.09}]
            assert row["runner_ups"] == [{"label": "striped", "category": None, "iou": 0.03},
                                         {"label": "red", "category": "color", "iou": 0.02}]
            assert row["extra"] == {"label_number": 3, "threshold": 0.5} and row["interpretable"]


def test_ablation_replace_and_aggregate(store):
    rows = [{"metric": "map_sample", "p": p, "seed": s, "value": 0.5 * (1 - p), "rel": (1 - p) + 0.1 * s}
            for p in (0.0, 0.5) for s in (0, 1)]
    store.write_ablation("layer4", rows)
    store.write_ablation("layer4", rows)
    assert _count(store, "ablation") == 4
    c = store.ablation_curves()["layer4"]["map_sample"]
    assert c["p"] == [0.0, 0.5] and c["n"] == [2, 2]
    assert c["mean"] == pytest.approx([1.05, 0.55]) and c["std"] == pytest.approx([0.05, 0.05])


def test_selectivity_relations_localisation(store):
    store.write_selectivity("layer4.1", [0.2, 0.4])
    store.write_selectivity("layer3.0", [0.1])
    store.write_selectivity("layer4.1", [0.3, 0.5])
    assert store.selectivity("layer4.1") == [0.3, 0.5]
    blocks = store.selectivity_blocks()
    assert [b["block"] for b in blocks] == ["layer3.0", "layer4.1"]
    assert blocks[1]["mean"] == pytest.approx(0.4) and blocks[1]["std"] == pytest.approx(0.1)
    store.write_relations("layer4.1", "unit_to_class", {0: [(2, 0.9), (1, 0.5)]})
    store.write_relations("layer4.1", "unit_to_class", {0: [(2, 0.8)]})
    assert store.relations("layer4.1", "unit_to_class") == {0: [(2, 0.8)]}
    rows = [{"method": "mcam", "score": "pointing", "class_idx": -1, "frame": -1, "value": 0.7, "n": 10}]
    store.write_localisation("synth", rows)
    store.write_localisation("synth", rows)
    assert len(store.localisation("synth")) == 1
    store.write_bias("w:val", "spinning", "dotted", {"excess": 0.1, "planted": True})
    store.write_bias("w:val", "spinning", "dotted", {"excess": 0.2, "planted": True})  # replaces
    store.write_bias("w:val", "spinning", "striped", {"excess": None, "planted": False})
    assert [r["summary"] for r in store.bias("spinning")] == [{"excess": None, "planted": False},
                                                             {"excess": 0.2, "planted": True}]
    assert store.bias("dotted") == [] and _count(store, "bias") == 2


def test_clip_and_concept_path_replace_with_labels(store):
    kw = dict(path="/a.mp4", n_frames=4, has_audio=False, out_dir="/out", predictions=[(2, 0.9), (0, 0.1)],
              files=[("cam", 2, 0, "/out/c2_0.png"), ("cam", 2, 1, "/out/c2_1.png"), ("mcam", -1, 0, "/out/m0.png")],
              overlay_video="/out/overlay.mp4")
    store.write_clip("k1", **kw)
    store.write_concept_path("k1", 2, [{"step": 0, "rank": 0, "layer": "layer4", "unit": 0, "parent": -1,
                                        "contribution": 1.5},
                                       {"step": 1, "rank": 0, "layer": "layer3", "unit": 3, "parent": 0,
                                        "contribution": 0.5}])
    store.write_clip("k1", **kw)  # re-analysis replaces predictions/files and drops stale paths
    assert _count(store, "clip_predictions") == 2 and _count(store, "clip_files") == 3
    assert _count(store, "concept_paths") == 0
    d = store.clip("k1")
    assert d["predictions"][0] == {"class_idx": 2, "name": "c2", "score": 0.9}
    assert d["files"]["cam"][2] == ["/out/c2_0.png", "/out/c2_1.png"] and not d["has_audio"]
    assert store.clips()[0]["top_name"] == "c2" and store.n_clips() == len(store.clips()) == 1
    path = [{"step": 0, "rank": 0, "layer": "layer4.1", "unit": 0, "parent": -1, "contribution": 1.5,
             "label_layers": ["layer4.1", "layer4"]}]
    store.write_concept_path("k1", 2, path)
    store.write_concept_path("k1", 2, path)
    assert store.concept_path("k1", 2)[0]["label"] == NOT_DISSECTED
    store.write_units("layer4", "broden", [_unit(0, "dotted", 0.1)])
    got = store.concept_path("k1", 2)
    assert got[0]["label"] == "dotted" and got[0]["iou"] == 0.1 and got[0]["label_layers"] == ["layer4.1", "layer4"]


def test_labels_per_concept_set_and_what_a_path_shows(store):
    # unit 0: dotted on stills, falling (higher IoU) on tubes; unit 1: the same colour on both; unit 2: weak
    store.write_units("layer4", "broden", [_unit(0, "dotted", 0.046), _unit(1, "red", 0.08, "color"),
                                           _unit(2, "pink", 0.02, "color")])
    store.write_units("layer4", "tubes", [_unit(0, "falling", 0.055, "action"), _unit(1, "red", 0.07, "color"),
                                          _unit(2, "striped", 0.03)])
    by_set = store.unit_labels_by_set(["layer4.1", "layer4"])
    assert set(by_set) == {"broden", "tubes"} and by_set["broden"][0]["label"] == "dotted"
    assert by_set["tubes"][0]["label"] == "falling" and store.unit_labels_by_set(["layer9"]) == {}
    shown = store.path_labels(["layer4"])
    assert (shown[0]["label"], shown[0]["iou"]) == ("falling", 0.055)  # best over sets, as unit_labels
    assert shown[0]["also"] == [{"concept_set": "broden", "label": "dotted", "category": "texture", "iou": 0.046}]
    assert shown[1]["also"] == [] and shown[2]["also"] == []  # same label; below the threshold


def test_failed_write_rolls_back(store):
    good = [_unit(0, "dotted", 0.1)]
    store.write_units("layer4", "broden", good)
    with pytest.raises(Exception, match="UNIQUE"):  # duplicate unit: fails after the DELETE ran
        store.write_units("layer4", "broden", good + good)
    assert [r["label"] for r in store.units("layer4")] == ["dotted"]


def test_open_run_store_ingests_evaluations(tmp_path):
    import json

    from mmit_interp.store import open_run_store

    (tmp_path / "eval.json").write_text(json.dumps({"split": "val", "hit@1": 0.5, "per_class_ap": [0.1, 0.2, 0.3]}))
    (tmp_path / "eval_test.json").write_text(json.dumps({"split": "test", "hit@1": 0.25, "data": "/x"}))
    st, rid = open_run_store(tmp_path, _meta())
    with st:
        assert st.metrics("val")["hit@1"] == 0.5 and st.metrics("test") == {"hit@1": 0.25}
        assert [r["ap"] for r in st.class_ap("val")] == [0.1, 0.2, 0.3]
    again, rid2 = open_run_store(tmp_path, _meta())
    again.close()
    assert rid2 == rid
