"""The shell command that computes each piece of a run dir, shown wherever that piece is missing."""
from __future__ import annotations

from pathlib import Path

from .readers import run_model

COMMANDS = {
    "eval": "mmit-train --evaluate {run}",
    "metrics": "mmit-train --data DATA --out {run}",
    "dissect": "mmit-dissect {run} --layers {layers} --concept-set BRODEN_DIR [BRODEN_WITH_ACTIONS_DIR] --store",
    "ablation": "mmit-analyze ablation --run {run}",
    "selectivity": "mmit-analyze selectivity --run {run}",
    "motion": "mmit-analyze motion --run {run} --world {world}",
    "formulas": "mmit-dissect {run} --layers {layer} --concept-set BRODEN_DIR --formulas --store",
    "relations": "mmit-analyze selectivity --run {run}  (writes selectivity and unit/class relations)",
    "figures": "mmit-analyze figures --run {run} --out {run}/analysis",
    "localisation": "mmit-analyze localisation --run {run} --world {world}",
    "bias": "mmit-analyze bias --run {run} --world {world}",
    "explanations": "mmit-analyze explanations --run {run} --world {world} --max-clips 60",
    "concept_path": "mmit-analyze concept-path {clip} --run {run} --class {class_idx}",
    "clip": "mmit-cam CLIP.mp4 --run {run}  (or upload the clip on this page)",
}


def missing(what: str, piece: str, run: Path, **fill: object) -> dict[str, str]:
    """A `missing` entry: what is not computed yet and the command (`COMMANDS[piece]`) that computes it,
    twice: `shell` with this server's paths for the pages, `command` with placeholders (`RUN_DIR`, and a
    path-valued fill's name in capitals) for the JSON API, which shows no server path."""
    fill = {"world": "WORLD_DIR", **fill}
    if piece == "dissect" and "layers" not in fill:
        fill["layers"] = " ".join(path_stages(run))
    public = {k: k.upper() if isinstance(v, Path) or (isinstance(v, str) and Path(v).is_absolute()) else v
              for k, v in fill.items()}
    return {"what": what, "command": COMMANDS[piece].format(run="RUN_DIR", **public),
            "shell": COMMANDS[piece].format(run=run, **fill)}


def path_stages(run: Path) -> list[str]:
    """The stages of the blocks a concept path and the bias test read (`relations.path_blocks`: `layer3 layer4`
    on a ResNet, `layer4 attend` on a track model); `layer3 layer4` when the run has no loadable model."""
    from mmit_interp.analysis.relations import path_blocks

    model = run_model(run)
    if model is None:
        return ["layer3", "layer4"]
    upper, lower = path_blocks(model)
    return list(dict.fromkeys(b.split(".")[0] for b in (lower, upper)))
