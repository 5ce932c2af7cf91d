"""Ablation, selectivity, relations, concept paths, localisation, figures, analyze_clip and the CLIs."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from mmit_interp.analysis.ablation import ablated_logits, ablation_sweep, cache_features, keep_mask, summarise
from mmit_interp.boxes import box_mask
from mmit_interp.explain.localisation import aggregate, energy, method_maps, ownership, pointing, pointing_other
from mmit_interp.metrics import evaluate
from mmit_interp.models import build_model
from mmit_interp.analysis.relations import concept_path, relation_tables
from mmit_interp.analysis.selectivity import block_selectivity, block_shape, input_like, network_selectivity, selectivity_from_probs
from mmit_interp.analysis.trunk import find_block, logits_from, resolve_block, run_until, stage_aliases

C = 6


def _model(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    m = build_model("i3d_r18", C, width=8, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm3d):
            mod.weight.data = torch.rand(mod.weight.shape, generator=g) + 0.5
            mod.bias.data = torch.randn(mod.bias.shape, generator=g) * 0.1
    return m.eval()


def _batches(n_batches: int = 2, n: int = 5):
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n_batches):
        t = (torch.rand(n, C, generator=g) < 0.4).float()
        t[:, 0] = 1.0
        out.append({"video": torch.randn(n, 3, 4, 32, 32, generator=g), "target": t})
    return out


# ---------------------------------------------------------------- selectivity
def test_selectivity_closed_form_last_block():
    m = _model()
    k = m.fc.in_features
    w = torch.linspace(-1, 1, C * k).view(C, k).sin() * 3
    b = torch.arange(C, dtype=torch.float32) * 0.1
    m.fc.weight.data, m.fc.bias.data = w, b
    ex = input_like(m, {"frames": 4, "size": 32})
    for prob, fn in (("softmax", lambda z: torch.softmax(z, 0)), ("sigmoid", torch.sigmoid)):
        r = block_selectivity(m, "layer4", ex, prob=prob)
        assert r["block"] == "layer4.1"
        expect = torch.stack([1 - fn(w[:, i] + b).mean() / fn(w[:, i] + b).max() for i in range(k)])
        assert torch.allclose(r["units"], expect, atol=1e-6)
        assert r["mean"] == pytest.approx(float(expect.mean()), abs=1e-6)
    # a block whose successor is the identity on non-negative maps (zero-init last BN) gives the same values
    z = build_model("i3d_r18", C, width=8).eval()
    z.fc.weight.data, z.fc.bias.data = w, b
    r0 = block_selectivity(z, "layer4.0", ex)
    assert torch.allclose(r0["units"], block_selectivity(z, "layer4.1", ex)["units"], atol=1e-6)


def test_selectivity_batches_units_in_chunks_identically():
    m = _model()
    ex = input_like(m, {"frames": 4, "size": 32})
    a = block_selectivity(m, "layer3.0", ex)
    b = block_selectivity(m, "layer3.0", ex, chunk=5)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    # row i really is "only unit i on": compare one unit with a hand-made input
    shape = block_shape(m, "layer3.0", ex)
    assert shape == (32, 4, 2, 2)
    x = torch.zeros(1, *shape)
    x[0, 3] = 1
    assert torch.allclose(a["logits"][3], logits_from(m, "layer3.0", x)[0], atol=1e-5)
    assert torch.allclose(a["baseline_logits"], logits_from(m, "layer3.0", torch.zeros(1, *shape))[0], atol=1e-5)
    res = network_selectivity(m, ex)
    assert [r["block"] for r in res][0] == "layer1.0" and len(res) == 8
    assert all(((r["units"] >= 0) & (r["units"] <= 1 - 1 / C + 1e-6)).all() for r in res)
    p = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(selectivity_from_probs(p), torch.tensor([0.0, 0.75]))


def test_relations_tables():
    logits = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 5.0]])
    base = torch.tensor([0.0, 1.0, 1.0])
    u2c, c2u = relation_tables(logits, base, top=2)
    assert u2c[0] == [(1, 2.0), (0, 1.0)] and u2c[1] == [(2, 4.0), (0, 2.0)]
    assert c2u[2] == [(1, 4.0), (0, -1.0)]


# ---------------------------------------------------------------- ablation
def test_ablation_p0_is_one_and_p1_is_bias_only():
    m = _model()
    batches = _batches()
    cache = cache_features(m, batches, "layer4")
    k = cache.feats.shape[1]
    full = torch.cat([m(b["video"]) for b in batches])
    assert torch.allclose(ablated_logits(m, cache, torch.ones(k, dtype=torch.bool)), full, atol=1e-5)
    res = ablation_sweep(m, cache, ps=(0.0, 0.5, 1.0), seeds=(0, 1))
    for r in res["rows"]:
        if r["p"] == 0.0:
            assert r["rel"] == pytest.approx(1.0)
    zero = ablated_logits(m, cache, keep_mask(k, 1.0, 0))
    assert torch.allclose(zero, m.fc.bias.expand_as(zero), atol=1e-6)  # bias-only outputs
    bias_metrics = evaluate(torch.sigmoid(m.fc.bias).expand(len(cache.targets), -1), cache.targets)
    for r in res["rows"]:
        if r["p"] == 1.0:
            assert r["value"] == pytest.approx(bias_metrics[r["metric"]])
    s = summarise(res["rows"])
    assert s["map_sample"]["p"] == [0.0, 0.5, 1.0] and s["map_sample"]["std"][0] == 0.0


def test_ablation_inner_block_and_nested_masks():
    m = _model()
    cache = cache_features(m, _batches(1), "layer3.0")
    k = cache.feats.shape[1]
    x = cache.feats.clone()
    keep = keep_mask(k, 0.25, 3)
    assert int((~keep).sum()) == round(0.25 * k) and not (keep_mask(k, 0.5, 3) & ~keep).any()
    x[:, ~keep] = 0
    assert torch.allclose(ablated_logits(m, cache, keep), logits_from(m, "layer3.0", x), atol=1e-5)


# ---------------------------------------------------------------- concept path
def test_concept_path_exact_block4_shares_and_grad_x_act():
    m = _model(layer4_stride=1)
    x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(5))
    k4 = m.fc.in_features
    rows = concept_path(m, x, 2, top_upper=k4, top_lower=2)
    step0 = [r for r in rows if r["step"] == 0]
    logit = m(x)[0, 2].detach()
    assert sum(r["contribution"] for r in step0) + m.fc.bias[2].item() == pytest.approx(float(logit), abs=1e-4)
    assert [r["contribution"] for r in step0] == sorted((r["contribution"] for r in step0), reverse=True)
    rows = concept_path(m, x, 2, top_upper=2, top_lower=3)
    parent = rows[0]["unit"]
    f3 = m.layer3(m.layer2(m.layer1(m.stem(x)))).detach().requires_grad_(True)
    m.layer4(f3)[0, parent].mean().backward()  # per-unit reference backward
    ref = (f3.grad * f3.detach())[0].flatten(1).sum(1)
    got = {r["unit"]: r["contribution"] for r in rows if r["step"] == 1 and r["parent"] == parent}
    top = ref.topk(3)
    assert list(got) == top.indices.tolist()
    np.testing.assert_allclose(list(got.values()), top.values.numpy(), rtol=1e-4, atol=1e-6)
    assert stage_aliases(m, "layer4") == ["layer4.1", "layer4"] and resolve_block(m, "layer3") == "layer3.1"
    assert find_block(m, "layer3") == "layer3.1" and find_block(m, "attend") is None  # no such block: None, not KeyError


def test_concept_path_shares_of_an_lse_head_are_exact():
    """With an LSE head the block-4 shares weight positions by the head's softmax; with its concentration
    term `(H - log P) / r` they add up to the logit exactly."""
    m = _model(layer4_stride=1, head_r=4.0)
    x = torch.randn(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(6))
    rows = concept_path(m, x, 1, top_upper=m.fc.in_features, top_lower=1)
    with torch.no_grad():
        f = m.forward_features(x)
        w = m.pool_weights(f, 1)[0]
        logit = float(m.forward_head(f)[0, 1])
    concentration = float(-(w * w.log()).sum() - math.log(w.numel())) / 4.0
    total = sum(r["contribution"] for r in rows if r["step"] == 0) + m.fc.bias[1].item() + concentration
    assert total == pytest.approx(logit, abs=1e-4) and concentration < 0


def test_a_trunk_that_works_after_its_last_block_is_refused_not_misread():
    """Block splits and concept paths rebuild the head's map from `blocks()`; a trunk whose `forward_features`
    does more after its last block (benchmarks/track_attention.py's attention) is an error naming the contract."""
    m = _model(layer4_stride=1).eval()
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(7))
    assert run_until(m, "layer3", {"video": x}).feats.shape[0] == 2  # a plain trunk passes

    class After(type(m)):
        def forward_features(self, v):
            return super().forward_features(v) * 2.0

    m2 = _model(layer4_stride=1).eval()
    m2.__class__ = After
    with pytest.raises(ValueError, match="do not give its last map"):
        run_until(m2, "layer3", {"video": x})
    with pytest.raises(ValueError, match="do not give its last map"):
        concept_path(m2, x[:1], 0)


