"""Load: 20 concurrent uploads of distinct clips against a live uvicorn on 127.0.0.1.

Every upload must be answered (202 queued), every job must finish with its own result, and the
whole run must stay within a time bound; the server keeps answering while the queue drains.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from webapp.main import create_app
from webapp.settings import Settings, name_runs
from webapp_support import LiveServer, make_run, tiny_clip

N_UPLOADS = 20
TIME_LIMIT_S = 90.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A live server on a tiny run, and 20 distinct generated clips."""
    root = tmp_path_factory.mktemp("load")
    run = make_run(root / "runs" / "tiny", None, analysed=False)
    clips = [tiny_clip(root / f"c{i}.mp4", seconds=1.0, size=32, seed=i, audio=i % 2 == 0).read_bytes()
             for i in range(N_UPLOADS)]
    app = create_app(Settings(runs=(run,), run_names=name_runs((run,)), queue_size=N_UPLOADS + 4))
    with LiveServer(app) as s:
        yield s, run, clips


def test_concurrent_uploads_all_answered_none_lost(served):
    server, run, clips = served
    t0 = time.perf_counter()

    def upload(i: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/api/runs/tiny/clips", files={"file": (f"c{i}.mp4", clips[i], "video/mp4")})

    with ThreadPoolExecutor(N_UPLOADS) as pool:
        answers = list(pool.map(upload, range(N_UPLOADS)))
    assert [r.status_code for r in answers] == [202] * N_UPLOADS, [r.text for r in answers if r.status_code != 202]
    shas = {r.json()["sha256"] for r in answers}
    assert len(shas) == N_UPLOADS
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get("/api/health").json()["ok"]  # still serving while the queue is full
        pending = set(shas)
        while pending and time.perf_counter() - t0 < TIME_LIMIT_S:
            for sha in list(pending):
                d = c.get(f"/api/runs/tiny/clips/{sha}").json()
                assert d["state"] != "failed", d
                if d["state"] == "done":
                    assert d["predictions"] and d["n_frames"] == 4
                    pending.discard(sha)
            time.sleep(0.2)
        assert not pending, f"{len(pending)} uploads unfinished after {TIME_LIMIT_S} s"
        stats = c.get("/api/health").json()["jobs"]
    assert stats["done"] == N_UPLOADS and stats["failed"] == 0
    assert len(list((run / "cams").glob("*/result.json"))) == N_UPLOADS
    print(f"{N_UPLOADS} uploads analysed in {time.perf_counter() - t0:.1f} s")
