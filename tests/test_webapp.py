"""Dashboard API and pages through FastAPI's TestClient: every route, every bad upload, path traversal."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from webapp.deps import get_analyzer
from webapp.jobs import JobQueue, QueueFull
from webapp.main import create_app
from webapp.settings import Settings, SettingsError, load_settings, name_runs
from webapp.uploads import UploadRejected, copy_capped
from webapp_support import CLASSES, make_data, make_run, mkv_clip, tiny_clip, wav_bytes

LOCAL = ("127.0.0.1", 50000)


def settings_for(*runs: Path, **kw) -> Settings:
    """Settings serving `runs` with test-sized limits."""
    return Settings(runs=tuple(runs), run_names=name_runs(tuple(runs)), **{"max_duration_s": 4.0, **kw})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A data folder, an analysed run, a bare run (no store) and clips."""
    root = tmp_path_factory.mktemp("webapp")
    data = make_data(root / "data")
    run = make_run(root / "runs" / "tiny", data)
    bare = make_run(root / "runs" / "bare", None, analysed=False)
    (bare / "eval.json").unlink()
    clip = tiny_clip(root / "clip.mp4")
    return {"root": root, "data": data, "run": run, "bare": bare, "clip": clip}


@pytest.fixture(scope="module")
def client(world) -> TestClient:
    """A client of an app serving both runs, requests coming from 127.0.0.1."""
    app = create_app(settings_for(world["run"], world["bare"]))
    with TestClient(app, client=LOCAL) as c:
        yield c