# ---------------------------------------------------------------- localisation
def test_localisation_scores():
    mask = box_mask([(0, 0, 32, 32)], (32, 64), (8, 8))  # left half of a 64 x 32 frame
    assert mask[:, :4].all() and not mask[:, 4:].any()
    heat = np.zeros((8, 8))
    heat[2, 1], heat[5, 6] = 1.0, 0.5
    assert pointing(heat, mask) == 1.0 and energy(heat, mask) == pytest.approx(1 / 1.5)
    assert pointing(np.zeros((8, 8)), mask) == 0.0 and energy(np.zeros((8, 8)), mask) == 0.0
    plateau = np.zeros((8, 8))
    plateau[:, 3:8] = 1.0  # tied maxima: the first in raster order (column 3) is in the box, their centre is not
    assert pointing(plateau, mask) == 0.0 and pointing(plateau[:, ::-1].copy(), mask) == 1.0
    other = np.zeros((8, 8), bool)
    other[4:, 4:] = True  # another action's box, bottom right
    assert pointing_other(heat, mask, other) == 0.0  # the peak (2, 1) is in its own box
    assert pointing_other(heat[::-1, ::-1].copy(), mask, other) == 1.0  # peak (5, 6): the other actor
    assert pointing_other(heat[:, ::-1].copy(), mask, other) == 0.0  # peak (2, 6): background
    assert pointing_other(heat, mask, mask) == 0.0 and pointing_other(np.zeros((8, 8)), mask, other) == 0.0
    maps = torch.zeros(2, 1, 8, 8)
    maps[0, 0, :, :4], maps[1, 0, :, 4:] = 1.0, 1.0
    mm = method_maps(maps, torch.tensor([3, 4]), delta=0.05, sigma=1.1)
    assert mm["cam_max"][0, 0, :, :4].all() and not mm["cam_max"][0, 0, :, 4:].any()
    recs = [{"method": "cam", "class_idx": 3, "frame": 0, "pointing": 1.0, "energy": 0.5, "chance": 0.25,
             "pointing_path": 1.0, "chance_path": 0.5},
            {"method": "cam", "class_idx": 3, "frame": 1, "pointing": 0.0, "energy": 0.3, "chance": 0.25,
             "pointing_path": 1.0, "chance_path": 0.3}]
    rows = {(r["method"], r["score"], r["class_idx"], r["frame"]): r for r in aggregate(recs)}
    assert rows[("cam", "pointing", 3, -1)]["value"] == 0.5 and rows[("cam", "energy", -1, 1)]["value"] == 0.3
    assert rows[("chance", "pointing", -1, -1)]["value"] == 0.25 and rows[("cam", "pointing", -1, -1)]["n"] == 2
    assert rows[("cam", "pointing_path", -1, -1)]["value"] == 1.0
    assert rows[("chance", "pointing_path", -1, -1)]["value"] == pytest.approx(0.4)


