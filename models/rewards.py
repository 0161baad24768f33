"""The verified reward of VLA-RFT, and the reward sources of its GRPO step (models/rft.py).

The verified reward: how closely a rollout under some actions follows the reference rollout under the
ground-truth actions,

    r = -mean_t [ MAE(pred_t, ref_t) + lam * perceptual(pred_t, ref_t) ]

Frames are in [0, 1], shaped (B, T, 3, H, W). The paper uses LPIPS as the perceptual term; its
VGG weights are not available offline, so the perceptual term here needs no downloaded weights:
`ssim_distance` (1 - SSIM) or any callable mapping two (N, 3, H, W) batches to (N,) distances.
DEFAULT_LAMBDA is what measured best for agreement with the simulator's own reward (see
docs/results.md, reward fidelity).

`REWARDS` maps a reward source's name to its class: "wm" rolls every chunk out in the frozen world
model, "sim" replays it in the simulator restored to the dataset state (`replay_chunk`, the upper
bound), "action_l1" is the kinematic baseline −mean|a − a_gt| (`action_l1`) with no world model.
The reward-fidelity measurement (models/world_model/fidelity.py) uses the same helpers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from models.world_model.metrics import frame_ssim
from sim.errors import InputError

if TYPE_CHECKING:
    from sim.env import SimEnv
    from sim.perturb import StartState

Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_LAMBDA = 0.0


class RewardInputError(InputError):
    pass


def ssim_distance(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) x2 -> (N,) 1 - SSIM (7x7 Gaussian window)."""
    return 1.0 - frame_ssim(pred, ref)


PERCEPTUAL: dict[str, Perceptual] = {"ssim": ssim_distance}


