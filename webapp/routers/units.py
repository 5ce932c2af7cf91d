"""Unit browser: per-layer table (sort, filter by category, search by concept) and unit permalinks."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from ..deps import LinksDep, RunDep
from ..services import units
from ..templating import templates

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/runs/{run}/units")
def units_page(request: Request, run: RunDep, links: LinksDep, concept_set: str | None = None,
               category: str | None = None, q: str | None = None, sort: str = "iou", motion_min: float | None = None,
               has_formula: bool = False) -> HTMLResponse:
    """The last dissected layer's units (or the command that dissects the run)."""
    data = units.layer_units(run, links, None, concept_set, category, q, sort, include_all=True,
                             motion_min=motion_min, has_formula=has_formula)
    return templates.TemplateResponse(request, "units.html", data)


@router.get("/runs/{run}/units/{layer}")
def layer_page(request: Request, layer: str, run: RunDep, links: LinksDep, concept_set: str | None = None,
               category: str | None = None, q: str | None = None, sort: str = "iou", motion_min: float | None = None,
               has_formula: bool = False) -> HTMLResponse:
    """One layer's units: label, category, IoU, formula, motion score; sortable, filterable, searchable."""
    data = units.layer_units(run, links, layer, concept_set, category, q, sort, include_all=True,
                             motion_min=motion_min, has_formula=has_formula)
    return templates.TemplateResponse(request, "units.html", data)


@router.get("/runs/{run}/units/{layer}/{unit}")
def unit_page(request: Request, layer: str, unit: int, run: RunDep, links: LinksDep) -> HTMLResponse:
    """Unit permalink: gallery, runner-ups per concept set, classes driven, selectivity, neighbours."""
    return templates.TemplateResponse(request, "unit.html", units.unit_detail(run, layer, unit, links))


@router.get("/runs/{run}/units/{layer}/{unit}/clips/{concept_set}", response_class=FileResponse)
def unit_clips(layer: str, unit: int, concept_set: str, run: RunDep) -> FileResponse:
    """A unit's top items as a looping animated WebP strip, region outlined per frame (rendered on first request)."""
    return FileResponse(units.unit_clips(run, layer, unit, concept_set), media_type="image/webp")