def test_localisation_scores_a_lagging_map_against_the_neighbouring_frames(monkeypatch):
    """A map that shows each frame where its actor was one sampled frame earlier points at the previous
    frame's box (`pointing_prev` 1), not at its own (`pointing` 0) nor the next one's."""
    from types import SimpleNamespace

    import mmit_interp.explain.cam as cam_mod
    import mmit_interp.explain.localisation as loc

    T = 4
    masks = np.zeros((1, T, 8, 8), bool)
    for t in range(T):
        masks[0, t, 2 * t:2 * t + 2, 2 * t:2 * t + 2] = True  # the actor moves down the diagonal
    maps = torch.zeros(1, 1, T, 8, 8)
    for t in range(1, T):
        maps[0, 0, t, 2 * t - 1, 2 * t - 1] = 1.0  # peak in the previous frame's box
    maps[0, 0, 0, 7, 0] = 1.0
    monkeypatch.setattr(loc, "clip_inputs", lambda *a: {"video": None, "extra": {}, "actions": ["a"], "classes": [0],
                                                        "masks": masks, "present": np.ones((1, T), bool)})
    monkeypatch.setattr(cam_mod, "cam_for", lambda model: lambda video, classes: SimpleNamespace(
        maps=maps, classes=torch.tensor([classes])))
    recs = [r for r in loc.score_clip(None, ["a"], None, None) if r["method"] == "cam"]
    assert [r["pointing"] for r in recs] == [0.0] * T
    assert [r.get("pointing_prev") for r in recs] == [None, 1.0, 1.0, 1.0]
    assert [r.get("pointing_next") for r in recs] == [0.0, 0.0, 0.0, None]


