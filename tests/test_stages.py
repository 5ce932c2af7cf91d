"""The demo's resumable stages: reuse, forcing, and what a rebuilt dependency does to its dependents."""
from __future__ import annotations

from pathlib import Path

import pytest

from mmit_demo.stages import Pipeline


def _pipeline(out: Path, calls: list[str], *, force: set[str] = frozenset(), contents: str = "v1") -> Pipeline:
    """Two stages: `weights` writes a file (same key whatever it writes), `train` reads it into a folder,
    resuming unfinished work the way the demo's training stages do."""
    p = Pipeline(out, force=set(force), log=lambda s: None)

    def weights() -> dict:
        calls.append("weights")
        (out / "w.txt").write_text(contents)
        return {}

    def train() -> dict:
        calls.append("train")
        run = out / "run"
        resumed = p.claim(run)
        if not resumed:
            (run / "model.txt").write_text((out / "w.txt").read_text())
        return {"resumed": resumed}

    p.run("weights", {"k": 1}, weights)
    p.run("train", {"k": 2}, train, deps=("weights",))
    return p


def test_second_pipeline_reuses_both_stages(tmp_path):
    calls: list[str] = []
    _pipeline(tmp_path, calls)
    p = _pipeline(tmp_path, calls)
    assert calls == ["weights", "train"] and all(r.cached for r in p.results.values())


def test_forced_dependency_reruns_its_dependents_from_scratch(tmp_path):
    calls: list[str] = []
    _pipeline(tmp_path, calls)
    p = _pipeline(tmp_path, calls, force={"weights"}, contents="v2")  # same key, new contents
    assert calls == ["weights", "train", "weights", "train"]
    assert p.results["train"].summary == {"resumed": False}
    assert (tmp_path / "run" / "model.txt").read_text() == "v2"


def test_interrupted_stage_resumes_its_own_work(tmp_path):
    calls: list[str] = []
    _pipeline(tmp_path, calls)
    (tmp_path / "stages" / "train.json").unlink()  # as if killed before the marker was written
    p = _pipeline(tmp_path, calls)
    assert p.results["weights"].cached and p.results["train"].summary == {"resumed": True}


def test_claim_outside_a_running_stage_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="running stage"):
        Pipeline(tmp_path).claim(tmp_path / "x")
