"""What the API answers with (pydantic only, so the Python client can share it without SQLAlchemy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from backend.kinds import TERMINAL, Kind, Status
from backend.params import (
    MAX_ID,
    CollectParams,
    EvaluateParams,
    ImagineParams,
    ImportParams,
    PipelineParams,
    RFTParams,
    TrainParams,
    TrainRewardParams,
    TrainWMParams,
    WMEvalParams,
)
from sim.episodes import DatasetSummary

T = TypeVar("T")

# What a dataset row keeps of its file's summary: every field of sim.episodes.DatasetSummary but where the
# file was read and its format version.
DATASET_STATS: dict[str, Any] = {name: hint for name, hint in get_type_hints(DatasetSummary).items()
                                 if name not in ("path", "format_version")}


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(Out, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class RunSummary(Out):
    """A run without its two JSON blobs (`params`, `result`): what a list of runs needs."""

    id: int
    kind: Kind
    name: str | None
    status: Status
    progress: float
    message: str | None
    error: str | None
    parent_id: int | None
    queue: str
    worker: str | None
    attempt: int
    stop_request: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat: datetime | None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class RunOut(RunSummary):
    params: dict[str, Any]
    result: dict[str, Any] | None


RUN_FIELDS: tuple[str, ...] = tuple(RunOut.model_fields)
BLOB_FIELDS: tuple[str, ...] = ("params", "result")
SUMMARY_FIELDS: tuple[str, ...] = tuple(RunSummary.model_fields)

# An item of GET /runs: the fields that `fields=` asked for (every field by default), so each may be absent.
RunItem = create_model(
    "RunItem", __base__=Out, id=(int, ...),
    **{name: (f.annotation | None, Field(None, description=f.description)) for name, f in RunOut.model_fields.items()
       if name != "id"},
)


class RunPage(Out, Generic[T]):
    """A page of runs, newest first. No count query unless asked for: `total` is exact when `count=true` or
    when this page reaches the last run, otherwise null; `more` says whether runs follow this page."""

    items: list[T]
    total: int | None
    more: bool
    limit: int
    offset: int


# A row of the datasets table: id, name, origin, file, the statistics above (in their order), creation time.
DatasetOut = create_model(
    "DatasetOut", __base__=Out, id=(int, ...), name=(str, ...), source=(str, ...), run_id=(int | None, ...),
    size=(int, ...), sha256=(str, ...), **{k: (hint, ...) for k, hint in DATASET_STATS.items()},
    created_at=(datetime, ...),
)


class ArtifactOut(Out):
    id: int
    run_id: int
    kind: str
    name: str
    is_dir: bool
    size: int
    sha256: str
    files: list[str] = Field(default_factory=list, description="For a folder (checkpoint): its files.")
    url: str = Field("", description="Download path of a file artifact under /api/v1.")
    created_at: datetime
    updated_at: datetime


class MetricSeries(BaseModel):
    steps: list[int]
    values: list[float | None]
    times: list[float] = Field(default_factory=list, description="When each row was written (Unix seconds).")


class MetricsOut(BaseModel):
    run_id: int
    since: int
    last_step: int | None = Field(description="Pass it as `since` to get only newer rows.")
    series: dict[str, MetricSeries]
    last_id: int | None = Field(None, description="With `after_id`: pass it as `after_id` to get rows written since.")


class LogLine(Out):
    id: int
    time: datetime
    level: str
    message: str


class LogsOut(BaseModel):
    run_id: int
    last_id: int | None
    lines: list[LogLine]


class EvaluationOut(Out):
    id: int
    run_id: int
    policy: str
    task: str
    perturbation: str
    seed: int
    episodes: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    created_at: datetime


class ErrorOut(BaseModel):
    """Every error but a 422: a one-line message, repeated in `detail`."""

    message: str = Field(description="What went wrong, in one line.")
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: body, query or path, then the field's path.")
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """A 422: the message names each field (`params.episodes: ...`); `detail` lists them."""

    message: str = Field(description="Every problem in one line, each naming its field.")
    detail: list[FieldError]


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    broker: str


class Version(BaseModel):
    version: str
    api: str
    database: str | None = Field(None, description="Database type; only for a caller with the token.")
    broker: str | None = Field(None, description="Broker; only for a caller with the token.")
    kinds: list[str]
    auth: bool


# Requests ------------------------------------------------------------------------------------

class RunCreateBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(None, max_length=200)
    parent_id: int | None = Field(None, ge=1, le=MAX_ID, description="A run this one belongs to.")


class CollectRun(RunCreateBase):
    kind: Literal["collect"]
    params: CollectParams


class TrainWMRun(RunCreateBase):
    kind: Literal["train_wm"]
    params: TrainWMParams


class TrainPolicyRun(RunCreateBase):
    kind: Literal["train_policy"]
    params: TrainParams


class TrainRewardRun(RunCreateBase):
    kind: Literal["train_reward"]
    params: TrainRewardParams


class RFTRun(RunCreateBase):
    kind: Literal["rft"]
    params: RFTParams


class EvaluateRun(RunCreateBase):
    kind: Literal["evaluate"]
    params: EvaluateParams


class WMEvalRun(RunCreateBase):
    kind: Literal["wm_eval"]
    params: WMEvalParams


class PipelineRun(RunCreateBase):
    kind: Literal["pipeline"]
    params: PipelineParams


class ImagineRun(RunCreateBase):
    kind: Literal["imagine"]
    params: ImagineParams


class ImportRun(RunCreateBase):
    """Normally created by POST /datasets/import, which stores the upload first."""

    kind: Literal["import"]
    params: ImportParams


RUN_CREATE_TYPES = (CollectRun, TrainWMRun, TrainPolicyRun, TrainRewardRun, RFTRun, EvaluateRun, WMEvalRun,
                    PipelineRun, ImagineRun, ImportRun)


# Catalog (what the UI picks from) ------------------------------------------------------------

class TaskOut(BaseModel):
    name: str
    instruction: str
    paraphrases: list[str]
    skill: str
    has_object: bool
    has_goal: bool


class TasksOut(BaseModel):
    tasks: list[TaskOut]
    presets: dict[str, list[str]]


class PerturbationsOut(BaseModel):
    families: list[str]
    levels: list[str]
    magnitudes: dict[str, dict[str, float]] = Field(description="Metres each family moves, per level.")
    suite: list[str]


class CheckpointOut(BaseModel):
    ref: str = Field(description="artifact:<id>, usable wherever a policy or world model is asked for.")
    artifact_id: int
    name: str
    kind: str = Field(description="policy, world_model or reward_model (from the checkpoint's config.json).")
    run_id: int
    run_kind: str
    run_name: str | None
    run_status: str
    updated_at: datetime


class EpisodeOut(BaseModel):
    index: int
    task: str
    instruction: str
    length: int
    success: bool
    action_noise: float
