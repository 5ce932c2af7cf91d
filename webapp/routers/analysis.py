"""Analysis page: ablation, selectivity per block, Table 3, block-wise concept counts."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from .. import services
from ..deps import get_run
from ..templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/runs/{run}/analysis", response_class=HTMLResponse)
def analysis_page(request: Request, run: tuple[str, Path] = Depends(get_run)):
    """Figures with their data tables; what is missing says which command makes it."""
    return templates.TemplateResponse(request, "analysis.html", services.analysis_overview(*run))
