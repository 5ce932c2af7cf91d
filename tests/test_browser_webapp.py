"""The dashboard in real headless Chromium (Debian's, driven by Playwright): upload, overlay, units.

Screenshots go to `test-artifacts/screenshots/` (the chosen ones are copied to docs/img/).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from webapp.main import create_app
from webapp.settings import Settings, name_runs
from webapp_support import LiveServer, make_data, make_run, tiny_clip

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make browser-deps)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """uvicorn on 127.0.0.1 serving a tiny analysed run (256 dissected units)."""
    root = tmp_path_factory.mktemp("browser")
    run = make_run(root / "runs" / "tiny", make_data(root / "data"), n_units=256)
    app = create_app(Settings(runs=(run,), run_names=name_runs((run,))))
    with LiveServer(app) as s:
        s.root = root
        yield s


@pytest.fixture
def page(browser):
    """A fresh page at a desktop size; console errors fail the test."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, errors


def shot(page, name: str, full: bool = True) -> None:
    """Save a screenshot (whole page, or the viewport) as a test artefact."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


def test_upload_overlay_scrub_opacity_toggle(page, server):
    clip = tiny_clip(server.root / "upload.mp4", seconds=3.0, size=64)
    page.goto(server.url + "/runs/tiny/clips")
    page.set_input_files("#clip-file", str(clip))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#scrub", timeout=60_000)  # the wait page follows the job, then opens the permalink
    assert "/runs/tiny/clips/" in page.url
    preds = page.locator("#preds button.cls")
    assert preds.count() >= 1 and page.locator(".score").first.inner_text()
    page.wait_for_function("document.getElementById('overlay').naturalWidth > 0 && "
                           "document.getElementById('base').naturalWidth > 0")
    shot(page, "clip_mcam")

    scrub = page.locator("#scrub")
    scrub.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#frame-no").startswith("3 /")
    assert page.get_attribute("#base", "src").endswith("frame_2.jpg")
    assert page.get_attribute("#overlay", "src").split("/")[-1] in ("mcam_2.jpg", "mcam_layer_2.png")

    page.locator("#opacity").focus()
    for _ in range(4):
        page.keyboard.press("ArrowLeft")
    assert page.inner_text("#opacity-val") == "0.50"
    assert page.eval_on_selector("#layers", "e => e.style.opacity") == "0.5"

    first = preds.first
    cls = first.get_attribute("data-class")
    first.click()
    assert first.get_attribute("aria-pressed") == "true"
    assert page.is_hidden("#overlay") and page.is_visible(f"img.heat[data-class='{cls}']")
    assert page.get_attribute(f"img.heat[data-class='{cls}']", "src").endswith(f"heat_{cls}_2.png")
    assert first.inner_text() in page.inner_text("#showing")
    page.wait_for_function(f"document.querySelector(\"img.heat[data-class='{cls}']\").naturalWidth > 0")
    shot(page, "clip_class_cam")
    page.click("#show-mcam")
    assert page.is_visible("#overlay") and page.is_hidden(f"img.heat[data-class='{cls}']")
    page.click("#play")
    page.wait_for_function("document.getElementById('frame-no').textContent.startsWith('4 /') || "
                           "document.getElementById('frame-no').textContent.startsWith('1 /')")
    page.click("#play")
    assert page.locator("#cams img.cam").count() == preds.count()

    page.locator("#preds a", has_text="why this class?").first.click()  # the concept path view
    page.click("#compute-path")
    page.wait_for_selector("#concept-path > li > ol > li a", timeout=60_000)
    shot(page, "why")
    page.locator("#concept-path a").first.click()
    page.wait_for_selector("#unit-label")


def test_bad_upload_message_in_the_page(page, server):
    bad = server.root / "notes.mp4"
    bad.write_text("not a video at all\n" * 50)
    page.goto(server.url + "/runs/tiny/clips")
    page.set_input_files("#clip-file", str(bad))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-error")
    assert "not a video" in page.inner_text("#upload-error")
    shot(page, "upload_refused")


def test_units_sort_filter_search_and_open_unit(page, server):
    page.goto(server.url + "/runs/tiny/units/layer4?concept_set=broden")
    assert "of 256 units interpretable" in page.inner_text("#units-header")
    rows = page.locator("#units-table tbody tr:not([hidden])")
    assert rows.count() == 256
    page.select_option("#f-category", "texture")
    cats = page.eval_on_selector_all("#units-table tbody tr:not([hidden]) td:nth-child(3)", "els => els.map(e => e.textContent)")
    assert cats and set(cats) == {"texture"} and page.inner_text("#shown-count") == f"{len(cats)} shown"
    page.select_option("#f-category", "")
    page.fill("#f-search", "polka")
    labels = page.eval_on_selector_all("#units-table tbody tr:not([hidden]) td:nth-child(2)", "els => els.map(e => e.textContent)")
    assert labels and all("polka" in t for t in labels)
    page.fill("#f-search", "")
    page.select_option("#f-sort", "unit")
    units = page.eval_on_selector_all("#units-table tbody tr td:first-child", "els => els.map(e => +e.textContent)")
    assert units == sorted(units)
    page.click("#units-table thead th:nth-child(4)")  # IoU header: descending
    ious = page.eval_on_selector_all("#units-table tbody tr td:nth-child(4)", "els => els.map(e => +e.dataset.value)")
    assert ious == sorted(ious, reverse=True)
    shot(page, "units", full=False)
    page.locator("#units-table tbody tr a").first.click()
    page.wait_for_selector("#unit-label")
    assert "/runs/tiny/units/layer4/" in page.url and page.locator("#gallery img, #neighbours a").count() > 0
    shot(page, "unit")


def test_unit_page_plays_its_clip_gallery_and_units_filter_by_motion(page, server):
    page.goto(server.url + "/runs/tiny/units/layer4/2")
    page.wait_for_function("document.querySelector('#clip-gallery img').complete && "
                           "document.querySelector('#clip-gallery img').naturalWidth > 0", timeout=60_000)
    assert page.inner_text("#motion-badge") == "motion 0.82"
    assert "appearance" in page.get_attribute("#motion-badge", "title")
    shot(page, "unit_clips")
    page.goto(server.url + "/runs/tiny/units/layer4?concept_set=broden")
    page.fill("#f-motion", "0.5")
    motion = page.eval_on_selector_all("#units-table tbody tr:not([hidden])", "els => els.map(e => e.dataset.motion)")
    assert motion and all(m != "" and float(m) >= 0.5 for m in motion)
    assert page.inner_text("#shown-count") == f"{len(motion)} shown" and "motion_min=0.5" in page.url
    page.fill("#f-motion", "")
    page.check("#f-formula")
    with_formula = page.eval_on_selector_all("#units-table tbody tr:not([hidden])", "els => els.map(e => e.dataset.formula)")
    assert with_formula and set(with_formula) == {"1"} and len(with_formula) < 256 and "has_formula=true" in page.url
    page.uncheck("#f-formula")
    page.select_option("#f-sort", "motion")
    ranked = page.eval_on_selector_all("#units-table tbody tr td:nth-child(6)", "els => els.map(e => +e.dataset.value)")
    assert ranked == sorted(ranked, reverse=True) and ranked[0] > 0.5


def test_run_and_analysis_pages(page, server):
    page.goto(server.url + "/runs/tiny")
    assert page.locator("svg polyline").count() >= 2
    page.click("#class-ap thead th:nth-child(3)")
    aps = page.eval_on_selector_all("#class-ap tbody td:nth-child(3)", "els => els.map(e => +e.dataset.value)")
    assert aps == sorted(aps, reverse=True)
    shot(page, "run")
    page.goto(server.url + "/runs/tiny/analysis")
    assert page.is_visible("#table3") and page.locator("svg polyline").count() >= 1 and page.locator("svg rect").count() >= 4
    shot(page, "analysis")


def test_api_docs_render_without_network(page, server):
    pytest.importorskip("fastapi_offline", reason="self-hosted docs assets come from fastapi-offline")
    external: list[str] = []
    page.on("request", lambda r: external.append(r.url) if not r.url.startswith(server.url) else None)
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)  # one block per documented operation
    assert page.locator(".opblock").count() >= 15 and "Upload" in page.inner_text("body")
    assert not external, external
    shot(page, "api_docs", full=False)


def test_no_run_page(browser):
    with LiveServer(create_app(Settings())) as s:
        pg = browser.new_page()
        pg.goto(s.url)
        assert "make demo" in pg.inner_text("pre.cmd")
        shot(pg, "no_run")
        pg.close()


def demo_runs() -> list[Path]:
    """The embedded demo's runs (or `MMIT_BROWSER_RUNS`), when they have been built."""
    from webapp.settings import DEFAULT_RUNS, expand_runs, is_run_dir

    root = Path(os.environ.get("MMIT_BROWSER_RUNS", Path(__file__).resolve().parents[1] / DEFAULT_RUNS))
    if not root.is_dir() or not any(is_run_dir(c) for c in root.iterdir()):
        return []
    return list(expand_runs([root], "demo"))


