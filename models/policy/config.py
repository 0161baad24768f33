"""The policy's configuration: architecture (stored in the checkpoint) and training (one preset per machine)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from models.presets import check_choice, check_device, check_fields
from sim.errors import InputError

MAX_INSTRUCTION_CHARS = 512  # the same limit as sim.evaluate.EvalConfig


class PolicyConfigError(InputError):
    pass


@dataclass
class PolicyConfig:
    """Architecture; saved in config.json so a checkpoint rebuilds itself."""

    camera: str = "workspace"
    image_size: int = 64
    context: int = 1  # frames the vision encoder sees; 1, since a chunk policy observes once per chunk
    chunk: int = 8  # actions per chunk
    action_dim: int = 4
    proprio_dim: int = 4
    text_dim: int = 384  # MiniLM all-MiniLM-L6-v2
    # vision: a CNN whose feature map ends at 16x16, then spatial-softmax keypoints + average pool
    vision_channels: tuple[int, ...] = (32, 64, 64)
    stem_stride: int = 2  # the first conv's stride (kernel: stride + 3); 4 keeps 128 px images as cheap as 64 px
    keypoints: int = 32
    # conditioning: vision, language and proprio features projected into one vector
    text_proj: int = 64
    proprio_proj: int = 64
    cond_dim: int = 256
    # action head (and the σ-net, same shape): residual MLP over the flattened chunk
    head_width: int = 256
    head_depth: int = 3
    time_dim: int = 64
    euler_steps: int = 10
    t_sampling: str = "beta"  # "beta": t = 0.999·Beta(1.5, 1) + 0.001 as in the paper; "uniform"
    ode_init: str = "zero"  # deterministic act(): integrate from the prior's mean ("zero") or seeded noise
    sigma_min: float = 0.08
    sigma_max: float = 0.2
    action_norm: str = "meanstd"  # "meanstd" or "quantile" (q01/q99 → [-1, 1])
    aux_state: bool = True  # a small head predicting object and goal positions from the vision features

    def __post_init__(self) -> None:
        self.vision_channels = tuple(int(c) for c in self.vision_channels)
        if self.t_sampling not in ("beta", "uniform"):
            raise PolicyConfigError(f"t_sampling must be beta or uniform, got {self.t_sampling!r}")
        if self.ode_init not in ("zero", "noise"):
            raise PolicyConfigError(f"ode_init must be zero or noise, got {self.ode_init!r}")
        if self.action_norm not in ("meanstd", "quantile"):
            raise PolicyConfigError(f"action_norm must be meanstd or quantile, got {self.action_norm!r}")
        if self.image_size not in (64, 128, 224) and self.image_size < 16:
            raise PolicyConfigError(f"image size {self.image_size} too small")
        if not 0 < self.sigma_min < self.sigma_max:
            raise PolicyConfigError("need 0 < sigma_min < sigma_max")
        if self.euler_steps < 1 or self.chunk < 1:
            raise PolicyConfigError("euler_steps and chunk must be at least 1")
        if self.stem_stride not in (1, 2, 4):
            raise PolicyConfigError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride}")
        if self.context != 1:
            raise PolicyConfigError("context must be 1: in the simulator the policy sees one frame per chunk, "
                                    "so training on consecutive frames would not match evaluation")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["vision_channels"] = list(self.vision_channels)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> PolicyConfig:
        names = {f.name for f in fields(PolicyConfig)}
        return PolicyConfig(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainConfig:
    """One training run. Presets below; any field can be overridden by name."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    steps: int = 4500
    batch_size: int = 64
    fm_samples: int = 4  # flow-matching noise draws per image (reuses one vision pass)
    lr: float = 1e-3
    vision_lr_scale: float = 1.0
    weight_decay: float = 1e-4
    warmup: int = 200
    grad_clip: float = 1.0
    ema: float = 0.999  # the checkpoint holds the EMA weights
    shift: int = 4  # random-shift augmentation in pixels (0: none)
    aux_weight: float = 1.0  # weight of the auxiliary object/goal-position loss (training only; needs env_obs)
    label: str = "expert"  # "expert": DART labels (the expert's clean action), "executed": the noisy one
    # "augmented": each training window gets one of its task's training phrasings (sim/instructions.py),
    # drawn anew every step; "single": the episode's own instruction only (the policy then reads the
    # sentence as a task id)
    instructions: str = "augmented"
    heldout_fraction: float = 0.1
    base_at: float = 250  # also save OUT/base, short of convergence: at this step (>= 1) or fraction of steps (< 1)
    snapshot_every: int = 0  # also keep OUT/snapshots/step-N every N steps (for choosing base_at); 0: none
    eval_every: int = 500
    eval_windows: int = 512  # held-out windows scored by action MSE
    save_every: int = 500
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    # speed only, the same maths (docs/results.md, issue 16): the fused AdamW kernel, channels-last vision input
    fused_optimizer: bool = True
    channels_last: bool = True

    def __post_init__(self) -> None:
        # also on resume: train.py rebuilds the saved config through this constructor
        if isinstance(self.policy, dict):
            self.policy = PolicyConfig.from_json(self.policy)
        err = PolicyConfigError
        check_fields(self, "positive", ("steps", "batch_size", "fm_samples", "eval_every", "save_every", "log_every",
                                        "eval_windows", "lr", "grad_clip"), err)
        check_fields(self, "non_negative", ("snapshot_every", "vision_lr_scale", "weight_decay", "warmup", "shift",
                                            "aux_weight", "threads"), err)
        check_fields(self, "fraction", ("heldout_fraction", "ema"), err)
        check_choice(self, "label", ("expert", "executed"), err)
        check_choice(self, "instructions", ("augmented", "single"), err)
        check_device(self, err)
        if self.base_at < 0 or self.base_step >= self.steps:
            raise PolicyConfigError(f"base_at {self.base_at:g} must give a step below steps ({self.steps}): "
                                    "a fraction in (0, 1), a step count, or 0 for no base snapshot")

    @property
    def base_step(self) -> int:
        """The step of the base snapshot (0: none)."""
        return round(self.base_at * self.steps) if 0 < self.base_at < 1 else int(self.base_at)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["policy"] = self.policy.to_json()
        return d