def test_ownership_scores_which_action_is_where():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :, :3], masks[1, :, 2:] = True, True  # column 2 is in both boxes: not scored
    owner = np.full((4, 4), -1)
    owner[:, 0], owner[:2, 1] = 0, 1  # class 0's own pixels (8): 4 right, 2 wrong, 2 unowned
    owner[:, 3] = 1  # class 1's own pixels (4): all right
    got = {j: (acc, cov) for j, acc, cov in ownership(owner, masks)}
    assert got[0] == (pytest.approx(4 / 6), pytest.approx(6 / 8)) and got[1] == (1.0, 1.0)
    assert ownership(np.full((4, 4), -1), masks) == [(0, None, 0.0), (1, None, 0.0)]
    recs = [{"method": "cam_max", "class_idx": 3, "frame": 0, "ownership": 0.5, "coverage": 1.0, "chance_ownership": 0.5},
            {"method": "mcam", "class_idx": 3, "frame": 0, "coverage": 0.0, "chance_ownership": 0.5}]
    rows = {(r["method"], r["score"], r["class_idx"], r["frame"]): r for r in aggregate(recs)}
    assert rows[("chance", "ownership", -1, -1)]["value"] == 0.5 and rows[("mcam", "coverage", 3, -1)]["value"] == 0.0
    assert ("mcam", "ownership", -1, -1) not in rows and ("chance", "pointing", -1, -1) not in rows


def test_box_ownership_tells_edges_from_the_wrong_actor():
    """Maps blurred across the boundary of two side-by-side boxes lose pixel ownership at the edge but keep
    each box (box ownership 1); a map that prefers the other actor loses the box too."""
    from mmit_interp.explain.localisation import box_ownership

    masks = np.zeros((2, 4, 8), bool)
    masks[0, :, :4], masks[1, :, 4:] = True, True
    ramp = np.linspace(0.0, 1.0, 8)[None].repeat(4, 0)  # class 1 rises left to right, class 0 falls
    blurred = np.stack([1.0 - ramp + 0.2, ramp])  # class 0 wins the left 5 columns, one more than its box
    owner = blurred.argmax(0)
    assert [acc for _, acc, _ in ownership(owner, masks)] == [1.0, pytest.approx(3 / 4)]
    assert box_ownership(blurred, masks) == [(0, 1.0), (1, 1.0)]
    assert box_ownership(blurred[::-1].copy(), masks) == [(0, 0.0), (1, 0.0)]
    masks[1, :, 3] = True  # a column in both boxes is nobody's exclusive pixel
    assert box_ownership(blurred, masks) == [(0, 1.0), (1, 1.0)]
    recs = [{"method": "cam", "class_idx": 3, "frame": 0, "box_ownership": 1.0},
            {"method": "cam", "class_idx": 4, "frame": 0, "box_ownership": 0.0}]
    rows = {(r["method"], r["score"], r["class_idx"], r["frame"]): r for r in aggregate(recs)}
    assert rows[("cam", "box_ownership", -1, -1)]["value"] == 0.5 and rows[("cam", "box_ownership", 3, -1)]["value"] == 1.0


