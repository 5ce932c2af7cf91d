"""Analysis pages: ablation, selectivity per block, Table 3, block-wise concept counts; explanation methods measured."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ..deps import LinksDep, RunDep
from ..services import analysis, explanations
from ..templating import templates

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/runs/{run}/analysis")
def analysis_page(request: Request, run: RunDep, links: LinksDep) -> HTMLResponse:
    """Figures with their data tables; what is missing says which command makes it."""
    return templates.TemplateResponse(request, "analysis.html", analysis.analysis_overview(run, links))


@router.get("/runs/{run}/analysis/explanations")
def explanations_page(request: Request, run: RunDep, links: LinksDep) -> HTMLResponse:
    """The explanation methods x metrics table (mean [95 % interval]), the random row, sanity and cost."""
    return templates.TemplateResponse(request, "explanations.html", explanations.explanations_view(run, links))