def _check(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if pred.dim() != 5 or pred.shape[2] != 3:
        raise RewardInputError(f"pred must be (B, T, 3, H, W) frames, got shape {tuple(pred.shape)}")
    if ref.dim() != 5 or ref.shape[1:] != pred.shape[1:] or ref.shape[0] not in (1, pred.shape[0]):
        raise RewardInputError(f"ref {tuple(ref.shape)} does not match pred {tuple(pred.shape)}")
    return ref.expand_as(pred)


def per_frame_distance(
    pred: torch.Tensor, ref: torch.Tensor, lam: float = DEFAULT_LAMBDA, perceptual: Perceptual | str | None = None
) -> torch.Tensor:
    """(B, T) distances MAE + lam * perceptual. `ref` may have batch size 1 (one reference for all)."""
    ref = _check(pred, ref)
    pred, ref = pred.float(), ref.float()
    d = (pred - ref).abs().flatten(2).mean(2)
    if lam:
        fn = PERCEPTUAL["ssim"] if perceptual is None else perceptual
        if isinstance(fn, str):
            if fn not in PERCEPTUAL:
                raise RewardInputError(f"unknown perceptual term '{fn}': choose from {', '.join(PERCEPTUAL)}")
            fn = PERCEPTUAL[fn]
        b, t = pred.shape[:2]
        d = d + lam * fn(pred.flatten(0, 1), ref.flatten(0, 1)).reshape(b, t)
    return d


def verified_reward(
    pred: torch.Tensor, ref: torch.Tensor, lam: float = DEFAULT_LAMBDA, perceptual: Perceptual | str | None = None
) -> torch.Tensor:
    """(B, T, 3, H, W) rollouts vs reference -> (B,) reward = -mean over frames of the distance."""
    return -per_frame_distance(pred, ref, lam, perceptual).mean(1)


# -- the reward sources of RFT (models/rft.py, steps 3–5) -------------------------------------------
Chunks = TypeVar("Chunks", np.ndarray, torch.Tensor)


def action_l1(chunks: Chunks, gt: Chunks) -> Chunks:
    """(N, T, A) chunks vs the ground truth (N or 1, T, A) → (N,) reward −mean|a − a_gt| (numpy or torch)."""
    return -abs(chunks - gt).mean((1, 2))


def replay_chunk(env: SimEnv, start: StartState, state: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """Restore the simulator to a dataset state, execute the chunk; its frames (T, H, W, 3) uint8."""
    env.restore(start, state)
    return np.stack([env.step(a)[0].frame for a in chunk])


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 → (..., 3, H, W) float in [0, 1], the verified reward's input."""
    return torch.from_numpy(frames).movedim(-1, -3).float() / 255.0


class RewardSource(ABC):
    """(batch of B start states, B·G sampled chunks, B ground-truth chunks) → ([B, G] rewards, info).

    Built with keywords wm (checkpoint or None), dataset, device and lam; each source takes what it needs."""

    needs_wm = False  # needs a world model checkpoint
    context_frames = 0  # context frames it reads from the batch (besides the policy's)

    def __init__(self, **_unused: Any) -> None:
        return None

    @abstractmethod
    def __call__(self, batch: dict, actions: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]: ...

    def close(self) -> None:
        return None


class WorldModelReward(RewardSource):
    """Steps 3–5 in the frozen world model: one batched rollout for the B·G samples and the B references."""

    needs_wm = True

    def __init__(self, wm: str, device: torch.device, lam: float, **_unused: Any) -> None:
        from models.world_model import load_world_model

        self.wm = load_world_model(wm, device=device)
        self.wm.eval()
        for p in self.wm.parameters():
            p.requires_grad_(False)
        self.lam = lam
        self.context_frames = int(self.wm.context_frames)

    def __call__(self, batch: dict, actions: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]:
        b, g = gt.shape[0], actions.shape[0] // gt.shape[0]
        ctx = batch["context"][:, -self.context_frames :]
        with torch.inference_mode():
            frames = self.wm.rollout(
                torch.cat([ctx.repeat_interleave(g, 0), ctx]), torch.cat([actions, gt.to(actions.device)])
            )
        pred, ref = frames[: b * g], frames[b * g :]
        r = verified_reward(pred, ref.repeat_interleave(g, 0), lam=self.lam)
        return r.float().view(b, g).cpu(), {"frames": frames.shape[0] * frames.shape[1]}


class SimulatorReward(RewardSource):
    """The same verified reward on real frames: restore the dataset state, replay each chunk, render."""

    def __init__(self, dataset: str, lam: float, **_unused: Any) -> None:
        from sim.episodes import EpisodeFile

        self.file = EpisodeFile(dataset)
        self.file.require_sim_states("the simulator reward (--reward-source sim)")
        self.lam = lam
        self.envs: dict[str, SimEnv] = {}
        self._episodes: dict[int, Any] = {}

    def _env(self, task: str) -> SimEnv:
        from sim.env import SimEnv

        if task not in self.envs:
            self.envs[task] = SimEnv(task, camera=str(self.file.camera), image_size=self.file.image_size,
                                     max_steps=10_000)
        return self.envs[task]

    def __call__(self, batch: dict, actions: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]:
        b, g = gt.shape[0], actions.shape[0] // gt.shape[0]
        acts = actions.detach().cpu().numpy().reshape(b, g, *actions.shape[1:])
        rewards = torch.zeros(b, g)
        for i in range(b):
            e, t = int(batch["episode"][i]), int(batch["t"][i])
            if e not in self._episodes:
                self._episodes[e] = self.file.load(e, frames=False)
            ep = self._episodes[e]
            if ep.states is None or ep.start is None:
                raise InputError(f"{self.file.path}: episode {e} has no simulator states; use --reward-source wm")
            env = self._env(ep.task)
            ref = replay_chunk(env, ep.start, ep.states[t], gt[i].cpu().numpy())
            pred = np.stack([replay_chunk(env, ep.start, ep.states[t], acts[i, j]) for j in range(g)])
            rewards[i] = verified_reward(frames_to_tensor(pred), frames_to_tensor(ref[None]).expand(g, -1, -1, -1, -1),
                                         lam=self.lam)
        return rewards, {"frames": b * (g + 1) * actions.shape[1]}

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.file.close()


class ActionL1Reward(RewardSource):
    """Kinematic baseline: how close the chunk is to the ground truth, with no world model."""

    def __call__(self, batch: dict, actions: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]:
        b, g = gt.shape[0], actions.shape[0] // gt.shape[0]
        return action_l1(actions, gt.to(actions.device).repeat_interleave(g, 0)).view(b, g).cpu(), {}


REWARDS: dict[str, type[RewardSource]] = {"wm": WorldModelReward, "sim": SimulatorReward, "action_l1": ActionL1Reward}
REWARD_SOURCES = tuple(REWARDS)
