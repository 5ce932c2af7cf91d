"""The JSON API: every page's data under `/api/...`, from the same services the pages use, through response models."""
from __future__ import annotations

import io
import zipfile
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse, Response

from .. import schemas
from ..deps import (AnalyzerDep, ConceptPathDep, JobsDep, KnownClip, KnownMethod, LinksDep, MethodMapsDep, RunDep,
                    SettingsDep, UploadAllowed)
from ..services import analysis as analysis_views
from ..services import clip_methods as method_views
from ..services import clips as clip_views
from ..services import explanations as explanation_views
from ..services import runs as run_views
from ..services import units as unit_views
from ..services import why as why_views

router = APIRouter(prefix="/api", tags=["api"])
Json = dict[str, Any]


def job_response(view: Json) -> JSONResponse:
    """A clip job as JSON: 200 when the clip was analysed before, 202 while its analysis is queued or runs."""
    body = schemas.ClipJob.model_validate(view).model_dump(mode="json")
    return JSONResponse(body, status_code=200 if view["state"] == "done" else 202)


@router.get("/health", response_model=schemas.Health)
def health(settings: SettingsDep, jobs: JobsDep) -> Json:
    """Liveness, the number of served runs and the job queue's counts."""
    return {"ok": True, "runs": len(settings.run_names), "jobs": jobs.stats()}


@router.get("/settings", response_model=schemas.PublicSettings)
def settings_view(settings: SettingsDep) -> Json:
    """The limits in force (the token itself is never shown)."""
    return {"runs_source": settings.runs_source, "max_upload_mb": settings.max_upload_mb,
            "max_duration_s": settings.max_duration_s, "decode_timeout_s": settings.decode_timeout_s,
            "queue_size": settings.queue_size, "top_k": settings.top_k, "upload_token": bool(settings.upload_token)}


@router.get("/runs", response_model=schemas.RunsIndex)
def runs(settings: SettingsDep) -> Json:
    """Served runs with model, loss, data and headline metrics (empty: run `make demo`)."""
    return run_views.runs_index(settings)


@router.get("/runs/{run}", response_model=schemas.RunOverview)
def run_detail(run: RunDep) -> Json:
    """Recipe, named metrics, per-class AP, per-epoch metrics and chart coordinates of a run."""
    return run_views.run_overview(run)


@router.get("/runs/{run}/clips", response_model=schemas.ClipsPage)
def clips(run: RunDep, settings: SettingsDep, links: LinksDep) -> Json:
    """Analysed clips and the validation clips that can be picked."""
    return clip_views.clips_context(run, settings, links)


@router.post("/runs/{run}/clips", status_code=202, response_model=schemas.ClipJob, dependencies=[UploadAllowed])
def upload(run: RunDep, settings: SettingsDep, jobs: JobsDep, analyzer: AnalyzerDep, links: LinksDep,
           file: Annotated[UploadFile | None, File()] = None) -> JSONResponse:
    """Upload a clip (multipart field `file`): 202 with the job, or 200 when it was analysed before."""
    return job_response(clip_views.start_upload(run, file, settings, jobs, analyzer, links))


@router.post("/runs/{run}/clips/validation", status_code=202, response_model=schemas.ClipJob)
def pick_validation(index: Annotated[int, Form()], run: RunDep, settings: SettingsDep, jobs: JobsDep,
                    analyzer: AnalyzerDep, links: LinksDep) -> JSONResponse:
    """Analyse validation clip `index` of the run's data set (ground truth shown with the predictions)."""
    return job_response(clip_views.start_validation(run, index, settings, jobs, analyzer, links))


@router.get("/runs/{run}/clips/{sha}", response_model=schemas.ClipState)
def clip(sha: KnownClip, run: RunDep, jobs: JobsDep, links: LinksDep) -> Json:
    """An analysed clip (predictions, truth, frame URLs, downloads) or its job's progress."""
    return clip_views.clip_state(run, sha, jobs, links)


@router.post("/runs/{run}/clips/{sha}/analyse", status_code=202, response_model=schemas.ClipJob,
             dependencies=[UploadAllowed])
def reanalyse(sha: KnownClip, run: RunDep, settings: SettingsDep, jobs: JobsDep, analyzer: AnalyzerDep,
              links: LinksDep) -> JSONResponse:
    """Queue a stored clip's analysis again (after a failure or a restart)."""
    return job_response(clip_views.queue_analysis(run, sha, settings, jobs, analyzer, links))


@router.get("/runs/{run}/clips/{sha}/frames.zip", response_class=Response,
            responses={200: {"content": {"application/zip": {}}}})
