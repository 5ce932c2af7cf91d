"""End-to-end analyses on a tiny model trained on a tiny synthetic world (built once, cached: tests/_trained.py)."""
from __future__ import annotations

import json

import pytest

from _trained import trained_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world_run():
    return trained_world()


@pytest.fixture(scope="module")
def localisation(world_run):
    from mmit_interp.explain.localisation import run_localisation

    world, run = world_run
    r = run_localisation(run, world=world, split="val", record=False)
    print("localisation summary:", r["summary"])
    assert r["n_records"] > 0
    s = r["summary"]
    assert s["cam_max"]["coverage"] == pytest.approx(1.0) and 0 < s["mcam"]["coverage"] <= 1
    assert 0 <= s["mcam"]["ownership"] <= 1 and s["chance"]["ownership"] == pytest.approx(0.5)  # 2 actions per frame
    return s


def test_window_oracles_on_the_world_truth(world_run, localisation):
    """Exact maps on the world's boxes: a per-frame 8-px window owns nearly every pixel, a whole-clip field
    caps pointing, and the localisation's ownership chance is the oracle's (same frames, same records)."""
    from mmit_interp.explain.ceiling import run_ceiling

    world, _ = world_run
    sharp, whole = run_ceiling(world=world, windows=(8,), fields=(0, None))
    assert sharp["ownership"] > 0.9 and sharp["pointing"] > 0.95
    print("window oracles:", sharp, whole)
    assert whole["pointing"] < sharp["pointing"] - 0.05 and whole["ownership"] < sharp["ownership"]
    assert sharp["chance"] == pytest.approx(localisation["chance"]["ownership"])


def test_cam_pointing_clearly_above_chance(localisation):
    s = localisation
    for method in ("cam", "cam_max", "mcam"):
        assert s[method]["pointing"] > s["chance"]["pointing"] + 0.15, method
        # the box of a frame lies on the action's path, so a hit on the box is a hit on the path
        assert s[method]["pointing_path"] >= s[method]["pointing"], method
    assert s["chance"]["pointing_path"] > s["chance"]["pointing"]
    assert s["chance"]["ownership"] < s["cam"]["box_ownership"] <= 1.0  # which actor, per box


def test_mcam_pointing_at_least_max_of_cams(localisation):
    """The paper's claim, in the form it holds on models trainable here (its final form, issue 12).

    The claim "mCAM localises simultaneous actions better than max-of-CAMs" needs class maps that, compared
    with each other, give each actor's pixels to its own action. None trained here reaches issue 12's 0.70.
    This tiny world's model gives ownership 0.63 vs chance 0.50, and pointing 0.43 (max-of-CAMs) vs 0.41
    (mCAM). On the demo world, 12 frame-wide-field probes own 0.40-0.48 and the bounded-window showcase
    0.561 (chance 0.41-0.42); the track model the demo ships owns 0.652, mCAM 0.647 (docs/synth.md,
    "Localisation probes"). That model's class maps do tell the actors apart one class at a time: an
    action's CAM is higher on its own actor than on another action's in 0.836 of the pairs. The pixels are
    lost where max-of-CAMs compares different classes' maps, each min-max scaled on its own; compared in
    standard units (`scale="zscore"`) they own 0.690 (docs/analysis.md, "Standard units").
    mCAM's suppression only withholds pixels (coverage < 1) and cannot create contrast between the
    classes, so it is level with max-of-CAMs on ownership and within 0.05 on pointing, on every model
    measured; both stay clearly above chance.
    """
    s = localisation
    assert s["mcam"]["coverage"] < 1.0
    assert s["mcam"]["ownership"] == pytest.approx(s["cam_max"]["ownership"], abs=0.02)
    assert s["mcam"]["pointing"] == pytest.approx(s["cam_max"]["pointing"], abs=0.05)
    assert min(s["mcam"]["ownership"], s["cam_max"]["ownership"]) > s["chance"]["ownership"] + 0.05


def test_ablation_and_selectivity_on_trained_run(world_run):
    from mmit_interp.analysis.ablation import run_ablation
    from mmit_interp.analysis.selectivity import run_selectivity
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


