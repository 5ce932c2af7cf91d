"""The shipped showcase run (issue 12): its card matches the checkpoint and the demo's world, and it
evaluates on a freshly generated default world to the numbers its card documents."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from mmit_demo.pipeline import DEMO_CLASSES, DemoConfig, demo_synth
from mmit_demo.showcase import CHECKPOINT, HISTORY, RECIPE, ShowcaseMismatch, applies, card, install_showcase, world_key


def test_card_describes_the_shipped_checkpoint():
    from mmit_interp.checkpoint import load_model

    c = card()
    assert CHECKPOINT.stat().st_size < 20 * 2**20  # the cap for shipped weights
    model, meta = load_model(CHECKPOINT)  # weights_only read, keys and shapes checked
    assert meta["model"] == {"name": RECIPE["model"], "kwargs": RECIPE["model_kwargs"]} == \
        {"name": c["recipe"]["model"], "kwargs": c["recipe"]["model_kwargs"]}
    assert tuple(meta["vocab"]) == DEMO_CLASSES
    assert meta["config"]["epochs"] == RECIPE["epochs"] and meta["config"]["loss"] == "bce"
    assert c["command"] == "python -m mmit_demo.showcase OUT" and c["seconds"] > 0
    epochs = [json.loads(line)["epoch"] for line in HISTORY.read_text().splitlines()]
    assert epochs == list(range(1, RECIPE["epochs"] + 1))  # the training curves the run page draws
    assert 0.17 < c["metrics"]["map_class"] <= 1 and 0.67 < c["metrics"]["map_sample"] <= 1  # above the label prior


def test_it_applies_to_the_default_world_only():
    default = asdict(demo_synth(DemoConfig().resolved()))
    assert applies(default), "the demo world changed: rebuild the showcase (python -m mmit_demo.showcase OUT)"
    assert world_key(default) == world_key({**default, "workers": 7})  # the worker count does not change the world
    tiny = asdict(demo_synth(DemoConfig(preset="tiny").resolved()))
    assert not applies(tiny)


def test_install_refuses_another_world(tmp_path):
    tiny = asdict(demo_synth(DemoConfig(preset="tiny").resolved()))
    with pytest.raises(ShowcaseMismatch, match="trained on another world"):
        install_showcase(tmp_path / "world", tmp_path / "run", tiny)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_shipped_checkpoint_evaluates_to_its_card(tmp_path, monkeypatch):
    """Generate the default world here and evaluate the shipped weights on its 300 validation clips."""
    from mmit_interp.synth import generate_world

    synth = demo_synth(DemoConfig(workers=2).resolved())
    generate_world(tmp_path / "world", synth, progress=False)
    r = install_showcase(tmp_path / "world", tmp_path / "runs" / "showcase", asdict(synth), workers=2, device="cpu")
    for k, v in card()["metrics"].items():
        assert r["metrics"][k] == pytest.approx(v, abs=0.005), k
    from mmit_interp.analysis.ablation import run_ablation
    from mmit_interp.checkpoint import load_model, read_checkpoint, run_data

    run = tmp_path / "runs" / "showcase"  # trained in another folder: the analyses read the world it is installed on
    assert read_checkpoint(CHECKPOINT)["config"]["data"] != str(tmp_path / "world")
    assert run_data(run, load_model(run)[1]) == str(tmp_path / "world")
    assert run_ablation(run, ps=(0.0,), seeds=(0,), max_clips=16, record=False)["rows"]
    ev = json.loads((tmp_path / "runs" / "showcase" / "eval.json").read_text())
    assert ev["checkpoint"] == "best.pt" and ev["showcase"] == str(CHECKPOINT)
    from fastapi.testclient import TestClient

    from webapp.main import create_app

    monkeypatch.setenv("MMIT_RUNS", str(tmp_path / "runs"))
    page = TestClient(create_app()).get("/runs/showcase")  # says which weights, draws the shipped curves
    assert page.status_code == 200 and "shipped checkpoint" in page.text and "metrics.jsonl" not in page.text