def test_demo_run_pages(browser):
    """Every page on the real demo run (trained model, dissection, analyses): the README's screenshots."""
    runs = demo_runs()
    if not runs:
        pytest.skip("no demo run built (make demo)")
    from mmit_interp.store import ResultsStore

    def n_dissected(run: Path) -> int:
        if not (run / "results.sqlite").is_file():
            return 0
        with ResultsStore(run) as st:
            return len(st.layers())

    names = name_runs(tuple(runs))
    name = max(names, key=lambda n: n_dissected(names[n]))  # the main run: the one the demo dissects and analyses
    with LiveServer(create_app(Settings(runs=tuple(runs), run_names=names))) as s:
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        for path, shot_name in (("/", "demo_home"), (f"/runs/{name}", "demo_run"),
                                (f"/runs/{name}/analysis", "demo_analysis")):
            assert pg.goto(s.url + path).status == 200, path
            shot(pg, shot_name)
        pg.goto(s.url + f"/runs/{name}/clips")
        if pg.locator("#val-index").count():
            pg.select_option("#val-index", index=min(2, pg.locator("#val-index option").count() - 1))
            pg.click("#val-form button")
            pg.wait_for_selector("#scrub", timeout=120_000)
            pg.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
            shot(pg, "demo_clip_mcam")
            pg.locator("#preds button.cls").first.click()
            shot(pg, "demo_clip_class")
            pg.locator("#preds a", has_text="why this class?").first.click()
            if pg.locator("#compute-path").count():
                pg.click("#compute-path")
            pg.wait_for_selector("#concept-path li", timeout=120_000)
            top = pg.locator("#concept-path > li").first.inner_text().split(" unit ")[0]
            assert f"the units of {top} (the block the head reads)" in pg.inner_text("#path-note")
            shot(pg, "demo_why")
        assert pg.goto(s.url + f"/runs/{name}/units").status == 200
        shot(pg, "demo_units", full=False)
        if pg.locator("#units-table tbody tr a").count():
            pg.locator("#units-table tbody tr a").first.click()
            pg.wait_for_selector("#unit-label")
            if pg.locator("#clip-gallery img").count():  # demos built with the video stages (issue 16)
                pg.wait_for_function("[...document.querySelectorAll('#clip-gallery img')].every("
                                     "i => i.complete && i.naturalWidth > 0)", timeout=120_000)
                assert pg.locator("#motion-badge").count() and pg.locator("#formulas tbody tr").count()
            shot(pg, "demo_unit")
        pg.close()
    assert not errors, errors