@pytest.fixture(scope="module")
def dissected(world_run):
    """The trained run with layer3 and layer4 dissected on the world's concept set, in its store."""
    from dissect.engine import InputTransform, run_dissection
    from mmit_interp.checkpoint import load_model
    from mmit_interp.store import ResultsStore

    world, run = world_run
    model, meta = load_model(run)
    res = run_dissection(model, ["layer3", "layer4"], [str(world / "broden")],
                         transform=InputTransform.from_checkpoint(meta["transforms"]), progress=False, batch_size=16,
                         device="cpu")
    with ResultsStore(run) as st:
        st.register_run(meta)
        for layer, lr in res[str(world / "broden")].items():
            st.write_units(layer, "synth", lr.unit_labels())
    return world, run


def test_concept_path_of_biased_action_reaches_planted_texture(dissected):
    from mmit_interp.analysis.relations import clip_concept_path
    from mmit_interp.store import ResultsStore
    from mmit_interp.synth import load_truth

    world, run = dissected
    action, texture = "spinning", "dotted"
    with ResultsStore(run) as st:
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


def test_bias_lure_and_control_clips_against_truth(world_run):
    from mmit_interp.analysis.bias import lure_and_control, planted_pair
    from mmit_interp.synth import load_truth

    world, _ = world_run
    action, texture = planted_pair(world)
    assert (action, texture) == ("spinning", "dotted")
    val = [c for c in load_truth(world) if c.split == "val"]
    for tex in (texture, "striped"):
        lure, control = lure_and_control(val, action, tex)
        assert len(lure) + len(control) == sum(action not in c.labels for c in val)
        assert all(action not in c.labels and any(a.visible and a.texture == tex for a in c.actors) for c in lure)
        assert all(action not in c.labels and all(a.texture != tex for a in c.actors if a.visible) for c in control)
    # the tiny world plants the bias without leak (bias_leak 0): a dotted actor always spins, so nothing lures
    assert not lure_and_control(val, action, texture)[0] and lure_and_control(val, action, "striped")[0]


def test_bias_ablating_labelled_units_changes_scores(dissected):
    from collections import Counter

    from mmit_interp.analysis.bias import ablation_test, labelled_units, load_clips, lure_and_control
    from mmit_interp.checkpoint import load_model
    from mmit_interp.dataset import ClipTransform
    from mmit_interp.store import ResultsStore
    from mmit_interp.synth import load_truth

    world, run = dissected
    model, meta = load_model(run)
    with ResultsStore(run) as st:
        labels = Counter(u["label"] for layer in ("layer3", "layer4") for u in st.units(layer, interpretable_only=True))
        assert labels, "dissection labels no unit of the trained model"
        label = labels.most_common(1)[0][0]  # no texture unit here (the paths test says so): ablate a colour
        units, pool = labelled_units(st, model, label)
    assert list(units) == ["layer3.1", "layer4.1"] and sum(map(len, units.values())) == labels[label]
    assert all(not set(units[b]) & set(pool[b]) and len(units[b]) + len(pool[b]) == n
               for b, n in (("layer3.1", 64), ("layer4.1", 128)))
    val = [c for c in load_truth(world) if c.split == "val"]
    lure, control = lure_and_control(val, "spinning", "striped")
    tf = ClipTransform.from_dict(meta["transforms"])
    lx, cx = (load_clips([world / "videos" / c.path for c in cs[:12]], tf, False) for cs in (lure, control))
    c = meta["vocab"].index("spinning")
    none = ablation_test(model, lx, cx, c, {b: [] for b in units}, pool, seeds=(0,))
    assert none["ablated"]["excess"] == none["excess"] and none["ablated"]["other_classes"]["max_abs_change"] == 0
    r = ablation_test(model, lx, cx, c, units, pool, seeds=(0, 1))
    print(f"ablating {label} units {units}:", r)
    assert r["excess"] == none["excess"] and r["ablated"]["excess"] != r["excess"]
    assert r["ablated"]["other_classes"]["max_abs_change"] > 0
    assert all(e != r["excess"] for e in r["random"]["excess"])


