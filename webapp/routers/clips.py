"""Clip pages: upload or pick a validation clip, follow the job, then predictions and CAM overlays."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from ..deps import (AnalyzerDep, ConceptPathDep, JobsDep, KnownClip, KnownMethod, LinksDep, MethodMapsDep, RunDep,
                    SettingsDep, UploadAllowed)
from ..services import clip_methods, clips, why
from ..templating import templates

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/runs/{run}/clips")
def clips_page(request: Request, run: RunDep, settings: SettingsDep, links: LinksDep) -> HTMLResponse:
    """Upload form, validation clips and the clips analysed so far."""
    return templates.TemplateResponse(request, "clips.html", clips.clips_context(run, settings, links))


@router.post("/runs/{run}/clips", dependencies=[UploadAllowed])
def upload_form(run: RunDep, settings: SettingsDep, jobs: JobsDep, analyzer: AnalyzerDep, links: LinksDep,
                file: Annotated[UploadFile | None, File()] = None) -> RedirectResponse:
    """The upload form's target: redirect to the clip's permalink, or show the refusal."""
    view = clips.start_upload(run, file, settings, jobs, analyzer, links)
    return RedirectResponse(view["permalink"], status_code=303)


@router.post("/runs/{run}/clips/validation")
def validation_form(index: Annotated[int, Form()], run: RunDep, settings: SettingsDep, jobs: JobsDep,
                    analyzer: AnalyzerDep, links: LinksDep) -> RedirectResponse:
    """Analyse a clip of the run's validation set (its labels are the ground truth)."""
    view = clips.start_validation(run, index, settings, jobs, analyzer, links)
    return RedirectResponse(view["permalink"], status_code=303)


@router.get("/runs/{run}/clips/{sha}")
def clip_page(request: Request, sha: KnownClip, run: RunDep, jobs: JobsDep, links: LinksDep,
              method: str = "cam") -> HTMLResponse:
    """Permalink of an analysed clip: predictions, mCAM overlay, per-class maps (CAM, or `method`'s), downloads;
    else its progress."""
    data = clips.clip_state(run, sha, jobs, links)
    if data["state"] != "done":
        return templates.TemplateResponse(request, "clip_wait.html", data)
    return templates.TemplateResponse(request, "clip.html", clip_methods.with_method(data, run, sha, method, jobs, links))


@router.post("/runs/{run}/clips/{sha}/analyse", dependencies=[UploadAllowed])
def reanalyse_form(sha: KnownClip, run: RunDep, settings: SettingsDep, jobs: JobsDep, analyzer: AnalyzerDep,
                   links: LinksDep) -> RedirectResponse:
    """Queue the analysis of a stored clip again (after a failure or a restart)."""
    view = clips.queue_analysis(run, sha, settings, jobs, analyzer, links)
    return RedirectResponse(view["permalink"], status_code=303)


@router.post("/runs/{run}/clips/{sha}/methods/{method}")
def clip_method_form(method: KnownMethod, sha: KnownClip, run: RunDep, jobs: JobsDep, service: MethodMapsDep,
                     links: LinksDep) -> RedirectResponse:
    """Queue the clip's per-class maps by another explanation method, then follow them on the clip page."""
    view = clip_methods.start_method_maps(run, sha, method, jobs, service, links)
    return RedirectResponse(view["permalink"], status_code=303)


@router.get("/runs/{run}/clips/{sha}/why/{class_idx}")
def why_page(request: Request, class_idx: int, sha: KnownClip, run: RunDep, jobs: JobsDep,
             links: LinksDep) -> HTMLResponse:
    """Concept path: the last block's units driving the class, and the previous stage's units driving those."""
    return templates.TemplateResponse(request, "why.html", why.why_state(run, sha, class_idx, jobs, links))


@router.post("/runs/{run}/clips/{sha}/why/{class_idx}")
def why_form(class_idx: int, sha: KnownClip, run: RunDep, jobs: JobsDep, service: ConceptPathDep,
             links: LinksDep) -> RedirectResponse:
    """Queue the concept path of this clip and class, then follow it on its page."""
    view = why.start_concept_path(run, sha, class_idx, jobs, service, links)
    return RedirectResponse(view["permalink"], status_code=303)
