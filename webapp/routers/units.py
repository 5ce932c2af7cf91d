"""Unit browser: per-layer table (sort, filter by category, search by concept) and unit permalinks."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ..deps import LinksDep, RunDep
from ..services import units
from ..templating import templates

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/runs/{run}/units")
def units_page(request: Request, run: RunDep, links: LinksDep, concept_set: str | None = None,
               category: str | None = None, q: str | None = None, sort: str = "iou") -> HTMLResponse:
    """The last dissected layer's units (or the command that dissects the run)."""
    data = units.layer_units(run, links, None, concept_set, category, q, sort, include_all=True)
    return templates.TemplateResponse(request, "units.html", data)


@router.get("/runs/{run}/units/{layer}")
def layer_page(request: Request, layer: str, run: RunDep, links: LinksDep, concept_set: str | None = None,
               category: str | None = None, q: str | None = None, sort: str = "iou") -> HTMLResponse:
    """One layer's units: label, category, IoU; sortable, filterable, searchable."""
    data = units.layer_units(run, links, layer, concept_set, category, q, sort, include_all=True)
    return templates.TemplateResponse(request, "units.html", data)


@router.get("/runs/{run}/units/{layer}/{unit}")
def unit_page(request: Request, layer: str, unit: int, run: RunDep, links: LinksDep) -> HTMLResponse:
    """Unit permalink: gallery, runner-ups per concept set, classes driven, selectivity, neighbours."""
    return templates.TemplateResponse(request, "unit.html", units.unit_detail(run, layer, unit, links))
