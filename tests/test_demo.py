"""End to end: the demo pipeline at the `tiny` preset, its outputs, idempotence and resume after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _demo(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmit_demo.cli", "--preset", "tiny", "--no-serve", "--quiet", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    """A tiny demo built by a run that is SIGKILLed during training and then resumed."""
    out = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(_demo(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if (out / "stages" / "train-wlsep.json").is_file():
            time.sleep(0.5)  # now inside the next training stage
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    p.wait()
    assert not (out / "stages" / "report.json").exists(), "the demo finished before it could be killed"
    r = subprocess.run(_demo(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    (out / "resume.log").write_text(r.stderr)
    return out


def _main(out: Path) -> str:
    return json.loads((out / "stages" / "main.json").read_text())["summary"]["run"]


def test_resumed_run_reused_finished_stages(demo_out):
    log = (demo_out / "resume.log").read_text()
    assert "[done] world" in log and "reused" in log.split("[done] world", 1)[1].splitlines()[0]
    assert "train-wlsep" in log and "reused" in log.split("[done] train-wlsep", 1)[1].splitlines()[0]


def test_every_stage_output_exists_and_is_sane(demo_out):
    runs = demo_out / "runs"
    rows = json.loads((demo_out / "report" / "table1.json").read_text())
    by_run = {r["run"]: r for r in rows}
    assert {"wlsep", "lsep", "warp", "bce", "audio", "fusion", "label-prior baseline"} <= set(by_run)
    for r in rows:
        for k in ("hit@1", "hit@5", "map_sample", "map_class", "map_micro"):
            assert 0.0 <= r[k] <= 1.0, (r["run"], k)
    base = by_run["label-prior baseline"]
    best_visual = max(by_run[n]["map_class"] for n in ("wlsep", "lsep", "warp", "bce"))
    assert best_visual > base["map_class"] + 0.05, (best_visual, base["map_class"])
    for name in ("wlsep", "lsep", "warp", "bce", "audio", "fusion"):
        assert (runs / name / "checkpoints" / "best.pt").is_file()
    # the visual trunks start from the 2-D twin pretrained on a separate still set
    assert (demo_out / "stills" / "broden" / "index.csv").is_file()
    assert (demo_out / "pretrain" / "still2d.pth").is_file()
    for name in ("wlsep", "lsep", "warp", "bce"):
        cfg = json.loads((runs / name / "config.json").read_text())
        assert cfg["inflate_from"] == str(demo_out / "pretrain" / "still2d.pth")
    # the main run (analysed, fused) is the visual run with the best validation map_sample
    main = _main(demo_out)
    ev = {n: json.loads((runs / n / "eval.json").read_text())["map_sample"] for n in ("wlsep", "lsep", "warp", "bce")}
    assert ev[main] == max(ev.values())
    fusion_cfg = json.loads((runs / "fusion" / "config.json").read_text())
    assert fusion_cfg["init_visual"] == str(runs / main)
    # dissection: at least one interpretable unit, unit tables for every concept set
    summary = json.loads((runs / main / "dissect" / "summary.json").read_text())
    interp = sum(layer["total"]["units"] for cs in summary["counts"].values() for layer in cs.values())
    assert interp >= 1
    for cs in ("broden", "actions", "broden+actions"):
        assert (runs / main / "dissect" / cs / "layer4" / "units.csv").is_file()
    # a CAM file per analysed clip, in the store
    from mmit_interp.store import ResultsStore

    cams = json.loads((demo_out / "stages" / "cams.json").read_text())["summary"]
    assert cams["keys"]
    with ResultsStore(runs / main) as st:
        for key in cams["keys"]:
            clip = st.clip(key)
            assert clip is not None and Path(clip["overlay_video"]).is_file()
    for stage in ("ablation", "selectivity", "localisation", "bias", "figures", "report"):
        assert (demo_out / "stages" / f"{stage}.json").is_file(), stage
    # dissection for video (issue 16): tube labels beside the stills, formulas, motion scores, clip sources
    assert {"broden", "actions", "broden+actions", "tubes"} <= set(summary["counts"])  # tubes add to the stills
    for cs in ("tubes", "broden+actions"):
        assert (runs / main / "dissect" / cs / "layer4" / "formulas.csv").is_file(), cs
    assert (runs / main / "dissect" / "tubes" / "layer4" / "gallery" / "clips.json").is_file()
    with ResultsStore(runs / main) as st:
        assert st.unit_motion("layer4") and st.unit_formulas("layer4", "tubes")
    assert (demo_out / "report" / "experiments.md").read_text().count("|") > 10


def test_fusion_leans_on_sound_for_heard_only_actions(demo_out):
    """Issue 15's modality check on the tiny demo's fusion run: the Shapley audio share of the heard-only
    action (`beeping`) is larger than that of the actions that are only seen."""
    from mmit_interp.explain.table import run_explanations

    r = run_explanations(demo_out / "runs" / "fusion", world=demo_out / "world", methods=["cam"], sanity_clips=0,
                         record=False)
    share = r["modality"]
    assert share["heard"]["n"] > 0 and share["seen"]["n"] > 0
    assert share["heard"]["mean"] > share["seen"]["mean"]


def test_second_run_reuses_everything_quickly(demo_out):
    t0 = time.time()
    r = subprocess.run(_demo(demo_out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[run ]" not in r.stderr
    assert time.time() - t0 < 60


def test_dashboard_answers_on_the_demo(demo_out):
    from fastapi.testclient import TestClient

    os.environ["MMIT_RUNS"] = str(demo_out / "runs")
    try:
        from webapp.main import create_app

        client = TestClient(create_app())
        main = _main(demo_out)
        for url in ("/", f"/runs/{main}", f"/runs/{main}/units", f"/runs/{main}/analysis", f"/runs/{main}/clips",
                    "/runs/wlsep"):
            assert client.get(url).status_code == 200, url
    finally:
        os.environ.pop("MMIT_RUNS", None)
