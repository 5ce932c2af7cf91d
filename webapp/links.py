"""URLs of the app's named routes: one builder for templates (`url_for`), pages and the JSON API.

Starlette's own `url_for` returns absolute URLs (scheme and host of the request) and does not
percent-encode path parameters; run, layer and file names come from folders and may hold spaces,
`#` or `<`. Here every URL is root-relative (behind the ASGI `root_path`) and each parameter is
percent-encoded (`/` too, except inside a `{path:path}` parameter).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from fastapi import Request

from .settings import ServedRun


def url_path(request: Request, name: str, /, **params: Any) -> str:
    """Root-relative URL of the route called `name`, its path parameters percent-encoded."""
    path_params = {k: quote(str(v), safe="/" if k == "path" else "") for k, v in params.items()}
    return request.scope.get("root_path", "") + request.app.url_path_for(name, **path_params)


class Links:
    """URL builder bound to one request (a dependency): route URLs and `/files/...` URLs of a run's files."""

    def __init__(self, request: Request):
        self.request = request

    def __call__(self, name: str, /, **params: Any) -> str:
        """URL of route `name` (see `url_path`)."""
        return url_path(self.request, name, **params)

    def file(self, run: ServedRun, path: str | Path, base: Path | None = None) -> str | None:
        """`/files/...` URL of an existing file inside the run dir (absolute, run-relative or `base`-relative), else None."""
        p = Path(path)
        root = run.dir.resolve()
        for cand in ((p,) if p.is_absolute() else (run.dir / p, (base or run.dir) / p)):
            try:
                rel = cand.resolve().relative_to(root)
            except ValueError:
                continue
            if cand.is_file():
                return self("run_file", run=run.name, path=rel.as_posix())
        return None

    def files(self, run: ServedRun, paths: Iterable[str | Path], base: Path | None = None) -> list[str]:
        """`/files/...` URLs of the existing ones among `paths`."""
        return [u for u in (self.file(run, p, base) for p in paths) if u]
