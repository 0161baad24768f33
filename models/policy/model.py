"""The VLA policy: (instruction, image, proprio) → a chunk of 8 actions by flow matching.

Flow convention (the paper's): x_t = (1 − t)·ε + t·a with ε ~ N(0, I) and a the normalised chunk,
so the network's velocity target is v = ε − a and integrating from t = 0 (noise) to t = 1 (actions)
takes Euler steps x_{k+1} = x_k − (1/K)·v(x_k, k/K).

Stochastic mode for RL: each Euler step becomes a Gaussian x_{k+1} ~ N(x_k − v/K, σ²) with σ from
the σ-net, so a chunk's log-probability is the sum of K per-step Gaussian log-densities, kept per
action dimension.

A "batch" is a dict (collated sim.loader.WindowDataset items):
    context      uint8 [B, C, 3, H, W]   the last C frames, the last one current (C = config.context)
    proprio      float [B, 4]            hand xyz + gripper, raw units
    instruction  list[str] of length B
    mask         bool  [B, 8]            optional, only for flow_matching_loss: which chunk steps are real
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.policy.config import PolicyConfig
from models.policy.head import ChunkMLP, SigmaNet
from models.policy.processor import Normalizer, image_float, random_shift
from models.policy.text import InstructionEncoder
from models.policy.vision import VisionEncoder

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class SDESample:
    """N = B·num_samples rows, grouped [B, num_samples] row-major (row b·G + g is sample g of item b)."""

    actions_norm: torch.Tensor  # [N, chunk, A] the final Euler state x_K (normalised units)
    actions: torch.Tensor  # [N, chunk, A] simulator units: what the simulator / world model receive
    chain: torch.Tensor  # [N, K + 1, chunk, A] the Euler states x_0 … x_K
    log_prob: torch.Tensor  # [N, chunk, A] Σ_k log N(x_{k+1}; x_k − v/K, σ_k²) per dimension
    sigma: torch.Tensor  # [N, chunk, A] σ averaged over the K steps


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -((x - mean) ** 2) / (2 * sigma**2) - sigma.log() - _LOG_SQRT_2PI


class VLAPolicy(nn.Module):
    def __init__(self, config: PolicyConfig, text: InstructionEncoder | None = None) -> None:
        super().__init__()
        c = self.config = config
        self.text = text or InstructionEncoder()  # frozen, not a parameter; its cache is saved separately
        self.vision = VisionEncoder(c.image_size, c.context, c.vision_channels, c.keypoints, c.stem_stride)
        self.text_proj = nn.Linear(c.text_dim, c.text_proj)
        self.proprio_proj = nn.Linear(c.proprio_dim, c.proprio_proj)
        fused = self.vision.out_dim + c.text_proj + c.proprio_proj
        self.fuse = nn.Sequential(
            nn.Linear(fused, c.cond_dim), nn.LayerNorm(c.cond_dim), nn.SiLU(), nn.Linear(c.cond_dim, c.cond_dim)
        )
        self.head = ChunkMLP(c.chunk, c.action_dim, c.cond_dim, c.head_width, c.head_depth, c.time_dim)
        self.sigma_net = SigmaNet(c.chunk, c.action_dim, c.cond_dim, c.head_width, c.head_depth, c.time_dim,
                                  c.sigma_min, c.sigma_max)
        self.action_norm = Normalizer(c.action_dim)
        self.proprio_norm = Normalizer(c.proprio_dim)
        # training-time helper: object and goal positions regressed from what the camera sees
        self.state_head = (nn.Sequential(nn.Linear(self.vision.out_dim, 128), nn.SiLU(), nn.Linear(128, 6))
                           if c.aux_state else None)
        self.state_norm = Normalizer(6)
        self.channels_last = False

    def set_channels_last(self, on: bool = True) -> VLAPolicy:
        """Run the vision convolutions on channels-last images (speed only: the same maths)."""
        self.channels_last = bool(on)
        self.vision.to(memory_format=torch.channels_last if on else torch.contiguous_format)
        return self

    @property
    def device(self) -> torch.device:
        return self.text_proj.weight.device

    # -- observation → condition vector ------------------------------------------------------
    def encode(self, batch: dict, augment_shift: int = 0, generator: torch.Generator | None = None,
               with_vision: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        vision, text, proprio = self.encode_parts(batch, augment_shift, generator)
        cond = self.fuse_parts(vision, text, proprio)
        return (cond, vision) if with_vision else cond

    def encode_parts(self, batch: dict, augment_shift: int = 0, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vision features, instruction embedding, normalised proprio): what the condition is fused from.

        RL keeps vision and language frozen, so it computes these once per observation and re-fuses them."""
        images = image_float(batch["context"].to(self.device))
        if images.shape[1] != 3 * self.config.context or images.shape[-1] != self.config.image_size:
            raise ValueError(f"context {tuple(batch['context'].shape)} does not match the policy "
                             f"({self.config.context} frame(s) at {self.config.image_size}px)")
        if augment_shift:
            images = random_shift(images, augment_shift, generator)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        proprio = self.proprio_norm.normalize(batch["proprio"].to(self.device).float())
        text = self.text.encode(list(batch["instruction"]), self.device)
        return self.vision(images), text, proprio

    def fuse_parts(self, vision: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([vision, self.text_proj(text), self.proprio_proj(proprio)], dim=1))

    def state_loss(self, vision: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Auxiliary MSE between predicted and true (normalised) object/goal positions; NaN targets skipped."""
        if self.state_head is None:
            return vision.new_zeros(())
        target = self.state_norm.normalize(state.to(self.device))
        known = torch.isfinite(target)
        err = (self.state_head(vision) - torch.nan_to_num(target)) ** 2
        return (err * known).sum() / known.sum().clamp_min(1)

    def _expand(self, cond: torch.Tensor, rows: int) -> torch.Tensor:
        """Repeat each item's condition for its samples (row-major [B, G]); rows must be a multiple of B."""
        if rows % cond.shape[0]:
            raise ValueError(f"{rows} chain rows are not a multiple of the batch size {cond.shape[0]}")
        return cond.repeat_interleave(rows // cond.shape[0], dim=0)

    def _t(self, k: int, n: int) -> torch.Tensor:
        return torch.full((n,), k / self.config.euler_steps, device=self.device)

    # -- training: behaviour cloning by flow matching ----------------------------------------
    def sample_t(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.config.t_sampling == "uniform":
            return torch.rand(n, generator=generator).to(self.device)
        # t = 0.999·Beta(1.5, 1) + 0.001; Beta(1.5, 1) by inverse CDF: F(u) = u^1.5
        u = torch.rand(n, generator=generator).to(self.device)
        return 0.999 * u.pow(1.0 / 1.5) + 0.001

    def fm_loss_from_cond(
        self, cond: torch.Tensor, actions_norm: torch.Tensor, mask: torch.Tensor | None = None, samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Flow-matching MSE with `samples` (t, ε) draws per item sharing one condition vector."""
        cond = cond.repeat_interleave(samples, dim=0)
        a = actions_norm.repeat_interleave(samples, dim=0)
        eps = torch.randn(a.shape, generator=generator).to(a.device)
        t = self.sample_t(a.shape[0], generator)
        tt = t[:, None, None]
        x_t = (1 - tt) * eps + tt * a
        err = (self.head(x_t, t, cond) - (eps - a)) ** 2  # [N, chunk, A]
        if mask is None:
            return err.mean()
        w = mask.repeat_interleave(samples, dim=0).to(err.dtype)[:, :, None].expand_as(err)
        return (err * w).sum() / w.sum().clamp_min(1.0)

    def flow_matching_loss(self, batch: dict, actions: torch.Tensor) -> torch.Tensor:
        """BC loss on ground-truth chunks given in RAW units [B, chunk, A]; normalised here.

        Uses batch["mask"] [B, chunk] when present (steps past an episode's end do not count).
        """
        a = self.action_norm.normalize(actions.to(self.device).float())
        cond = self._expand(self.encode(batch), a.shape[0])
        mask = batch.get("mask")
        if mask is not None:
            mask = mask.to(self.device).repeat_interleave(a.shape[0] // mask.shape[0], dim=0)
        return self.fm_loss_from_cond(cond, a, mask)

    # -- deterministic ODE: evaluation -------------------------------------------------------
    @torch.no_grad()
    def act_norm(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.ode_from_cond(self.encode(batch), generator)

    def ode_from_cond(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The deterministic Euler integration [B, chunk, A] (normalised units); differentiable when grad is on."""
        c = self.config
        shape = (cond.shape[0], c.chunk, c.action_dim)
        if c.ode_init == "zero":
            x = torch.zeros(shape, device=self.device)
        else:
            gen = generator or torch.Generator().manual_seed(0)
            x = torch.randn(shape, generator=gen).to(self.device)
        for k in range(c.euler_steps):
            x = x - self.head(x, self._t(k, shape[0]), cond) / c.euler_steps
        return x

    @torch.no_grad()
    def act(self, batch: dict) -> torch.Tensor:
        """The deterministic chunk [B, chunk, A] in simulator units."""
        return self.action_norm.unnormalize(self.act_norm(batch))

    # -- stochastic mode: RL -----------------------------------------------------------------
    def _step_params(self, x: torch.Tensor, k: int, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._t(k, x.shape[0])
        mean = x - self.head(x, t, cond) / self.config.euler_steps
        return mean, self.sigma_net(x, t, cond)

    @torch.no_grad()
    def sample_sde(self, batch: dict, num_samples: int, generator: torch.Generator | None = None) -> SDESample:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        return self.sde_from_cond(self._expand(self.encode(batch), len(batch["instruction"]) * num_samples),
                                  generator)

    def sde_from_cond(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> SDESample:
        """One stochastic chain per row of `cond` (call under no_grad for behaviour samples)."""
        c = self.config
        n = cond.shape[0]
        x = torch.randn((n, c.chunk, c.action_dim), generator=generator).to(self.device)
        chain, log_prob, sigma_sum = [x], torch.zeros_like(x), torch.zeros_like(x)
        for k in range(c.euler_steps):
            mean, sigma = self._step_params(x, k, cond)
            x = mean + sigma * torch.randn(mean.shape, generator=generator).to(self.device)
            log_prob += gaussian_log_prob(x, mean, sigma)
            sigma_sum += sigma
            chain.append(x)
        return SDESample(
            actions_norm=x, actions=self.action_norm.unnormalize(x), chain=torch.stack(chain, dim=1),
            log_prob=log_prob, sigma=sigma_sum / c.euler_steps,
        )

    def _chain_terms(self, batch: dict, chain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step (log-prob, σ) of a recorded chain [N, K+1, chunk, A] under the current parameters."""
        if chain.dim() != 4 or chain.shape[1] != self.config.euler_steps + 1:
            raise ValueError(f"chain must be [N, {self.config.euler_steps + 1}, chunk, A], got {tuple(chain.shape)}")
        return self.chain_terms_from_cond(self._expand(self.encode(batch), chain.shape[0]), chain)

    def chain_terms_from_cond(self, cond: torch.Tensor, chain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chain = chain.to(self.device)
        logps, sigmas = [], []
        for k in range(self.config.euler_steps):
            mean, sigma = self._step_params(chain[:, k], k, cond)
            logps.append(gaussian_log_prob(chain[:, k + 1], mean, sigma))
            sigmas.append(sigma)
        return torch.stack(logps, 1), torch.stack(sigmas, 1)

    def log_prob_of(self, batch: dict, chain: torch.Tensor) -> torch.Tensor:
        """[N, chunk, A] log π of a recorded chain, differentiable (for the PPO ratio).

        `batch` holds B items and `chain` N = B·G rows grouped row-major, as sample_sde returns them.
        """
        return self._chain_terms(batch, chain)[0].sum(1)

    def entropy_of(self, batch: dict, chain: torch.Tensor) -> torch.Tensor:
        """[N, chunk, A] Σ_k entropy of the step Gaussians along a chain, differentiable (σ-net only)."""
        sigma = self._chain_terms(batch, chain)[1]
        return (0.5 + _LOG_SQRT_2PI + sigma.log()).sum(1)

    def rft_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """What RFT trains: the action head with its input projections, and the σ-net. Vision and
        language stay frozen (the instruction encoder has no trainable parameters here at all)."""
        head = [*self.head.parameters(), *self.fuse.parameters(), *self.text_proj.parameters(),
                *self.proprio_proj.parameters()]
        return {"head": head, "sigma": list(self.sigma_net.parameters())}
