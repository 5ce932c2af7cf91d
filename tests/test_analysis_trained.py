"""End-to-end analyses on a tiny model trained on a tiny synthetic world (built once, cached: tests/_trained.py)."""
from __future__ import annotations

import pytest

from _trained import trained_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world_run():
    return trained_world()


@pytest.fixture(scope="module")
def localisation(world_run):
    from mmit_interp.localisation import run_localisation

    world, run = world_run
    r = run_localisation(run, world=world, split="val", record=False)
    print("localisation summary:", r["summary"])
    assert r["n_records"] > 0
    s = r["summary"]
    assert s["cam_max"]["coverage"] == pytest.approx(1.0) and 0 < s["mcam"]["coverage"] <= 1
    assert 0 <= s["mcam"]["ownership"] <= 1 and s["chance"]["ownership"] == pytest.approx(0.5)  # 2 actions per frame
    return s


def test_cam_pointing_clearly_above_chance(localisation):
    s = localisation
    for method in ("cam", "cam_max", "mcam"):
        assert s[method]["pointing"] > s["chance"]["pointing"] + 0.15, method


@pytest.mark.xfail(strict=False, reason="measured on 12 trained models (tiny world wLSEP/BCE/LSEP at 4x4 last maps, LSEP "
                   "at 8x8, the 4 visual runs of two demo builds): mCAM pointing is 0.00-0.03 below max-of-CAMs (here 0.337 vs 0.364, "
                   "chance 0.165) or level; the CAMs do not tell simultaneous actions apart (ownership of single-box "
                   "pixels 0.55 here vs chance 0.50, at chance on the demo), so suppression has nothing to separate "
                   "and smoothing costs border pixels (docs/analysis.md)")
def test_mcam_pointing_at_least_max_of_cams(localisation):
    assert localisation["mcam"]["pointing"] >= localisation["cam_max"]["pointing"]


def test_ablation_and_selectivity_on_trained_run(world_run):
    from mmit_interp.ablation import run_ablation
    from mmit_interp.selectivity import run_selectivity
    from mmit_interp.store import ResultsStore

    world, run = world_run
    res = run_ablation(run, block="layer4", data=str(world), ps=(0.0, 0.5, 1.0), seeds=(0, 1), max_clips=32)
    rel = {(r["metric"], r["p"]): r["rel"] for r in res["rows"] if r["seed"] == 0}
    assert rel[("map_sample", 0.0)] == pytest.approx(1.0) and rel[("map_sample", 1.0)] < 1.0
    sel = run_selectivity(run, blocks=["layer3", "layer4"])
    with ResultsStore(run) as st:
        stored = {b["block"]: b for b in st.selectivity_blocks()}  # the cached run may hold other blocks too
        for r in sel:
            assert stored[r["block"]]["mean"] == pytest.approx(r["mean"]) and stored[r["block"]]["n"] == len(r["units"])
        assert st.ablation_curves()["layer4.1"]["map_sample"]["n"] == [2, 2, 2]


def test_concept_path_of_biased_action_reaches_planted_texture(world_run):
    from dissect.engine import run_dissection
    from mmit_interp.checkpoint import load_model
    from mmit_interp.relations import clip_concept_path
    from mmit_interp.store import ResultsStore
    from mmit_interp.synth import load_truth

    world, run = world_run
    action, texture = "spinning", "dotted"
    model, meta = load_model(run)
    t = meta["transforms"]
    res = run_dissection(model, ["layer3", "layer4"], [str(world / "broden")], frames=int(t["frames"]),
                         size=int(t["size"]), progress=False, batch_size=16, device="cpu")
    with ResultsStore(run) as st:
        st.register_run(meta)
        for layer, lr in res[str(world / "broden")].items():
            st.write_units(layer, "synth", lr.unit_table())
        dotted = [u["unit"] for u in st.units("layer4", category="texture") if u["label"] == texture]
    clips = [c for c in load_truth(world) if c.split == "val" and action in c.labels
             and any(a.action == action and a.texture == texture for a in c.actors)][:3]
    assert clips, "the tiny world has no validation clip of the biased action"
    found = []
    for c in clips:
        path = clip_concept_path(run, world / "videos" / c.path, action, top_upper=5, top_lower=3)["path"]
        found.append(sorted({(r["layer"], r["label"]) for r in path}))
        if any(r["label"] == texture for r in path):
            return
    if not dotted:
        pytest.skip(f"no layer4 unit is labelled {texture!r} by dissection; paths of {action!r} reached {found}")
    pytest.fail(f"layer4 units {dotted} are labelled {texture!r} but the paths of {action!r} reached {found}")
