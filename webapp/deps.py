"""Shared resources as FastAPI dependencies (tests swap them with `app.dependency_overrides`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, HTTPException, Request

from .jobs import JobQueue
from .settings import Settings


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


def get_jobs(request: Request) -> JobQueue:
    """The app's background job queue."""
    return request.app.state.jobs


def get_analyzer() -> Callable[..., dict[str, Any]]:
    """The clip analysis service: `analyze_clip(run_dir, clip_path, out_dir=None, *, top_k=5) -> dict`."""
    from mmit_interp.clip_analysis import analyze_clip

    return analyze_clip


def get_concept_path() -> Callable[..., dict[str, Any]]:
    """The concept path service: `clip_concept_path(run_dir, clip_path, class_) -> dict` (stores the path)."""
    from mmit_interp.relations import clip_concept_path

    return clip_concept_path


def get_run(run: str, settings: Settings = Depends(get_settings)) -> tuple[str, Path]:
    """The (name, dir) of a served run, 404 for any other name."""
    path = settings.run_names.get(run)
    if path is None:
        raise HTTPException(404, f"no run named {run!r}; served runs: {', '.join(settings.run_names) or 'none'}")
    return run, path
