"""View data of the clips pages: the clip list, validation clips, one analysed clip, and its job.

One clip record: the upload's sidecar (`uploads/<sha256>.json`) holds what intake learnt (file name,
source, probe info, ground truth); the results store's row (key: the sha256's first 16 digits) holds
the analysis (predictions, frame files, parameters). `result.json` only marks a finished analysis.
Overlays are composed in the browser (the frame, with the RGBA mCAM or per-class heat maps stacked over
it at the chosen opacity); the server's blended JPEGs and MP4 serve the side-by-side CAMs and downloads.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException, UploadFile

from .. import intake
from ..jobs import Job, JobQueue, QueueFull
from ..links import Links
from ..settings import ServedRun, Settings
from ..uploads import UploadRejected
from .commands import missing
from .readers import IMAGE_SUFFIXES, finite, open_store, read_json


def clips_context(run: ServedRun, settings: Settings, links: Links) -> dict:
    """Data of the clips page: analysed clips, the validation set to pick from, whether uploads need the token."""
    return {"name": run.name, "analysed": analysed_clips(run, links), "validation": validation_clips(run.dir),
            "token_required": bool(settings.upload_token)}


def validation_clips(run: Path, limit: int = 500) -> dict:
    """The run's validation clips (from its config's data folder) with their labels, to pick from."""
    data = (read_json(run / "config.json") or {}).get("data")
    if not data or not Path(data).is_dir():
        return {"data": data, "clips": [], "missing": f"the run's data folder {data!r} is not on this machine"}
    from mmit_interp.annotations import AnnotationError, read_mmit

    try:
        ann = read_mmit(data, "val", check_files=True, allow_missing=True)
    except (AnnotationError, ValueError) as e:
        return {"data": data, "clips": [], "missing": str(e)}
    names = ann.vocab.names
    return {"data": data, "total": len(ann), "missing": None,
            "clips": [{"index": i, "rel": a.rel, "labels": [names[c] for c in a.labels]}
                      for i, a in enumerate(ann.items[:limit])]}


def validation_clip(run: Path, index: int) -> tuple[Path, str, list[str]] | None:
    """Path, relative name and labels of validation clip `index`, or None."""
    data = (read_json(run / "config.json") or {}).get("data")
    if not data:
        return None
    from mmit_interp.annotations import read_mmit

    ann = read_mmit(data, "val", check_files=True, allow_missing=True)
    if not 0 <= index < len(ann):
        return None
    a = ann.items[index]
    return a.path, a.rel, [ann.vocab.names[c] for c in a.labels]


def _intake_records(run: Path) -> dict[str, dict]:
    """Every upload's sidecar by store key (the sha256's first 16 digits)."""
    side = run / intake.UPLOADS
    return {p.stem[:16]: read_json(p) or {} for p in side.glob("*.json")} if side.is_dir() else {}


def analysed_clips(run: ServedRun, links: Links) -> list[dict]:
    """Clips analysed in this run (the store's rows), newest first, with their top prediction."""
    with open_store(run.dir) as store:
        rows = store.clips() if store else []
    uploads = _intake_records(run.dir)
    out = []
    for r in rows:
        side = uploads.get(r["clip_key"], {})
        sha = side.get("sha256") or r["clip_key"]
        out.append({"sha256": sha, "permalink": links("clip_page", run=run.name, sha=sha),
                    "filename": side.get("filename") or Path(r["path"]).name, "source": side.get("source", "mmit-cam"),
                    "labels": side.get("labels"), "top_name": r["top_name"], "top_score": r["top_score"],
                    "analysed_at": r["analysed_at"]})
    return finite(out)


def clip_view(run: ServedRun, sha: str, links: Links) -> dict:
    """An analysed clip shaped for the viewer: predictions (+ truth), frame URLs per kind, downloads."""
    key = intake.store_key(sha)
    with open_store(run.dir) as store:
        row = (store.clip(key) if store else None) or {}
    side = read_json(intake.sidecar_path(run.dir, sha)) or {"filename": Path(row.get("path", sha)).name,
                                                             "source": "mmit-cam", "n_frames": row.get("n_frames")}
    out_dir = run.dir / intake.CAMS / sha
    truth = set(side.get("labels") or [])
    files = row.get("files") or {}

    def per_class(kind: str) -> dict[str, list[str]]:
        return {str(ci): links.files(run, ps, out_dir) for ci, ps in (files.get(kind) or {}).items() if int(ci) >= 0}

    def one(kind: str) -> list[str]:
        return links.files(run, (files.get(kind) or {}).get(-1, []), out_dir)

    video = one("video")
    downloads = [{"label": "overlay video (MP4)", "url": u} for u in video if u.endswith(".mp4")]
    downloads += [{"label": "overlay animation (GIF)", "url": u} for u in video if u.endswith(".gif")]
    downloads.append({"label": "scores and file list (JSON)", "url": links("clip", run=run.name, sha=sha)})
    downloads.append({"label": "every frame image: frames, mCAM, per-class CAMs, RGBA heat-map PNGs (ZIP)",
                      "url": links("frames_zip", run=run.name, sha=sha)})
    mcam = one("mcam")
    return finite({
        "state": "done", "name": run.name, "sha256": sha, "clip_key": key, "clip": side,
        "has_audio": bool(side.get("has_audio", row.get("has_audio"))),  # the container's own streams
        "ground_truth": sorted(truth) if side.get("labels") is not None else None,
        "predictions": [{"class_idx": int(p["class_idx"]), "name": p["name"], "score": p["score"],
                         "truth": (p["name"] in truth) if side.get("labels") is not None else None}
                        for p in row.get("predictions") or []],
        "frames": {"base": one("frame"), "mcam": mcam, "mcam_layer": one("mcam_layer"), "strip": one("strip"),
                   "cam": per_class("cam"), "heat": per_class("heat")},
        "n_frames": len(mcam),
        "video": video, "downloads": downloads, "params": row.get("params") or {},
        "mcam_params": mcam_description(row.get("params") or {}),
        "permalink": links("clip_page", run=run.name, sha=sha),
        "clip_url": links.file(run, run.dir / intake.UPLOADS / side.get("file", "")),
        "missing": [] if row else [missing("this clip's rows in the results store", "clip", run.dir)],
    })


def mcam_description(params: dict) -> str | None:
    """How a clip's mCAM overlay was made, in words, from its stored analysis parameters (None when they are
    unknown). Records from before the `scale` option were all min-max scaled."""
    if not params:
        return None
    how = ("standardised (z-score) and compared in standard units" if params.get("scale") == "zscore"
           else "min-max scaled")
    over = "each frame" if params.get("normalise") == "frame" else "the whole clip"
    return (f"mCAM: each class's CAM {how} over {over}; pixels where two classes are within "
            f"{params.get('delta', 0.05):g} of each other suppressed; intensity smoothed by a 5x5 Gaussian, "
            f"sigma {params.get('sigma', 1.1):g}.")


def clip_images(run: Path, sha: str) -> list[Path]:
    """Every image the analysis wrote for a clip (frames, mCAM, per-class CAMs and heat maps), inside the run."""
    out = (run / intake.CAMS / sha).resolve()
    if not out.is_relative_to(run.resolve()) or not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def job_view(run: ServedRun, sha: str, job: Job | None, jobs: JobQueue, links: Links) -> dict:
    """Status of a clip's analysis for pages and the API (`done` when the result exists)."""
    base = {"run": run.name, "name": run.name, "sha256": sha, "permalink": links("clip_page", run=run.name, sha=sha),
            "api": links("clip", run=run.name, sha=sha)}
    if job is None:
        return {**base, "state": "done", "progress": 1.0, "message": "analysed", "job": None}
    return {**base, "state": job.state, "progress": job.progress, "message": job.message, "error": job.error,
            "job": job.public(jobs.position(job)), "status": links("job", job_id=job.id)}


def queue_analysis(run: ServedRun, sha: str, settings: Settings, jobs: JobQueue, analyzer: intake.Service,
                   links: Links) -> dict:
    """Submit the clip's analysis (503 when the queue is full) and describe its job."""
    try:
        job = intake.submit(run, sha, jobs, analyzer, settings.top_k)
    except QueueFull as e:
        raise UploadRejected(503, "busy", str(e)) from None
    return job_view(run, sha, job, jobs, links)


def start_upload(run: ServedRun, file: UploadFile | None, settings: Settings, jobs: JobQueue,
                 analyzer: intake.Service, links: Links) -> dict:
    """Accept an uploaded clip and queue its analysis (shared by the form and the API)."""
    if file is None or (not file.filename and not file.size):
        raise UploadRejected(400, "no_file", "no file was sent: choose a video clip to upload")
    clip = intake.accept(file.file, run.dir, settings, filename=file.filename)
    return queue_analysis(run, clip.sha256, settings, jobs, analyzer, links)


def start_validation(run: ServedRun, index: int, settings: Settings, jobs: JobQueue, analyzer: intake.Service,
                     links: Links) -> dict:
    """Accept validation clip `index` (with its ground truth) and queue its analysis."""
    found = validation_clip(run.dir, index)
    if found is None:
        raise HTTPException(404, f"the run's validation set has no clip {index}")
    path, rel, labels = found
    clip = intake.accept_path(path, run.dir, settings, labels=labels, rel=rel)
    return queue_analysis(run, clip.sha256, settings, jobs, analyzer, links)


def clip_state(run: ServedRun, sha: str, jobs: JobQueue, links: Links) -> dict:
    """A known clip's analysis (when done), its job's status, or `not_analysed` (queue lost in a restart)."""
    job = jobs.by_key(intake.analysis_key(run, sha))
    busy = job is not None and job.state in ("queued", "running")
    if not busy and intake.result_path(run.dir, sha).is_file():
        return clip_view(run, sha, links)
    if job is None:
        return {"state": "not_analysed", "name": run.name, "sha256": sha,
                "detail": "this clip was uploaded but its analysis is not in the queue (the server restarted)"}
    return job_view(run, sha, job, jobs, links)