def frames_zip(sha: KnownClip, run: RunDep) -> Response:
    """All images of an analysed clip in one ZIP (stored, not recompressed: they are JPEG/PNG already)."""
    images = clip_views.clip_images(run.dir, sha)
    if not images:
        raise HTTPException(404, f"clip {sha} of run {run.name!r} has no analysed frames")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p in images:
            z.write(p, p.name)
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{sha[:16]}-frames.zip"'})


@router.get("/runs/{run}/clips/{sha}/why/{class_idx}", response_model=schemas.WhyView)
def why(class_idx: int, sha: KnownClip, run: RunDep, jobs: JobsDep, links: LinksDep) -> Json:
    """Concept path of (clip, class): the last block's units driving it and the previous stage's units driving those."""
    return why_views.why_state(run, sha, class_idx, jobs, links)


@router.post("/runs/{run}/clips/{sha}/why/{class_idx}", status_code=202, response_model=schemas.ConceptPathJob)
def why_compute(class_idx: int, sha: KnownClip, run: RunDep, jobs: JobsDep, service: ConceptPathDep,
                links: LinksDep) -> Json:
    """Queue the concept path computation of (clip, class); follow it at `status`."""
    return why_views.start_concept_path(run, sha, class_idx, jobs, service, links)


@router.get("/runs/{run}/clips/{sha}/methods/{method}", response_model=schemas.MethodMapsView)
def clip_method(method: KnownMethod, sha: KnownClip, run: RunDep, jobs: JobsDep, links: LinksDep) -> Json:
    """A clip's per-class maps by another explanation method (frame URLs when cached) or their job's state."""
    return method_views.method_maps_view(run, sha, method, jobs, links)


@router.post("/runs/{run}/clips/{sha}/methods/{method}", status_code=202, response_model=schemas.MethodMapsJob)
def clip_method_compute(method: KnownMethod, sha: KnownClip, run: RunDep, jobs: JobsDep, service: MethodMapsDep,
                        links: LinksDep) -> Json:
    """Queue the clip's maps by `method` for its stored top classes (cached per clip and method); follow `status`."""
    return method_views.start_method_maps(run, sha, method, jobs, service, links)


@router.get("/jobs/{job_id}", response_model=schemas.JobStatus)
def job(job_id: str, jobs: JobsDep) -> Json:
    """A background job's state, progress, message and queue position."""
    j = jobs.get(job_id)
    if j is None:
        raise HTTPException(404, f"no job {job_id!r} (finished jobs are forgotten after a while; "
                                 "the clip's permalink still works)")
    return {**j.public(jobs.position(j)), "result": j.result}


@router.get("/runs/{run}/units", response_model=schemas.UnitsView)
def units(run: RunDep, links: LinksDep, concept_set: str | None = None, category: str | None = None,
                        q: str | None = None, sort: str = "iou", motion_min: float | None = None,
                        has_formula: bool = False) -> Json:
    """Units of the last dissected layer, with header counts."""
    return unit_views.layer_units(run, links, None, concept_set, category, q, sort, motion_min=motion_min,
                                  has_formula=has_formula)


@router.get("/runs/{run}/units/{layer}", response_model=schemas.UnitsView)
def units_of_layer(layer: str, run: RunDep, links: LinksDep, concept_set: str | None = None,
                   category: str | None = None, q: str | None = None, sort: str = "iou",
                   motion_min: float | None = None, has_formula: bool = False) -> Json:
    """Units of one layer: filter by category, concept, motion score >= `motion_min`, `has_formula`; sort by
    iou/label/unit/category/motion/formula (the IoU the formula adds)."""
    return unit_views.layer_units(run, links, layer, concept_set, category, q, sort, motion_min=motion_min,
                                  has_formula=has_formula)


@router.get("/runs/{run}/units/{layer}/{unit}", response_model=schemas.UnitDetail)
def unit(layer: str, unit: int, run: RunDep, links: LinksDep) -> Json:
    """One unit's labels, runner-ups, formula, motion score, galleries, classes driven, selectivity and neighbours."""
    return unit_views.unit_detail(run, layer, unit, links)


@router.get("/runs/{run}/analysis", response_model=schemas.AnalysisView)
def analysis(run: RunDep, links: LinksDep) -> Json:
    """Ablation curves, selectivity per block, Table 3 and block-wise concept counts."""
    return analysis_views.analysis_overview(run, links)


@router.get("/runs/{run}/analysis/explanations", response_model=schemas.ExplanationsView)
def explanations(run: RunDep, links: LinksDep) -> Json:
    """The explanation methods x metrics table per data set: mean and 95 % interval over clips, sanity, cost."""
    return explanation_views.explanations_view(run, links)