def test_clip_method_switch_computes_and_shows_other_maps(page, server):
    clip = tiny_clip(server.root / "switch.mp4", seconds=3.0, size=64, seed=3)
    page.goto(server.url + "/runs/tiny/clips")
    page.set_input_files("#clip-file", str(clip))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#method-switch", timeout=60_000)
    assert page.get_attribute("#method-switch a[aria-current=page]", "data-method") == "cam"
    page.click("#method-switch a[data-method='gradcam++']")
    page.click("#compute-maps")
    page.wait_for_selector("#method-note", timeout=60_000)  # wait.js reloads the page when the job is done
    assert "method=gradcam" in page.url and "Grad-CAM++" in page.inner_text("#method-note")
    first = page.locator("#preds button.cls").first
    cls = first.get_attribute("data-class")
    first.click()
    assert "/methods/gradcam%2B%2B/heat_" in page.get_attribute(f"img.heat[data-class='{cls}']", "src")
    assert page.inner_text("#showing").startswith("Grad-CAM++ of")
    page.wait_for_function(f"document.querySelector(\"img.heat[data-class='{cls}']\").naturalWidth > 0")
    shot(page, "clip_method_switch")


OWN_VIDEO = [pytest.param("r3d_18", 4, 32, id="r3d_18"), pytest.param("mc3_18", 4, 32, id="mc3_18"),
             pytest.param("r2plus1d_18", 4, 32, id="r2plus1d_18"), pytest.param("swin3d_t", 4, 32, id="swin3d_t"),
             pytest.param("s3d", 16, 224, id="s3d"),  # 11 s; the MViTs 19-26 s (loaded machine)
             pytest.param("mvit_v2_s", 16, 224, id="mvit_v2_s", marks=pytest.mark.slow),
             pytest.param("mvit_v1_b", 16, 224, id="mvit_v1_b", marks=pytest.mark.slow)]


@pytest.mark.parametrize("arch,frames,size", OWN_VIDEO)
def test_imported_torchvision_model_clip_page(page, tmp_path, arch, frames, size):
    """A run made by mmit-import from a torchvision video model (random weights) serves a working clip page."""
    from mmit_interp.import_model import ModelSource, import_run

    (tmp_path / "classes.txt").write_text("".join(f"action {i}\n" for i in range(7)))
    run = import_run(ModelSource("torchvision", arch, str(tmp_path / "classes.txt"), frames=frames, size=size),
                     tmp_path / "runs" / arch)
    clip = tiny_clip(tmp_path / "upload.mp4", seconds=2.0, size=64)
    with LiveServer(create_app(Settings(runs=(run,), run_names=name_runs((run,))))) as s:
        page.goto(f"{s.url}/runs/{arch}/clips")
        page.set_input_files("#clip-file", str(clip))
        page.click("#upload-form button[type=submit]")
        page.wait_for_selector("#scrub", timeout=180_000)
        preds = page.locator("#preds button.cls")
        assert preds.count() == 7 and "action " in preds.first.inner_text()  # every class of the vocabulary
        page.wait_for_function("document.getElementById('overlay').naturalWidth > 0")
        cls = preds.first.get_attribute("data-class")
        preds.first.click()
        page.wait_for_function(f"document.querySelector(\"img.heat[data-class='{cls}']\").naturalWidth > 0")
        assert page.locator("#cams img.cam").count() == 5
        shot(page, f"own_model_{arch}")
