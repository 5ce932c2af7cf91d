"""The explanation table on the tiny trained world (tests/_trained.py): sanity, costs, store, CLI."""
from __future__ import annotations

import json

import pytest

from _trained import trained_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table():
    from mmit_interp.explain.table import run_explanations

    world, run = trained_world()
    return run, run_explanations(run, world=world, max_clips=3, sanity_clips=2)


def test_randomised_model_maps_differ_and_failures_are_flagged(table):
    _, r = table
    t, s = r["table"], r["sanity"]
    assert set(t) == {"cam", "gradcam", "gradcam++", "occlusion", "rise", "ig", "random"}
    print({m: round(t[m]["sanity"]["mean"], 3) for m in t})
    for m in t:  # a failing method stays in the table, flagged
        assert s[m]["passed"] == (t[m]["sanity"]["mean"] < 0.5) == t[m]["sanity"]["passed"]
        assert [g for g, _ in s[m]["curve"]] == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    passing = [m for m in t if s[m]["passed"]]
    assert {"cam", "occlusion", "random"} <= set(passing)
    assert sum(t[m]["sanity"]["mean"] for m in passing) / len(passing) < 0.5


def test_costs_and_metrics_present(table):
    _, r = table
    t = r["table"]
    assert t["cam"]["forwards"]["mean"] == 1 and t["gradcam"]["forwards"]["mean"] == 1
    assert t["occlusion"]["forwards"]["mean"] == 2 + 64 and t["rise"]["forwards"]["mean"] == 1 + 128
    assert t["ig"]["forwards"]["mean"] == 1 + 8
    for m in t:
        for k in ("pointing", "energy", "deletion", "insertion"):
            assert 0 <= t[m][k]["mean"] <= 1 and t[m][k]["lo"] <= t[m][k]["mean"] <= t[m][k]["hi"]
    assert t["occlusion"]["deletion"]["mean"] < t["random"]["deletion"]["mean"]


def test_store_and_cli_json(table, capsys):
    from mmit_interp.cli import analyze_main
    from mmit_interp.store import ResultsStore

    run, r = table
    with ResultsStore(run) as st:
        rows = st.explanations(r["dataset"])
    assert {(x["method"], x["metric"]) for x in rows} == {(m, k) for m in r["table"] for k in r["table"][m]}
    world, _ = trained_world()
    assert analyze_main(["explanations", "--run", str(run), "--world", str(world), "--methods", "cam",
                         "--max-clips", "2", "--sanity-clips", "1", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got) == {"cam", "random"} and set(got["cam"]["pointing"]) == {"mean", "lo", "hi"}
