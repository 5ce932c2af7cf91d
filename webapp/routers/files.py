"""Files of a run dir (CAM frames, videos, figures, JSON), never anything outside it."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from ..deps import RunDep

router = APIRouter(tags=["files"])

SERVED = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
          ".svg": "image/svg+xml", ".mp4": "video/mp4", ".webm": "video/webm", ".json": "application/json",
          ".csv": "text/csv", ".txt": "text/plain", ".jsonl": "application/json"}


def resolve_inside(run_dir: Path, rel: str) -> Path:
    """`rel` resolved under `run_dir` (symlinks followed); 404 if it leaves the run dir or is not a served file."""
    base = run_dir.resolve()
    try:
        p = (base / rel).resolve()
    except (OSError, ValueError):
        raise HTTPException(404, "not found") from None
    if not p.is_relative_to(base) or not p.is_file() or p.suffix.lower() not in SERVED:
        raise HTTPException(404, "not found")
    return p


@router.get("/files/{run}/{path:path}")
def run_file(path: str, run: RunDep) -> FileResponse:
    """A media or data file inside the run dir (images, videos, JSON, CSV)."""
    p = resolve_inside(run.dir, path)
    return FileResponse(p, media_type=SERVED[p.suffix.lower()])