def test_bias_run_cli_json_and_store(dissected, capsys):
    from mmit_interp.analysis.bias import run_bias
    from mmit_interp.cli import analyze_main
    from mmit_interp.store import ResultsStore

    world, run = dissected
    assert analyze_main(["bias", "--run", str(run), "--world", str(world), "--seeds", "0,1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r) == {"dataset", "action", "texture", "planted", "n_lure", "n_control", "rule", "blocks", "paths", "layers",
                      "texture_units", "n_units", "score", "excess", "excess_ci", "ablated", "random",
                      "counterfactual", "by_rule", "notes"}
    assert r["rule"] == "set" and set(r["by_rule"]) == {"set", "best"}
    assert r["by_rule"]["set"]["texture_units"] == r["texture_units"]
    assert set(r["paths"]) == {"n", "reaching_texture_unit", "share", "reaching_texture_label_any_iou", "top_upper",
                               "top_lower"}
    assert set(r["ablated"]) == {"score", "excess", "removed", "removed_ci", "other_classes"}
    assert set(r["random"]) == {"seeds", "excess", "removed", "removed_mean", "removed_max"}
    assert (r["dataset"], r["action"], r["texture"], r["planted"]) == ("world:val", "spinning", "dotted", True)
    assert r["blocks"] == "path" and r["layers"] == ["layer3.1", "layer4.1"]  # the concept path's blocks
    # measured on this world: no lure clip (bias_leak 0) and no dotted unit, so nothing is defined but the control
    assert r["n_lure"] == 0 and r["excess"] is None and r["n_units"] == 0 and len(r["notes"]) == 2
    assert r["n_control"] > 0 and r["score"]["control"] is not None
    # texture twins: every control clip that shows an actor, its first visible actor dressed in dots
    from pathlib import Path

    from mmit_interp.analysis.bias import twin_specs
    from mmit_interp.synth import load_truth

    cf = r["counterfactual"]
    pairs = twin_specs(world, "spinning", "dotted")
    control = {Path(t.path).stem for t in load_truth(world) if t.split == "val" and "spinning" not in t.labels
               and not any(a.visible and a.texture == "dotted" for a in t.actors) and any(a.visible for a in t.actors)}
    assert cf["n_pairs"] == len(pairs) == len(control) > 0 and {s.name for s, _ in pairs} == control
    assert all(s.actors[i].visible and s.actors[i].texture != "dotted" for s, i in pairs)
    assert cf["excess"] == pytest.approx(cf["score"]["twin"] - cf["score"]["original"])
    lo, hi = cf["excess_ci"]
    assert lo <= cf["excess"] <= hi
    assert cf["ablated"]["excess"] == cf["excess"]  # no dotted unit: nothing zeroed
    assert "cf_removed" in r["by_rule"]["set"] and len(cf["random"]["removed"]) == 2
    with ResultsStore(run) as st:
        assert st.bias("spinning")[0]["summary"] == r
    s = run_bias(run, world=world, texture="striped", max_clips=10, seeds=(0,), counterfactual=False, record=False)
    assert s["counterfactual"] is None and "cf_removed" not in s["by_rule"]["set"]
    print("spinning <- striped:", s)
    assert not s["planted"] and s["n_lure"] == s["paths"]["n"] == 10 and s["n_control"] == 10
    assert s["excess"] == pytest.approx(s["score"]["lure"] - s["score"]["control"])
    assert s["paths"]["reaching_texture_unit"] <= s["paths"]["reaching_texture_label_any_iou"] <= s["paths"]["n"]
    best = run_bias(run, world=world, texture="striped", max_clips=10, seeds=(0,), rule="best", counterfactual=False,
                    record=False)
    assert best["rule"] == "best" and best["by_rule"] == s["by_rule"]  # both rules are always measured
    for name, b in s["by_rule"].items():  # the top-level figures are the chosen rule's
        top = s if name == "set" else best
        assert (b["n_units"], b["paths_reaching"], b["removed"]) == (top["n_units"], top["paths"]["reaching_texture_unit"],
                                                                     top["ablated"]["removed"])
    units = {r: b["texture_units"] for r, b in s["by_rule"].items()}
    assert all(set(us) <= set(units["set"][blk]) for blk, us in units["best"].items())  # a best label is some set's
    assert analyze_main(["bias", "--run", str(run), "--world", str(world), "--action", "nope"]) == 2
    only4 = run_bias(run, world=world, texture="striped", max_clips=4, seeds=(0,), blocks=["layer4"],
                     counterfactual=False, record=False)
    assert only4["blocks"] == ["layer4"] and only4["layers"] == ["layer4.1"]
    with pytest.raises(ValueError, match=r"none of the blocks layer1\.1 is dissected.*--layers layer1 "):
        run_bias(run, world=world, max_clips=2, blocks=["layer1"], counterfactual=False, record=False)
    assert analyze_main(["bias", "--run", str(run), "--world", str(world), "--blocks", "layer9"]) == 2
    capsys.readouterr()
    assert analyze_main(["bias", "--run", str(run), "--world", str(world), "--texture", "striped", "--max-clips", "4",
                         "--seeds", "0", "--no-twins", "--blocks", "layer4"]) == 0
    assert "unit(s) of the blocks asked for, layer4.1" in capsys.readouterr().out
