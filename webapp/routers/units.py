"""Unit browser: per-layer table (sort, filter by category, search by concept) and unit permalinks."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from .. import services
from ..deps import get_run
from ..templating import templates

router = APIRouter(include_in_schema=False)


def layer_units(name: str, run: Path, layer: str | None, concept_set: str | None, category: str | None,
                q: str | None, sort: str, include_all: bool = False) -> dict:
    """A layer's units; 404 for a layer that was not dissected."""
    data = services.units_overview(name, run, layer, concept_set, category, q, sort, include_all)
    if data.get("not_found"):
        raise HTTPException(404, f"layer {layer!r} of run {name!r} was not dissected")
    return data


def one_unit(name: str, run: Path, layer: str, unit: int) -> dict:
    """A unit's detail; 404 when it is not in the store."""
    data = services.unit_detail(name, run, layer, unit)
    if data is None:
        raise HTTPException(404, f"no dissected unit {unit} in layer {layer!r} of run {name!r}")
    return data


@router.get("/runs/{run}/units", response_class=HTMLResponse)
def units_index(request: Request, concept_set: str | None = None, category: str | None = None, q: str | None = None,
                sort: str = "iou", run: tuple[str, Path] = Depends(get_run)):
    """The last dissected layer's units (or the command that dissects the run)."""
    return templates.TemplateResponse(request, "units.html", layer_units(*run, None, concept_set, category, q, sort, True))


@router.get("/runs/{run}/units/{layer}", response_class=HTMLResponse)
def units_layer(request: Request, layer: str, concept_set: str | None = None, category: str | None = None,
                q: str | None = None, sort: str = "iou", run: tuple[str, Path] = Depends(get_run)):
    """One layer's units: label, category, IoU; sortable, filterable, searchable."""
    return templates.TemplateResponse(request, "units.html", layer_units(*run, layer, concept_set, category, q, sort, True))


@router.get("/runs/{run}/units/{layer}/{unit}", response_class=HTMLResponse)
def unit_page(request: Request, layer: str, unit: int, run: tuple[str, Path] = Depends(get_run)):
    """Unit permalink: gallery, runner-ups per concept set, classes driven, selectivity, neighbours."""
    return templates.TemplateResponse(request, "unit.html", one_unit(*run, layer, unit))
