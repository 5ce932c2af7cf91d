"""From an accepted clip to a queued analysis job, shared by the upload form and the JSON API.

Uploads are kept content-addressed in `run/uploads/<sha256>.<ext>` with a sidecar
`<sha256>.json` (source, probe info, ground truth when known); the analysis writes to
`run/cams/<sha256>/` and the results store, so the same bytes are analysed once per run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO, Callable

from mmit_interp.atomic import atomic_write_json

from .jobs import Job, JobQueue, Progress
from .settings import ServedRun, Settings
from .uploads import StoredClip, copy_capped, store_clip

UPLOADS = "uploads"
CAMS = "cams"
Service = Callable[..., dict[str, Any]]  # the analysis services (`analyze_clip`, `clip_concept_path`, `clip_method_maps`)


def sidecar_path(run: Path, sha: str) -> Path:
    """Where an upload's metadata lives."""
    return run / UPLOADS / f"{sha}.json"


def known(run: Path, key: str) -> bool:
    """A clip the run knows: uploaded here (sidecar) or analysed into `cams/<key>/` (e.g. by `mmit-cam`)."""
    return sidecar_path(run, key).is_file() or result_path(run, key).is_file()


def clip_file(run: Path, key: str) -> Path:
    """The clip's own file: the stored upload, else the path its analysis recorded."""
    side = sidecar_path(run, key)
    if side.is_file():
        return run / UPLOADS / json.loads(side.read_text(encoding="utf-8"))["file"]
    return Path(json.loads(result_path(run, key).read_text(encoding="utf-8"))["clip"])


def result_path(run: Path, sha: str) -> Path:
    """Where the clip analysis service leaves its returned dict (`out_dir/result.json`)."""
    return run / CAMS / sha / "result.json"


def accept(src: BinaryIO, run: Path, settings: Settings, *, source: str = "upload",
           filename: str | None = None, labels: list[str] | None = None, rel: str | None = None) -> StoredClip:
    """Size-check, hash, decode-check and keep a clip; write its sidecar (refusals raise `UploadRejected`)."""
    dest = run / UPLOADS
    tmp, sha, size = copy_capped(src, dest, settings.max_upload_bytes)
    clip = store_clip(tmp, sha, size, dest, settings.max_duration_s, settings.decode_timeout_s)
    side = sidecar_path(run, sha)
    old = json.loads(side.read_text(encoding="utf-8")) if side.is_file() else {}
    info = clip.info
    meta = {"sha256": sha, "size": size, "file": clip.path.name, "n_frames": info.n_frames, "fps": info.fps,
            "width": info.width, "height": info.height, "has_audio": info.has_audio, "duration": info.duration,
            "frames_decoded": clip.frames_decoded,
            "source": old.get("source", source), "filename": old.get("filename", filename),
            "labels": old.get("labels") if old.get("labels") is not None else labels,
            "rel": old.get("rel", rel)}
    if meta != old:
        atomic_write_json(side, meta)
    return clip


def accept_path(path: Path, run: Path, settings: Settings, *, labels: list[str], rel: str) -> StoredClip:
    """Accept a clip of the run's validation set (same checks and storage as an upload)."""
    with open(path, "rb") as f:
        return accept(f, run, settings, source="validation set", filename=path.name, labels=labels, rel=rel)


def submit(run: ServedRun, sha: str, jobs: JobQueue, analyzer: Service,
           top_k: int) -> Job | None:
    """Queue the analysis of an accepted clip; None when its result already exists (analysed once)."""
    key = analysis_key(run, sha)
    current = jobs.by_key(key)
    if current is not None and current.state in ("queued", "running"):
        return current
    if result_path(run.dir, sha).is_file():
        return None
    clip = clip_file(run.dir, sha)
    out_dir = run.dir / CAMS / sha

    def work(progress: Progress) -> dict:
        """Run the clip analysis service (it writes its files, `result.json` and the store rows)."""
        progress(0.1, "analysing: predictions, per-class CAMs and mCAM frames")
        result = analyzer(run.dir, clip, out_dir, top_k=top_k, key=store_key(sha))  # hashed once, at intake
        return {"sha256": sha, "run": run.name, "clip_key": result.get("clip_key"), "timings": result.get("timings")}

    return jobs.submit(key, work)


def analysis_key(run: ServedRun, sha: str) -> str:
    """Job key of a clip's analysis (run name and clip hash: no server path)."""
    return f"{run.name}:{sha}"


def store_key(sha: str) -> str:
    """The results store's key of a clip: the first 16 hex digits of its sha256 (`clip_analysis.clip_key`)."""
    return sha[:16]


def submit_concept_path(run: ServedRun, sha: str, class_idx: int, jobs: JobQueue,
                        service: Service) -> Job:
    """Queue the concept path of (clip, class); the service stores it under the clip's key."""
    clip = clip_file(run.dir, sha)

    def work(progress: Progress) -> dict:
        """Trace the last block's units driving the class and the previous stage's units driving those."""
        progress(0.1, "tracing the units that drive this class")
        r = service(run.dir, clip, class_idx, key=store_key(sha))
        return {"clip_key": r.get("clip_key"), "class_idx": r.get("class_idx"), "rows": len(r.get("path", []))}

    return jobs.submit(concept_key(run, sha, class_idx), work)


def concept_key(run: ServedRun, sha: str, class_idx: int) -> str:
    """Job key of a concept path."""
    return f"{analysis_key(run, sha)}:why:{class_idx}"


def method_dir(run: Path, sha: str, method: str) -> Path:
    """Where a clip's maps by another explanation method are cached (`result.json` there marks them done)."""
    return run / CAMS / sha / "methods" / method


def submit_method_maps(run: ServedRun, sha: str, method: str, classes: list[int], display_size: int | None,
                       jobs: JobQueue, service: Service) -> Job:
    """Queue a clip's maps of `classes` by `method`; the service draws them into `method_dir`."""
    clip = clip_file(run.dir, sha)
    out_dir = method_dir(run.dir, sha, method)

    def work(progress: Progress) -> dict:
        """Compute and draw the method's per-class maps of the clip."""
        progress(0.1, f"computing the {method} maps of the clip's top classes")
        r = service(run.dir, clip, method, classes, out_dir, display_size=display_size)
        return {"method": method, "classes": r.get("classes"), "forwards": r.get("forwards")}

    return jobs.submit(method_key(run, sha, method), work)


def method_key(run: ServedRun, sha: str, method: str) -> str:
    """Job key of a clip's maps by another explanation method."""
    return f"{analysis_key(run, sha)}:maps:{method}"
