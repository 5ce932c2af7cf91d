"""Home (runs list, or how to make a run) and the run page."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ..deps import RunDep, SettingsDep
from ..services import runs
from ..templating import templates

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/")
def home(request: Request, settings: SettingsDep) -> HTMLResponse:
    """Runs list; with no run, the page that says how to make one."""
    data = runs.runs_index(settings)
    return templates.TemplateResponse(request, "index.html" if data["runs"] else "no_run.html", data)


@router.get("/runs/{run}")
def run_page(request: Request, run: RunDep) -> HTMLResponse:
    """Model, loss, data, named metrics, sortable per-class AP and training curves of one run."""
    return templates.TemplateResponse(request, "run.html", runs.run_overview(run))
