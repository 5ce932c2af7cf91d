"""`mmit-train`: training, evaluation, exact resume after a kill, fine-tuning, fusion, DDP."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmit_interp.checkpoint import CheckpointError, load_model, read_checkpoint
from train.loop import TrainConfig, evaluate_run, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(model_kwargs={"width": 8}, size=32, frames=4, batch_size=8, workers=0, progress=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "train.cli", *args]


def test_train_writes_a_self_describing_run_and_learns(tiny_mmit, tmp_path):
    res = train(TrainConfig(data=str(tiny_mmit), out=str(tmp_path / "run"), epochs=4, **SMALL))
    run = tmp_path / "run"
    for f in ("config.json", "moments_categories.txt", "class_weights.json", "metrics.jsonl", "eval.json",
              "baseline.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / f).is_file(), f
    assert any((run / "tb").iterdir())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4]
    for k in ("hit@1", "hit@5", "map_sample", "map_class", "map_micro", "clips_per_s", "data_wait_share"):
        assert k in lines[-1]
    base = json.loads((run / "baseline.json").read_text())
    assert res.metrics["map_sample"] > base["map_sample"] + 0.1  # learns the coloured squares
    cw = json.loads((run / "class_weights.json").read_text())
    assert cw["scheme"] == "min_over_n" and min(cw["weights"]) > 0 and max(cw["weights"]) == pytest.approx(1.0)
    model, meta = load_model(run)
    assert meta["transforms"]["frames"] == 4 and meta["model"]["kwargs"] == {"width": 8}
    m = evaluate_run(run, progress=False)
    best = max(lines, key=lambda x: x["map_sample"])
    assert m["map_sample"] == pytest.approx(best["map_sample"], abs=1e-6)  # best.pt is the best epoch
    ev = json.loads((run / "eval.json").read_text())  # eval.json describes best.pt, not the last epoch
    assert ev["checkpoint"] == "best.pt" and ev["epoch"] == best["epoch"]
    assert ev["map_sample"] == pytest.approx(best["map_sample"]) == res.metrics["map_sample"]
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig(data=str(tiny_mmit), out=str(run), epochs=4, **SMALL))


def _digest(path: Path) -> dict:
    return read_checkpoint(path)["state_dict"]


def test_killed_run_resumes_to_the_same_weights(tiny_mmit, tmp_path):
    common = ["--data", str(tiny_mmit), "--model-kwargs", '{"width": 8}', "--size", "32", "--frames", "4",
              "--batch-size", "8", "--workers", "1", "--epochs", "6", "--no-progress"]
    ref = tmp_path / "ref"
    subprocess.run(_cli(*common, "--out", str(ref)), cwd=ROOT, check=True, capture_output=True)
    run = tmp_path / "killed"
    p = subprocess.Popen(_cli(*common, "--out", str(run)), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        m = run / "metrics.jsonl"
        if m.is_file() and len(m.read_text().splitlines()) >= 2:
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    p.wait()
    assert not (run / "eval.json").exists(), "the run finished before it could be killed"
    done = read_checkpoint(run / "checkpoints" / "last.pt")["train_state"]["epoch"]
    assert 1 <= done < 6  # metrics line 2 may precede its checkpoint
    out = subprocess.run(_cli("--resume", "--out", str(run), "--no-progress"), cwd=ROOT, check=True,
                         capture_output=True, text=True)
    assert "map_sample" in out.stdout
    a, b = _digest(ref / "checkpoints" / "last.pt"), _digest(run / "checkpoints" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2, 3, 4, 5, 6]
    best = max(lines, key=lambda x: x["map_sample"])  # first maximum, as training picks it
    ev = json.loads((run / "eval.json").read_text())
    assert ev["epoch"] == best["epoch"] and ev["map_sample"] == pytest.approx(best["map_sample"], abs=1e-6)


def test_cli_help_and_bad_arguments():
    r = subprocess.run(_cli("--help"), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--init-from" in r.stdout and "wlsep" in r.stdout
    r = subprocess.run(_cli("--data", "x", "--out", "y", "--model-kwargs", "{oops"), cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not JSON" in r.stderr


def test_fine_tune_new_head_and_audio_fusion(tiny_mmit, tmp_path):
    src = train(TrainConfig(data=str(tiny_mmit), out=str(tmp_path / "src"), epochs=1, loss="bce", **SMALL))
    # another data set: same clips, only 2 classes -> new head, trunk copied
    other = tmp_path / "other"
    other.mkdir()
    (other / "moments_categories.txt").write_text("left,0\nright,1\n")
    for f in ("trainingSet.csv", "validationSet.csv"):
        rows = [r.split(",") for r in (tiny_mmit / f).read_text().splitlines()]
        (other / f).write_text("".join(f"{r[0]},{int(r[1]) % 2}\n" for r in rows))
    (other / "videos").symlink_to(tiny_mmit / "videos")
    ft = train(TrainConfig(data=str(other), out=str(tmp_path / "ft"), epochs=1, init_from=str(tmp_path / "src"),
                           lr=0.0, warmup_epochs=0, **SMALL))
    assert ft.model.fc.out_features == 2
    assert torch.equal(ft.model.layer1[0].conv1.weight, src.model.layer1[0].conv1.weight)
    with pytest.raises(CheckpointError, match="i3d_r18"):
        train(TrainConfig(data=str(tiny_mmit), out=str(tmp_path / "bad"), epochs=1, init_from=str(tmp_path / "src"),
                          **{**SMALL, "model_kwargs": {"width": 16}}))
    aud = train(TrainConfig(data=str(tiny_mmit), out=str(tmp_path / "aud"), model="soundnet",
                            epochs=1, **{**SMALL, "model_kwargs": {"width_mult": 0.25}}))
    assert 0 <= aud.metrics["map_sample"] <= 1
    fu = train(TrainConfig(data=str(tiny_mmit), out=str(tmp_path / "fu"), model="fusion", epochs=1,
                           init_visual=str(tmp_path / "src"), init_audio=str(tmp_path / "aud"), freeze_trunks=True,
                           **{**SMALL, "model_kwargs": {"visual_kwargs": {"width": 8},
                                                        "audio_kwargs": {"width_mult": 0.25}}}))
    assert torch.equal(fu.model.visual.layer1[0].conv1.weight, src.model.layer1[0].conv1.weight)
    model, meta = load_model(tmp_path / "fu")
    assert meta["model"]["name"] == "fusion"


def test_trunk_options_need_a_model_made_of_trunks(tmp_path):
    """`--init-visual` / `--freeze-trunks` act on the model's `parts()`; a single trunk has none, so they are errors."""
    from mmit_interp.vocab import Vocabulary
    from train.loop import build

    vocab = Vocabulary(["a", "b"])
    for over, flag in (({"freeze_trunks": True}, "--freeze-trunks"), ({"init_audio": str(tmp_path)}, "--init-audio")):
        with pytest.raises(ValueError, match=flag):
            build(TrainConfig(data=str(tmp_path), out=str(tmp_path), model_kwargs={"width": 8}, **over), vocab)
    fused = build(TrainConfig(data=str(tmp_path), out=str(tmp_path), model="fusion", freeze_trunks=True,
                              model_kwargs={"visual_kwargs": {"width": 8}, "audio_kwargs": {"width_mult": 0.25}}), vocab)
    assert sorted(fused.parts()) == ["audio", "visual"]
    assert [n for n, p in fused.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_distributed_two_processes_end_with_identical_weights(tiny_mmit, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                        str(ROOT / "tests" / "ddp_worker.py"), str(tiny_mmit), str(tmp_path / "run")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d0, d1 = (tmp_path / "digest_0.txt").read_text(), (tmp_path / "digest_1.txt").read_text()
    assert d0 == d1
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["world_size"] == 2
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_map_separation_trains_an_lse_head_and_is_refused_elsewhere(tiny_mmit, tmp_path):
    """`map_separation` adds the overlap of co-occurring classes' pooling weights to the loss and logs its
    epoch mean; it reads the LSE head's class maps, so a GAP head is refused before any training."""
    from mmit_interp.vocab import Vocabulary
    from train.loop import build

    kw = {**SMALL, "model_kwargs": {"width": 8, "head_r": 5.0}}
    train(TrainConfig(data=str(tiny_mmit), out=str(tmp_path / "sep"), epochs=2, map_separation=1.0, **kw))
    lines = [json.loads(x) for x in (tmp_path / "sep" / "metrics.jsonl").read_text().splitlines()]
    assert all(0.0 < x["map_overlap"] <= 1.0 for x in lines)  # 40 % of the tiny clips hold two actions
    train(TrainConfig(data=str(tiny_mmit), out=str(tmp_path / "plain"), epochs=1, **kw))
    assert "map_overlap" not in (tmp_path / "plain" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match="head_r"):
        build(TrainConfig(data=str(tmp_path), out=str(tmp_path), model_kwargs={"width": 8}, map_separation=1.0),
              Vocabulary(["a", "b"]))


def test_run_data_prefers_the_run_dirs_config(tmp_path):
    """A run dir's config.json says where its data is now (a shipped checkpoint installed elsewhere); the
    checkpoint's own training config is the fallback, for a bare checkpoint file."""
    from mmit_interp.checkpoint import run_data

    meta = {"config": {"data": "/where/it/was/trained"}}
    assert run_data(tmp_path, meta) == "/where/it/was/trained"
    (tmp_path / "config.json").write_text(json.dumps({"data": "/installed/world"}))
    assert run_data(tmp_path, meta) == "/installed/world"
    assert run_data(tmp_path / "best.pt", meta) == "/where/it/was/trained"
    assert run_data(tmp_path / "best.pt", {}) is None
