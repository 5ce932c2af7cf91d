"""The JSON API: every page's data under `/api/...`, from the same functions the pages use."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse, Response

from .. import intake, services
from ..deps import get_analyzer, get_concept_path, get_jobs, get_run, get_settings
from ..jobs import JobQueue
from ..settings import Settings
from .clips import (SHA, clip_state, clips_context, queue_analysis, start_analysis, start_concept_path,
                    start_validation, upload_guard, why_state)
from .runs import runs_index
from .units import layer_units, one_unit

router = APIRouter(prefix="/api", tags=["api"])


@router.get("/health")
def health(settings: Settings = Depends(get_settings), jobs: JobQueue = Depends(get_jobs)) -> dict:
    """Liveness, the number of served runs and the job queue's counts."""
    return {"ok": True, "runs": len(settings.run_names), "jobs": jobs.stats()}


@router.get("/settings")
def settings_view(settings: Settings = Depends(get_settings)) -> dict:
    """The limits in force (the token itself is never shown)."""
    return {"runs_source": settings.runs_source, "max_upload_mb": settings.max_upload_mb,
            "max_duration_s": settings.max_duration_s, "decode_timeout_s": settings.decode_timeout_s,
            "queue_size": settings.queue_size, "top_k": settings.top_k, "upload_token": bool(settings.upload_token)}


@router.get("/runs")
def runs(settings: Settings = Depends(get_settings)) -> dict:
    """Served runs with model, loss, data and headline metrics (empty: run `make demo`)."""
    return runs_index(settings)


@router.get("/runs/{run}")
def run_detail(run: tuple[str, Path] = Depends(get_run)) -> dict:
    """Recipe, named metrics, per-class AP, per-epoch metrics and chart coordinates of a run."""
    return services.run_overview(*run)


@router.get("/runs/{run}/clips")
def clips(run: tuple[str, Path] = Depends(get_run), settings: Settings = Depends(get_settings)) -> dict:
    """Analysed clips and the validation clips that can be picked."""
    return clips_context(*run, settings)


@router.post("/runs/{run}/clips", status_code=202)
def upload(run: tuple[str, Path] = Depends(get_run), file: UploadFile | None = File(None),
           settings: Settings = Depends(get_settings), jobs: JobQueue = Depends(get_jobs),
           analyzer=Depends(get_analyzer), _: None = Depends(upload_guard)) -> JSONResponse:
    """Upload a clip (multipart field `file`): 202 with the job, or 200 when it was analysed before."""
    view = start_analysis(*run, file, settings, jobs, analyzer)
    return JSONResponse(view, status_code=200 if view["state"] == "done" else 202)


@router.post("/runs/{run}/clips/validation", status_code=202)
def pick_validation(index: int = Form(...), run: tuple[str, Path] = Depends(get_run),
                    settings: Settings = Depends(get_settings), jobs: JobQueue = Depends(get_jobs),
                    analyzer=Depends(get_analyzer)) -> JSONResponse:
    """Analyse validation clip `index` of the run's data set (ground truth shown with the predictions)."""
    view = start_validation(*run, index, settings, jobs, analyzer)
    return JSONResponse(view, status_code=200 if view["state"] == "done" else 202)


@router.get("/runs/{run}/clips/{sha}")
def clip(sha: str = SHA, run: tuple[str, Path] = Depends(get_run), jobs: JobQueue = Depends(get_jobs)) -> dict:
    """An analysed clip (predictions, truth, frame URLs, downloads) or its job's progress."""
    return clip_state(*run, sha, jobs)


@router.post("/runs/{run}/clips/{sha}/analyse", status_code=202)
def reanalyse(sha: str = SHA, run: tuple[str, Path] = Depends(get_run), settings: Settings = Depends(get_settings),
              jobs: JobQueue = Depends(get_jobs), analyzer=Depends(get_analyzer),
              _: None = Depends(upload_guard)) -> JSONResponse:
    """Queue a stored clip's analysis again (after a failure or a restart)."""
    if not intake.known(run[1], sha):
        raise HTTPException(404, f"no clip {sha} in run {run[0]!r}")
    view = queue_analysis(*run, sha, settings, jobs, analyzer)
    return JSONResponse(view, status_code=200 if view["state"] == "done" else 202)


@router.get("/runs/{run}/clips/{sha}/frames.zip", response_class=Response,
            responses={200: {"content": {"application/zip": {}}}})
def frames_zip(sha: str = SHA, run: tuple[str, Path] = Depends(get_run)) -> Response:
    """All images of an analysed clip in one ZIP (stored, not recompressed: they are JPEG/PNG already)."""
    images = services.clip_images(run[1], sha)
    if not images:
        raise HTTPException(404, f"clip {sha} of run {run[0]!r} has no analysed frames")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p in images:
            z.write(p, p.name)
    return Response(buf.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{sha[:16]}-frames.zip"'})


@router.get("/runs/{run}/clips/{sha}/why/{class_idx}")
def why(class_idx: int, sha: str = SHA, run: tuple[str, Path] = Depends(get_run),
        jobs: JobQueue = Depends(get_jobs)) -> dict:
    """Concept path of (clip, class): block-4 units driving it and the block-3 units driving those."""
    return why_state(*run, sha, class_idx, jobs)


@router.post("/runs/{run}/clips/{sha}/why/{class_idx}", status_code=202)
def why_compute(class_idx: int, sha: str = SHA, run: tuple[str, Path] = Depends(get_run),
                jobs: JobQueue = Depends(get_jobs), service=Depends(get_concept_path)) -> dict:
    """Queue the concept path computation of (clip, class); follow it at `status`."""
    return start_concept_path(*run, sha, class_idx, jobs, service)


@router.get("/jobs/{job_id}")
def job(job_id: str, jobs: JobQueue = Depends(get_jobs)) -> dict:
    """A background job's state, progress, message and queue position."""
    j = jobs.get(job_id)
    if j is None:
        raise HTTPException(404, f"no job {job_id!r} (finished jobs are forgotten after a while; "
                                 "the clip's permalink still works)")
    return {**j.public(jobs.position(j)), "result": j.result}


@router.get("/runs/{run}/units")
def units(concept_set: str | None = None, category: str | None = None, q: str | None = None, sort: str = "iou",
          run: tuple[str, Path] = Depends(get_run)) -> dict:
    """Units of the last dissected layer, with header counts."""
    return layer_units(*run, None, concept_set, category, q, sort)


@router.get("/runs/{run}/units/{layer}")
def units_of_layer(layer: str, concept_set: str | None = None, category: str | None = None, q: str | None = None,
                   sort: str = "iou", run: tuple[str, Path] = Depends(get_run)) -> dict:
    """Units of one layer: filter by category, search by concept, sort by iou/label/unit/category."""
    return layer_units(*run, layer, concept_set, category, q, sort)


@router.get("/runs/{run}/units/{layer}/{unit}")
def unit(layer: str, unit: int, run: tuple[str, Path] = Depends(get_run)) -> dict:
    """One unit's labels, runner-ups, gallery, classes driven, selectivity and neighbours."""
    return one_unit(*run, layer, unit)


@router.get("/runs/{run}/analysis")
def analysis(run: tuple[str, Path] = Depends(get_run)) -> dict:
    """Ablation curves, selectivity per block, Table 3 and block-wise concept counts."""
    return services.analysis_overview(*run)
