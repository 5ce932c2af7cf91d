"""Dashboard benchmark in headless Chromium against a live uvicorn on 127.0.0.1.

1. Upload -> first overlay visible: a generated 3-s clip is uploaded through the form; the clock
   runs from the click until the clip page's overlay image has loaded (cold: first clip, the model
   is loaded; warm: a second clip). Model: the embedded demo's run when `demo_out/runs/` has one
   (or `--run`), else an untrained stand-in with the demo recipe (i3d_r18 width 16, 8 x 64 x 64).
2. Unit grid: 2,048 dissected units in one layer: server render, page load, sort (IoU header,
   unit sort), category filter and concept search, timed inside the page with performance.now().

    python benchmarks/bench_webapp.py [--run RUN_DIR] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from webapp.main import create_app  # noqa: E402
from webapp.settings import DEFAULT_RUNS, Settings, expand_runs, is_run_dir, name_runs  # noqa: E402
from webapp_support import LiveServer, fill_store, make_run, tiny_clip  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def demo_run(arg: str | None, tmp: Path) -> tuple[Path, str]:
    """The run to benchmark (a scratch copy: the original stays as it is): `--run`, the demo's, or a stand-in."""
    demo = ROOT / DEFAULT_RUNS
    if arg or (demo.is_dir() and any(is_run_dir(c) for c in demo.iterdir())):
        runs = expand_runs([demo], "default")
        run = Path(arg).resolve() if arg else next((r for r in runs if r.name == "wlsep"), runs[0])
        out = tmp / "runs" / run.name
        shutil.copytree(run, out, ignore=shutil.ignore_patterns("cams", "uploads", "dissect", "tb"))
        return out, f"run {run}"
    import torch
    from mmit_interp.atomic import atomic_write_json
    from mmit_interp.checkpoint import save_checkpoint
    from mmit_interp.dataset import ClipTransform
    from mmit_interp.models import build_model
    from mmit_interp.vocab import Vocabulary

    run = tmp / "runs" / "standin"
    vocab = Vocabulary([f"class_{i}" for i in range(16)])
    torch.manual_seed(0)
    model = build_model("i3d_r18", len(vocab), width=16)
    save_checkpoint(run / "checkpoints" / "best.pt", model, model_name="i3d_r18", model_kwargs={"width": 16},
                    vocab=vocab, transforms=ClipTransform(frames=8, size=64).to_dict())
    atomic_write_json(run / "config.json", {"model": "i3d_r18", "model_kwargs": {"width": 16}, "frames": 8, "size": 64})
    return run, "untrained stand-in (i3d_r18 width 16, 8x64x64, 16 classes): no demo run found"


def bench_upload(browser, tmp: Path, run: Path, repeats: int) -> dict:
    """Seconds from the upload click to the first overlay image drawn, cold then warm."""
    app = create_app(Settings(runs=(run,), run_names=name_runs((run,))))
    name = next(iter(app.state.settings.run_names))
    times, server = [], []
    with LiveServer(app) as s:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for i in range(repeats + 1):
            clip = tiny_clip(tmp / f"bench{i}.mp4", seconds=3.0, fps=25, size=256, seed=100 + i)
            page.goto(f"{s.url}/runs/{name}/clips")
            page.set_input_files("#clip-file", str(clip))
            t0 = time.perf_counter()
            page.click("#upload-form button[type=submit]")
            page.wait_for_function("document.getElementById('overlay') && "
                                   "document.getElementById('overlay').complete && "
                                   "document.getElementById('overlay').naturalWidth > 0", timeout=120_000)
            times.append(time.perf_counter() - t0)
            sha = page.url.rstrip("/").split("/")[-1]
            server.append(json.loads((run / "cams" / sha / "result.json").read_text())["timings"])
        page.close()
    return {"cold_s": round(times[0], 3), "warm_s": [round(t, 3) for t in times[1:]],
            "warm_median_s": round(statistics.median(times[1:]), 3), "service_timings": server}


def bench_units(browser, tmp: Path, n_units: int = 2048) -> dict:
    """Render, load, sort, filter and search times of a 2,048-unit layer table."""
    run = make_run(tmp / "runs" / "units", None, analysed=False)
    import json as _json

    from mmit_interp.metrics import evaluate
    import numpy as np

    rng = np.random.default_rng(0)
    y = (rng.random((16, 4)) < 0.5).astype(np.float32)
    fill_store(run, evaluate(rng.random(y.shape), y), n_units=n_units)
    app = create_app(Settings(runs=(run,), run_names=name_runs((run,))))
    out = {}
    with LiveServer(app) as s:
        import httpx

        url = f"{s.url}/runs/units/units/layer4?concept_set=broden"
        t0 = time.perf_counter()
        r = httpx.get(url, timeout=60)
        out["server_render_s"] = round(time.perf_counter() - t0, 3)
        out["html_kb"] = round(len(r.content) / 1024, 1)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        t0 = time.perf_counter()
        page.goto(url, wait_until="load")
        out["page_load_s"] = round(time.perf_counter() - t0, 3)
        assert page.locator("#units-table tbody tr").count() == n_units
        timed = """([sel, action]) => { const t = performance.now(); action === 'click' ?
            document.querySelector(sel).click() : null; return performance.now() - t; }"""
        out["sort_iou_header_ms"] = round(page.evaluate(timed, ["#units-table thead th:nth-child(4)", "click"]), 1)
        out["sort_label_header_ms"] = round(page.evaluate(timed, ["#units-table thead th:nth-child(2)", "click"]), 1)
        out["filter_category_ms"] = round(page.evaluate("""() => { const s = document.getElementById('f-category');
            s.value = 'texture'; const t = performance.now(); s.dispatchEvent(new Event('change'));
            return performance.now() - t; }"""), 1)
        out["search_concept_ms"] = round(page.evaluate("""() => { const s = document.getElementById('f-search');
            document.getElementById('f-category').value = ''; s.value = 'polka'; const t = performance.now();
            s.dispatchEvent(new Event('input')); return performance.now() - t; }"""), 1)
        # A frame after the last change proves the page is not frozen (layout included).
        out["next_frame_ms"] = round(page.evaluate("""() => new Promise(r => { const t = performance.now();
            requestAnimationFrame(() => r(performance.now() - t)); })"""), 1)
        page.close()
    _json.dumps(out)
    return out


def main() -> None:
    """Run both benchmarks and print one JSON object."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run dir to benchmark the upload with (default: the demo's, else a stand-in)")
    p.add_argument("--repeats", type=int, default=3, help="warm uploads after the cold one")
    a = p.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as d, sync_playwright() as pw:
        tmp = Path(d)
        browser = pw.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        run, what = demo_run(a.run, tmp)
        result = {"model": what, "upload_to_first_overlay": bench_upload(browser, tmp, run, a.repeats),
                  "unit_grid_2048": bench_units(browser, tmp)}
        browser.close()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
