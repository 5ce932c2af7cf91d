"""Clip pages: upload or pick a validation clip, follow the job, then predictions and CAM overlays."""
from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse

from .. import intake, services
from ..deps import get_analyzer, get_concept_path, get_jobs, get_run, get_settings
from ..jobs import JobQueue, QueueFull
from ..services import seg
from ..settings import Settings, is_local_host
from ..templating import templates
from ..uploads import UploadRejected

router = APIRouter(include_in_schema=False)
SHA = PathParam(pattern="^([0-9a-f]{16}|[0-9a-f]{64})$",
                description="sha256 of the clip's bytes (uploads), or the 16-digit clip key of `mmit-cam`")


def upload_guard(request: Request, settings: Settings = Depends(get_settings),
                 token: str | None = Form(None)) -> None:
    """Uploads need the token when one is configured; without one, only local clients may upload."""
    given = request.headers.get("x-upload-token") or token
    if settings.upload_token:
        if not given or not hmac.compare_digest(given, settings.upload_token):
            raise UploadRejected(401, "token", "uploading needs the upload token (MMIT_UPLOAD_TOKEN): send it as the "
                                               "X-Upload-Token header or the token form field")
    elif not is_local_host(request.client.host if request.client else ""):
        raise UploadRejected(403, "remote", "uploads from other machines are off: the server has no upload token "
                                            "(set MMIT_UPLOAD_TOKEN to allow them)")


def start_analysis(name: str, run: Path, file: UploadFile | None, settings: Settings, jobs: JobQueue,
                   analyzer: Callable[..., dict[str, Any]]) -> dict:
    """Accept an uploaded clip and queue its analysis (shared by the form and the API)."""
    if file is None or (not file.filename and not file.size):
        raise UploadRejected(400, "no_file", "no file was sent: choose a video clip to upload")
    clip = intake.accept(file.file, run, settings, filename=file.filename)
    return queue_analysis(name, run, clip.sha256, settings, jobs, analyzer)


def start_validation(name: str, run: Path, index: int, settings: Settings, jobs: JobQueue,
                     analyzer: Callable[..., dict[str, Any]]) -> dict:
    """Accept validation clip `index` (with its ground truth) and queue its analysis."""
    found = services.validation_clip(run, index)
    if found is None:
        raise HTTPException(404, f"the run's validation set has no clip {index}")
    path, rel, labels = found
    clip = intake.accept_path(path, run, settings, labels=labels, rel=rel)
    return queue_analysis(name, run, clip.sha256, settings, jobs, analyzer)


def queue_analysis(name: str, run: Path, sha: str, settings: Settings, jobs: JobQueue,
                   analyzer: Callable[..., dict[str, Any]]) -> dict:
    """Submit the job (503 when the queue is full) and describe it."""
    try:
        job = intake.submit(name, run, sha, jobs, analyzer, settings.top_k)
    except QueueFull as e:
        raise UploadRejected(503, "busy", str(e)) from None
    return intake.job_view(name, sha, job, jobs)


def clips_context(name: str, run: Path, settings: Settings) -> dict:
    """Data of the clips page: analysed clips, the validation set to pick from, whether uploads need the token."""
    return {"name": name, "analysed": services.analysed_clips(name, run), "validation": services.validation_clips(run),
            "token_required": bool(settings.upload_token)}


@router.get("/runs/{run}/clips", response_class=HTMLResponse)
def clips_page(request: Request, run: tuple[str, Path] = Depends(get_run), settings: Settings = Depends(get_settings)):
    """Upload form, validation clips and the clips analysed so far."""
    return templates.TemplateResponse(request, "clips.html", clips_context(*run, settings))


@router.post("/runs/{run}/clips", response_class=HTMLResponse)
def upload_form(request: Request, run: tuple[str, Path] = Depends(get_run), file: UploadFile | None = File(None),
                settings: Settings = Depends(get_settings), jobs: JobQueue = Depends(get_jobs),
                analyzer=Depends(get_analyzer), _: None = Depends(upload_guard)):
    """The upload form's target: redirect to the clip's permalink, or show the refusal."""
    view = start_analysis(*run, file, settings, jobs, analyzer)
    return RedirectResponse(view["permalink"], status_code=303)


@router.post("/runs/{run}/clips/validation", response_class=HTMLResponse)
def pick_validation(request: Request, index: int = Form(...), run: tuple[str, Path] = Depends(get_run),
                    settings: Settings = Depends(get_settings), jobs: JobQueue = Depends(get_jobs),
                    analyzer=Depends(get_analyzer)):
    """Analyse a clip of the run's validation set (its labels are the ground truth)."""
    view = start_validation(*run, index, settings, jobs, analyzer)
    return RedirectResponse(view["permalink"], status_code=303)


