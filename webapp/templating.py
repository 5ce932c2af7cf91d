"""The Jinja2 environment: autoescape on (class and concept names come from files), and `url_for` for every link."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from jinja2 import pass_context

from .links import url_path

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.autoescape = True
templates.env.filters["fmt"] = lambda v, nd=3: "—" if v is None else f"{v:.{nd}f}"


@pass_context
def url_for(context: dict[str, Any], name: str, /, **path_params: Any) -> str:
    """`{{ url_for('unit_page', run=name, layer=l, unit=u) }}`: the root-relative, percent-encoded URL of a route."""
    return url_path(context["request"], name, **path_params)


templates.env.globals["url_for"] = url_for  # replaces Starlette's absolute, unencoded one
