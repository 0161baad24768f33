"""Episode collection from fresh seeded starts into one HDF5 file: scripted experts, or a policy's own
closed-loop episodes (`CollectConfig.policy`, failures included) for world-model alignment and reward models.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field

import numpy as np

from sim.env import DEFAULT_CAMERA, DEFAULT_MAX_STEPS
from sim.episodes import DatasetSummary, Episode, EpisodeWriter, check_writable, validate_file
from sim.errors import InputError
from sim.evaluate import PolicySpec, process_env
from sim.parallel import Pool, resolve_workers
from sim.perturb import Perturbation, parse_perturbation
from sim.tasks import get_task, resolve_tasks

ProgressFn = Callable[[int, int, str], None]


@dataclass
class CollectConfig:
    tasks: tuple[str, ...]
    episodes: int  # successful episodes per task (or all episodes with keep_failures)
    perturbation: Perturbation = field(default_factory=Perturbation)
    action_noise: float = 0.0
    seed: int = 0
    camera: str = DEFAULT_CAMERA
    image_size: int = 64
    max_steps: int = DEFAULT_MAX_STEPS
    keep_failures: bool = False
    workers: int = 0  # 0: one per available core
    stream: str = "collect"
    policy: PolicySpec | None = None  # None: the scripted expert; else this policy acts (and every episode is kept)
    after_success: int = 0  # keep acting this many steps past the first success (frames of success, for reward models)

    def __post_init__(self) -> None:
        self.tasks = resolve_tasks(self.tasks)
        if self.policy is not None:
            self.keep_failures = True  # a policy's failures are what alignment and reward models need
        if isinstance(self.perturbation, str):
            self.perturbation = parse_perturbation(self.perturbation)
        if self.episodes <= 0:
            raise InputError(f"episodes must be positive, got {self.episodes}")
        if not 0.0 <= self.action_noise <= 1.0:
            raise InputError(f"action noise must be in [0, 1], got {self.action_noise}")
        if self.max_steps <= 0:
            raise InputError(f"max steps must be positive, got {self.max_steps}")
        if self.after_success < 0:
            raise InputError(f"after-success must be 0 or positive, got {self.after_success}")


_POLICY: dict[str, object] = {}


def _policy(spec: PolicySpec):
    if _POLICY.get("spec") != spec:
        _POLICY["policy"] = spec.build()
        _POLICY["spec"] = spec
    return _POLICY["policy"]


def run_expert_episode(cfg: CollectConfig, task: str, index: int) -> Episode:
    """One episode; deterministic in (seed, task, index, perturbation, noise). With `cfg.policy` the policy
    acts, one chunk per observation executed open-loop; the expert's action is still recorded as the label."""
    from sim.experts import ExpertPolicy

    env = process_env(task, cfg.camera, cfg.image_size, cfg.max_steps)
    start = env.sample_start(cfg.perturbation, seed=cfg.seed, index=index, stream=cfg.stream)
    obs = env.reset(start)
    start_positions = {"object_pos": env.object_pos().tolist(), "goal_pos": env.goal_pos().tolist(),
                       "hand_pos": env.hand_pos().tolist()}
    expert = ExpertPolicy(task)
    noise_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, index, 7919]))
    policy = _policy(cfg.policy) if cfg.policy is not None else None
    if policy is not None:
        policy.reset(task, get_task(task).instruction)
        if hasattr(policy, "seed"):
            policy.seed(np.random.SeedSequence([cfg.seed, index, 104729]))
    plan: list[np.ndarray] = []
    frames, proprio, env_obs, acts, clean, rews, succ, states = [], [], [], [], [], [], [], []
    success = False
    extra = 0  # steps taken after the first success
    while not env.done and (not any(succ) or extra < cfg.after_success):
        extra += int(any(succ))
        frames.append(obs.frame)
        proprio.append(obs.proprio)
        env_obs.append(obs.env_obs)
        states.append(env.state())
        a_clean = expert(obs.env_obs)
        if policy is not None:
            if not plan:  # re-plan at the end of each chunk, from what the camera sees now
                plan = list(np.asarray(policy.act(obs), dtype=np.float32).reshape(-1, 4))
            a = plan.pop(0)
        else:
            a = a_clean
        if cfg.action_noise > 0:
            a = np.clip(a + noise_rng.normal(0.0, cfg.action_noise, 4), -1.0, 1.0).astype(np.float32)
        obs, r, success = env.step(a)
        acts.append(a)
        clean.append(a_clean)
        rews.append(r)
        succ.append(success)
    return Episode(
        task=task,
        instruction=get_task(task).instruction,
        frames=np.stack(frames),
        proprio=np.stack(proprio),
        actions=np.stack(acts),
        expert_actions=np.stack(clean),
        rewards=np.asarray(rews, np.float32),
        successes=np.asarray(succ, bool),
        states=np.stack(states),
        env_obs=np.stack(env_obs),
        start=start,
        action_noise=cfg.action_noise,
        attrs={"index": index, **start_positions},
    )


@dataclass
class CollectReport:
    summary: DatasetSummary
    attempts: dict[str, int]
    kept: dict[str, int]
    shortfall: dict[str, int]


def collect(cfg: CollectConfig, out: str, progress: ProgressFn | None = None) -> CollectReport:
    """Collect `cfg.episodes` per task into `out`; the file appears only when complete."""
    check_writable(out)
    total = cfg.episodes * len(cfg.tasks)
    max_attempts = 3 * cfg.episodes + 5
    meta = {
        "collector": "vlarft collect" + (f" --policy {cfg.policy.name}" if cfg.policy is not None else ""),
        "policy": cfg.policy.name if cfg.policy is not None else "expert",
        "perturbation": cfg.perturbation.name,
        "action_noise": cfg.action_noise,
        "seed": cfg.seed,
        "max_steps": cfg.max_steps,
        "after_success": cfg.after_success,
    }
    attempts: dict[str, int] = {}
    kept: dict[str, int] = {}
    done = 0
    workers = resolve_workers(cfg.workers, cfg.episodes)
    with EpisodeWriter(out, cfg.camera, cfg.image_size, meta) as writer, Pool(workers) as pool:
        for task in cfg.tasks:
            # Units are (task, index); a failed expert episode is replaced by the next index, so the
            # kept set is the first N successes in index order whatever the completion order. At most
            # two units per process are in flight, so progress (and a cancel raised from it) flows
            # while the work runs, also when it runs inline in one process.
            next_index = kept_now = 0
            futures = {}
            ready: dict[int, Episode | None] = {}
            while True:
                while len(futures) < 2 * workers and kept_now + len(futures) < cfg.episodes \
                        and next_index < max_attempts:
                    futures[pool.submit(run_expert_episode, cfg, task, next_index)] = next_index
                    next_index += 1
                if not futures:
                    break
                finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for fut in finished:
                    idx = futures.pop(fut)
                    ep = fut.result()
                    keep = ep.success or cfg.keep_failures
                    ready[idx] = ep if keep else None
                    if keep:
                        kept_now += 1
                        done += 1
                        if progress:
                            progress(done, total, task)
            written = 0
            for idx in sorted(ready):
                ep = ready[idx]
                if ep is not None and written < cfg.episodes:
                    writer.add(ep)
                    written += 1
            attempts[task] = next_index
            kept[task] = written
            done += cfg.episodes - written  # count a shortfall as finished work for the progress bar
    summary = validate_file(out)
    shortfall = {t: cfg.episodes - k for t, k in kept.items() if k < cfg.episodes}
    return CollectReport(summary=summary, attempts=attempts, kept=kept, shortfall=shortfall)