# ---------------------------------------------------------------- planted-bias test
def test_bias_zeroed_units_random_control_and_path_hits():
    from mmit_interp.analysis.bias import class_scores, path_hits, random_like, zeroed
    from mmit_interp.hooks import capture_activations

    m = _model()
    clips = {"video": torch.randn(5, 3, 4, 32, 32, generator=torch.Generator().manual_seed(3))}
    base = class_scores(m, clips)
    units = {"layer4.1": [0, 3, 5], "layer3.1": [1]}
    with zeroed(m, units), capture_activations(m, ["layer3.1", "layer4.1"]) as acts:
        ablated = class_scores(m, clips)
    assert acts["layer4.1"][:, [0, 3, 5]].abs().sum() == 0 and acts["layer4.1"][:, 1].abs().sum() > 0
    assert acts["layer3.1"][:, 1].abs().sum() == 0 and acts["layer3.1"][:, 0].abs().sum() > 0
    assert (ablated - base).abs().max() > 1e-4
    assert torch.equal(class_scores(m, clips), base)  # hooks removed
    with zeroed(m, {"layer4.1": []}):
        assert torch.equal(class_scores(m, clips), base)
    pool = {"layer4.1": [u for u in range(64) if u not in units["layer4.1"]], "layer3.1": list(range(2, 32))}
    picks = [random_like(units, pool, seed) for seed in (0, 1)]
    for p in picks:
        assert {b: len(us) for b, us in p.items()} == {"layer4.1": 3, "layer3.1": 1}
        assert all(set(us) <= set(pool[b]) and len(set(us)) == len(us) for b, us in p.items())
    assert picks[0] != picks[1] and random_like(units, pool, 0) == picks[0]
    rows = [{"layer": "layer4.1", "unit": 3, "label": "dotted"}, {"layer": "layer3.1", "unit": 5, "label": "red"}]
    assert path_hits(rows, "dotted", {"layer4.1": [3]}) == (True, True)
    assert path_hits(rows, "dotted", {"layer4.1": [4]}) == (False, True)  # labelled dotted, under the IoU bar
    assert path_hits(rows, "dotted", {"layer3.1": [3]}) == (False, True)  # unit 3 of the other block
    assert path_hits(rows, "striped", {"layer3.1": [5]}) == (True, False)


def test_bias_texture_units_by_rule(tmp_path):
    from mmit_interp.analysis.bias import labelled_units
    from mmit_interp.store import ResultsStore
    from mmit_interp.unit_labels import UnitLabel

    def rec(unit: int, label: str, iou: float, category: str = "texture") -> UnitLabel:
        return UnitLabel(unit, category, label, 1, iou, iou >= 0.04, 1.5, (), ())

    m = _model()
    with ResultsStore(tmp_path) as st:
        st.register_run({"sha256": "s", "path": "/p", "vocab": [f"act{i}" for i in range(C)], "model": {},
                         "transforms": {}, "config": {}, "metrics": {}})
        # unit 3: dotted on stills, falling (higher IoU) on tubes; 5: dotted on both; 6: dotted under the bar
        st.write_units("layer4", "broden", [rec(3, "dotted", 0.046), rec(5, "dotted", 0.06), rec(6, "dotted", 0.03)])
        st.write_units("layer4", "tubes", [rec(3, "falling", 0.055, "action"), rec(5, "dotted", 0.05),
                                           rec(6, "red", 0.05, "color")])
        st.write_units("layer3", "broden", [rec(1, "dotted", 0.05), rec(2, "red", 0.07, "color")])
        by_set, pool = labelled_units(st, m, "dotted")
        best, best_pool = labelled_units(st, m, "dotted", rule="best")
        with pytest.raises(ValueError, match="unknown unit rule 'any'"):
            labelled_units(st, m, "dotted", rule="any")
        only4 = labelled_units(st, m, "dotted", blocks=["layer4"])
        layer2 = labelled_units(st, m, "dotted", blocks=["layer2"])  # chosen, but not dissected
    assert by_set == {"layer3.1": [1], "layer4.1": [3, 5]} and pool == {"layer3.1": [2], "layer4.1": [6]}
    assert best == {"layer3.1": [1], "layer4.1": [5]} and best_pool == {"layer3.1": [2], "layer4.1": [3, 6]}
    assert only4 == ({"layer4.1": [3, 5]}, {"layer4.1": [6]}) and layer2 == ({}, {})


