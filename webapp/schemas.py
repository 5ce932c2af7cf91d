"""Response models of the JSON API (`/api/...`): validated, documented in OpenAPI, and filtering.

The page functions in `services` return dicts; each API route declares its model here, so fields
meant for the HTML pages only (the run dir's path on the server) never reach a JSON response.
Chart geometry, configs and analysis summaries stay free-form dicts: their shape belongs to the
service that writes them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

Json = dict[str, Any]


class Missing(BaseModel):
    """A piece not computed yet and the shell command that computes it (`RUN_DIR` etc. stand for this
    server's paths, which the pages show and the API does not)."""

    what: str
    command: str


class JobInfo(BaseModel):
    """A background job (no callable, no result body); its key is the run name and clip hash."""

    id: str
    key: str
    state: Literal["queued", "running", "done", "failed"]
    progress: float
    message: str
    error: str | None
    queue_position: int | None
    created: float
    started: float | None
    finished: float | None


class JobStatus(JobInfo):
    """A job with the small summary its work returned."""

    result: Json | None = None


class Health(BaseModel):
    """Liveness, the number of served runs and the job queue's counts."""

    ok: bool
    runs: int
    jobs: dict[str, int]


class PublicSettings(BaseModel):
    """The limits in force (whether a token is set, never the token)."""

    runs_source: str
    max_upload_mb: float
    max_duration_s: float
    decode_timeout_s: float
    queue_size: int
    top_k: int
    upload_token: bool


# ------------------------------------------------------------------ runs
class Analysed(BaseModel):
    """What has been analysed in a run."""

    dissected_layers: list[str]
    clips: int


class RunCard(BaseModel):
    """One served run in the runs list."""

    name: str
    model: str | None
    loss: str | None
    data: str | None
    metrics: dict[str, float | None]
    analysed: Analysed


class RunsIndex(BaseModel):
    """The served runs, and how to make or name one."""

    runs: list[RunCard]
    source: str
    make: str
    env: str


class Metric(BaseModel):
    """A named metric of the final evaluation, with the label-prior baseline's value."""

    key: str
    name: str
    value: float | None
    baseline: float | None


class ClassAP(BaseModel):
    """One class's average precision (None without positives)."""

    class_idx: int
    name: str
    ap: float | None


class DissectedLayer(BaseModel):
    """A dissected (layer, concept set) pair with its unit counts."""

    layer: str
    concept_set: str
    n_units: int
    n_interpretable: int | None


class StoredClip(BaseModel):
    """An analysed clip's store row with its top prediction."""

    clip_key: str
    n_frames: int
    has_audio: bool
    analysed_at: float
    top_class: int | None
    top_name: str | None
    top_score: float | None


class RunOverview(BaseModel):
    """A run: recipe, named metrics, per-class AP, per-epoch metrics and chart coordinates."""

    name: str
    config: Json
    recipe: Json
    metrics: list[Metric]
    has_baseline: bool
    eval_extra: Json
    per_class_ap: list[ClassAP]
    epochs: list[Json]
    curves: dict[str, Json]
    missing: list[Missing]
    clips: list[StoredClip]
    layers: list[DissectedLayer]
    classes: list[str]


# ------------------------------------------------------------------ clips
class AnalysedClip(BaseModel):
    """A clip analysed in a run, with its top prediction and where it came from."""

    sha256: str
    permalink: str
    filename: str | None
    source: str
    labels: list[str] | None
    top_name: str | None
    top_score: float | None
    analysed_at: float


class ValidationClip(BaseModel):
    """A validation clip that can be picked, with its labels."""

    index: int
    rel: str
    labels: list[str]


class ValidationSet(BaseModel):
    """The run's validation clips, or why there are none."""

    data: str | None
    total: int | None = None
    missing: str | None
    clips: list[ValidationClip]


class ClipsPage(BaseModel):
    """Analysed clips and the validation clips that can be picked."""

    name: str
    analysed: list[AnalysedClip]
    validation: ValidationSet
    token_required: bool


class ClipJob(BaseModel):
    """A clip's analysis job: its state, progress and where to follow it."""

    run: str
    name: str
    sha256: str
    permalink: str
    api: str
    state: Literal["queued", "running", "done", "failed"]
    progress: float
    message: str
    error: str | None = None
    job: JobInfo | None
    status: str | None = None


class NotAnalysed(BaseModel):
    """A clip whose analysis is neither stored nor queued (the server restarted)."""

    state: Literal["not_analysed"]
    name: str
    sha256: str
    detail: str


class Prediction(BaseModel):
    """A predicted class with its score, and whether it is in the ground truth (None when unknown)."""

    class_idx: int
    name: str
    score: float | None
    truth: bool | None


class Frames(BaseModel):
    """Frame image URLs per kind, one per sampled frame (`cam`, `heat` by class index)."""

    base: list[str]
    mcam: list[str]
    mcam_layer: list[str]
    strip: list[str]
    cam: dict[str, list[str]]
    heat: dict[str, list[str]]


class Download(BaseModel):
    """A downloadable file."""

    label: str
    url: str


class ClipView(BaseModel):
    """An analysed clip: predictions (+ truth), frame URLs, downloads."""

    state: Literal["done"]
    name: str
    sha256: str
    clip_key: str
    clip: Json
    has_audio: bool
    ground_truth: list[str] | None
    predictions: list[Prediction]
    frames: Frames
    n_frames: int
    video: list[str]
    downloads: list[Download]
    params: Json
    mcam_params: str | None = None
    permalink: str
    clip_url: str | None
    missing: list[Missing]


ClipState = Annotated[ClipView | NotAnalysed | ClipJob, Field(union_mode="left_to_right")]


class OtherLabel(BaseModel):
    """An interpretable label another concept set gives a path unit (its shown label is the best over sets)."""

    concept_set: str
    label: str
    category: str | None
    iou: float | None


class PathUnit(BaseModel):
    """A unit on a concept path, with its dissection label and the units driving it."""

    step: int
    rank: int
    layer: str
    unit: int
    parent: int
    contribution: float | None
    label_layers: list[str]
    label: str | None
    category: str | None
    iou: float | None
    unit_layer: str | None
    also: list[OtherLabel] = []
    children: list[PathUnit] = []


class BiasView(BaseModel):
    """The stored planted-bias test of a class in words and figures, or the command that computes it."""

    summary: Json | None
    sentence: str | None
    missing: list[Missing]


class WhyView(BaseModel):
    """Concept path of (clip, class): the last block's units driving it and the previous stage's units driving those."""

    name: str
    sha256: str
    class_idx: int
    class_name: str
    path: list[PathUnit]
    bias: BiasView | None
    clip_permalink: str
    missing: list[Missing]
    job: JobInfo | None
    api: str


class ConceptPathJob(BaseModel):
    """A queued concept path: its job, where to follow it, and the page that shows it."""

    job: JobInfo
    status: str
    permalink: str


class MethodMapsView(BaseModel):
    """A clip's per-class maps by another explanation method: frame URLs by class when cached, else the job."""

    name: str
    sha256: str
    method: str
    label: str
    state: Literal["done", "queued", "running", "failed", "not_computed"]
    classes: list[int]
    forwards: int | None
    heat: dict[str, list[str]]
    cam: dict[str, list[str]]
    error: str | None
    job: JobInfo | None
    permalink: str
    api: str


class MethodMapsJob(BaseModel):
    """A queued method-maps job, where to follow it, and the clip page that shows the maps."""

    job: JobInfo
    status: str
    permalink: str
    api: str


# ------------------------------------------------------------------ units and analyses
class UnitFormula(BaseModel):
    """A unit's best compositional formula on a concept set, with the single label's IoU under the same plain IoU."""

    formula: str
    iou: float | None
    label: str | None
    label_iou: float | None
    gain: float | None


class UnitRow(BaseModel):
    """A unit of a layer's table."""

    unit: int
    label: str | None
    category: str | None
    iou: float | None
    interpretable: bool
    href: str
    match: bool
    motion: float | None = None
    formula: UnitFormula | None = None


class UnitsView(BaseModel):
    """A layer's units with header counts and filter choices (or the command that dissects the run)."""

    name: str
    layers: list[DissectedLayer]
    layer: str | None
    concept_set: str | None = None
    concept_sets: list[str]
    category: str = ""
    q: str = ""
    sort: str = "iou"
    sorts: list[str] = []
    categories: list[str]
    n_units: int = 0
    n_interpretable: int = 0
    n_concepts: int = 0
    motion_min: float | None = None
    has_formula: bool = False
    has_motion: bool = False
    has_formulas: bool = False
    units: list[UnitRow]
    missing: list[Missing]


class Concept(BaseModel):
    """A concept a unit matches, with its IoU."""

    label: str | None
    category: str | None
    iou: float | None


class ConceptSetLabel(BaseModel):
    """A unit's label in one concept set, runner-ups and the best concept of each category."""

    concept_set: str
    label: str | None
    category: str | None
    iou: float | None
    interpretable: bool
    runner_ups: list[Concept]
    per_category: list[Concept]
    best_without_action: Concept | None


class GalleryImage(BaseModel):
    """A top-image strip of a unit (JPEG), or its clip strip (animated WebP, rendered on first request)."""

    concept_set: str
    url: str


class ConceptSetFormula(UnitFormula):
    """A unit's best formula on one concept set."""

    concept_set: str


class MotionBadge(BaseModel):
    """A unit's motion score, the side it falls on (`motion` above 0.5, else `appearance`; `unmoved`: no probe
    changed its response, no score) and what it measures."""

    score: float | None
    kind: Literal["motion", "appearance", "unmoved"]
    help: str


class Drive(BaseModel):
    """A class a unit drives, with the rise of its logit."""

    class_idx: int
    name: str
    score: float | None


class Selectivity(BaseModel):
    """A unit's class selectivity and its block's mean."""

    value: float | None
    prob: str
    block_mean: float | None


class Neighbours(BaseModel):
    """Units next to this one, by index and by IoU."""

    previous: int | None
    next: int | None
    better_iou: int | None
    worse_iou: int | None


class UnitDetail(BaseModel):
    """One unit: labels and runner-ups per concept set, gallery, classes driven, selectivity, neighbours."""

    name: str
    layer: str
    unit: int
    n_units: int
    label: str | None
    category: str | None
    iou: float | None
    interpretable: bool
    concept_sets: list[ConceptSetLabel]
    gallery: list[GalleryImage]
    clips: list[GalleryImage]
    formulas: list[ConceptSetFormula]
    motion: MotionBadge | None
    extra: dict[str, Json]
    drives: list[Drive]
    selectivity: Selectivity | None
    block: str | None
    neighbours: Neighbours
    permalink: str
    missing: list[Missing]


class AblationChart(BaseModel):
    """A layer's ablation curves: chart geometry and the data rows."""

    layer: str
    chart: Json
    rows: list[Json]


class AnalysisView(BaseModel):
    """Ablation curves, selectivity per block, Table 3, block-wise concept counts, localisation, figures."""

    name: str
    figures: list[str]
    dissect_figures: list[str]
    ablation: list[AblationChart]
    selectivity: dict[str, list[Json]]
    selectivity_charts: dict[str, Json]
    table3: list[Json]
    categories: list[str]
    counts: list[Json]
    count_charts: dict[str, Json]
    localisation: list[Json]
    missing: list[Missing]


class Interval(BaseModel):
    """A metric's mean over clips and its 95 % t-interval (lo = hi = None under two clips)."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int


class ExplanationRow(BaseModel):
    """One method: each metric's interval, its sanity correlation and whether it fails, its cost per clip."""

    method: str
    label: str
    baseline: bool
    cells: dict[str, Interval]
    sanity: Interval | None
    fails_sanity: bool | None
    forwards: float | None


class ExplanationTable(BaseModel):
    """The method x metric table of one data set (`world:split` or a boxes CSV) and its clip count."""

    dataset: str
    n_clips: int
    rows: list[ExplanationRow]


class MetricColumn(BaseModel):
    """A metric column and which direction is better."""

    metric: str
    better: Literal["higher", "lower"]


class ExplanationsView(BaseModel):
    """Explanation methods measured (`mmit-analyze explanations`), or the command that measures them."""

    name: str
    tables: list[ExplanationTable]
    columns: list[MetricColumn]
    sanity_limit: float
    analysis: str
    missing: list[Missing]