def clip_state(name: str, run: Path, sha: str, jobs: JobQueue) -> dict:
    """The clip's analysis (when done) or its job's status; 404 for an unknown clip."""
    if not intake.known(run, sha):
        raise HTTPException(404, f"no clip {sha} in run {name!r}: upload it first")
    job = jobs.by_key(f"{run}:{sha}")
    busy = job is not None and job.state in ("queued", "running")
    if not busy and intake.result_path(run, sha).is_file():
        return {"state": "done", **services.clip_view(name, run, sha)}
    if job is None:
        return {"state": "not_analysed", "name": name, "sha256": sha,
                "detail": "this clip was uploaded but its analysis is not in the queue (the server restarted)"}
    return {**intake.job_view(name, sha, job, jobs), "name": name}


@router.get("/runs/{run}/clips/{sha}", response_class=HTMLResponse)
def clip_page(request: Request, sha: str = SHA, run: tuple[str, Path] = Depends(get_run),
              jobs: JobQueue = Depends(get_jobs)):
    """Permalink of an analysed clip: predictions, mCAM overlay, per-class CAMs, downloads."""
    data = clip_state(*run, sha, jobs)
    return templates.TemplateResponse(request, "clip.html" if data["state"] == "done" else "clip_wait.html", data)


@router.post("/runs/{run}/clips/{sha}/analyse", response_class=HTMLResponse)
def reanalyse(request: Request, sha: str = SHA, run: tuple[str, Path] = Depends(get_run),
              settings: Settings = Depends(get_settings), jobs: JobQueue = Depends(get_jobs),
              analyzer=Depends(get_analyzer), _: None = Depends(upload_guard)):
    """Queue the analysis of a stored clip again (after a failure or a restart)."""
    if not intake.known(run[1], sha):
        raise HTTPException(404, f"no clip {sha} in run {run[0]!r}")
    view = queue_analysis(*run, sha, settings, jobs, analyzer)
    return RedirectResponse(view["permalink"], status_code=303)


def why_state(name: str, run: Path, sha: str, class_idx: int, jobs: JobQueue) -> dict:
    """The concept path view plus the state of its job (404 for an unknown clip)."""
    if not intake.known(run, sha):
        raise HTTPException(404, f"no clip {sha} in run {name!r}: upload it first")
    data = services.concept_path_view(name, run, sha, class_idx)
    job = jobs.by_key(intake.concept_key(run, sha, class_idx))
    data["job"] = job.public(jobs.position(job)) if job else None
    data["api"] = f"/api/runs/{seg(name)}/clips/{sha}/why/{class_idx}"
    return data


def start_concept_path(name: str, run: Path, sha: str, class_idx: int, jobs: JobQueue, service) -> dict:
    """Queue the concept path computation (503 when the queue is full)."""
    if not intake.known(run, sha):
        raise HTTPException(404, f"no clip {sha} in run {name!r}: upload it first")
    try:
        job = intake.submit_concept_path(run, sha, class_idx, jobs, service)
    except QueueFull as e:
        raise UploadRejected(503, "busy", str(e)) from None
    return {"job": job.public(jobs.position(job)), "status": f"/api/jobs/{job.id}",
            "permalink": f"/runs/{seg(name)}/clips/{sha}/why/{class_idx}"}


@router.get("/runs/{run}/clips/{sha}/why/{class_idx}", response_class=HTMLResponse)
def why_page(request: Request, class_idx: int, sha: str = SHA, run: tuple[str, Path] = Depends(get_run),
             jobs: JobQueue = Depends(get_jobs)):
    """Concept path: the block-4 units driving the class, and the block-3 units driving those."""
    return templates.TemplateResponse(request, "why.html", why_state(*run, sha, class_idx, jobs))


@router.post("/runs/{run}/clips/{sha}/why/{class_idx}", response_class=HTMLResponse)
def why_compute(request: Request, class_idx: int, sha: str = SHA, run: tuple[str, Path] = Depends(get_run),
                jobs: JobQueue = Depends(get_jobs), service=Depends(get_concept_path)):
    """Queue the concept path of this clip and class, then follow it on its page."""
    view = start_concept_path(*run, sha, class_idx, jobs, service)
    return RedirectResponse(view["permalink"], status_code=303)