PRESETS: dict[str, TrainConfig] = {
    # seconds on a CPU: for tests and the smoke pipeline
    "smoke": TrainConfig(
        policy=PolicyConfig(vision_channels=(8, 16, 16), keypoints=8, text_proj=16, proprio_proj=16, cond_dim=64,
                            head_width=64, head_depth=1, time_dim=16),
        steps=60, batch_size=16, fm_samples=2, warmup=5, eval_every=30, eval_windows=64, save_every=30,
        log_every=10, base_at=0.5, ema=0.9, threads=1,
    ),
    # about 10 minutes on 2 CPU cores
    "cpu-quick": TrainConfig(),
    # a GPU: wider model, bigger batches, more steps
    "gpu": TrainConfig(
        policy=PolicyConfig(vision_channels=(64, 128, 128), keypoints=64, text_proj=128, proprio_proj=64,
                            cond_dim=512, head_width=512, head_depth=4, time_dim=128),
        steps=30000, batch_size=256, fm_samples=4, lr=5e-4, warmup=500, eval_every=2000, eval_windows=2048,
        save_every=2000, log_every=100, threads=8, base_at=0.1,
    ),
}


def make_train_config(preset: str, steps: int | None = None, **overrides: Any) -> TrainConfig:
    """A preset with `steps` and named overrides (training or architecture fields) applied."""
    if preset not in PRESETS:
        raise PolicyConfigError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    base = PRESETS[preset]
    train_names = {f.name for f in fields(TrainConfig)} - {"policy"}
    policy_names = {f.name for f in fields(PolicyConfig)}
    train_over = {k: v for k, v in overrides.items() if k in train_names}
    policy_over = {k: v for k, v in overrides.items() if k in policy_names}
    unknown = sorted(set(overrides) - train_names - policy_names)
    if unknown:
        raise PolicyConfigError(f"unknown policy training option(s): {', '.join(unknown)}")
    policy = dataclasses.replace(base.policy, **policy_over)
    if steps is not None:
        train_over["steps"] = steps
    return dataclasses.replace(base, policy=policy, **train_over)
