"""View data of the 'why this class?' page: a clip's concept path for one class, and the planted-bias test."""
from __future__ import annotations

from pathlib import Path

from mmit_interp.store import ResultsStore

from .. import intake
from ..jobs import JobQueue, QueueFull
from ..links import Links
from ..settings import ServedRun
from ..uploads import UploadRejected
from .commands import missing
from .readers import class_names, finite, open_store, read_json


def why_state(run: ServedRun, sha: str, class_idx: int, jobs: JobQueue, links: Links) -> dict:
    """The concept path view of a known clip plus the state of its job."""
    data = concept_path_view(run, sha, class_idx, links)
    job = jobs.by_key(intake.concept_key(run, sha, class_idx))
    data["job"] = job.public(jobs.position(job)) if job else None
    data["api"] = links("why", run=run.name, sha=sha, class_idx=class_idx)
    return data


def start_concept_path(run: ServedRun, sha: str, class_idx: int, jobs: JobQueue, service: intake.Service,
                       links: Links) -> dict:
    """Queue the concept path computation of a known clip (503 when the queue is full)."""
    try:
        job = intake.submit_concept_path(run, sha, class_idx, jobs, service)
    except QueueFull as e:
        raise UploadRejected(503, "busy", str(e)) from None
    return {"job": job.public(jobs.position(job)), "status": links("job", job_id=job.id),
            "permalink": links("why_page", run=run.name, sha=sha, class_idx=class_idx)}


def concept_path_view(run: ServedRun, sha: str, class_idx: int, links: Links) -> dict:
    """The concept path of (clip, class) with each unit's dissection label, grouped block 4 -> block 3."""
    with open_store(run.dir) as store:
        rows = store.concept_path(intake.store_key(sha), class_idx) if store else []
        dissected = {d["layer"] for d in store.layers()} if store else set()
        for r in rows:  # the layer name the unit pages know the unit by
            r["unit_layer"] = next((a for a in r.get("label_layers") or [r["layer"]] if a in dissected), None)
        names = class_names(run.dir, store)
        class_name = names[class_idx] if 0 <= class_idx < len(names) else f"class {class_idx}"
        bias = bias_view(run.dir, store, class_name)
    children: dict[int, list[dict]] = {}
    for r in rows:
        if r["step"] == 1:
            children.setdefault(r["parent"], []).append(r)
    path = [{**r, "children": children.get(r["unit"], [])} for r in rows if r["step"] == 0]
    clip = intake.clip_file(run.dir, sha)
    return finite({"name": run.name, "sha256": sha, "class_idx": class_idx, "class_name": class_name,
                   "path": path, "bias": bias, "clip_permalink": links("clip_page", run=run.name, sha=sha),
                   "missing": [] if rows else [missing("the concept path of this clip and class", "concept_path",
                                                      run.dir, clip=clip, class_idx=class_idx)]})


def _pct(v: float | None) -> str:
    """A share as a whole percentage, a dash when undefined."""
    return "—" if v is None else f"{v:.0%}"


def bias_sentence(s: dict) -> str:
    """A stored bias test (`mmit_interp.analysis.bias.run_bias`'s summary) in plain words."""
    act, tex = s["action"], s["texture"]
    if s["excess"] is None:
        return f"The {tex} -> {act} bias could not be measured: " + "; ".join(s.get("notes") or []) + "."
    text = (f"On {s['n_lure']} clips where a {tex} actor does something else, the model scores {act} "
            f"{s['score']['lure']:.3f} on average, against {s['score']['control']:.3f} on {s['n_control']} clips "
            f"without a {tex} actor: an excess of {s['excess']:+.3f}. ")
    if not s["n_units"]:
        return text + f"Dissection labels no unit {tex} in {', '.join(s['layers'])}, so there is nothing to ablate."
    ab, rnd, oc = s["ablated"], s["random"], s["ablated"]["other_classes"]
    labelled = {"set": f"labelled {tex} on at least one concept set",
                "best": f"whose best label over every concept set is {tex}"}.get(s.get("rule"), f"labelled {tex}")
    where = "in the concept path's blocks, " if s.get("blocks") == "path" else ""
    text += (f"Zeroing the {s['n_units']} units {labelled} ({where}{', '.join(s['layers'])}) leaves "
             f"{ab['excess']:+.3f}, {_pct(ab['removed'])} of the excess removed; as many random units remove "
             f"{_pct(rnd['removed_mean'])} on average (at most {_pct(rnd['removed_max'])}).")
    if oc:
        text += (f" The other classes' scores move by {oc['mean_abs_change']:.3f} on average "
                 f"(at most {oc['max_abs_change']:.3f}, {oc['max_class']}).")
    cf = s.get("counterfactual")
    if cf and cf["n_pairs"] and cf["excess"] is not None:
        text += (f" On {cf['n_pairs']} texture twins (a control clip with one actor dressed in {tex}, nothing "
                 f"else changed) the {act} score rises by {cf['excess']:+.3f}; zeroing the same units removes "
                 f"{_pct(cf['ablated']['removed'])} of that rise, random units {_pct(cf['random']['removed_mean'])}.")
    return text


def bias_view(run: Path, store: ResultsStore | None, class_name: str) -> dict | None:
    """The stored bias test whose biased action is this class (the world's planted pair first), in
    words and figures; when none is stored but the run's world plants its bias on this class, the
    command that computes it; None otherwise."""
    rows = store.bias(class_name) if store else []
    if rows:
        s = next((r for r in rows if r["summary"].get("planted")), rows[0])["summary"]
        return {"summary": s, "sentence": bias_sentence(s), "missing": []}
    data = (read_json(run / "config.json") or {}).get("data")
    planted = ((read_json(Path(data) / "world.json") if data else None) or {}).get("bias") or {}
    if planted.get("action") != class_name:
        return None
    return {"summary": None, "sentence": None,
            "missing": [missing(f"the planted-bias test ({planted.get('texture')} -> {class_name})", "bias", run,
                                world=data)]}
