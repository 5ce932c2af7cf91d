"""The Jinja2 environment (autoescape on: class and concept names come from files)."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi.templating import Jinja2Templates

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.autoescape = True
templates.env.filters["fmt"] = lambda v, nd=3: "—" if v is None else f"{v:.{nd}f}"
templates.env.filters["urlpart"] = lambda v: quote(str(v), safe="")
