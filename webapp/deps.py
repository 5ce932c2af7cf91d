"""Shared resources and request checks as FastAPI dependencies, each with its `Annotated` alias.

Routers declare what they need (`run: RunDep`, `jobs: JobsDep`, `links: LinksDep`); tests swap a
resource with `app.dependency_overrides[get_analyzer] = ...`.
"""
from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request
from fastapi import Path as PathParam

from . import intake
from .intake import Service
from .jobs import JobQueue
from .links import Links
from .services.clip_methods import switchable
from .settings import ServedRun, Settings, is_local_host
from .uploads import UploadRejected


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


def get_jobs(request: Request) -> JobQueue:
    """The app's background job queue."""
    return request.app.state.jobs


def get_analyzer() -> Service:
    """The clip analysis service: `analyze_clip(run_dir, clip_path, out_dir=None, *, top_k=5, key=None) -> dict`."""
    from mmit_interp.analysis.clip_analysis import analyze_clip

    return analyze_clip


def get_concept_path() -> Service:
    """The concept path service: `clip_concept_path(run_dir, clip_path, class_, key=...) -> dict` (stores the path
    under the intake's key: the upload is not hashed again)."""
    from mmit_interp.analysis.relations import clip_concept_path

    return clip_concept_path


def get_method_maps() -> Service:
    """The method switch's service: `clip_method_maps(run_dir, clip_path, method, classes, out_dir, *, display_size)`."""
    from mmit_interp.explain.clip_maps import clip_method_maps

    return clip_method_maps


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]
AnalyzerDep = Annotated[Service, Depends(get_analyzer)]
ConceptPathDep = Annotated[Service, Depends(get_concept_path)]
MethodMapsDep = Annotated[Service, Depends(get_method_maps)]
LinksDep = Annotated[Links, Depends(Links)]


def get_run(run: str, settings: SettingsDep) -> ServedRun:
    """The served run named by the `{run}` path segment, 404 for any other name."""
    served = settings.served(run)
    if served is None:
        raise HTTPException(404, f"no run named {run!r}; served runs: {', '.join(settings.run_names) or 'none'}")
    return served


RunDep = Annotated[ServedRun, Depends(get_run)]
ClipKey = Annotated[str, PathParam(pattern="^([0-9a-f]{16}|[0-9a-f]{64})$",
                                   description="sha256 of the clip's bytes (uploads), or the 16-digit clip key of "
                                               "`mmit-cam`")]


def get_clip(sha: ClipKey, run: RunDep) -> str:
    """The `{sha}` of a clip the run knows (uploaded, or analysed by `mmit-cam`), 404 for any other."""
    if not intake.known(run.dir, sha):
        raise HTTPException(404, f"no clip {sha} in run {run.name!r}: upload it first")
    return sha


KnownClip = Annotated[str, Depends(get_clip)]


def upload_guard(request: Request, settings: SettingsDep, token: Annotated[str | None, Form()] = None) -> None:
    """Uploads need the token when one is configured; without one, only local clients may upload."""
    given = request.headers.get("x-upload-token") or token
    if settings.upload_token:
        if not given or not hmac.compare_digest(given, settings.upload_token):
            raise UploadRejected(401, "token", "uploading needs the upload token (MMIT_UPLOAD_TOKEN): send it as the "
                                               "X-Upload-Token header or the token form field")
    elif not is_local_host(request.client.host if request.client else ""):
        raise UploadRejected(403, "remote", "uploads from other machines are off: the server has no upload token "
                                            "(set MMIT_UPLOAD_TOKEN to allow them)")


UploadAllowed = Depends(upload_guard)


def get_method(method: str) -> str:
    """The `{method}` of an explanation method the clip page can switch to, 404 for any other name."""
    return switchable(method)


KnownMethod = Annotated[str, Depends(get_method)]
