"""World-model configuration: one dataclass, three presets (smoke, cpu-quick, gpu)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from models.presets import check_device, check_fields
from sim.errors import InputError


class WMConfigError(InputError):
    pass


ROLLOUT_DTYPES = ("float32", "bfloat16")


@dataclass
class WMConfig:
    # data (image_size / camera / action range are filled in from the training dataset)
    image_size: int | None = None
    camera: str | None = None
    context_frames: int = 1
    action_dim: int = 4  # from the training dataset, like proprio_dim
    proprio_dim: int = 4
    action_low: list[float] = field(default_factory=list)
    action_high: list[float] = field(default_factory=list)
    proprio_mean: list[float] = field(default_factory=list)
    proprio_std: list[float] = field(default_factory=list)
    heldout_fraction: float = 0.05

    # frame autoencoder: 64x64x3 -> (latent_channels, H/4, W/4) in [-1, 1]
    latent_channels: int = 16
    enc_channels: tuple[int, int] = (64, 96)  # at 1/2 and 1/4 resolution
    enc_half_blocks: int = 0  # residual blocks at 1/2 resolution in the encoder
    enc_blocks: int = 1  # residual blocks at 1/4 resolution in the encoder
    dec_channels: tuple[int, int] = (24, 48)  # at 1/2 and 1/4 resolution
    ctx_channels: int = 16  # learned context-frame features at 1/2 resolution (plus its raw pixels)
    dec_blocks: int = 1  # residual blocks at 1/4 resolution in the decoder
    dec_half_blocks: int = 1  # residual blocks at 1/2 resolution in the decoder
    ae_moving_weight: float = 5.0  # loss weight of pixels that differ from the context frame
    ae_latent_noise: float = 0.05  # uniform noise on the latent in training: a decoder that tolerates rollout error
    ae_max_gap: int = 16  # target frame drawn up to this many steps after the context frame

    # latent dynamics: recurrent U-Net over the latent grid, FiLM from the action in every block
    dyn_channels: int = 32  # at latent resolution
    dyn_channels_low: int = 64  # at half latent resolution
    dyn_blocks_low: int = 2
    state_channels: int = 32  # recurrent state carried across frames
    cond_dim: int = 64
    cumulative_actions: bool = True  # condition also on the commanded displacement since the context
    hand_weight: float = 0.1  # auxiliary next-proprio loss
    pixel_weight: float = 1.0  # decoded-frame loss through the frozen decoder
    pixel_steps: int = 2  # rollout steps per sample that get the pixel loss
    moving_weight: float = 5.0  # pixel loss weight of moving pixels
    latent_weight: float = 1.0
    horizon: int = 8  # unroll length in training

    # optimisation
    ae_steps: int = 2000
    dyn_steps: int = 1500
    ae_batch: int = 32
    dyn_batch: int = 24
    ae_lr: float = 2e-3
    dyn_lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_windows: int = 64
    checkpoint_every: int = 250
    init_autoencoder: str | None = None  # world-model checkpoint whose autoencoder starts phase 1 (or replaces it)
    init_from: str | None = None  # world-model checkpoint to fine-tune (architecture and normalisation come from it)
    seed: int = 0
    threads: int = 0  # torch threads (0: leave as is)
    device: str = "auto"
    # the fused AdamW kernel: the same update as the loop within float rounding, but no measured gain for these
    # stages (docs/results.md, issue 16), and the small training runs amplify rounding differences: off
    fused_optimizer: bool = False
    # precision of the rollout's convolutions at inference ("bfloat16": autocast, where the CPU has native bf16)
    rollout_dtype: str = "float32"
    # precision of the training steps' convolutions and linear layers ("bfloat16": autocast where the CPU has
    # native bf16; weights, optimiser state and latents stay float32)
    train_dtype: str = "float32"

    def to_json(self) -> dict:
        d = asdict(self)
        d["enc_channels"] = list(self.enc_channels)
        d["dec_channels"] = list(self.dec_channels)
        return d

    @classmethod
    def from_json(cls, d: dict) -> WMConfig:
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("enc_channels", "dec_channels"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def __post_init__(self) -> None:
        # also on every rebuild (from_json, dataclasses.replace): a resumed run is checked like a new one
        check_fields(self, "at_least_1", ("context_frames", "horizon", "action_dim", "proprio_dim", "ae_batch",
                                          "dyn_batch", "ae_max_gap", "eval_every", "checkpoint_every"), WMConfigError)
        check_fields(self, "non_negative", ("ae_steps", "dyn_steps", "pixel_steps", "eval_windows", "weight_decay",
                                            "ae_latent_noise", "threads"), WMConfigError)
        check_fields(self, "positive", ("ae_lr", "dyn_lr", "grad_clip"), WMConfigError)
        check_fields(self, "fraction", ("heldout_fraction",), WMConfigError)
        check_device(self, WMConfigError)
        for name in ("rollout_dtype", "train_dtype"):
            if getattr(self, name) not in ROLLOUT_DTYPES:
                raise WMConfigError(f"{name} must be one of {', '.join(ROLLOUT_DTYPES)}, got {getattr(self, name)!r}")
        if self.image_size is not None and self.image_size % 8:
            raise WMConfigError(f"image size {self.image_size} is not divisible by 8")


# what a fine-tuned model inherits from the checkpoint it starts from (`init_from`): its shape and input units
INHERITED = ("image_size", "camera", "context_frames", "action_dim", "proprio_dim", "action_low", "action_high",
             "proprio_mean", "proprio_std", "latent_channels", "enc_channels", "enc_half_blocks", "enc_blocks",
             "dec_channels", "ctx_channels", "dec_blocks", "dec_half_blocks", "dyn_channels", "dyn_channels_low",
             "dyn_blocks_low", "state_channels", "cond_dim", "cumulative_actions")

PRESETS: dict[str, dict] = {
    # seconds on a laptop: for tests and wiring checks only
    "smoke": dict(
        latent_channels=4, enc_channels=(8, 16), dec_channels=(8, 16), ctx_channels=4,
        dyn_channels=16, dyn_channels_low=16, dyn_blocks_low=1, state_channels=8, cond_dim=16,
        ae_steps=20, dyn_steps=20, ae_batch=8, dyn_batch=4, horizon=4, eval_every=20, eval_windows=8,
        checkpoint_every=10, pixel_steps=1, heldout_fraction=0.0,
    ),
    # about 20 minutes on 2 CPU cores (see docs/results.md)
    # bf16 rollouts: held-out moving-pixel PSNR within 0.01 dB of float32, 2x faster (docs/results.md, issue 16)
    "cpu-quick": dict(threads=2, rollout_dtype="bfloat16"),
    # policy alignment (WMPO): fine-tune the dynamics of an existing model (`init_from`) on added policy rollouts
    "align": dict(threads=2, ae_steps=0, dyn_steps=600, dyn_lr=3e-4, eval_every=100, checkpoint_every=100,
                  rollout_dtype="bfloat16"),
    # same recipe, wider and longer
    "gpu": dict(
        latent_channels=12, enc_channels=(128, 192), enc_half_blocks=1, enc_blocks=2, dec_channels=(64, 128),
        ctx_channels=32, dec_blocks=2, dec_half_blocks=1,
        dyn_channels=128, dyn_channels_low=256, dyn_blocks_low=4, state_channels=64, cond_dim=128,
        ae_steps=20000, dyn_steps=30000, ae_batch=64, dyn_batch=64, horizon=12, pixel_steps=4, eval_every=2000,
        eval_windows=256, checkpoint_every=1000,
    ),
}


def make_config(preset: str = "cpu-quick", steps: int | None = None, **overrides) -> WMConfig:
    if preset not in PRESETS:
        raise WMConfigError(f"unknown preset '{preset}': choose from {', '.join(PRESETS)}")
    base = WMConfig(**PRESETS[preset])
    names = {f.name for f in fields(WMConfig)}
    values = {}
    for k, v in overrides.items():
        if k not in names:
            raise WMConfigError(f"unknown world-model option '{k}'")
        if v is not None:
            values[k] = tuple(v) if isinstance(getattr(base, k), tuple) else v
    if steps is not None:
        if steps < 1:
            raise WMConfigError(f"steps must be positive, got {steps}")
        ae, dyn = values.get("ae_steps", base.ae_steps), values.get("dyn_steps", base.dyn_steps)
        values["ae_steps"] = max(1, round(steps * ae / (ae + dyn))) if ae + dyn else steps // 2
        values["dyn_steps"] = max(1, steps - values["ae_steps"])
    return replace(base, **values)  # checked by __post_init__
