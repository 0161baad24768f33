"""Validated parameters of every job kind (pydantic, strict types, unknown fields rejected).

Task names and perturbations are checked with the pure-data modules sim.tasks and sim.perturb,
so a typo is a 422 naming the field, not a failed run. Checks that need the database (referenced
ids) or the machine (disk, memory) live in backend/limits.py.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backend.kinds import KINDS, Kind, Queue
from sim.perturb import parse_perturbations
from sim.tasks import TASK_PRESETS, resolve_tasks

# sim.env.CAMERAS and IMAGE_SIZES, repeated here because sim.env imports MuJoCo
# (tests/test_backend_params.py checks that the two stay equal).
CAMERAS = ("workspace", "corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")
IMAGE_SIZES = (64, 128, 224)
STAGE_PRESETS = ("smoke", "cpu-quick", "gpu")
# train_wm also has "align": fine-tune the dynamics of `init_world_model` (no autoencoder training)
WM_PRESETS = (*STAGE_PRESETS, "align")
PIPELINE_PRESETS = ("smoke", "cpu-quick", "cpu-quick-rl", "cpu-quick-wm", "mt10-gpu")
MAX_EPISODE_STEPS = 1000

# A model reference: the scripted expert, a run (its latest checkpoint) or one checkpoint artifact.
POLICY_REF = re.compile(r"^(expert|run:[1-9]\d{0,9}|artifact:[1-9]\d{0,9})$")
MODEL_REF = re.compile(r"^(run:[1-9]\d{0,9}|artifact:[1-9]\d{0,9})$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_ID = 2**31 - 1  # runs, datasets and artifacts have INTEGER ids (32-bit on PostgreSQL)
# Collection needs at least this many steps per episode: no scripted expert succeeds sooner (the shortest
# success measured over 50 tasks × 4 starts and 5 short tasks × the perturbation suite × 6 starts took
# 16 steps), and a shorter episode is too short to train on (context + horizon windows).
MIN_COLLECT_STEPS = 10


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)


def _tasks(v: str | list[str]) -> list[str]:
    return list(resolve_tasks(v if isinstance(v, str) else tuple(v)))


def _perturbations(v: str | list[str]) -> list[str]:
    text = v if isinstance(v, str) else ",".join(v)
    return [p.name for p in parse_perturbations(text)]


def _id_in_range(v: str) -> str:
    if ":" in v and int(v.partition(":")[2]) > MAX_ID:
        raise ValueError(f"id {v.partition(':')[2]} is larger than any id ({MAX_ID})")
    return v


def check_policy_ref(v: str) -> str:
    if not POLICY_REF.match(v):
        raise ValueError("must be 'expert', 'run:<id>' (that run's latest checkpoint) or 'artifact:<id>'")
    return _id_in_range(v)


def check_model_ref(v: str) -> str:
    if not MODEL_REF.match(v):
        raise ValueError("must be 'run:<id>' (that run's latest checkpoint) or 'artifact:<id>'")
    return _id_in_range(v)


def _distinct(v: list, what: str) -> list:
    if len(set(v)) != len(v):
        raise ValueError(f"the {what} must differ from each other")
    return v


Seed = Annotated[int, Field(ge=0, le=2**31 - 1, description="Seed of the start states.")]
Steps = Annotated[int, Field(ge=1, le=10_000_000)]
MaxSteps = Annotated[int, Field(ge=1, le=MAX_EPISODE_STEPS, description="Steps before an episode counts as failed.")]
Episodes = Annotated[int, Field(ge=1, le=1000, description="Episodes per task and perturbation.")]
Tasks = Annotated[str | list[str], AfterValidator(_tasks), Field(
    description=f"Task names (comma-separated or a list) or a preset: {', '.join(TASK_PRESETS)}.",
    examples=["reach-v3", "cpu-quick"])]
InstructionSet = Annotated[Literal["train", "paraphrase", "question"], Field(
    description="train: each task's training instruction; paraphrase: its held-out hand-written paraphrases; "
                "question: held-out polite questions and sentences with a distractor clause (both cycled).")]
Preset = Annotated[Literal[STAGE_PRESETS], Field(  # type: ignore[valid-type]
    description="smoke (seconds) | cpu-quick (a 2-core CPU) | gpu: sizes and step counts of the stage.")]
DatasetId = Annotated[int, Field(ge=1, le=MAX_ID, description="Id of a dataset (GET /api/v1/datasets).")]
Perturbations = Annotated[str | list[str], AfterValidator(_perturbations),
                          Field(description="'all' (the suite) or none / FAMILY:LEVEL items.")]
ModelRef = Annotated[str, AfterValidator(check_model_ref)]
PolicyRef = Annotated[str, AfterValidator(check_policy_ref)]


class CollectParams(Params):
    tasks: Tasks = Field(examples=["reach-v3", ["reach-v3", "push-v3"], "cpu-quick"])
    episodes: int = Field(ge=1, le=1000, description="Successful episodes per task.", examples=[2])
    perturbation: str = Field("none", description="none or FAMILY:LEVEL, e.g. object:minor.")
    action_noise: float = Field(0.0, ge=0.0, le=1.0, description="Std of Gaussian noise added to the expert's actions.")
    seed: Seed = 0
    camera: Literal[CAMERAS] = Field("workspace", description="Camera the frames come from.")  # type: ignore[valid-type]
    image_size: Literal[IMAGE_SIZES] = Field(64, description="Frame size in pixels (square).")  # type: ignore[valid-type]
    max_steps: int = Field(200, ge=MIN_COLLECT_STEPS, le=MAX_EPISODE_STEPS, description=(
        f"Steps before an episode counts as failed; at least {MIN_COLLECT_STEPS}: no scripted expert succeeds "
        "sooner, so a shorter limit could not produce an episode."))
    keep_failures: bool = Field(False, description="Also keep the episodes where the expert failed.")
    dataset_name: str | None = Field(None, pattern=NAME_PATTERN, description="Name of the dataset it creates.")
    policy: str | None = Field(
        None, description="A policy checkpoint (run:<id> or artifact:<id>) acts instead of the scripted expert, "
        "re-planning every chunk; every episode is kept, failures too (for alignment and reward models).",
        examples=["run:3"])
    noise_std: float = Field(0.0, ge=0.0, le=2.0, description="With `policy`: exploration noise per action "
                             "dimension in the policy's normalised units (RL's gauss noise).")
    after_success: int = Field(0, ge=0, le=100, description="Keep acting this many steps past the first success "
                               "(frames of success for the reward model).")

    @field_validator("perturbation")
    @classmethod
    def _one_perturbation(cls, v: str) -> str:
        names = _perturbations(v)
        if len(names) != 1:
            raise ValueError("give one perturbation (collect one condition per dataset)")
        return names[0]

    @field_validator("policy")
    @classmethod
    def check_policy(cls, v):
        return None if v is None else check_model_ref(v)

    @field_validator("noise_std")
    @classmethod
    def _noise_needs_policy(cls, v: float, info: ValidationInfo) -> float:
        if v and "policy" in info.data and info.data["policy"] is None:
            raise ValueError("applies only with a policy (use action_noise for the scripted expert)")
        return v


class TrainParams(Params):
    dataset_id: DatasetId
    preset: Preset = "cpu-quick"
    steps: Steps | None = Field(None, description="Override the preset's number of training steps.")


class TrainWMParams(TrainParams):
    """The world model, from scratch or fine-tuned from `init_world_model` (preset align: policy alignment on
    added policy rollouts)."""

    preset: Literal[WM_PRESETS] = Field(  # type: ignore[valid-type]
        "cpu-quick", description="smoke | cpu-quick | gpu, or align (fine-tune the dynamics of init_world_model).")
    init_world_model: str | None = Field(
        None, description="World model to fine-tune (run:<id> or artifact:<id>); required with preset align.",
        examples=["run:2"])
    extra_dataset_ids: list[DatasetId] = Field(
        default_factory=list, max_length=10, description="More datasets to train on with dataset_id (same camera "
        "and image size), e.g. a policy's own rollouts.")

    @field_validator("init_world_model")
    @classmethod
    def check_init(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            if info.data.get("preset") == "align":
                raise ValueError("required with preset align (the world model whose dynamics it fine-tunes)")
            return None
        return check_model_ref(v)

    @field_validator("extra_dataset_ids")
    @classmethod
    def check_extra(cls, v: list[int], info: ValidationInfo) -> list[int]:
        if info.data.get("dataset_id") in v:
            raise ValueError(f"dataset {info.data['dataset_id']} is already dataset_id")
        return _distinct(v, "datasets")


class TrainRewardParams(Params):
    """The success reward model of world-model RL: a classifier on the latents of `world_model`."""

    world_model: str = Field(description="The world model whose latents it reads (run:<id> or artifact:<id>).",
                             examples=["run:2"])
    dataset_ids: list[DatasetId] = Field(
        min_length=1, max_length=10, description="Episode datasets with per-step success: expert and policy "
        "episodes, failures included, ideally collected with after_success.", examples=[[1, 4]])
    preset: Preset = "cpu-quick"
    steps: Steps | None = Field(None, description="Optimiser steps (default: the preset's).")
    imagined: bool = Field(True, description="Also train on the world model's imagination of the same episodes.")

    @field_validator("world_model")
    @classmethod
    def check_world_model(cls, v):
        return check_model_ref(v)

    @field_validator("dataset_ids")
    @classmethod
    def check_datasets(cls, v):
        return _distinct(v, "datasets")


class Options(BaseModel):
    """Typed algorithm options: every field optional (None keeps the preset's value), unknown names refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def given(self) -> dict:
        return self.model_dump(exclude_none=True)


Rate = Annotated[float, Field(ge=0.0, le=1.0)]
# models.rewards.REWARDS' names, repeated because models imports torch (tests/test_options.py checks them)
REWARD_SOURCES = ("wm", "sim", "action_l1")


class RFTOptions(Options):
    """The paper's one-chunk recipe: fields of models.rft.RFTConfig (tests check the two stay equal)."""

    batch_size: int | None = Field(None, ge=1, le=4096, description="B: start states per step.")
    group_size: int | None = Field(None, ge=2, le=1024, description="G: chunks sampled per start state.")
    lr_head: Rate | None = Field(None, description="Learning rate of the action head and its projections.")
    lr_sigma: Rate | None = Field(None, description="Learning rate of the σ-net.")
    weight_decay: Rate | None = Field(None, description="AdamW weight decay.")
    warmup_steps: int | None = Field(None, ge=0, le=1_000_000, description="Linear learning-rate warm-up steps.")
    clip_eps: float | None = Field(None, gt=0.0, lt=1.0, description="PPO clip ε.")
    dual_clip: float | None = Field(None, ge=1.0, le=100.0, description="Dual-clip constant c for negative advantages.")
    entropy_coef: float | None = Field(None, ge=0.0, le=10.0, description="Entropy bonus weight.")
    bc_coef: float | None = Field(None, ge=0.0, le=100.0, description="Weight of the adaptive behaviour-cloning term.")
    bc_kl_scale: float | None = Field(None, gt=0.0, le=100.0, description="approx_kl at which the BC term is full.")
    grad_clip: float | None = Field(None, gt=0.0, le=1000.0, description="Gradient-norm clip.")
    update_epochs: int | None = Field(None, ge=1, le=64, description="Optimiser steps per batch of rollouts.")
    reward_source: Literal[REWARD_SOURCES] | None = Field(  # type: ignore[valid-type]
        None, description="Old spelling of world/reward: wm | sim (verified reward there) | action_l1.")
    reward_lambda: float | None = Field(None, ge=0.0, le=100.0, description="Weight of the perceptual term.")
    heldout_fraction: float | None = Field(None, ge=0.0, lt=1.0, description="Episodes kept out of the start states.")
    checkpoint_every: int | None = Field(None, ge=1, le=1_000_000, description="Save a checkpoint every N steps.")
    seed: Seed | None = Field(None, description="Seed of the sampling and the start states.")
    threads: int | None = Field(None, ge=0, le=256, description="Torch CPU threads (0: default).")
    device: Literal["auto", "cpu", "cuda"] | None = Field(None, description="Where the learner runs.")


class RLOptions(Options):
    """Closed-loop GRPO with a success reward: fields of models.rl.RLConfig (tests check the two stay equal)."""

    tasks: str | None = Field(None, description="Tasks the training episodes start in: names or a preset.")
    perturbations: str | None = Field(None, description="Training starts cycle through these: none, FAMILY:LEVEL.")
    batch_size: int | None = Field(None, ge=1, le=1024, description="B: start states per sampling round.")
    group_size: int | None = Field(None, ge=2, le=256, description="G: episodes per start state.")
    max_rounds: int | None = Field(None, ge=1, le=16, description="Dynamic sampling: rounds of fresh starts per step.")
    min_mixed: int | None = Field(None, ge=0, le=16_384, description="Stop sampling once this many groups are mixed.")
    max_steps: int | None = Field(None, ge=1, le=MAX_EPISODE_STEPS, description="Episode cap (environment steps).")
    noise: Literal["gauss", "chunk", "sde"] | None = Field(
        None, description="gauss: ODE mean + learned σ per step; chunk: one offset per chunk; sde: the σ-net.")
    explore_chunks: int | None = Field(None, ge=0, le=1000,
                                       description="0: every chunk explores; k: only k consecutive chunks per episode.")
    explore_window: int | None = Field(None, ge=1, le=1000,
                                       description="The explored chunks start in [0, window), one draw per group.")
    init_std: float | None = Field(None, gt=0.0, le=2.0, description="Initial σ (normalised action units).")
    std_min: float | None = Field(None, gt=0.0, le=2.0, description="gauss: lower bound of σ.")
    std_max: float | None = Field(None, gt=0.0, le=2.0, description="gauss: upper bound of σ.")
    lr_head: Rate | None = Field(None, description="Learning rate of the action head and its projections.")
    lr_std: Rate | None = Field(None, description="Learning rate of the noise scale (σ or the σ-net).")
    weight_decay: Rate | None = Field(None, description="AdamW weight decay.")
    clip_low: float | None = Field(None, gt=0.0, lt=1.0, description="PPO clip below 1.")
    clip_high: float | None = Field(None, gt=0.0, le=10.0, description="PPO clip above 1.")
    update_epochs: int | None = Field(None, ge=1, le=64, description="Passes over each batch of rollouts.")
    minibatches: int | None = Field(None, ge=1, le=1024, description="Mini-batches per pass.")
    kl_coef: float | None = Field(None, ge=0.0, le=100.0, description="Weight of KL(policy ‖ base policy).")
    entropy_coef: float | None = Field(None, ge=0.0, le=10.0, description="Entropy bonus weight.")
    speed_bonus: float | None = Field(None, ge=0.0, lt=1.0,
                                      description="Reward = success·(1 − bonus·steps/max_steps); 0: plain 0/1.")
    grad_clip: float | None = Field(None, ge=0.0, le=1000.0, description="Gradient-norm clip.")
    eval_every: int | None = Field(None, ge=0, le=1_000_000, description="Held-out success every N steps (0: never).")
    eval_episodes: int | None = Field(None, ge=1, le=1000, description="Held-out episodes per task.")
    eval_seed: Seed | None = Field(None, description="Seed of the held-out starts (eval stream).")
    checkpoint_every: int | None = Field(None, ge=1, le=1_000_000, description="Save a checkpoint every N steps.")
    max_minutes: float | None = Field(None, ge=0.0, le=100_000.0, description="Wall-clock budget (0: none).")
    seed: Seed | None = Field(None, description="Seed of the sampling and the training starts.")
    workers: int | None = Field(None, ge=0, le=256, description="Simulator processes (0: one per core).")
    threads: int | None = Field(None, ge=0, le=256, description="Torch threads of the learner.")
    device: Literal["auto", "cpu", "cuda"] | None = Field(None, description="Where the learner runs.")

    @field_validator("tasks")
    @classmethod
    def check_tasks(cls, v):
        return None if v is None else ",".join(_tasks(v))

    @field_validator("perturbations")
    @classmethod
    def check_perturbations(cls, v):
        return None if v is None else ",".join(_perturbations(v))

    @model_validator(mode="after")
    def _ranges(self) -> RLOptions:
        if self.std_min is not None and self.std_max is not None and self.std_min > self.std_max:
            raise ValueError("std_min must not exceed std_max")
        if self.init_std is not None:
            if self.std_min is not None and self.init_std < self.std_min:
                raise ValueError("init_std must be at least std_min")
            if self.std_max is not None and self.init_std > self.std_max:
                raise ValueError("init_std must not exceed std_max")
        return self


WORLDS = ("wm", "sim")
REWARDS = ("verified", "success", "action_l1")


class RFTParams(Params):
    """GRPO fine-tuning. reward "success": closed-loop episodes in `world` rewarded by task success
    (models.rl); "verified" / "action_l1": the paper's one-chunk recipe (models.rft)."""

    policy: str = Field(description="Policy to fine-tune: run:<id> or artifact:<id>.", examples=["run:3"])
    world: Literal[WORLDS] = Field("wm", description="Where episodes happen: wm (world model) | sim (simulator).")  # type: ignore[valid-type]
    reward: Literal[REWARDS] = Field(  # type: ignore[valid-type]
        "verified", description="verified (paper, one chunk) | success (closed loop, 0/1) | action_l1 (baseline).")
    world_model: str | None = Field(
        None, description="Frozen world model (run:<id> or artifact:<id>); needed for the world-model reward and "
        "for the success reward in world wm.", examples=["run:2"])
    reward_model: str | None = Field(
        None, description="Success reward model of world_model (a train_reward run); only with world wm and "
        "reward success, where it is required.", examples=["run:5"])
    dataset_id: DatasetId | None = Field(
        None, description="Start states of the one-chunk rewards (the success reward draws its own).")
    preset: Preset = "cpu-quick"
    steps: Steps | None = Field(None, description="GRPO steps (default: the preset's).", examples=[50])
    options: dict[str, int | float | str | bool] = Field(
        default_factory=dict, max_length=40,
        description="Algorithm options: the fields of RLOptions (reward success) or RFTOptions (the others); "
                    "unknown names and out-of-range values are refused.")

    @field_validator("policy")
    @classmethod
    def check_policy(cls, v):
        return check_model_ref(v)

    @field_validator("world_model")
    @classmethod
    def check_world_model(cls, v, info: ValidationInfo):
        if info.data.get("reward") == "success":
            if info.data.get("world") == "wm" and v is None:
                raise ValueError("required with world wm and the success reward (the world the episodes run in)")
            if info.data.get("world") == "sim" and v is not None:
                raise ValueError("does not apply to the success reward in sim (leave it out, or set world to wm)")
        return None if v is None else check_model_ref(v)

    @field_validator("reward_model")
    @classmethod
    def check_reward_model(cls, v, info: ValidationInfo):
        world, reward = info.data.get("world"), info.data.get("reward")
        if reward == "success" and world == "wm" and v is None:
            raise ValueError("required with world wm and the success reward (it decides success in imagination)")
        if v is not None and reward is not None and world is not None and (reward, world) != ("success", "wm"):
            raise ValueError(f"applies only to world wm with reward success, not world {world} with reward {reward}")
        return None if v is None else check_model_ref(v)

    @field_validator("options")
    @classmethod
    def _typed_options(cls, v: dict, info: ValidationInfo) -> dict:
        model = RLOptions if info.data.get("reward") == "success" else RFTOptions
        try:
            model.model_validate(v)
        except ValidationError as exc:
            raise ValueError(describe_errors(exc.errors(), prefix="options")) from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RFTParams:
        if self.reward == "success":  # world_model / reward_model are checked field by field
            return self
        if self.dataset_id is None:
            raise PydanticCustomError("missing", f"dataset_id: required with the {self.reward} reward")
        source = self.options.get("reward_source") or ("action_l1" if self.reward == "action_l1" else self.world)
        if self.world_model is None and source == "wm":
            raise PydanticCustomError("missing", "world_model: required with the world-model reward "
                                      "(or set world to sim, or reward to action_l1)")
        return self

    def train_kwargs(self) -> dict:
        """Keyword options for models.rft.train_rft / models.rl.train_rl."""
        if self.reward == "success":
            return RLOptions.model_validate(self.options).given()
        opts = RFTOptions.model_validate(self.options).given()
        opts.setdefault("reward_source", "action_l1" if self.reward == "action_l1" else self.world)
        return opts


class EvaluateParams(Params):
    policies: list[str] = Field(
        default_factory=lambda: ["expert"], min_length=1, max_length=2,
        description="One policy, or two evaluated on the same seeded start states.", examples=[["expert"]],
    )
    tasks: Tasks = "smoke"
    perturbations: Perturbations = "none"
    episodes: Episodes = 10
    seed: Seed = 0
    max_steps: MaxSteps = 200
    instruction_set: InstructionSet = "train"
    instruction: str | None = Field(None, min_length=1, max_length=512,
                                    description="One free-text instruction for every episode (default: the task's).")
    videos_per_cell: int = Field(1, ge=0, le=10, description="Episodes per task and perturbation kept as video.")
    exclude_dataset_ids: list[DatasetId] = Field(
        default_factory=list, max_length=20, description="Datasets whose start states must not be evaluated on."
    )

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        for ref in v:
            check_policy_ref(ref)
        if len(set(v)) != len(v):
            raise ValueError("the two policies must differ")
        return v

    @field_validator("videos_per_cell")
    @classmethod
    def check_videos(cls, v: int, info: ValidationInfo) -> int:
        episodes = info.data.get("episodes")
        if episodes is not None and v > episodes:
            raise ValueError(f"{v} exceeds episodes ({episodes})")
        return v


class CompareParams(Params):
    """Two policies on one perturbation grid and the same seeded start states."""

    policy_a: PolicyRef = Field(description="First policy: expert, run:<id> or artifact:<id>.", examples=["expert"])
    policy_b: PolicyRef = Field(description="Second policy, evaluated on the same starts.", examples=["run:4"])
    tasks: Tasks = "smoke"
    perturbations: Perturbations = "all"
    episodes: Episodes = 10
    seed: Seed = 0
    max_steps: MaxSteps = 200
    instruction_set: InstructionSet = "train"
    videos_per_cell: int = Field(1, ge=0, le=10, description="Episodes per task and perturbation kept as video.")

    @field_validator("policy_b")
    @classmethod
    def check_differ(cls, v: str, info: ValidationInfo) -> str:
        if v == info.data.get("policy_a"):
            raise ValueError("must differ from policy_a")
        return v

    def to_evaluate(self) -> EvaluateParams:
        return EvaluateParams(
            policies=[self.policy_a, self.policy_b], tasks=self.tasks, perturbations=self.perturbations,
            episodes=self.episodes, seed=self.seed, max_steps=self.max_steps,
            instruction_set=self.instruction_set, videos_per_cell=min(self.videos_per_cell, self.episodes),
        )


class WMEvalParams(Params):
    """Evaluation in imagination: each policy closed loop inside the world model, success from the reward model,
    from the held-out evaluation starts; with `real`, the same starts in the simulator too."""

    policies: list[str] = Field(min_length=1, max_length=8, description="Policy checkpoints (run:<id> or "
                                "artifact:<id>); three or more with `real` also give imagined-vs-real correlations.",
                                examples=[["run:3", "run:6"]])
    world_model: ModelRef = Field(description="World model (run:<id> or artifact:<id>).", examples=["run:2"])
    reward_model: ModelRef = Field(description="Its success reward model (a train_reward run).", examples=["run:5"])
    tasks: Tasks = "cpu-quick"
    perturbations: Perturbations = "none"
    episodes: Episodes = 20
    seed: Seed = 0
    max_steps: MaxSteps = 200
    real: bool = Field(True, description="Also run the same starts in the simulator (imagined vs real).")

    @field_validator("policies")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        for ref in v:
            check_model_ref(ref)
        return _distinct(v, "policies")


class PipelineParams(Params):
    preset: Literal[PIPELINE_PRESETS] = Field(  # type: ignore[valid-type]
        "smoke", description="smoke (< 2 min) | cpu-quick | cpu-quick-rl (+ closed-loop RL) | cpu-quick-wm "
        "(+ RL in the world model) | mt10-gpu.")


class ImagineParams(Params):
    """Imagined (world model) and real (simulator) rollouts of up to two policies from one start state."""

    world_model: str | None = Field(None, description="run:<id> or artifact:<id> of a world model; "
                                    "without one only the simulator column is shown.", examples=["run:2"])
    policy: str | None = Field(None, description="One policy (kept for scripts); see `policies`.", examples=["run:3"])
    policies: dict[str, str] = Field(
        default_factory=dict, description="label → run:<id> / artifact:<id> / expert, at most two.",
        examples=[{"base": "run:3", "rft": "run:4"}],
    )
    task: str = Field(description="Task of the start state.", examples=["reach-v3"])
    instruction: str | None = Field(None, min_length=1, max_length=512, description="Default: the task's.")
    perturbation: str = Field("none", description="none or FAMILY:LEVEL applied to the start state.")
    offsets: dict[str, list[float]] = Field(
        default_factory=dict, description="Explicit offsets in metres: object [dx, dy], goal [dx, dy], "
        "robot [dx, dy, dz] (each at most 0.15 m).", examples=[{"object": [0.03, 0.0], "robot": [0.0, 0.0, 0.05]}],
    )
    reward_model: str | None = Field(
        None, description="run:<id> or artifact:<id> of a success reward model for this world model: the imagined "
        "episode then ends at its first detected success, reported next to the simulator's outcome.")
    seed: Seed = 0
    index: int = Field(0, ge=0, le=1_000_000, description="Which start of the seed's stream.")
    horizon: int = Field(48, ge=1, le=400, description="Imagined steps.")
    max_steps: int = Field(200, ge=1, le=1000, description="Simulator steps before an episode counts as failed.")

    @field_validator("world_model")
    @classmethod
    def check_world_model(cls, v):
        return None if v is None else check_model_ref(v)

    @field_validator("reward_model")
    @classmethod
    def check_reward_model(cls, v: str | None, info: ValidationInfo):
        if v is None:
            return None
        check_model_ref(v)
        if info.data.get("world_model") is None and "world_model" in info.data:
            raise ValueError("needs the world model it reads (world_model)")
        return v

    @field_validator("policy")
    @classmethod
    def check_policy(cls, v):
        return None if v is None else check_policy_ref(v)

    @field_validator("policies")
    @classmethod
    def check_policies(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > 2:
            raise ValueError("at most two policies")
        for label in v:
            if not label or len(label) > 32 or not label.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"label {label!r} must be 1-32 letters, digits, - or _")
        return {k: check_policy_ref(ref) for k, ref in v.items()}

    @field_validator("offsets")
    @classmethod
    def check_offsets(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        sizes = {"object": 2, "goal": 2, "robot": 3}
        for name, d in v.items():
            if name not in sizes:
                raise ValueError(f"unknown offset {name!r}: use object, goal or robot")
            if len(d) != sizes[name] or any(not math.isfinite(x) for x in d):
                raise ValueError(f"{name} needs {sizes[name]} finite numbers")
            if math.sqrt(sum(x * x for x in d)) > 0.15:
                raise ValueError(f"{name} offset is larger than 0.15 m")
        return v

    @field_validator("task")
    @classmethod
    def _one_task(cls, v: str) -> str:
        names = _tasks(v)
        if len(names) != 1:
            raise ValueError("give one task")
        return names[0]

    @field_validator("perturbation")
    @classmethod
    def _one_perturbation(cls, v: str) -> str:
        names = _perturbations(v)
        if len(names) != 1:
            raise ValueError("give one perturbation")
        return names[0]


# An import's stored upload, named by POST /datasets/import: a random token and the kind of file.
IMPORT_UPLOAD = r"^import-[0-9a-f]{32}\.(zip|tar|tar\.gz|hdf5)$"
IMPORT_FORMATS = ("lerobot", "libero")


class ImportParams(Params):
    """A LeRobot dataset (an archive of its folder) or a LIBERO HDF5 file, converted into an episode file and
    registered as a dataset. POST /datasets/import stores the upload and fills `upload`."""

    upload: str = Field(pattern=IMPORT_UPLOAD, description="The stored upload (named by POST /datasets/import).")
    format: Literal[IMPORT_FORMATS] = Field(  # type: ignore[valid-type]
        description="lerobot: a .zip / .tar / .tar.gz of a LeRobot v3.0 dataset folder; libero: a LIBERO .hdf5 file.")
    dataset_name: str | None = Field(None, pattern=NAME_PATTERN, description="Name of the dataset it creates.")
    image_size: Literal[IMAGE_SIZES] = Field(  # type: ignore[valid-type]
        64, description="Frame size in pixels after a centre crop and resize (square).")
    camera: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$", description=(
        "lerobot: the image feature to import (default: the first, alphabetically); libero has one camera."))

    @field_validator("format")
    @classmethod
    def _format_of_the_upload(cls, v: str, info: ValidationInfo) -> str:
        upload = info.data.get("upload")
        if upload is not None and (v == "libero") != upload.endswith(".hdf5"):
            raise ValueError("libero takes an .hdf5 upload, lerobot an archive (.zip, .tar, .tar.gz)")
        return v

    @field_validator("camera")
    @classmethod
    def _camera_only_for_lerobot(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("format") == "libero":
            raise ValueError("applies only to lerobot (a LIBERO file has one camera, agentview)")
        return v


PARAMS: dict[Kind, type[Params]] = {
    "collect": CollectParams,
    "train_wm": TrainWMParams,
    "train_policy": TrainParams,
    "train_reward": TrainRewardParams,
    "rft": RFTParams,
    "evaluate": EvaluateParams,
    "wm_eval": WMEvalParams,
    "pipeline": PipelineParams,
    "imagine": ImagineParams,
    "import": ImportParams,
}

QUEUE_OF: dict[Kind, Queue] = {  # the Celery queue of each kind
    "collect": "sim", "evaluate": "sim",
    "train_wm": "train", "train_policy": "train", "rft": "train", "pipeline": "train", "imagine": "train",
    "train_reward": "train", "wm_eval": "train", "import": "sim",
}

assert set(PARAMS) == set(QUEUE_OF) == set(KINDS), "every kind of run needs its params and its queue"


def _where(loc) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path"))


def describe_errors(errors: list[dict], prefix: str = "") -> str:
    """pydantic errors as one line: 'params.episodes: Input should be ...; ...'."""
    parts = []
    for e in errors[:5]:
        if e.get("type") == "json_invalid":
            why = e.get("ctx", {}).get("error", "JSON decode error")
            loc = list(e.get("loc", ()))
            parts.append(f"malformed JSON at position {loc[1] if len(loc) > 1 else '?'}: {why}")
            continue
        where = ".".join(x for x in (prefix, _where(e.get("loc", ()))) if x)
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        last = where.rsplit(".", 1)[-1]
        if where and msg.startswith(f"{last}."):  # a nested model's own message: 'options.group_sise: ...'
            parts.append(where[: len(where) - len(last)] + msg)
        else:
            parts.append(f"{where}: {msg}" if where else msg)
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def parse_params(kind: Kind, data: dict) -> Params:
    """Validate stored (already normalised) parameters again, e.g. inside a worker."""
    return PARAMS[kind].model_validate(data, strict=False)