def test_bias_ablation_blocks():
    from mmit_interp.analysis.bias import ablation_blocks

    m = _model()
    track = build_model("i3d_r18_attend", C, width=8, attention_dim=8).eval()
    assert ablation_blocks(m) == ["layer3.1", "layer4.1"]  # the concept path's blocks, in execution order
    assert ablation_blocks(track) == ["layer4.1", "attend"]
    assert ablation_blocks(m, "all") == [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert ablation_blocks(m, ["layer4", "layer1.0", "layer1"]) == ["layer1.0", "layer1.1", "layer4.1"]
    with pytest.raises(ValueError, match="unknown block set 'layer4'"):
        ablation_blocks(m, "layer4")  # a name goes in a list: a bare string is a set's name
    with pytest.raises(KeyError, match="no block or stage 'layer9'"):
        ablation_blocks(m, ["layer9"])


def test_bias_removed_interval():
    from mmit_interp.analysis.bias import excess_interval, removed_interval

    # class 1: lure 0.5 / control 0.1 before, every clip's excess halved after; class 0 has no excess
    l0 = torch.tensor([[0.2, 0.4], [0.2, 0.6]])
    c0 = torch.tensor([[0.2, 0.1], [0.2, 0.1], [0.2, 0.1]])
    l1, c1 = l0.clone(), c0.clone()
    l1[:, 1] = torch.tensor([0.2, 0.4])
    got = removed_interval((l0, l1), (c0, c1), 1, n=500)
    assert got is not None and 0.25 < got[0] < got[1] < 0.75 and got == removed_interval((l0, l1), (c0, c1), 1, n=500)
    assert removed_interval((l0, l0), (c0, c0), 1) == [0.0, 0.0]
    assert removed_interval((l0, l1), (c0, c1), 0) is None  # no resample with a positive excess
    assert removed_interval((l0[:0], l1[:0]), (c0, c1), 1) is None
    # paired: twin i against original i, resampled together; an exact per-pair effect leaves no spread
    o0 = torch.tensor([[0.0, 0.1], [0.0, 0.3], [0.0, 0.2]])
    t0, t1 = o0 + torch.tensor([0.0, 0.2]), o0 + torch.tensor([0.0, 0.05])
    assert removed_interval((t0, t1), (o0, o0), 1, paired=True) == pytest.approx([0.75, 0.75])
    assert removed_interval((t0, t1), (o0, o0), 1)[0] < 0.75 - 0.1  # unpaired, the clips' spread shows
    assert excess_interval(t0, o0, 1, paired=True) == pytest.approx([0.2, 0.2])
    with pytest.raises(ValueError, match="as long"):
        removed_interval((t0, t1), (o0[:2], o0[:2]), 1, paired=True)


def test_bias_ablation_test_figures():
    from mmit_interp.analysis.bias import ablation_test, class_scores, zeroed

    m = _model()
    g = torch.Generator().manual_seed(4)
    lure, control = ({"video": torch.randn(n, 3, 4, 32, 32, generator=g)} for n in (4, 6))
    units, pool = {"layer4.1": [2, 7, 9, 11]}, {"layer4.1": [u for u in range(64) if u not in (2, 7, 9, 11)]}
    names = [f"act{i}" for i in range(C)]
    none = ablation_test(m, lure, control, 2, {"layer4.1": []}, pool, seeds=(0,), names=names)
    assert none["ablated"]["excess"] == none["excess"] and none["random"]["excess"] == [none["excess"]]
    assert none["ablated"]["other_classes"]["max_abs_change"] == 0
    r = ablation_test(m, lure, control, 2, units, pool, seeds=(0, 1), names=names)
    l0, c0 = class_scores(m, lure), class_scores(m, control)
    with zeroed(m, units):
        l1, c1 = class_scores(m, lure), class_scores(m, control)
    assert r["excess"] == pytest.approx(float(l0[:, 2].mean() - c0[:, 2].mean()))
    ab = r["ablated"]
    assert ab["excess"] == pytest.approx(float(l1[:, 2].mean() - c1[:, 2].mean())) and ab["excess"] != r["excess"]
    assert ab["removed"] == (pytest.approx((r["excess"] - ab["excess"]) / r["excess"]) if r["excess"] > 0 else None)
    others = [0, 1, 3, 4, 5]
    change = (c1 - c0)[:, others].abs().mean(0)
    oc = ab["other_classes"]
    assert oc["mean_abs_change"] == pytest.approx(float(change.mean())) and oc["max_abs_change"] > 0
    assert oc["max_abs_change"] == pytest.approx(float(change.max())) and oc["max_class"] == names[others[int(change.argmax())]]
    assert len(r["random"]["excess"]) == 2 and r["random"]["excess"][0] != r["random"]["excess"][1]
    lo, hi = ab["removed_ci"]
    assert lo < hi and (lo <= ab["removed"] <= hi or r["excess"] <= 0)
    empty = ablation_test(m, {"video": torch.zeros(0)}, control, 2, units, pool, seeds=(0,))
    assert empty["excess"] is None and empty["ablated"]["removed"] is None and empty["random"]["removed_mean"] is None


# ---------------------------------------------------------------- analyze_clip, CLI, figures
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from mmit_interp.checkpoint import save_checkpoint
    from mmit_interp.dataset import ClipTransform
    from mmit_interp.explain.render import write_video
    from mmit_interp.vocab import Vocabulary

    root = tmp_path_factory.mktemp("run")
    save_checkpoint(root / "checkpoints" / "best.pt", _model(), model_name="i3d_r18", model_kwargs={"width": 8},
                    vocab=Vocabulary([f"act{i}" for i in range(C)]), transforms=ClipTransform(4, 32).to_dict())
    rng = np.random.default_rng(0)
    write_video([rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(12)], root / "clip.mp4", fps=6)
    return root


def test_analyze_clip_files_store_and_rerun(tiny_run):
    from mmit_interp.analysis.clip_analysis import analyze_clip
    from mmit_interp.store import ResultsStore

    r = analyze_clip(tiny_run, tiny_run / "clip.mp4", top_k=3, display_size=64)
    json.dumps(r)
    assert r["n_frames"] == 4 and len(r["predictions"]) == C and len(r["cam_classes"]) == 3
    scores = [p["score"] for p in r["predictions"]]
    assert scores == sorted(scores, reverse=True)
    assert [c["class_idx"] for c in r["cam_classes"]] == [p["class_idx"] for p in r["predictions"][:3]]
    for paths in (r["mcam_frames"], r["mcam_layers"], r["strip_frames"], r["frames"], *r["cam_frames"].values(), *r["heat_frames"].values()):
        assert len(paths) == 4 and all(__import__("os").path.getsize(p) > 0 for p in paths)
    assert r["overlay_video"].endswith(".mp4")
    analyze_clip(tiny_run, tiny_run / "clip.mp4", top_k=2, display_size=64)
    with ResultsStore(tiny_run) as st:
        d = st.clip(r["clip_key"])
        assert d["params"]["top_k"] == 2 and len(d["files"]["cam"]) == 2 and len(st.clips()) == 1
    assert len(list((tiny_run / "cams" / r["clip_key"]).glob("cam_*.jpg"))) == 2 * 4  # stale files removed


def test_clip_concept_path_reuses_the_stored_clip(tiny_run, monkeypatch):
    """With the intake's key and an analysed clip, the "why" path neither re-hashes the file nor runs a
    forward pass to find the top class: it reads the stored predictions."""
    from mmit_interp import models
    from mmit_interp.analysis import clip_analysis
    from mmit_interp.analysis.clip_analysis import analyze_clip
    from mmit_interp.analysis.relations import clip_concept_path

    r = analyze_clip(tiny_run, tiny_run / "clip.mp4", top_k=2, display_size=64)

    def refuse(*a, **k):
        raise AssertionError("called although the store holds the clip")

    monkeypatch.setattr(clip_analysis, "clip_key", refuse)
    monkeypatch.setattr(models, "forward_batch", refuse)
    p = clip_concept_path(tiny_run, tiny_run / "clip.mp4", key=r["clip_key"], top_upper=2, top_lower=1)
    assert p["clip_key"] == r["clip_key"] and p["class_idx"] == r["predictions"][0]["class_idx"] and p["path"]


def test_cli_cam_and_analyze(tiny_run, tmp_path, capsys):
    from mmit_interp.cli import analyze_main, cam_main

    assert cam_main([str(tiny_run / "clip.mp4"), "--run", str(tiny_run), "--top-k", "2", "--out", str(tmp_path / "c"),
                     "--format", "gif", "--classes", "act1,4"]) == 0
    out = capsys.readouterr().out
    assert "act1" in out and (tmp_path / "c" / "overlay.gif").is_file()
    assert cam_main([str(tiny_run / "clip.mp4"), "--run", str(tiny_run), "--classes", "act1,act2", "--scale", "zscore",
                     "--out", str(tmp_path / "z"), "--no-record", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["scale"] == "zscore"
    assert analyze_main(["selectivity", "--run", str(tiny_run), "--blocks", "layer4,layer3"]) == 0
    assert "layer4.1" in capsys.readouterr().out
    assert analyze_main(["relations", "--run", str(tiny_run), "--unit", "0", "--top", "3"]) == 0
    assert analyze_main(["concept-path", str(tiny_run / "clip.mp4"), "--run", str(tiny_run), "--class", "act2"]) == 0
    out = capsys.readouterr().out
    assert "layer4.1 unit 0 -> classes" in out and "not dissected" in out  # relations: the last stage by default
    from mmit_interp.store import ResultsStore
    with ResultsStore(tiny_run) as st:
        st.write_ablation("layer4.1", [{"metric": "map_sample", "p": p, "seed": 0, "value": 1 - p, "rel": 1 - p}
                                       for p in (0, 0.5, 1)])
        st.write_eval({"hit@1": 0.5, "per_class_ap": [0.5, None, 0.2, 0.1, 0.9, 0.3]})
    assert analyze_main(["figures", "--run", str(tiny_run), "--out", str(tmp_path / "fig")]) == 0
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert "ablation_layer4.1_map_sample.svg" in names and "selectivity_softmax.png" in names
    assert any(n.startswith("class_ap_") and n.endswith(".svg") for n in names)
    assert analyze_main(["relations", "--run", str(tiny_run), "--class", "nope"]) == 2


def test_cli_localisation_json(tiny_run, tmp_path, capsys):
    from mmit_interp.cli import analyze_main
    from mmit_interp.explain.localisation import run_localisation, run_localisation_scales

    boxes = tmp_path / "boxes.csv"  # two actions side by side in every frame of the 64 x 48 clip
    boxes.write_text("clip,frame,action,x1,y1,x2,y2\n" + "".join(
        f"{tiny_run / 'clip.mp4'},{f},act1,0,0,32,48\n{tiny_run / 'clip.mp4'},{f},act2,32,0,64,48\n" for f in range(12)))
    assert analyze_main(["localisation", "--run", str(tiny_run), "--boxes", str(boxes), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got) == {"cam", "cam_max", "mcam", "chance"}
    assert all({"pointing", "energy"} <= set(got[m]) for m in ("cam", "cam_max", "mcam"))
    assert "ownership" in got["cam_max"] and got["chance"]["ownership"] == pytest.approx(0.5)
    assert got == run_localisation(tiny_run, boxes_csv=boxes, record=False)["summary"]  # JSON keeps floats exact
    assert analyze_main(["localisation", "--run", str(tiny_run), "--boxes", str(boxes), "--scale", "zscore", "--json"]) == 0
    z = json.loads(capsys.readouterr().out)
    r = run_localisation(tiny_run, boxes_csv=boxes, scale="zscore", record=False)
    assert z == r["summary"] and r["dataset"] == "boxes.csv (delta 0.05, sigma 1.1, normalise per clip by zscore)"
    assert z["cam"]["pointing"] == got["cam"]["pointing"]  # one affine per class: each own map peaks where it did
    both = run_localisation_scales(tiny_run, boxes_csv=boxes, scales=("minmax", "zscore"), record=False)
    assert both["minmax"]["summary"] == got and both["zscore"]["summary"] == z  # one CAM pass, the same figures
    with pytest.raises(ValueError, match="zscore"):
        run_localisation(tiny_run, boxes_csv=boxes, scale="rank", record=False)


def test_cli_help_does_not_import_torch():
    code = "import sys; from mmit_interp import cli; cli.cam_parser(); cli.analyze_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
