"""View data of the clip page's method switch: a clip's per-class maps by another explanation method.

CAM maps come with the clip's analysis; another method's maps of the same (stored top) classes are
computed on request by a queued job (`mmit_interp.explain.clip_maps.clip_method_maps`) and cached per
(clip, method) under `RUN/cams/<sha256>/methods/<method>/`; the clip viewer shows them instead of the CAMs.
"""
from __future__ import annotations

from urllib.parse import urlencode

from fastapi import HTTPException

from mmit_interp.explain.clip_maps import METHOD_LABELS, RESULT

from .. import intake
from ..jobs import JobQueue, QueueFull
from ..links import Links
from ..settings import ServedRun
from ..uploads import UploadRejected
from .readers import open_store, read_json


def switchable(method: str) -> str:
    """`method` when the clip page can switch to it (CAM is the default, not a switch), else 404."""
    if method not in METHOD_LABELS or method == "cam":
        raise HTTPException(404, f"no explanation method {method!r} to switch to; choose from "
                                 f"{', '.join(m for m in METHOD_LABELS if m != 'cam')} (CAM maps come with the clip)")
    return method


def choices(run: ServedRun, sha: str, current: str, links: Links) -> list[dict]:
    """The switch's entries: every method with the clip page URL that shows it, the current one marked."""
    page = links("clip_page", run=run.name, sha=sha)
    return [{"method": m, "label": label, "url": page if m == "cam" else page_of(run, sha, m, links), "current": m == current}
            for m, label in METHOD_LABELS.items()]


def page_of(run: ServedRun, sha: str, method: str, links: Links) -> str:
    """The clip page showing `method`'s maps."""
    return f"{links('clip_page', run=run.name, sha=sha)}?{urlencode({'method': method})}"


def top_classes(run: ServedRun, sha: str) -> tuple[list[int], int | None]:
    """The clip's stored top classes (those its analysis drew CAMs of) and the display size it drew them at."""
    with open_store(run.dir) as store:
        row = (store.clip(intake.store_key(sha)) if store else None) or {}
    classes = [int(c) for c in (row.get("files") or {}).get("heat") or {} if int(c) >= 0]
    return classes, (row.get("params") or {}).get("display_size")


def method_maps_view(run: ServedRun, sha: str, method: str, jobs: JobQueue, links: Links) -> dict:
    """A clip's maps by `method`: frame URLs per class when cached, else the state of their job."""
    out = intake.method_dir(run.dir, sha, method)
    done = read_json(out / RESULT)
    job = jobs.by_key(intake.method_key(run, sha, method))
    busy = job is not None and job.state in ("queued", "running")
    state = "done" if done and not busy else job.state if job else "not_computed"
    maps = done if state == "done" else {}
    return {"name": run.name, "sha256": sha, "method": method, "label": METHOD_LABELS[method], "state": state,
            "classes": maps.get("classes", []), "forwards": maps.get("forwards"),
            "heat": {c: links.files(run, fs, out) for c, fs in (maps.get("heat_frames") or {}).items()},
            "cam": {c: links.files(run, fs, out) for c, fs in (maps.get("cam_frames") or {}).items()},
            "error": job.error if job else None, "job": job.public(jobs.position(job)) if job else None,
            "permalink": page_of(run, sha, method, links),
            "api": links("clip_method", run=run.name, sha=sha, method=method)}


def start_method_maps(run: ServedRun, sha: str, method: str, jobs: JobQueue, service: intake.Service,
                      links: Links) -> dict:
    """Queue the clip's maps by `method` for its stored top classes (409 before its analysis, 503 when busy)."""
    classes, display_size = top_classes(run, sha)
    if not classes:
        raise HTTPException(409, f"clip {sha} has no analysed classes yet: analyse it first")
    try:
        job = intake.submit_method_maps(run, sha, method, classes, display_size, jobs, service)
    except QueueFull as e:
        raise UploadRejected(503, "busy", str(e)) from None
    return {"job": job.public(jobs.position(job)), "status": links("job", job_id=job.id),
            "permalink": page_of(run, sha, method, links),
            "api": links("clip_method", run=run.name, sha=sha, method=method)}


def with_method(view: dict, run: ServedRun, sha: str, method: str, jobs: JobQueue, links: Links) -> dict:
    """An analysed clip's page data with the method switch; another method's cached maps replace the CAMs."""
    chosen = None if method == "cam" else method_maps_view(run, sha, switchable(method), jobs, links)
    frames = view["frames"]
    if chosen and chosen["state"] == "done":
        frames = {**frames, "heat": chosen["heat"], "cam": chosen["cam"]}
    return {**view, "frames": frames, "switch": choices(run, sha, method, links), "method": chosen,
            "map_label": METHOD_LABELS[method] if chosen is None or chosen["state"] == "done" else "CAM"}