def wait_done(client: TestClient, url: str, timeout: float = 60.0) -> dict:
    """Poll a clip's API until its job is no longer queued or running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = client.get(url).json()
        if d["state"] not in ("queued", "running"):
            return d
        time.sleep(0.1)
    raise AssertionError(f"{url} still running after {timeout} s")


@pytest.fixture(scope="module")
def analysed(client, world) -> dict:
    """The generated clip uploaded through the API and analysed by the real service."""
    r = client.post("/api/runs/tiny/clips", files={"file": ("my clip.mp4", world["clip"].read_bytes(), "video/mp4")})
    assert r.status_code == 202, r.text
    d = wait_done(client, r.json()["api"])
    assert d["state"] == "done", d
    return d


# ------------------------------------------------------------------ settings and start-up
def test_settings_from_env_and_file(world, tmp_path, monkeypatch):
    runs_dir = world["run"].parent
    s = load_settings({"MMIT_RUNS": str(runs_dir), "MMIT_MAX_UPLOAD_MB": "2", "MMIT_UPLOAD_TOKEN": "t"})
    assert set(s.run_names) == {"tiny", "bare"} and s.max_upload_bytes == 2 * 2**20 and s.upload_token == "t"
    s = load_settings({"MMIT_RUNS": os.pathsep.join([str(world["run"]), str(world["bare"])])})
    assert list(s.run_names) == ["tiny", "bare"]
    cfg = tmp_path / "dash.json"
    cfg.write_text(json.dumps({"runs": [str(world["run"])], "max_duration_s": 9}))
    s = load_settings({"MMIT_WEBAPP_CONFIG": str(cfg)})
    assert list(s.run_names) == ["tiny"] and s.max_duration_s == 9
    with pytest.raises(SettingsError, match="not a directory"):
        load_settings({"MMIT_RUNS": str(tmp_path / "nope")})
    with pytest.raises(SettingsError, match="neither a run dir"):
        load_settings({"MMIT_RUNS": str(tmp_path)})
    with pytest.raises(SettingsError, match="must be a number"):
        load_settings({"MMIT_RUNS": str(world["run"]), "MMIT_MAX_UPLOAD_MB": "lots"})
    with pytest.raises(SettingsError, match="unknown keys"):
        cfg.write_text(json.dumps({"runz": []}))
        load_settings({"MMIT_WEBAPP_CONFIG": str(cfg)})
    monkeypatch.chdir(tmp_path)  # the default demo folder is missing: no error, no runs
    assert load_settings({}).runs == ()


def test_serve_refuses_public_bind_without_token(monkeypatch, world):
    from webapp.__main__ import main
    from webapp.serve import serve

    monkeypatch.delenv("MMIT_UPLOAD_TOKEN", raising=False)
    monkeypatch.setenv("MMIT_RUNS", "")
    with pytest.raises(SettingsError, match="refusing to bind 0.0.0.0"):
        serve([world["run"]], "0.0.0.0", 8123)
    with pytest.raises(SettingsError, match="not a directory"):
        serve([world["root"] / "missing"], "127.0.0.1", 8123)
    with pytest.raises(SystemExit, match="refusing to bind 10.0.0.1"):
        main(["--host", "10.0.0.1", str(world["run"])])


def test_no_run_page_says_how_to_make_one():
    with TestClient(create_app(Settings()), client=LOCAL) as c:
        r = c.get("/")
        assert r.status_code == 200 and "make demo" in r.text and "MMIT_RUNS" in r.text
        assert c.get("/api/runs").json()["runs"] == []
        assert c.get("/runs/tiny").status_code == 404


# ------------------------------------------------------------------ runs
def test_home_lists_runs(client):
    r = client.get("/")
    assert r.status_code == 200 and "/runs/tiny" in r.text and "/runs/bare" in r.text
    assert client.get("/api/runs").json()["runs"][0]["model"] == "i3d_r18"
    runs = {x["name"]: x for x in client.get("/api/runs").json()["runs"]}  # which runs have explanations
    assert runs["tiny"]["analysed"]["dissected_layers"] == ["layer3", "layer4"]
    assert runs["bare"]["analysed"] == {"dissected_layers": [], "clips": 0}
    assert "2 layer(s) dissected" in r.text and 'href="/runs/tiny/units"' in r.text


def test_run_page_metrics_table_curves_and_escaping(client, world):
    r = client.get("/runs/tiny")
    assert r.status_code == 200
    for name in ("mAP per sample", "mAP per class", "mAP micro", "hit@1", "hit@5", "wlsep", "i3d_r18"):
        assert name in r.text
    assert 'id="class-ap"' in r.text and "<polyline" in r.text
    assert "<script>alert(1)" not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    d = client.get("/api/runs/tiny").json()
    assert [m["key"] for m in d["metrics"]] == ["hit@1", "hit@5", "map_sample", "map_class", "map_micro"]
    assert d["per_class_ap"][3]["ap"] is None  # NaN (no positives) -> null, never invalid JSON
    assert d["has_baseline"] and all(m["baseline"] is not None for m in d["metrics"]) and "label-prior baseline" in r.text
    assert len(d["epochs"]) == 3 and d["curves"]["metrics"]["lines"]


def test_bare_run_says_which_commands_are_missing(client, world):
    r = client.get("/runs/bare")
    assert r.status_code == 200 and f"mmit-train --evaluate {world['bare']}" in r.text
    for page in ("/runs/bare/units", "/runs/bare/analysis"):
        r = client.get(page)
        assert r.status_code == 200 and "Not computed yet" in r.text and "mmit-" in r.text
    assert client.get("/api/runs/bare/units").json()["missing"][0]["command"].startswith("mmit-dissect")
    assert "--layers layer3 layer4 " in client.get("/api/runs/bare/units").json()["missing"][0]["command"]


def test_unknown_run_404_html_and_json(client):
    assert client.get("/runs/nope", headers={"accept": "text/html"}).status_code == 404
    r = client.get("/api/runs/nope")
    assert r.status_code == 404 and "no run named" in r.json()["detail"]


# ------------------------------------------------------------------ clips
def test_upload_analysis_page_files_and_permalink(client, analysed, world):
    sha, perm = analysed["sha256"], analysed["permalink"]
    assert perm == f"/runs/tiny/clips/{sha}"
    assert [p["name"] for p in analysed["predictions"]] and analysed["n_frames"] == 4
    assert analysed["has_audio"] is True  # the clip has a sound track
    f = analysed["frames"]
    assert len(f["base"]) == len(f["mcam"]) == 4 and set(f["heat"]) == set(f["cam"]) and f["strip"]
    for url in (f["base"][0], f["mcam"][-1], next(iter(f["heat"].values()))[0], analysed["video"][0]):
        assert client.get(url).status_code == 200, url
    page = client.get(perm)
    assert page.status_code == 200 and 'id="scrub"' in page.text and "why this class?" in page.text
    assert "has an audio track" in page.text and "my clip.mp4" in page.text
    assert "CAM min-max scaled over the whole clip" in page.text  # how the overlay was made (id="mcam-params")
    assert "&lt;script&gt;" in page.text and "<script>alert(1)" not in page.text
    assert (world["run"] / "uploads" / f"{sha}.mp4").is_file()  # content-addressed
    z = client.get(f"/api/runs/tiny/clips/{sha}/frames.zip")
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(z.content)).namelist()
    assert "frame_0.jpg" in names and any(n.startswith("heat_") and n.endswith(".png") for n in names)
    assert client.get(f"/api/runs/tiny/clips/{'0' * 64}/frames.zip").status_code == 404


def test_same_clip_is_analysed_once(client, analysed, world):
    jobs_before = client.get("/api/health").json()["jobs"]
    r = client.post("/api/runs/tiny/clips", files={"file": ("other-name.bin", world["clip"].read_bytes(), "x/y")})
    assert r.status_code == 200 and r.json()["state"] == "done" and r.json()["sha256"] == analysed["sha256"]
    assert client.get("/api/health").json()["jobs"] == jobs_before
    r = client.post("/runs/tiny/clips", files={"file": ("again.mp4", world["clip"].read_bytes(), "video/mp4")},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == analysed["permalink"]


def test_clips_page_lists_analysed_and_validation(client, analysed):
    r = client.get("/runs/tiny/clips")
    assert r.status_code == 200 and analysed["permalink"] in r.text and 'id="val-index"' in r.text
    d = client.get("/api/runs/tiny/clips").json()
    assert d["validation"]["total"] == 3 and d["analysed"][0]["sha256"] == analysed["sha256"]


def test_validation_clip_shows_ground_truth(client):
    d = client.get("/api/runs/tiny/clips").json()["validation"]["clips"][0]
    r = client.post("/runs/tiny/clips/validation", data={"index": d["index"]}, follow_redirects=False)
    assert r.status_code == 303
    v = wait_done(client, "/api" + r.headers["location"])
    assert v["state"] == "done" and v["ground_truth"] == sorted(d["labels"])
    assert all(p["truth"] == (p["name"] in d["labels"]) for p in v["predictions"])
    assert "Ground truth" in client.get(r.headers["location"]).text
    assert client.post("/api/runs/tiny/clips/validation", data={"index": 99}).status_code == 404


def test_clip_pages_404_and_bad_key(client):
    assert client.get("/api/runs/tiny/clips/" + "0" * 64).status_code == 404
    assert client.get("/api/runs/tiny/clips/not-a-hash").status_code == 422
    assert client.get("/runs/tiny/clips/" + "0" * 64, headers={"accept": "text/html"}).status_code == 404
    assert client.get("/api/jobs/j999999").status_code == 404


def test_job_status_route(client, world):
    clip = tiny_clip(world["root"] / "job.mp4", seed=5, audio=False)
    r = client.post("/api/runs/tiny/clips", files={"file": ("job.mp4", clip.read_bytes(), "video/mp4")})
    status = r.json()["status"]
    j = client.get(status).json()
    assert j["state"] in ("queued", "running", "done") and 0 <= j["progress"] <= 1
    d = wait_done(client, r.json()["api"])
    assert d["state"] == "done" and d["has_audio"] is False
    assert client.get(status).json()["result"]["sha256"] == r.json()["sha256"]


def test_failed_analysis_is_reported_and_can_be_retried(world):
    def broken(*a, **k):
        raise RuntimeError("model exploded")

    app = create_app(settings_for(world["run"]))
    app.dependency_overrides[get_analyzer] = lambda: broken
    clip = tiny_clip(world["root"] / "fail.mp4", seed=9)
    with TestClient(app, client=LOCAL) as c:
        r = c.post("/api/runs/tiny/clips", files={"file": ("f.mp4", clip.read_bytes(), "video/mp4")})
        d = wait_done(c, r.json()["api"])
        assert d["state"] == "failed" and "model exploded" in d["error"]
        page = c.get(r.json()["permalink"])
        assert page.status_code == 200 and "model exploded" in page.text
        app.dependency_overrides.clear()
        again = c.post(f"/api/runs/tiny/clips/{r.json()['sha256']}/analyse")
        assert again.status_code == 202
        assert wait_done(c, r.json()["api"])["state"] == "done"
        assert c.get("/api/health").json()["ok"]


# ------------------------------------------------------------------ bad uploads
def bad_uploads(world) -> list[tuple[str, bytes, int, str]]:
    """Refused uploads: (case, content, status, error code); all named .mp4 to prove content is checked."""
    good = world["clip"].read_bytes()
    mkv = mkv_clip(world["root"] / "whole.mkv").read_bytes()
    long_clip = tiny_clip(world["root"] / "long.mp4", seconds=6.0, fps=4, size=16, audio=False).read_bytes()
    return [("empty", b"", 400, "empty"),
            ("truncated mp4 (index lost)", good[: len(good) // 2], 422, "truncated"),
            ("truncated mkv (frames stop early)", mkv[: int(len(mkv) * 0.75)], 422, "truncated"),
            ("text", b"this is plain text, not a video\n" * 64, 415, "not_video"),
            ("audio only", wav_bytes(world["root"] / "tone.wav").read_bytes(), 415, "audio_only"),
            ("too long", long_clip, 422, "too_long"),
            ("frames over 4K", tiny_clip(world["root"] / "huge.mp4", seconds=0.25, fps=4, size=4352,
                                         audio=False).read_bytes(), 422, "frame_too_large")]


def test_every_bad_upload_is_a_clear_4xx_and_the_server_keeps_serving(client, world):
    for case, content, status, code in bad_uploads(world):
        r = client.post("/api/runs/tiny/clips", files={"file": ("clip.mp4", content, "video/mp4")})
        assert r.status_code == status, (case, r.text)
        assert r.json()["error"] == code and len(r.json()["detail"]) > 20
        page = client.post("/runs/tiny/clips", files={"file": ("clip.mp4", content, "video/mp4")})
        assert page.status_code == status and "Upload refused" in page.text and f'data-code="{code}"' in page.text
    r = client.post("/api/runs/tiny/clips", data={"x": "1"})
    assert r.status_code == 400 and r.json()["error"] == "no_file"
    assert client.get("/api/health").json()["ok"]
    assert not list((world["run"] / "uploads").glob(".upload-*"))  # no temp files left behind


def test_too_large_and_decode_timeout(world):
    app = create_app(settings_for(world["run"], max_upload_mb=0.01, decode_timeout_s=1e-6))
    with TestClient(app, client=LOCAL) as c:
        r = c.post("/api/runs/tiny/clips", files={"file": ("big.mp4", b"\0" * 200_000, "video/mp4")})
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        page = c.post("/runs/tiny/clips", files={"file": ("big.mp4", b"\0" * 200_000, "video/mp4")})
        assert page.status_code == 413 and "Upload refused" in page.text
        small = tiny_clip(world["root"] / "small.mp4", seconds=1.0, size=16, audio=False).read_bytes()
        assert len(small) < 10_000
        r = c.post("/api/runs/tiny/clips", files={"file": ("s.mp4", small, "video/mp4")})
        assert r.status_code == 422 and r.json()["error"] == "decode_timeout"
        assert c.get("/api/health").status_code == 200
    with pytest.raises(UploadRejected) as e:  # a stream without Content-Length is cut at the limit too
        copy_capped(io.BytesIO(b"x" * 5000), world["root"] / "cap", 4096)
    assert e.value.status == 413 and not list((world["root"] / "cap").iterdir())


def test_upload_token_and_remote_clients(world):
    clip = world["clip"].read_bytes()
    with TestClient(create_app(settings_for(world["run"])), client=("10.1.2.3", 4000)) as c:
        r = c.post("/api/runs/tiny/clips", files={"file": ("c.mp4", clip, "video/mp4")})
        assert r.status_code == 403 and r.json()["error"] == "remote"
        assert c.get("/runs/tiny").status_code == 200  # reading stays open
    with TestClient(create_app(settings_for(world["run"], upload_token="s3cret")), client=("10.1.2.3", 4000)) as c:
        assert c.post("/api/runs/tiny/clips", files={"file": ("c.mp4", clip, "video/mp4")}).status_code == 401
        bad = c.post("/api/runs/tiny/clips", files={"file": ("c.mp4", clip, "video/mp4")},
                     headers={"X-Upload-Token": "wrong"})
        assert bad.status_code == 401
        ok = c.post("/api/runs/tiny/clips", files={"file": ("c.mp4", clip, "video/mp4")}, data={"token": "s3cret"})
        assert ok.status_code in (200, 202)
        assert c.get("/api/settings").json()["upload_token"] is True and "s3cret" not in c.get("/api/settings").text
        assert 'id="upload-token"' in c.get("/runs/tiny/clips").text


# ------------------------------------------------------------------ files
@pytest.mark.parametrize("path", ["..%2fbare%2fconfig.json", "%2e%2e%2f%2e%2e%2fbare%2fconfig.json", "..%2f..%2fetc%2fpasswd",
                                  "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd", "cams/../../../../etc/passwd",
                                  "results.sqlite", "checkpoints/best.pt", "nope.png", "uploads"])
def test_path_traversal_and_unserved_files_are_404(client, path):
    r = client.get(f"/files/tiny/{path}")
    assert r.status_code == 404, (path, r.status_code)


def test_symlink_out_of_the_run_is_404(client, world):
    link = world["run"] / "escape.json"
    if not link.exists():
        link.symlink_to(world["bare"] / "config.json")
    assert client.get("/files/tiny/escape.json").status_code == 404
    assert client.get("/files/tiny/config.json").status_code == 200
    assert client.get("/files/nope/config.json").status_code == 404


# ------------------------------------------------------------------ units
def test_layers_in_trunk_order():
    from mmit_interp.models import build_model
    from webapp.services.units import trunk_order

    track = build_model("i3d_r18_attend", 5, width=4, attention_dim=8)  # stem, layer1.0 .. layer4.1, attend
    assert trunk_order(["attend", "layer1", "layer4", "layer4.0", "stem", "attend"], track) == \
        ["stem", "layer1", "layer4.0", "layer4", "attend"]
    assert trunk_order(["layer4", "conv9", "attend", "bogus"], track) == ["layer4", "attend", "bogus", "conv9"]
    assert trunk_order(["layer4", "attend"], None) == ["attend", "layer4"]  # no loadable model: alphabetical


def test_units_table_header_filter_search_sort(client):
    r = client.get("/runs/tiny/units/layer4?concept_set=broden")
    assert r.status_code == 200 and "units interpretable" in r.text and 'id="units-table"' in r.text
    assert "polka &lt;dots&gt;" in r.text
    d = client.get("/api/runs/tiny/units/layer4", params={"concept_set": "broden"}).json()
    n_int = sum(u["interpretable"] for u in d["units"])
    assert d["n_units"] == 64 and d["n_interpretable"] == n_int
    assert f"{n_int} of 64 units interpretable, {d['n_concepts']} concepts" in r.text
    ious = [u["iou"] for u in d["units"]]
    assert ious == sorted(ious, reverse=True)
    by_unit = client.get("/api/runs/tiny/units/layer4", params={"sort": "unit"}).json()["units"]
    assert [u["unit"] for u in by_unit] == sorted(u["unit"] for u in by_unit)
    tex = client.get("/api/runs/tiny/units/layer4", params={"category": "texture", "concept_set": "broden"}).json()
    assert tex["units"] and {u["category"] for u in tex["units"]} == {"texture"}
    found = client.get("/api/runs/tiny/units/layer4", params={"q": "polka"}).json()["units"]
    assert found and all("polka" in u["label"] for u in found)
    assert set(d["categories"]) == {"object", "texture", "color", "scene"}
    first = client.get("/api/runs/tiny/units").json()
    assert first["layer"] == "layer4" and [d["layer"] for d in first["layers"]][-1] == "layer4"  # the head's map
    counts = {d["concept_set"]: d["n_interpretable"] for d in first["layers"] if d["layer"] == "layer4"}
    assert counts[first["concept_set"]] == max(counts.values())  # the set that explains most units first
    assert client.get("/runs/tiny/units/layer9").status_code == 404


def test_unit_page(client):
    r = client.get("/runs/tiny/units/layer4/2")
    assert r.status_code == 200 and "broden+actions" in r.text and "/runs/tiny/units/layer4/3" in r.text
    d = client.get("/api/runs/tiny/units/layer4/2").json()
    assert {s["concept_set"] for s in d["concept_sets"]} == {"broden", "broden+actions"}
    assert {g["concept_set"] for g in d["gallery"]} == {"broden", "broden+actions"}
    assert client.get(d["gallery"][0]["url"]).headers["content-type"] == "image/jpeg"
    assert not client.get("/api/runs/tiny/units/layer4/9").json()["gallery"]
    assert "mmit-dissect" in client.get("/runs/tiny/units/layer4/9").text
    assert d["drives"][0]["name"] == CLASSES[2] and d["block"] == "layer4.1"
    assert d["selectivity"]["value"] is not None and d["concept_sets"][0]["runner_ups"]
    with_actions = next(s for s in d["concept_sets"] if s["concept_set"] == "broden+actions")
    assert with_actions["per_category"][0]["category"] == "action"  # the best per-category IoU in the fixture
    assert with_actions["best_without_action"]["category"] == "scene"
    assert 'class="data per-category"' in r.text
    assert d["neighbours"]["previous"] == 1 and d["neighbours"]["next"] == 3
    assert client.get("/runs/tiny/units/layer4/999").status_code == 404
    assert client.get("/api/runs/tiny/units/layer4/999").status_code == 404


def test_unit_clip_gallery_is_rendered_once_then_served(client, world, monkeypatch):
    from PIL import Image

    from webapp.services import units as unit_service

    d = client.get("/api/runs/tiny/units/layer4/2").json()
    assert [c["concept_set"] for c in d["clips"]] == ["broden"]  # only broden's layer4 has a clip source
    url = d["clips"][0]["url"]
    assert url == "/runs/tiny/units/layer4/2/clips/broden" and url in client.get("/runs/tiny/units/layer4/2").text
    gallery = world["run"] / "dissect" / "broden" / "layer4" / "gallery"
    r = client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    clip = Image.open(io.BytesIO(r.content))
    assert clip.format == "WEBP" and clip.size[0] == 3 * 112 + 2 * 3  # 3 top items of 112 px, 3 px apart
    (made,) = gallery.glob("unit_0002-*.webp")
    mtime = made.stat().st_mtime_ns

    def no_model(run):
        raise AssertionError("a cached clip must not load the model")

    monkeypatch.setattr(unit_service, "_gallery_model", no_model)
    again = client.get(url)
    assert again.content == r.content and made.stat().st_mtime_ns == mtime
    assert client.get("/runs/tiny/units/layer4/999/clips/broden").status_code == 404
    missing = client.get("/runs/tiny/units/layer4/2/clips/broden+actions")
    assert missing.status_code == 404 and "mmit-dissect" in missing.text
    assert not client.get("/api/runs/tiny/units/layer3/2").json()["clips"]


def test_unit_clips_refuse_a_changed_checkpoint(client, world):
    src = world["run"] / "dissect" / "broden" / "layer4" / "gallery" / "clips.json"
    other = world["run"] / "dissect" / "broden+actions" / "layer4" / "gallery" / "clips.json"
    d = json.loads(src.read_text())
    d["settings"]["checkpoint"] = "0123456789abcdef"
    other.write_text(json.dumps(d))
    try:
        r = client.get("/runs/tiny/units/layer4/1/clips/broden+actions")
        assert r.status_code == 409 and "checkpoint changed" in r.text and "mmit-dissect" in r.text
        d["settings"]["checkpoint"] = json.loads(src.read_text())["settings"]["checkpoint"]
        d["fingerprint"] = "0" * 16  # the concept set as it was at dissection time: changed since
        other.write_text(json.dumps(d))
        r = client.get("/runs/tiny/units/layer4/1/clips/broden+actions")
        assert r.status_code == 409 and "changed (or moved)" in r.text
    finally:
        other.unlink()


def test_motion_badge_and_units_filtered_and_sorted_by_motion(client):
    d = client.get("/api/runs/tiny/units/layer4/2").json()
    assert d["motion"]["kind"] == "motion" and d["motion"]["score"] == pytest.approx(0.82)
    page = client.get("/runs/tiny/units/layer4/2").text
    assert re.search(r'id="motion-badge" title="motion score m in \[0, 1\][^"]*">motion 0.82<', page)
    assert ">appearance 0.12<" in client.get("/runs/tiny/units/layer4/3").text
    assert client.get("/api/runs/tiny/units/layer4/5").json()["motion"]["kind"] == "unmoved"
    assert not any("motion score" in m["what"] for m in d["missing"])
    assert any("motion score" in m["what"] for m in client.get("/api/runs/tiny/units/layer3/2").json()["missing"])
    fast = client.get("/api/runs/tiny/units/layer4", params={"concept_set": "broden", "motion_min": 0.5}).json()
    assert fast["units"] and all(u["motion"] >= 0.5 for u in fast["units"]) and 2 in {u["unit"] for u in fast["units"]}
    assert fast["has_motion"] and fast["motion_min"] == 0.5
    ranked = client.get("/api/runs/tiny/units/layer4", params={"concept_set": "broden", "sort": "motion"}).json()["units"]
    scores = [u["motion"] for u in ranked]
    assert scores[-1] is None and scores[:-1] == sorted(scores[:-1], reverse=True)
    page = client.get("/runs/tiny/units/layer4?concept_set=broden&motion_min=0.5").text
    assert 'id="f-motion"' in page and 'value="0.5"' in page and 'data-motion="0.82"' in page


def test_formula_on_the_unit_page_and_units_filtered_and_sorted_by_it(client):
    d = client.get("/api/runs/tiny/units/layer4/2").json()
    (f,) = d["formulas"]
    assert f["concept_set"] == "broden" and f["formula"] == "(color-2 AND scene-2) OR texture-1"
    assert f["iou"] == pytest.approx(0.21) and f["label_iou"] == pytest.approx(0.15) and f["gain"] == pytest.approx(0.06)
    page = client.get("/runs/tiny/units/layer4/2").text
    assert 'id="formulas"' in page and "<strong>(color-2 AND scene-2) OR texture-1</strong>" in page and "+0.060" in page
    assert not d["missing"]  # labels, galleries, clips, formula, motion, selectivity: all there
    none = client.get("/api/runs/tiny/units/layer4/1").json()
    assert not none["formulas"] and any("formula" in m["what"] and "--formulas" in m["command"] for m in none["missing"])
    with_f = client.get("/api/runs/tiny/units/layer4", params={"concept_set": "broden", "has_formula": True}).json()
    assert with_f["has_formulas"] and with_f["units"] and all(u["formula"] and u["unit"] % 3 != 1 for u in with_f["units"])
    ranked = client.get("/api/runs/tiny/units/layer4", params={"concept_set": "broden", "sort": "formula"}).json()["units"]
    gains = [u["formula"]["gain"] for u in ranked if u["formula"]]
    assert gains == sorted(gains, reverse=True) and ranked[0]["unit"] == 2 and ranked[-1]["formula"] is None
    other = client.get("/api/runs/tiny/units/layer4", params={"concept_set": "broden+actions"}).json()
    assert not other["has_formulas"] and any("--formulas" in m["command"] for m in other["missing"])


# ------------------------------------------------------------------ analyses and concept path
def test_analysis_page(client, world):
    r = client.get("/runs/tiny/analysis")
    assert r.status_code == 200 and 'id="table3"' in r.text and 'id="counts"' in r.text and "<polyline" in r.text
    d = client.get("/api/runs/tiny/analysis").json()
    assert d["ablation"][0]["layer"] == "layer4" and d["ablation"][0]["rows"]
    assert [b["block"] for b in d["selectivity"]["softmax"]] == ["layer3.1", "layer4.1"]
    assert {(t["layer"], t["concept_set"]) for t in d["table3"]} >= {("layer4", "broden"), ("layer4", "broden+actions")}
    assert [m["what"] for m in d["missing"]] == ["matplotlib figures (PNG/SVG) of these analyses"]
    assert len(d["localisation"]) == 4 and 'id="localisation"' in r.text
    assert "mmit-analyze figures" in r.text
    from mmit_interp.analysis.figures import run_figures

    run_figures([world["run"]], world["run"] / "analysis")  # what the shown command runs
    d = client.get("/api/runs/tiny/analysis").json()
    assert not d["missing"] and d["figures"] and client.get(d["figures"][0]).headers["content-type"] == "image/png"


def test_concept_path_computed_on_request(client, world, analysed):
    sha, c = analysed["sha256"], analysed["predictions"][0]["class_idx"]
    url = f"/runs/tiny/clips/{sha}/why/{c}"
    before = client.get("/api" + url).json()
    assert before["missing"] and "mmit-analyze concept-path" in before["missing"][0]["command"]
    assert 'id="compute-path"' in client.get(url).text
    r = client.post(url, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == url
    deadline = time.time() + 60
    while (d := client.get("/api" + url).json())["job"]["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.1)
    assert d["job"]["state"] == "done" and d["path"] and not d["missing"], d
    assert all(u["children"] for u in d["path"])
    labels = [u["label"] for u in d["path"]] + [k["label"] for u in d["path"] for k in u["children"]]
    assert "not dissected" not in labels and any(lab.startswith("stripes-") for lab in labels)
    page = client.get(url)
    unit_url = f"/runs/tiny/units/{d['path'][0]['unit_layer']}/{d['path'][0]['unit']}"
    assert page.status_code == 200 and unit_url in page.text and client.get(unit_url).status_code == 200
    assert "the units of layer4.1 (the block the head reads) that drive the class, then the units of layer3.1" in page.text
    assert client.post(f"/api/runs/tiny/clips/{'0' * 64}/why/0").status_code == 404
    # a unit another concept set labels otherwise (e.g. a texture on stills, an action on tubes) says both
    from mmit_interp.store import ResultsStore
    from mmit_interp.unit_labels import UnitLabel

    top = d["path"][0]
    with ResultsStore(world["run"]) as st:
        for cs, cat, label, iou in (("other-a", "action", "falling", 0.5), ("other-b", "texture", "dotted", 0.3)):
            st.write_units(top["unit_layer"], cs, [UnitLabel(top["unit"], cat, label, 1, iou, True, 1.0, (), ())])
        try:
            again = client.get("/api" + url).json()["path"][0]
            assert (again["label"], again["iou"]) == ("falling", 0.5)
            assert {"concept_set": "other-b", "label": "dotted", "category": "texture", "iou": 0.3} in again["also"]
            assert "; dotted on other-b (IoU 0.300" in client.get(url).text
        finally:
            st.conn.execute("DELETE FROM units WHERE concept_set LIKE 'other-_'")
            st.conn.commit()


def test_why_page_shows_the_bias_test_of_the_biased_action(client, world, analysed):
    from mmit_interp.store import ResultsStore

    sha = analysed["sha256"]
    url = f"/runs/tiny/clips/{sha}/why/0"  # class 0, "juggling"
    assert client.get("/api" + url).json()["bias"] is None  # no stored test, no world planting a bias on it
    planted = world["data"] / "world.json"  # the run's data set becomes a synthetic world biased towards juggling
    planted.write_text(json.dumps({"bias": {"action": "juggling", "texture": "dotted"}}))
    try:
        missing = client.get("/api" + url).json()["bias"]["missing"]
        assert missing[0]["command"] == "mmit-analyze bias --run RUN_DIR --world WORLD"  # the API shows no server path
        assert f"mmit-analyze bias --run {world['run']} --world {world['data']}" in client.get(url).text  # the page does
        assert client.get(f"/api/runs/tiny/clips/{sha}/why/2").json()["bias"] is None  # another class
    finally:
        planted.unlink()
    summary = {"dataset": "w:val", "action": "juggling", "texture": "dotted", "planted": True, "n_lure": 12,
               "n_control": 30, "layers": ["layer3.1", "layer4.1"], "texture_units": {"layer3.1": [], "layer4.1": [3, 7]},
               "n_units": 2, "score": {"lure": 0.3, "control": 0.1}, "excess": 0.2,
               "paths": {"n": 12, "reaching_texture_unit": 5, "share": 5 / 12, "reaching_texture_label_any_iou": 7,
                         "top_upper": 5, "top_lower": 3},
               "ablated": {"score": {"lure": 0.15, "control": 0.1}, "excess": 0.05, "removed": 0.75,
                           "other_classes": {"mean_before": 0.4, "mean_after": 0.41, "mean_abs_change": 0.01,
                                             "max_abs_change": 0.03, "max_class": "dancing"}},
               "random": {"seeds": [0, 1], "excess": [0.19, 0.21], "removed": [0.05, -0.05], "removed_mean": 0.0,
                          "removed_max": 0.05}, "notes": []}
    with ResultsStore(world["run"]) as st:
        st.write_bias("w:val", "juggling", "dotted", summary)
    d = client.get("/api" + url).json()["bias"]
    assert d["summary"] == summary and not d["missing"]
    for part in ("On 12 clips where a dotted actor does something else", "an excess of +0.200",
                 "Zeroing the 2 units labelled dotted (layer3.1, layer4.1) leaves +0.050, 75% of the excess removed",
                 "as many random units remove 0% on average (at most 5%)", "at most 0.030, dancing"):
        assert part in d["sentence"], part
    page = client.get(url).text
    assert 'id="bias-sentence"' in page and "layer3.1: none; layer4.1: 3, 7" in page and "5 of 12" in page
    assert 'id="bias-rules"' not in page  # a summary from before the unit rules
    brief = {"n_units": 2, "paths_reaching": 5, "paths_share": 5 / 12, "excess_after": 0.05, "removed": 0.75,
             "other_mean_abs_change": 0.01, "other_max_abs_change": 0.03, "random_removed_mean": 0.0}
    twins = {"n_pairs": 40, "score": {"twin": 0.15, "original": 0.1}, "excess": 0.05, "excess_ci": [0.03, 0.07],
             "ablated": {"score": {"lure": 0.11, "control": 0.1}, "excess": 0.01, "removed": 0.8,
                         "removed_ci": [0.7, 0.9], "other_classes": {}},
             "random": {"seeds": [0], "excess": [0.05], "removed": [0.0], "removed_mean": 0.0, "removed_max": 0.0}}
    ruled = {**summary, "rule": "set", "counterfactual": twins,
             "by_rule": {"set": {**brief, "texture_units": summary["texture_units"], "cf_removed": 0.8,
                                 "cf_removed_ci": [0.7, 0.9], "cf_random_removed_mean": 0.0},
                         "best": {**brief, "n_units": 1, "paths_reaching": 2, "removed": 0.25,
                                  "texture_units": {"layer4.1": [7]}}}}
    with ResultsStore(world["run"]) as st:
        st.write_bias("w:val", "juggling", "dotted", ruled)
    d = client.get("/api" + url).json()["bias"]
    assert "Zeroing the 2 units labelled dotted on at least one concept set (layer3.1, layer4.1)" in d["sentence"]
    assert ("On 40 texture twins (a control clip with one actor dressed in dotted, nothing else changed) the juggling "
            "score rises by +0.050; zeroing the same units removes 80% of that rise, random units 0%.") in d["sentence"]
    rules = re.sub(r"\s+", " ", client.get(url).text.split('id="bias-rules"')[1].split("</table>")[0])
    assert '<tr class="chosen"><td>its label on at least one concept set</td><td>2</td><td>5 of 12</td><td>0.75</td>' in rules
    assert "<td>0.00</td><td>0.80 (0.70 to 0.90)</td></tr>" in rules
    assert "<td>its best label over every concept set</td><td>1</td><td>2 of 12</td><td>0.25</td>" in rules
    assert "<td>—</td></tr>" in rules  # no twin figure for that rule
    page = client.get(url).text
    assert 'id="bias-twins"' in page and "0.100 → 0.150: excess 0.050 (95 % interval 0.030 to 0.070)" in page
    assert client.get(f"/api/runs/tiny/clips/{sha}/why/2").json()["bias"] is None


def test_openapi_documents_every_api_route(client):
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    for p in ("/api/runs", "/api/runs/{run}", "/api/runs/{run}/clips", "/api/runs/{run}/clips/{sha}",
              "/api/runs/{run}/clips/{sha}/why/{class_idx}", "/api/jobs/{job_id}", "/api/runs/{run}/units/{layer}",
              "/api/runs/{run}/units/{layer}/{unit}", "/api/runs/{run}/analysis", "/api/health", "/api/settings",
              "/api/runs/{run}/analysis/explanations", "/api/runs/{run}/clips/{sha}/methods/{method}"):
        assert p in paths, p
        ok = spec["paths"][p]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok.get("$ref") or ok.get("anyOf"), (p, ok)  # a response model, not a bare object
    assert client.get("/docs").status_code == 200
    assert client.get("/static/clip.js").status_code == 200


# ------------------------------------------------------------------ web layer structure
def test_api_responses_carry_no_server_paths(client, world, analysed):
    for url in ("/api/runs", "/api/runs/tiny/clips", "/api" + analysed["permalink"], "/api/runs/tiny/units/layer4/2"):
        assert str(world["run"]) not in client.get(url).text, url
    assert "path" not in client.get("/api/runs/tiny").json()  # the page shows the run dir, the API does not
    for url in ("/api/runs/bare/units", "/api/runs/bare/analysis/explanations", "/api/runs/bare/analysis"):
        body = client.get(url).text
        assert "RUN_DIR" in body and str(world["bare"]) not in body, url  # missing pieces' commands too
    assert str(world["run"]) in client.get("/runs/tiny").text
    sha = analysed["sha256"]
    job = client.post(f"/api/runs/tiny/clips/{sha}/why/1").json()["job"]
    assert job["key"] == f"tiny:{sha}:why:1"


def test_uploads_are_hashed_once_and_analysed_under_that_key(world):
    seen = {}

    def spy(run_dir, clip, out_dir, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    app = create_app(settings_for(world["run"]))
    app.dependency_overrides[get_analyzer] = lambda: spy
    with TestClient(app, client=LOCAL) as c:
        clip = tiny_clip(world["root"] / "spy.mp4", seed=33).read_bytes()
        r = c.post("/api/runs/tiny/clips", files={"file": ("spy.mp4", clip, "video/mp4")})
        assert wait_done(c, r.json()["api"])["state"] == "failed"
    assert seen["key"] == r.json()["sha256"][:16] == hashlib.sha256(clip).hexdigest()[:16]


def test_routers_import_no_router_and_templates_build_every_link_with_url_for():
    import ast

    import webapp

    root = Path(webapp.__file__).parent
    routers = {p.stem for p in (root / "routers").glob("*.py")} - {"__init__"}
    for p in (root / "routers").glob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = {a.name for a in node.names} | {(node.module or "").split(".")[-1]}
                assert node.level != 1 or not names & routers, (p.name, ast.dump(node))
    for t in (root / "templates").glob("*.html"):
        text = t.read_text()
        assert not re.search(r'(href|src|action)="/', text), t.name  # every URL from url_for or the view data


def test_importing_main_builds_no_app(monkeypatch):
    import importlib

    import webapp.main

    monkeypatch.setenv("MMIT_RUNS", "/nonexistent/runs")
    importlib.reload(webapp.main)  # reading the settings is not an import-time side effect
    with pytest.raises(SettingsError, match="not a directory"):
        webapp.main.app  # noqa: B018 - built on first access, from the environment
    monkeypatch.setenv("MMIT_RUNS", "")
    importlib.reload(webapp.main)


# ------------------------------------------------------------------ job queue
def test_job_queue_bounded_dedup_failure_and_eviction():
    q = JobQueue(maxsize=2, keep=3)
    try:
        import threading

        gate = threading.Event()
        first = q.submit("a", lambda p: gate.wait(5) and "A")
        time.sleep(0.1)  # let the worker take "a"
        assert q.submit("a", lambda p: "dup") is first
        q.submit("b", lambda p: "B")
        q.submit("c", lambda p: 1 / 0)
        with pytest.raises(QueueFull):
            q.submit("d", lambda p: "D")
        gate.set()
        deadline = time.time() + 5
        while q.stats()["queued"] + q.stats()["running"] and time.time() < deadline:
            time.sleep(0.02)
        assert q.get(first.id).result == "A" and q.by_key("c").state == "failed"
        assert "ZeroDivisionError" in q.by_key("c").error
        for k in "defg":
            q.submit(k, lambda p: k)
            time.sleep(0.05)
        time.sleep(0.2)
        assert sum(q.stats()[s] for s in ("done", "failed")) <= 3  # old finished jobs forgotten
    finally:
        q.close()


def test_run_names_with_odd_characters_are_encoded_in_links(world):
    odd = make_run(world["root"] / "odd" / "my run #1 <b>", None, analysed=False)
    with TestClient(create_app(settings_for(odd)), client=LOCAL) as c:
        home = c.get("/")
        assert "/runs/my%20run%20%231%20%3Cb%3E" in home.text and "my run #1 &lt;b&gt;" in home.text
        assert c.get("/runs/my%20run%20%231%20%3Cb%3E").status_code == 200
        assert c.get("/files/my%20run%20%231%20%3Cb%3E/config.json").status_code == 200


def test_clip_analysed_by_the_cli_has_a_page(client, world):
    from mmit_interp.analysis.clip_analysis import analyze_clip

    clip = tiny_clip(world["root"] / "cli.mp4", seed=21)
    key = analyze_clip(world["run"], clip)["clip_key"]  # what `mmit-cam CLIP --run RUN` does
    listed = {c["sha256"]: c for c in client.get("/api/runs/tiny/clips").json()["analysed"]}
    assert key in listed and listed[key]["source"] == "mmit-cam" and listed[key]["filename"] == "cli.mp4"
    d = client.get(f"/api/runs/tiny/clips/{key}").json()
    assert d["state"] == "done" and d["frames"]["mcam"] and d["predictions"]
    assert client.get(f"/runs/tiny/clips/{key}").status_code == 200
    assert client.get(f"/api/runs/tiny/clips/{key}/frames.zip").status_code == 200


# ------------------------------------------------------------------ explanations, measured
def test_explanations_page_without_a_table_shows_the_command(client, world):
    d = client.get("/api/runs/bare/analysis/explanations").json()
    assert d["tables"] == [] and d["missing"][0]["command"].startswith("mmit-analyze explanations --run RUN_DIR")
    r = client.get("/runs/bare/analysis/explanations")
    assert r.status_code == 200 and "Not computed yet" in r.text and f"mmit-analyze explanations --run {world['bare']}" in r.text
    assert "/runs/tiny/analysis/explanations" in client.get("/runs/tiny/analysis").text
    assert "/runs/tiny/analysis/explanations" in client.get("/runs/tiny").text


def test_explanations_page_shows_the_stored_table(client, world):
    from mmit_interp.explain.table import METRICS
    from mmit_interp.store import ResultsStore

    values = {"cam": 0.3, "gradcam++": 0.6, "rise": 0.4, "random": 0.1}  # gradcam++ fails the sanity check
    rows = [{"method": m, "metric": k, "mean": 12.0 if k == "forwards" else v, "lo": v - 0.05, "hi": v + 0.05, "n": 7}
            for m, v in values.items() for k in METRICS]
    with ResultsStore(world["run"]) as st:
        st.write_explanations("w1:val", rows)
    try:
        d = client.get("/api/runs/tiny/analysis/explanations").json()
        assert not d["missing"] and d["sanity_limit"] == 0.5
        (t,) = d["tables"]
        assert t["dataset"] == "w1:val" and t["n_clips"] == 7
        assert [r["method"] for r in t["rows"]] == ["cam", "gradcam++", "rise", "random"]  # random last
        cam, gpp, _, rnd = t["rows"]
        assert cam["cells"]["pointing"] == {"mean": 0.3, "lo": 0.25, "hi": 0.35, "n": 7} and cam["forwards"] == 12.0
        assert "sanity" not in cam["cells"] and "forwards" not in cam["cells"]
        assert gpp["fails_sanity"] and gpp["label"] == "Grad-CAM++" and not cam["fails_sanity"] and rnd["baseline"]
        assert {c["metric"]: c["better"] for c in d["columns"]}["deletion"] == "lower"
        page = client.get("/runs/tiny/analysis/explanations").text
        assert page.count("FAILS SANITY") == 1 and "[0.250, 0.350]" in page and "w1:val" in page and "7 clips" in page
        assert 'data-method="random"' in page and str(world["run"]) not in client.get("/api/runs/tiny/analysis/explanations").text
    finally:
        with ResultsStore(world["run"]) as st:
            st.write_explanations("w1:val", [])


def stub_maps(calls: list, gate=None):
    """A method-maps service that records its call, waits for `gate`, and draws one-byte files (or fails on 'occlusion')."""
    def service(run_dir, clip, method, classes, out_dir, *, display_size):
        calls.append((method, list(classes), display_size))
        if gate is not None:
            gate.wait(20)
        if method == "occlusion":
            raise RuntimeError("occlusion ran out of cubes")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {kind: {str(c): [f"{kind}_{c}_{t}.{ext}" for t in range(2)] for c in classes}
                 for kind, ext in (("heat", "png"), ("cam", "jpg"))}
        for per in files.values():
            for names in per.values():
                for n in names:
                    (out / n).write_bytes(b"x")
        result = {"method": method, "classes": list(classes), "forwards": 129, "heat_frames": files["heat"],
                  "cam_frames": files["cam"]}
        (out / "result.json").write_text(json.dumps(result))
        return result
    return service


def test_method_switch_job_lifecycle_with_a_stubbed_service(world, analysed):
    import shutil
    import threading

    from webapp.deps import get_method_maps

    calls, gate = [], threading.Event()
    app = create_app(settings_for(world["run"]))
    app.dependency_overrides[get_method_maps] = lambda: stub_maps(calls, gate)
    sha = analysed["sha256"]
    api, page = f"/api/runs/tiny/clips/{sha}/methods/rise", f"/runs/tiny/clips/{sha}"
    with TestClient(app, client=LOCAL) as c:
        before = c.get(api).json()
        assert before["state"] == "not_computed" and before["heat"] == {} and before["label"] == "RISE"
        html = c.get(page, params={"method": "rise"}).text
        assert 'id="compute-maps"' in html and 'aria-current="page">RISE<' in html and "Plain per-class CAM maps" in html
        assert f'href="{page}?method=gradcam%2B%2B"' in c.get(page).text  # the switch, CAM current by default
        r = c.post(api)
        assert r.status_code == 202 and r.json()["job"]["key"] == f"tiny:{sha}:maps:rise"
        assert r.json()["permalink"] == f"{page}?method=rise"
        assert c.get(api).json()["state"] in ("queued", "running")
        assert 'id="job"' in c.get(page, params={"method": "rise"}).text
        gate.set()
        d = wait_done(c, api)
        top = list(analysed["frames"]["heat"])
        assert d["state"] == "done" and d["forwards"] == 129 and sorted(d["heat"]) == sorted(top)
        assert calls == [("rise", [int(x) for x in top], analysed["params"]["display_size"])]
        assert all(u.startswith(f"/files/tiny/cams/{sha}/methods/rise/heat_") for us in d["heat"].values() for u in us)
        assert c.get(d["heat"][top[0]][0]).status_code == 200
        html = c.get(page, params={"method": "rise"}).text
        assert "Plain per-class RISE maps" in html and d["heat"][top[0]][0] in html and 'id="method-note"' in html
        r = c.post(f"{page}/methods/rise", follow_redirects=False)  # cached: no second computation
        assert r.status_code == 303 and r.headers["location"] == f"{page}?method=rise" and len(calls) == 1
        r = c.post(f"/api/runs/tiny/clips/{sha}/methods/occlusion")
        assert wait_done(c, r.json()["api"])["state"] == "failed"
        html = c.get(page, params={"method": "occlusion"}).text
        assert "occlusion ran out of cubes" in html and 'id="compute-maps"' in html
        for bad in ("bogus", "cam"):
            assert c.get(f"/api/runs/tiny/clips/{sha}/methods/{bad}").status_code == 404
        assert c.get(page, params={"method": "bogus"}).status_code == 404
        assert c.post(f"/api/runs/tiny/clips/{'0' * 64}/methods/rise").status_code == 404
    shutil.rmtree(world["run"] / "cams" / sha / "methods")


def test_method_switch_with_the_real_service(client, analysed):
    sha = analysed["sha256"]
    r = client.post(f"/api/runs/tiny/clips/{sha}/methods/gradcam%2B%2B")
    assert r.status_code == 202, r.text
    d = wait_done(client, r.json()["api"])
    assert d["state"] == "done" and d["label"] == "Grad-CAM++" and sorted(d["heat"]) == sorted(analysed["frames"]["heat"])
    assert [len(v) for v in d["heat"].values()] == [analysed["n_frames"]] * len(d["heat"])
    assert client.get(d["cam"][next(iter(d["cam"]))][0]).headers["content-type"] == "image/jpeg"


def test_mcam_description_names_the_scale_and_scope():
    from webapp.services.clips import mcam_description

    z = mcam_description({"scale": "zscore", "normalise": "frame", "delta": 0.1, "sigma": 1.1})
    assert "standard units over each frame" in z and "within 0.1 of" in z
    assert "min-max scaled over the whole clip" in mcam_description({"normalise": "clip"})  # records before `scale`
    assert mcam_description({}) is None
