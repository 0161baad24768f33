"""Closed-loop RL with an outcome reward: trajectory-level GRPO over whole episodes in a world.

One training step, top to bottom:
  1. draw B start states from the training seed stream ("rl", never "eval"), G episodes each;
  2. roll all B·G episodes out together in the world (models/worlds.py): at every chunk boundary the
     policy sees the current frame and proprio and samples a chunk of 8 actions, which the world
     executes; an episode ends at its first success or at the step cap;
  3. reward r = 1 if the episode succeeded at any step, else 0 (optionally minus a speed term);
  4. GRPO advantage A = (r − mean_group) / (std_group + 1e-6), broadcast to every chunk and action
     dimension of that episode; chunks after the episode's end do not exist, so they carry no loss;
  5. dynamic sampling: a group whose G episodes all succeed or all fail carries no signal; it is
     dropped, and fresh start states are rolled out (up to `max_rounds` rounds) until at least
     `min_mixed` groups are mixed;
  6. several passes of mini-batches over the kept chunks with the clipped objective
     (separate low/high clip), a KL anchor to the base policy, and AdamW with gradient clipping:
         loss = −mean[min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A)] + β·KL(π ‖ π_base) − c·H(π),
     ρ = π(a)/π_old(a) per action dimension.

Exploration (`noise`):
  - "gauss" (default): the chunk is the deterministic ODE mean plus N(0, σ²) per dimension, σ a learned
    per-dimension scale in normalised action units. log π is differentiable through the whole ODE,
    and the mean is exactly what evaluation runs, so RL improves the policy that is evaluated.
  - "chunk": the same, but one offset per chunk shared by its 8 actions (temporally correlated exploration:
    the arm integrates its actions, so independent per-step noise largely cancels, and the outcome's credit
    is spread over 8× fewer noise dimensions); log π is the density of the chunk-mean residual.
  - "sde": the paper's σ-net, every Euler step stochastic (the stochastic policy is much weaker than
    its deterministic ODE; docs/results.md measures the gap).

Vision and language stay frozen (their features are computed once per observation); the action head,
its input projections and the noise scale train.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import device_for, load_train_state, output_folder, read_config, save_train_state
from models.hooks import Hooks, MetricsLog
from models.policy.model import gaussian_log_prob
from models.presets import from_preset
from models.worlds import WORLDS, World, make_world
from sim.errors import InputError
from sim.perturb import Perturbation, parse_perturbations
from sim.tasks import get_task, resolve_tasks
from sim.vector import StartRequest

NOISE_MODES = ("gauss", "chunk", "sde")


@dataclass
class RLConfig:
    steps: int = 73  # GRPO steps
    tasks: str = "cpu-quick"  # task names (comma-separated) or a preset
    perturbations: str = "none"  # training starts cycle through these (a perturbation a task lacks: none)
    batch_size: int = 8  # B start states per round
    group_size: int = 8  # G episodes per start state
    max_rounds: int = 2  # dynamic sampling: rounds of B fresh starts per step at most
    min_mixed: int = 4  # stop sampling once this many groups have mixed outcomes
    max_steps: int = 150  # episode cap (environment steps)
    noise: str = "chunk"
    explore_chunks: int = 0  # 0: every chunk explores; k: only k consecutive chunks per episode, from a chunk
    explore_window: int = 12  # drawn per group in [0, explore_window), so a group's episodes differ only there
    init_std: float = 0.3  # initial σ in normalised action units
    std_min: float = 0.02
    std_max: float = 1.0
    lr_head: float = 1e-4
    lr_std: float = 1e-3  # the learned σ (gauss) or the σ-net (sde)
    weight_decay: float = 0.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    update_epochs: int = 2
    minibatches: int = 4
    kl_coef: float = 0.05  # KL(π ‖ π_base) anchor (closed form for gauss, k3 for sde)
    entropy_coef: float = 0.0
    speed_bonus: float = 0.0  # r = success · (1 − speed_bonus · steps / max_steps); 0: plain 0/1
    grad_clip: float = 1.0
    eval_every: int = 10  # held-out success (deterministic ODE, "eval" stream) every N steps; 0: never
    eval_episodes: int = 10  # per task
    eval_seed: int = 1000  # kept apart from sim-eval's default seed 0
    checkpoint_every: int = 1
    max_minutes: float = 0.0  # wall-clock budget of this call: stop (with a checkpoint) after the step that crosses it
    seed: int = 0
    workers: int = 0  # simulator processes (0: one per core)
    threads: int = 1  # torch threads of the learner
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.noise not in NOISE_MODES:
            raise InputError(f"noise must be one of {', '.join(NOISE_MODES)}, got {self.noise!r}")
        for name in ("steps", "batch_size", "max_rounds", "max_steps", "update_epochs", "minibatches",
                     "checkpoint_every", "eval_episodes", "explore_window"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise InputError(f"group-size must be at least 2 (advantages are relative), got {self.group_size}")
        if not 0 <= self.min_mixed <= self.batch_size * self.max_rounds:
            raise InputError(f"min-mixed must be in [0, batch-size × max-rounds], got {self.min_mixed}")
        if not 0 < self.std_min <= self.init_std <= self.std_max:
            raise InputError(f"need 0 < std-min ≤ init-std ≤ std-max, got {self.std_min}, {self.init_std}, "
                             f"{self.std_max}")
        for name in ("lr_head", "lr_std", "weight_decay", "kl_coef", "entropy_coef", "grad_clip"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise InputError(f"{name.replace('_', '-')} must be a finite number ≥ 0, got {getattr(self, name)}")
        if not (0 < self.clip_low < 1 and 0 < self.clip_high < 10):
            raise InputError(f"clip-low must be in (0, 1) and clip-high in (0, 10), got {self.clip_low}, "
                             f"{self.clip_high}")
        if not 0 <= self.speed_bonus < 1:
            raise InputError(f"speed-bonus must be in [0, 1), got {self.speed_bonus}")
        if self.eval_every < 0:
            raise InputError(f"eval-every must be 0 or positive, got {self.eval_every}")
        if self.explore_chunks < 0:
            raise InputError(f"explore-chunks must be 0 (every chunk) or positive, got {self.explore_chunks}")
        if not (math.isfinite(self.max_minutes) and self.max_minutes >= 0):
            raise InputError(f"max-minutes must be 0 (no budget) or positive, got {self.max_minutes}")
        resolve_tasks(self.tasks)
        parse_perturbations(self.perturbations)


PRESETS: dict[str, RLConfig] = {
    # seconds: for tests and the smoke pipeline
    "smoke": RLConfig(steps=2, tasks="reach-v3", batch_size=2, group_size=2, max_rounds=1, min_mixed=0,
                      max_steps=24, update_epochs=2, minibatches=2, eval_every=2, eval_episodes=1,
                      workers=1),
    # a 2-core CPU: the measured run of docs/results.md (73 steps, 17 minutes)
    "cpu-quick": RLConfig(max_minutes=45),
    # a GPU machine with more simulator cores
    "gpu": RLConfig(steps=200, batch_size=32, group_size=8, max_rounds=2, min_mixed=16, eval_episodes=25,
                    threads=4),
}


def make_config(preset: str = "cpu-quick", steps: int | None = None, **overrides: Any) -> RLConfig:
    return from_preset(PRESETS, preset, "RL", steps, overrides)


# -- start states --------------------------------------------------------------------------------
def start_requests(tasks: tuple[str, ...], perts: list[Perturbation], first: int, count: int, seed: int,
                   stream: str) -> list[StartRequest]:
    """`count` starts with consecutive indices from `first`, cycling through tasks and perturbations."""
    out = []
    for j in range(first, first + count):
        task = tasks[j % len(tasks)]
        pert = perts[(j // len(tasks)) % len(perts)]
        if not pert.applies_to(get_task(task)):
            pert = Perturbation()
        out.append(StartRequest(task=task, perturbation=pert, seed=seed, index=j, stream=stream))
    return out


# -- the stochastic policy -----------------------------------------------------------------------
class Actor:
    """The policy's action distribution over fused conditions, for every noise mode."""

    def __init__(self, model, cfg: RLConfig, log_std: torch.Tensor) -> None:
        self.model, self.cfg, self.log_std = model, cfg, log_std
        self.gaussian = cfg.noise in ("gauss", "chunk")

    def std(self) -> torch.Tensor:
        return self.log_std.clamp(math.log(self.cfg.std_min), math.log(self.cfg.std_max)).exp()

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(actions_norm [N, K, A], what log π is evaluated on, log π: [N, K, A], or [N, A] for chunk noise)."""
        if self.gaussian:
            mean = self.model.ode_from_cond(cond)
            shape = (mean.shape[0], 1, mean.shape[2]) if self.cfg.noise == "chunk" else mean.shape
            a = mean + self.std() * torch.randn(shape, generator=gen).to(mean.device)
            return a, a, self.log_prob(cond, a, mean)
        s = self.model.sde_from_cond(cond, gen)
        return s.actions_norm, s.chain, s.log_prob

    def log_prob(self, cond: torch.Tensor, target: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        if self.gaussian:
            mean = self.model.ode_from_cond(cond) if mean is None else mean
            if self.cfg.noise == "chunk":  # one offset per chunk: the density of the chunk-mean residual
                return gaussian_log_prob((target - mean).mean(1), torch.zeros_like(mean[:, 0]),
                                         self.std().expand_as(mean[:, 0]))
            return gaussian_log_prob(target, mean, self.std().expand_as(mean))
        return self.model.chain_terms_from_cond(cond, target)[0].sum(1)

    @torch.no_grad()
    def reference(self, ref_cond: torch.Tensor, ref, target: torch.Tensor) -> torch.Tensor:
        """What the KL anchor needs of the base policy: its mean chunk (gaussian noise) or its log π (sde)."""
        if self.gaussian:
            return ref.ode_from_cond(ref_cond)
        return ref.chain_terms_from_cond(ref_cond, target)[0].sum(1)

    def kl_to_reference(self, cond: torch.Tensor, target: torch.Tensor, reference: torch.Tensor,
                        log_prob: torch.Tensor) -> torch.Tensor:
        """KL(π ‖ π_base) per action step and dimension: closed form between the two Gaussians (the base at
        σ = init_std), else the k3 estimator on the sampled chains."""
        if self.gaussian:
            mean, std, std_ref = self.model.ode_from_cond(cond), self.std(), self.cfg.init_std
            return (math.log(std_ref) - std.log()) + (std**2 + (mean - reference) ** 2) / (2 * std_ref**2) - 0.5
        return kl_k3(log_prob, reference)

    def entropy(self, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.gaussian:
            return (0.5 + 0.5 * math.log(2 * math.pi) + self.std().log()).sum()
        sigma = self.model.chain_terms_from_cond(cond, target)[1]
        return (0.5 + 0.5 * math.log(2 * math.pi) + sigma.log()).sum(1).mean()


# -- rollouts ------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """Every chunk decision of a batch of episodes, flattened: row r belongs to episode `episode[r]`."""

    vision: torch.Tensor
    text: torch.Tensor
    proprio: torch.Tensor
    target: torch.Tensor  # what log π is evaluated on (actions, or the SDE chain)
    log_prob: torch.Tensor  # [R, K, A] under the behaviour policy
    reference: torch.Tensor  # [R, K, A] the base policy's mean chunk (gauss) or its log π (sde)
    episode: torch.Tensor  # [R] long
    success: np.ndarray  # [E] bool
    steps: np.ndarray  # [E] int
    executed: int


@torch.no_grad()
def rollout(world: World, actor: Actor | None, model, ref, requests: list[StartRequest], gen: torch.Generator,
            max_steps: int, hooks: Hooks | None = None, explore: np.ndarray | None = None,
            explore_chunks: int = 0, frames: list[np.ndarray] | None = None) -> Rollout:
    """Drive every episode to its end. `actor` None: the deterministic ODE (evaluation, nothing recorded).

    `explore` (per slot, a chunk index) with `explore_chunks` = k > 0: only chunks explore[i] … explore[i] + k − 1
    of episode i are sampled from the stochastic policy (and recorded); the others are the deterministic ODE.
    `frames`: a list that receives every slot's frame at every chunk boundary ([N, H, W, 3] per boundary)."""
    instructions = [get_task(r.task).instruction for r in requests]
    model.text.warm(list(dict.fromkeys(instructions)))
    obs = world.reset(requests)
    if frames is not None:
        frames.append(obs.frames.copy())
    n = len(requests)
    live = np.ones(n, bool)
    rec: dict[str, list] = {k: [] for k in ("vision", "text", "proprio", "target", "log_prob", "ref", "episode")}
    success, steps, executed = np.zeros(n, bool), np.zeros(n, int), 0
    chunk_cap = math.ceil(max_steps / model.config.chunk) + 1
    for chunk_index in range(chunk_cap):
        if hooks is not None and hooks.should_stop():
            break
        rows = np.flatnonzero(live)
        vision, text, proprio = model.encode_parts(obs.policy_batch(rows, instructions))
        cond = model.fuse_parts(vision, text, proprio)
        noisy = np.ones(len(rows), bool) if actor is not None else np.zeros(len(rows), bool)
        if actor is not None and explore is not None and explore_chunks > 0:
            noisy = (explore[rows] <= chunk_index) & (chunk_index < explore[rows] + explore_chunks)
        a_norm = model.ode_from_cond(cond) if not noisy.all() else None
        if noisy.any():
            sel = torch.from_numpy(np.flatnonzero(noisy))
            a_noisy, target, logp = actor.sample(cond[sel], gen)
            a_norm = a_noisy if a_norm is None else a_norm.index_copy(0, sel, a_noisy)
            reference = actor.reference(ref.fuse_parts(vision[sel], text[sel], proprio[sel]), ref, target)
            for k, v in (("vision", vision[sel]), ("text", text[sel]), ("proprio", proprio[sel]), ("target", target),
                         ("log_prob", logp), ("ref", reference)):
                rec[k].append(v.cpu())
            rec["episode"].append(torch.from_numpy(rows[noisy]))
        chunks = np.zeros((n, model.config.chunk, 4), np.float32)
        chunks[rows] = model.action_norm.unnormalize(a_norm).cpu().numpy()
        res = world.step(chunks, live)
        obs, success, steps, executed = res.obs, res.success, res.steps, executed + res.executed
        if frames is not None:
            frames.append(obs.frames.copy())
        live = ~res.done
        if not live.any():
            break
    cat = {k: torch.cat(v) if v else torch.zeros(0) for k, v in rec.items()}
    return Rollout(vision=cat["vision"], text=cat["text"], proprio=cat["proprio"], target=cat["target"],
                   log_prob=cat["log_prob"], reference=cat["ref"], episode=cat["episode"].long(),
                   success=success.copy(), steps=steps.copy(), executed=executed)


