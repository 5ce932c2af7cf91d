"""The dashboard app: `uvicorn webapp.main:app` (or `python -m webapp`, which binds 127.0.0.1).

`create_app(settings)` builds the FastAPI app and includes the routers; every page has its data
under `/api/...` (OpenAPI at `/docs`). `app` is built on first access, from the environment's
settings, not when this module is imported (tests and `serve()` call `create_app` themselves).
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .jobs import JobQueue
from .links import Links
from .routers import analysis, api, clips, files, runs, units
from .services.clips import clips_context
from .settings import Settings, load_settings
from .templating import templates
from .uploads import UploadRejected

STATIC = Path(__file__).parent / "static"


def docs_assets() -> Path | None:
    """Swagger UI / ReDoc files shipped by the `fastapi-offline` package, if installed (else FastAPI's CDN docs)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    d = Path(fastapi_offline.__file__).parent / "static"
    return d if (d / "swagger-ui-bundle.js").is_file() else None


def self_hosted_docs(app: FastAPI, assets: Path) -> None:
    """`/docs` and `/redoc` loading their JavaScript and CSS from this server: nothing external loads."""
    app.mount("/docs-static", StaticFiles(directory=assets), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui_html() -> Response:
        """Swagger UI over /openapi.json, assets served locally, no external validator badge."""
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/docs-static/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None})

    @app.get("/redoc", include_in_schema=False)
    def redoc_html() -> Response:
        """ReDoc over /openapi.json, assets served locally, no web fonts."""
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                              redoc_js_url="/docs-static/redoc.standalone.js",
                              redoc_favicon_url="/docs-static/favicon.png", with_google_fonts=False)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A dashboard app serving the runs named by `settings` (read from the environment by default)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.jobs.close()

    assets = docs_assets()
    app = FastAPI(title="mmit-interp dashboard", version="1",
                  description="Multi-label video action models: runs, clip CAMs, unit dissection, analyses.",
                  lifespan=lifespan, docs_url=None if assets else "/docs", redoc_url=None if assets else "/redoc")
    if assets:
        self_hosted_docs(app, assets)
    app.state.settings = settings
    app.state.jobs = JobQueue(maxsize=settings.queue_size, keep=settings.keep_jobs)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for r in (runs.router, clips.router, units.router, analysis.router, files.router, api.router):
        app.include_router(r)

    @app.middleware("http")
    async def refuse_oversize(request: Request, call_next):
        """Refuse a body whose declared length is over the upload limit before reading it."""
        limit = request.app.state.settings
        length = request.headers.get("content-length", "")
        if request.method == "POST" and length.isdigit() and int(length) > limit.max_upload_bytes + (1 << 16):
            exc = UploadRejected(413, "too_large", f"the upload is larger than the {limit.max_upload_mb:g} MB "
                                                   "limit (MMIT_MAX_UPLOAD_MB)")
            return await upload_refused(request, exc)
        return await call_next(request)

    @app.exception_handler(UploadRejected)
    async def upload_refused(request: Request, exc: UploadRejected) -> Response:
        """A refused upload: JSON for the API, the clips page with the message for the form."""
        if wants_json(request):
            return JSONResponse(exc.public(), status_code=exc.status)
        settings = request.app.state.settings
        run = settings.served(request.path_params.get("run") or request.url.path.split("/")[2])
        if run is None:
            return templates.TemplateResponse(request, "error.html", {"status": exc.status, "detail": exc.message},
                                              status_code=exc.status)
        ctx = {**clips_context(run, settings, Links(request)), "error": exc.message, "error_code": exc.code}
        return templates.TemplateResponse(request, "clips.html", ctx, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def html_or_json_error(request: Request, exc: HTTPException) -> Response:
        """JSON errors for the API and files, a page for browsers."""
        if wants_json(request):
            return await http_exception_handler(request, exc)
        return templates.TemplateResponse(request, "error.html", {"status": exc.status_code, "detail": exc.detail},
                                          status_code=exc.status_code)

    return app


def wants_json(request: Request) -> bool:
    """API and file routes answer errors in JSON; pages answer with an HTML page."""
    return request.url.path.startswith(("/api/", "/files/"))


def __getattr__(name: str) -> FastAPI:
    """`webapp.main:app` for uvicorn: the app of the environment's settings, built on first access (PEP 562)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["app"] = built = create_app()
    return built
