"""Home (runs list, or how to make a run) and the run page."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from .. import services
from ..deps import get_run, get_settings
from ..settings import Settings
from ..templating import templates

router = APIRouter(include_in_schema=False)


def runs_index(settings: Settings) -> dict:
    """The served runs (or, when there are none, what to run to make one)."""
    return {"runs": [services.run_card(n, p) for n, p in settings.run_names.items()],
            "source": settings.runs_source, "make": "make demo",
            "env": "MMIT_RUNS=/path/to/run_dir uvicorn webapp.main:app"}


@router.get("/", response_class=HTMLResponse)
def home(request: Request, settings: Settings = Depends(get_settings)):
    """Runs list; with no run, the page that says how to make one."""
    data = runs_index(settings)
    return templates.TemplateResponse(request, "index.html" if data["runs"] else "no_run.html", data)


@router.get("/runs/{run}", response_class=HTMLResponse)
def run_page(request: Request, run: tuple[str, Path] = Depends(get_run)):
    """Model, loss, data, named metrics, sortable per-class AP and training curves of one run."""
    return templates.TemplateResponse(request, "run.html", services.run_overview(*run))