def group_advantages(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, G] rewards → (advantages [B, G], mixed [B]): normalised within each group; uniform groups are 0."""
    std = rewards.std(1, keepdim=True)
    adv = (rewards - rewards.mean(1, keepdim=True)) / (std + 1e-6)
    mixed = std.squeeze(1) > 1e-8
    return adv * mixed[:, None], mixed


def episode_rewards(success: np.ndarray, steps: np.ndarray, cfg: RLConfig) -> torch.Tensor:
    r = success.astype(np.float64) * (1.0 - cfg.speed_bonus * steps / cfg.max_steps)
    return torch.from_numpy(r).float()


def clipped_objective(log_prob: torch.Tensor, old_log_prob: torch.Tensor, adv: torch.Tensor, clip_low: float,
                      clip_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate with separate low/high clip, per action dimension; (loss, ratio)."""
    adv = adv.reshape(-1, *([1] * (log_prob.dim() - 1)))
    ratio = (log_prob - old_log_prob).exp()
    objective = torch.min(ratio * adv, ratio.clamp(1 - clip_low, 1 + clip_high) * adv)
    return -objective.mean(), ratio


def kl_k3(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(p ‖ q) from samples of p: E[(q/p − 1) − log(q/p)], ≥ 0."""
    d = (log_q - log_p).clamp(-20, 20)
    return (d.exp() - 1) - d


# -- evaluation ------------------------------------------------------------------------------------
def heldout_success(world: World, model, cfg: RLConfig) -> dict[str, float]:
    """Deterministic ODE on fixed held-out starts (the "eval" stream, seed `eval_seed`)."""
    tasks = resolve_tasks(cfg.tasks)
    requests = [StartRequest(task=t, seed=cfg.eval_seed, index=i, stream="eval")
                for t in tasks for i in range(cfg.eval_episodes)]
    r = rollout(world, None, model, None, requests, torch.Generator(), cfg.max_steps)
    out = {"heldout_success": float(r.success.mean())}
    for t in tasks:
        rows = [i for i, q in enumerate(requests) if q.task == t]
        out[f"heldout_success_{t}"] = float(r.success[rows].mean())
    return out


def plot_heldout(log: MetricsLog, path: Path) -> Path:
    """The held-out success curves (overall and per task) against RL steps, as a PNG."""
    from models.plots import line_chart

    rows = [r for r in log.read() if r.get("split") == "heldout"]
    names = [k for k in (rows[0] if rows else {}) if k.startswith("heldout_success")]
    series = {n.removeprefix("heldout_success").lstrip("_") or "all tasks": [(r["step"], r[n]) for r in rows]
              for n in names}
    if rows and "heldout_imagined_success" in rows[0]:  # an imagined world: the same starts in imagination
        series["all tasks, imagined"] = [(r["step"], r["heldout_imagined_success"]) for r in rows]
    return line_chart(series, path, "held-out success (deterministic policy, eval stream) vs RL step",
                      ylabel="success", ylim=(0.0, 1.0))


# -- training --------------------------------------------------------------------------------------
def train_rl(policy: str, out: str, world: str = "sim", steps: int | None = None, resume: bool = False,
             hooks: Hooks | None = None, preset: str = "cpu-quick", wm: str | None = None,
             reward_model: str | None = None, **overrides: Any) -> dict:
    """Fine-tune the policy checkpoint `policy` with closed-loop GRPO; writes a policy checkpoint to `out`.

    world "sim": episodes in the real simulator, success from the simulator. world "wm": episodes imagined by
    the world model `wm`, success from the reward model `reward_model`; the held-out curve is then measured
    in the real simulator *and* in imagination (`heldout_imagined_success`), on the same starts."""
    from models.policy_io import load_policy, save_policy

    hooks = hooks or Hooks()
    cfg = make_config(preset, steps, **overrides)
    if world not in WORLDS:
        raise InputError(f"unknown world {world!r} for closed-loop RL: choose from {', '.join(WORLDS)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = device_for(cfg.device)
    base_cfg = read_config(policy, "policy")
    if world == "sim":
        from sim.episodes import SIM_ACTION_DIM, SIM_PROPRIO_DIM, require_simulator

        shapes = base_cfg.get("policy", {})
        require_simulator(int(shapes.get("action_dim", SIM_ACTION_DIM)),
                          int(shapes.get("proprio_dim", SIM_PROPRIO_DIM)), f"policy {policy}")
    out_dir = output_folder(out)

    state = load_train_state(out_dir) if resume else None
    if state is not None and state.get("algorithm") != "closed-loop-grpo":
        raise InputError(f"{out_dir} holds another kind of run: pick a new --out")
    start_step = int(state["step"]) if state is not None else 0
    if resume and state is None:
        hooks.progress(0.0, "nothing to resume: starting from the base policy")
    model = load_policy(str(out_dir) if state is not None else policy, device=str(device))
    ref = load_policy(policy, device=str(device))  # the anchor: the base policy, frozen
    for p in ref.parameters():
        p.requires_grad_(False)
    pc = model.config
    tasks = resolve_tasks(cfg.tasks)
    perts = parse_perturbations(cfg.perturbations)

    groups = model.rft_parameter_groups()
    log_std = torch.full((pc.action_dim,), math.log(cfg.init_std), device=device, requires_grad=True)
    head_params = groups["head"]
    noise_params = [log_std] if cfg.noise != "sde" else groups["sigma"]
    trainable = {id(p) for p in [*head_params, *noise_params]}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    model.eval()  # no dropout or batch statistics anywhere; eval() keeps the frozen vision deterministic
    opt = torch.optim.AdamW([{"params": head_params, "lr": cfg.lr_head}, {"params": noise_params, "lr": cfg.lr_std}],
                            betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    if state is not None:
        with torch.no_grad():
            log_std.copy_(state["log_std"].to(device))
        opt.load_state_dict(state["optimizer"])
    actor = Actor(model, cfg, log_std)

    log = MetricsLog(out_dir / "metrics.jsonl")
    log.truncate_after(start_step)
    meta = {"base_policy": str(Path(policy).resolve()), "world": world, "rl": asdict(cfg), "preset": preset,
            "algorithm": "closed-loop-grpo", "datasets": base_cfg.get("datasets", [])}
    if world == "wm":
        meta.update(world_model=str(Path(wm).resolve()) if wm else None,
                    reward_model=str(Path(reward_model).resolve()) if reward_model else None)
    env_steps = int(state["env_steps"]) if state is not None else 0  # real simulator steps (training only)
    world_steps = int(state.get("world_steps", env_steps)) if state is not None else 0

    def save(step: int) -> None:
        save_policy(model, out_dir, extra={**meta, "step": step, "complete": step >= cfg.steps,
                                           "env_steps": env_steps, "std": actor.std().tolist()})
        save_train_state(out_dir, {"step": step, "optimizer": opt.state_dict(), "log_std": log_std.detach().cpu(),
                                   "env_steps": env_steps, "world_steps": world_steps,
                                   "algorithm": "closed-loop-grpo"})
        hooks.artifact("checkpoint", str(out_dir))

    world_kwargs: dict[str, Any] = {"wm": wm, "reward_model": reward_model} if world == "wm" else {}
    w = make_world(world, camera=pc.camera, image_size=pc.image_size, max_steps=cfg.max_steps, workers=cfg.workers,
                   slots_hint=cfg.batch_size * cfg.group_size, **world_kwargs)
    real_world = None
    history: list[dict] = []
    t_start = time.time()
    step = start_step

    def evaluate() -> dict[str, float]:
        """Held-out success in the real simulator, and also in the training world when that is imagined."""
        nonlocal real_world
        if w.real:
            return heldout_success(w, model, cfg)
        if real_world is None:
            real_world = make_world("sim", camera=pc.camera, image_size=pc.image_size, max_steps=cfg.max_steps,
                                    workers=cfg.workers, slots_hint=cfg.eval_episodes * 4)
        imagined = heldout_success(w, model, cfg)
        return {**heldout_success(real_world, model, cfg),
                **{k.replace("heldout_", "heldout_imagined_"): v for k, v in imagined.items()}}

    try:
        if start_step == 0 and cfg.eval_every:
            row = evaluate()
            log.write(0, row, split="heldout")
            hooks.metrics(0, row)
            history.append({"step": 0, **row})
        while step < cfg.steps and not hooks.should_stop():
            if cfg.max_minutes and time.time() - t_start >= 60 * cfg.max_minutes:
                hooks.progress(step / cfg.steps, f"time budget of {cfg.max_minutes:g} min reached at step {step}")
                break
            t0 = time.time()
            # 1–5. rounds of B fresh starts × G episodes until enough groups have mixed outcomes
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            kept: list[tuple[Rollout, torch.Tensor]] = []
            n_groups = n_mixed = 0
            successes, lengths, sim_time, executed = [], [], 0.0, 0
            for rnd in range(cfg.max_rounds):
                first = (step * cfg.max_rounds + rnd) * cfg.batch_size
                reqs = [r for r in start_requests(tasks, perts, first, cfg.batch_size, cfg.seed, "rl")
                        for _ in range(cfg.group_size)]
                explore = None
                if cfg.explore_chunks:  # one exploration window per group, shared by its G episodes
                    first_chunk = torch.randint(cfg.explore_window, (cfg.batch_size,), generator=gen).numpy()
                    explore = np.repeat(first_chunk, cfg.group_size)
                t_sim = time.time()
                ro = rollout(w, actor, model, ref, reqs, gen, cfg.max_steps, hooks, explore, cfg.explore_chunks)
                sim_time += time.time() - t_sim
                executed += ro.executed
                adv, mixed = group_advantages(episode_rewards(ro.success, ro.steps, cfg).view(-1, cfg.group_size))
                kept.append((ro, adv.reshape(-1)))
                successes.append(ro.success)
                lengths.append(ro.steps)
                n_groups += len(mixed)
                n_mixed += int(mixed.sum())
                if n_mixed >= cfg.min_mixed or hooks.should_stop():
                    break
            if hooks.should_stop():
                break
            world_steps += executed
            env_steps += executed if w.real else 0
            # 6. clipped policy gradient on the chunks of mixed groups, several passes of mini-batches
            rows = {k: torch.cat([getattr(ro, k) for ro, _ in kept]) for k in
                    ("vision", "text", "proprio", "target", "log_prob", "reference")}
            adv_rows = torch.cat([a[ro.episode] for ro, a in kept])
            keep = adv_rows != 0
            stats: dict[str, list[float]] = {k: [] for k in ("pg_loss", "kl_ref", "approx_kl", "clip_frac", "entropy",
                                                             "grad_norm", "loss")}
            n_rows = int(keep.sum())
            if n_rows:
                data = {k: v[keep].to(device) for k, v in rows.items()}
                adv_t = adv_rows[keep].to(device)
                mb = max(1, math.ceil(n_rows / cfg.minibatches))
                for _ in range(cfg.update_epochs):
                    perm = torch.randperm(n_rows, generator=gen)
                    for i in range(0, n_rows, mb):
                        idx = perm[i : i + mb].to(device)
                        cond = model.fuse_parts(data["vision"][idx], data["text"][idx], data["proprio"][idx])
                        logp = actor.log_prob(cond, data["target"][idx])
                        pg_loss, ratio = clipped_objective(logp, data["log_prob"][idx], adv_t[idx], cfg.clip_low,
                                                           cfg.clip_high)
                        kl_ref = actor.kl_to_reference(cond, data["target"][idx], data["reference"][idx], logp).mean()
                        entropy = actor.entropy(cond, data["target"][idx])
                        loss = pg_loss + cfg.kl_coef * kl_ref - cfg.entropy_coef * entropy
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        grad_norm = torch.nn.utils.clip_grad_norm_([*head_params, *noise_params], cfg.grad_clip)
                        opt.step()
                        with torch.no_grad():
                            stats["approx_kl"].append(float(kl_k3(data["log_prob"][idx], logp).mean()))
                            hi, lo = 1 + cfg.clip_high, 1 - cfg.clip_low
                            stats["clip_frac"].append(float(((ratio > hi) | (ratio < lo)).float().mean()))
                        for k, v in (("pg_loss", pg_loss), ("kl_ref", kl_ref), ("entropy", entropy),
                                     ("grad_norm", grad_norm), ("loss", loss)):
                            stats[k].append(float(v.detach()))
            step += 1
            success = np.concatenate(successes)
            length = np.concatenate(lengths)
            row = {
                "train_success": float(success.mean()), "mixed_fraction": n_mixed / max(1, n_groups),
                "mixed_groups": n_mixed, "groups": n_groups, "episode_length": float(length.mean()),
                "rows": n_rows, "env_steps": env_steps, "world_steps": world_steps,
                "world_steps_per_s": executed / max(sim_time, 1e-9),
                "sigma_mean": float(actor.std().detach().mean()) if actor.gaussian else float("nan"),
                "step_time": time.time() - t0, "lr_head": cfg.lr_head,
                **{k: float(np.mean(v)) if v else 0.0 for k, v in stats.items()},
            }
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
                held = evaluate()
                log.write(step, held, split="heldout")
                plot_heldout(log, out_dir / "heldout_success.png")
                save_policy(model, out_dir / "snapshots" / f"step-{step}",
                            extra={**meta, "step": step, "complete": False, "heldout_success": held["heldout_success"]})
                row.update(held)
            log.write(step, {k: v for k, v in row.items() if not k.startswith("heldout")})
            hooks.metrics(step, row)
            history.append({"step": step, **row})
            msg = f"RL step {step}/{cfg.steps} train success {row['train_success']:.2f} mixed {n_mixed}/{n_groups}"
            if "heldout_success" in row:
                msg += f" held-out {row['heldout_success']:.2f}"
            hooks.progress(step / cfg.steps, msg)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save(step)
    finally:
        w.close()
        if real_world is not None:
            real_world.close()
    if step > start_step and step % cfg.checkpoint_every != 0 and step != cfg.steps:
        save(step)  # stopped early: keep what was learned
    if (out_dir / "heldout_success.png").exists():
        hooks.artifact("plot", str(out_dir / "heldout_success.png"))
    if step == start_step and state is None:
        save(step)
    wall = time.time() - t_start
    held = [h for h in history if "heldout_success" in h]
    trained = [h for h in history if "train_success" in h]
    return {
        "out": str(out_dir), "steps": step, "complete": step >= cfg.steps, "wall_seconds": wall,
        "seconds_per_step": wall / max(1, step - start_step), "env_steps": env_steps, "world_steps": world_steps,
        "world": world,
        "reward": "success", "noise": cfg.noise,
        "heldout_first": held[0]["heldout_success"] if held else math.nan,
        "heldout_last": held[-1]["heldout_success"] if held else math.nan,
        "heldout_imagined_first": held[0].get("heldout_imagined_success", math.nan) if held else math.nan,
        "heldout_imagined_last": held[-1].get("heldout_imagined_success", math.nan) if held else math.nan,
        "train_success_first": trained[0]["train_success"] if trained else math.nan,
        "train_success_last": trained[-1]["train_success"] if trained else math.nan,
        "mixed_fraction_mean": float(np.mean([h["mixed_fraction"] for h in trained])) if trained else math.nan,
    }
