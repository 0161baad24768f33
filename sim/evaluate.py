"""Success-rate evaluation of any policy in the real simulator.

A policy maps an observation to a chunk of actions that is executed open-loop before it is asked
again. Policies reach worker processes as a `PolicySpec` (a factory path plus arguments), so this
module never imports the models that implement them. `compare` evaluates several policies on the same
seeded starts (the evaluate job and the pipeline's last stage); `process_env` is a worker process's one
cached simulator (also for collection and the reward-fidelity measurement).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Protocol

import numpy as np

from sim.env import DEFAULT_CAMERA, DEFAULT_MAX_STEPS, Observation, SimEnv
from sim.episodes import EpisodeFile
from sim.errors import InputError
from sim.instructions import check_instruction_set, heldout_phrasings
from sim.parallel import Pool, resolve_workers
from sim.perturb import Perturbation, StartState, parse_perturbation
from sim.stats import wilson_interval
from sim.tasks import get_task, resolve_tasks


class ChunkPolicy(Protocol):
    def reset(self, task: str, instruction: str) -> None: ...

    def act(self, obs: Observation) -> np.ndarray:
        """Return a (K, 4) chunk of actions in the simulator's units ([-1, 1])."""
        ...


class ExpertChunkPolicy:
    """The scripted expert as a chunk policy (chunks of one action: closed loop)."""

    def __init__(self) -> None:
        self._expert = None

    def reset(self, task: str, instruction: str) -> None:
        from sim.experts import ExpertPolicy

        self._expert = ExpertPolicy(task)

    def act(self, obs: Observation) -> np.ndarray:
        assert self._expert is not None
        return self._expert(obs.env_obs)[None]


@dataclass(frozen=True)
class PolicySpec:
    """How a worker process builds the policy: 'expert', or `factory` ('module:function') + kwargs."""

    name: str = "expert"
    factory: str | None = None
    kwargs: dict = field(default_factory=dict)
    camera: str = DEFAULT_CAMERA
    image_size: int = 64
    train_datasets: tuple[str, ...] = ()  # their starts must not be evaluation starts

    def build(self) -> ChunkPolicy:
        if self.factory is None:
            return ExpertChunkPolicy()
        module, _, fn = self.factory.partition(":")
        return getattr(importlib.import_module(module), fn)(**self.kwargs)


EXPERT = PolicySpec()


@dataclass
class EvalConfig:
    tasks: tuple[str, ...]
    perturbations: list[Perturbation] = field(default_factory=lambda: [Perturbation()])
    episodes: int = 20
    seed: int = 0
    max_steps: int = DEFAULT_MAX_STEPS
    instruction: str | None = None  # free text for every episode
    instruction_set: str = "train"  # "train": the training instruction | "paraphrase" | "question": held out, cycled
    video_dir: str | None = None
    videos_per_cell: int = 1
    exclude_datasets: tuple[str, ...] = ()
    workers: int = 0
    keep_frames: int = 0  # return this many episodes' frames per cell (for side-by-side videos)

    def __post_init__(self) -> None:
        self.tasks = resolve_tasks(self.tasks)
        self.perturbations = [parse_perturbation(p) if isinstance(p, str) else p for p in self.perturbations]
        if self.episodes <= 0:
            raise InputError(f"episodes must be positive, got {self.episodes}")
        if self.max_steps <= 0:
            raise InputError(f"max steps must be positive, got {self.max_steps}")
        check_instruction_set(self.instruction_set)
        if self.instruction is not None:
            text = self.instruction.strip()
            if not text or len(text) > 512:
                raise InputError("instruction must be 1 to 512 characters")


@dataclass
class EpisodeResult:
    task: str
    perturbation: str
    index: int
    success: bool
    steps: int
    instruction: str
    start: dict
    frames: np.ndarray | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("frames")
        return d


def instruction_for(cfg: EvalConfig, task: str, index: int) -> str:
    if cfg.instruction is not None:
        return cfg.instruction.strip()
    if cfg.instruction_set == "train":
        return get_task(task).instruction
    held_out = heldout_phrasings(task, cfg.instruction_set)
    return held_out[index % len(held_out)]  # cycled over the episodes


def run_episode(
    env: SimEnv, policy: ChunkPolicy, start: StartState, instruction: str, max_steps: int, record: bool = False
) -> tuple[bool, int, list[np.ndarray]]:
    """Run chunks open-loop until success or `max_steps`; return (success, steps, frames).

    The policy looks only at a chunk's last observation, so the steps inside a chunk are physics only (no
    render) unless the episode is recorded; rendering reads the state and never changes it, so the outcome is
    the same either way."""
    obs = env.reset(start)
    policy.reset(env.spec.name, instruction)
    frames = [obs.frame] if record else []
    steps = 0
    while steps < max_steps:
        chunk = np.asarray(policy.act(obs), dtype=np.float32).reshape(-1, 4)
        for k, a in enumerate(chunk):
            if record or k == len(chunk) - 1:
                obs, _, success = env.step(a)
            else:
                success = env.advance(a)
            steps += 1
            if record:
                frames.append(obs.frame)
            if success:
                return True, steps, frames
            if steps >= max_steps:
                break
    return False, steps, frames


_ENVS: dict[tuple, SimEnv] = {}


def process_env(task: str, camera: str, image_size: int, max_steps: int = DEFAULT_MAX_STEPS) -> SimEnv:
    """This process's simulator (evaluation, collection and reward-fidelity units): units of one task run one
    after another, so one environment is kept; asking for another closes it first."""
    key = (task, camera, image_size, max_steps)
    if key not in _ENVS:
        for old in list(_ENVS):
            _ENVS.pop(old).close()
        _ENVS[key] = SimEnv(task, camera=camera, image_size=image_size, max_steps=max_steps)
    return _ENVS[key]


_WORKER: dict[str, object] = {}


def _eval_unit(spec: PolicySpec, cfg: EvalConfig, task: str, pert: Perturbation, index: int, record: bool):
    env = process_env(task, spec.camera, spec.image_size, cfg.max_steps)
    if _WORKER.get("spec") != spec:
        _WORKER["policy"] = spec.build()
        _WORKER["spec"] = spec
    policy: ChunkPolicy = _WORKER["policy"]  # type: ignore[assignment]
    start = env.sample_start(pert, seed=cfg.seed, index=index, stream="eval")
    text = instruction_for(cfg, task, index)
    success, steps, frames = run_episode(env, policy, start, text, cfg.max_steps, record)
    return EpisodeResult(
        task=task, perturbation=pert.name, index=index, success=success, steps=steps, instruction=text,
        start=start.to_json(), frames=np.stack(frames) if record else None,
    )


def check_disjoint(starts: list[StartState], datasets: tuple[str, ...]) -> dict[str, dict]:
    """Count evaluation starts that coincide with any start stored in the given datasets."""
    report = {}
    keys = {(s.task, tuple(np.round(s.key(), 9))) for s in starts}
    for path in datasets:
        ef = EpisodeFile(path)
        try:
            train = {(s.task, tuple(np.round(s.key(), 9))) for s in ef.starts()}
        finally:
            ef.close()
        report[str(path)] = {"dataset_starts": len(train), "eval_starts": len(keys), "overlap": len(keys & train)}
    return report


@dataclass
class EvalReport:
    summary: dict  # JSON-ready
    results: list[EpisodeResult]  # with frames for recorded episodes


def evaluate(
    spec: PolicySpec, cfg: EvalConfig, progress: Callable[[int, int, str], None] | None = None
) -> EvalReport:
    """Evaluate a policy on tasks × perturbations in the simulator."""
    units = []
    for task in cfg.tasks:
        tspec = get_task(task)
        for pert in cfg.perturbations:
            if not pert.applies_to(tspec):
                continue
            for i in range(cfg.episodes):
                record = i < max(cfg.keep_frames, cfg.videos_per_cell if cfg.video_dir else 0)
                units.append((task, pert, i, record))
    if not units:
        raise InputError("no evaluation episodes: the perturbations do not apply to these tasks")
    if cfg.video_dir:
        Path(cfg.video_dir).mkdir(parents=True, exist_ok=True)
        if not os.access(cfg.video_dir, os.W_OK):
            raise InputError(f"video folder {cfg.video_dir} is not writable")
    results: list[EpisodeResult] = []
    workers = resolve_workers(cfg.workers, len(units))
    todo = iter(units)
    pending: set = set()
    with Pool(workers) as pool:
        while True:
            # at most two units per process in flight: progress (and cancellation) flow as work runs
            for u in islice(todo, 2 * workers - len(pending)):
                pending.add(pool.submit(_eval_unit, spec, cfg, *u))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                results.append(fut.result())
                if progress:
                    progress(len(results), len(units), results[-1].task)
    order = [p.name for p in cfg.perturbations]
    results.sort(key=lambda r: (cfg.tasks.index(r.task), order.index(r.perturbation), r.index))
    return EvalReport(summarise(spec, cfg, results), results)


def summarise(spec: PolicySpec, cfg: EvalConfig, results: list[EpisodeResult]) -> dict:
    cells: dict[tuple[str, str], list[EpisodeResult]] = {}
    for r in results:
        cells.setdefault((r.task, r.perturbation), []).append(r)
    rows = []
    for (task, pert), rs in cells.items():
        k, n = sum(r.success for r in rs), len(rs)
        lo, hi = wilson_interval(k, n)
        ok_steps = [r.steps for r in rs if r.success]
        rows.append({
            "task": task, "perturbation": pert, "episodes": n, "successes": k, "success_rate": k / n,
            "ci95": [lo, hi], "mean_steps": float(np.mean([r.steps for r in rs])),
            "mean_steps_success": float(np.mean(ok_steps)) if ok_steps else None,
        })
    by_pert: dict[str, list[dict]] = {}
    for row in rows:
        by_pert.setdefault(row["perturbation"], []).append(row)
    conditions = []
    for pert, rs in by_pert.items():
        k, n = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
        lo, hi = wilson_interval(k, n)
        conditions.append({"perturbation": pert, "episodes": n, "successes": k, "success_rate": k / n,
                           "ci95": [lo, hi], "tasks": len(rs)})
    videos = []
    if cfg.video_dir:
        from sim.video import write_mp4

        for r in results:
            if r.frames is not None and r.index < cfg.videos_per_cell:
                name = video_name((r.task, r.perturbation, r.index), [outcome(r)])
                videos.append(str(write_mp4(Path(cfg.video_dir) / name, list(r.frames))))
    starts = [StartState.from_json(r.start) for r in results]
    datasets = tuple(dict.fromkeys((*cfg.exclude_datasets, *spec.train_datasets)))
    disjoint = check_disjoint(starts, tuple(d for d in datasets if Path(d).exists()))
    return {
        "policy": spec.name,
        "seed": cfg.seed,
        "seed_stream": "eval",
        "max_steps": cfg.max_steps,
        "instruction_set": "custom" if cfg.instruction else cfg.instruction_set,
        "rows": rows,
        "conditions": conditions,
        "episodes": [r.to_json() for r in results],
        "videos": videos,
        "disjoint_from_datasets": disjoint,
        "starts_disjoint": all(v["overlap"] == 0 for v in disjoint.values()),
    }


# -- several policies on the same seeded starts ---------------------------------------------------------
EpisodeKey = tuple[str, str, int]  # (task, perturbation, index): the same start for every policy
STATS = ("episodes", "successes", "success_rate", "ci95")  # what a comparison keeps per policy


def outcome(r: EpisodeResult) -> str:
    return "ok" if r.success else "fail"


def video_name(key: EpisodeKey, outcomes: list[str]) -> str:
    task, pert, index = key
    return f"{task}_{pert.replace(':', '-')}_{index}_{'_'.join(outcomes)}.mp4"


def write_side_by_side(folder: Path, key: EpisodeKey, episodes: dict[str, EpisodeResult],
                       labelled: bool = False) -> Path:
    """Recorded episodes of one start (policy name → episode) side by side, one alone as is; the file name
    holds each outcome. `labelled`: the file name starts each outcome with its policy's name, and the picture
    carries it (name, ✓/✗ and a step counter over each clip)."""
    from sim.video import side_by_side, write_mp4

    outcomes = [f"{n}-{outcome(r)}" if labelled else outcome(r) for n, r in episodes.items()]
    if labelled:
        from sim.video_labels import write_labelled_side_by_side

        return write_labelled_side_by_side(Path(folder) / video_name(key, outcomes), {
            n: (list(r.frames), bool(r.success)) for n, r in episodes.items() if r.frames is not None})
    clips = [list(r.frames) for r in episodes.values() if r.frames is not None]
    frames = side_by_side(*clips) if len(clips) > 1 else clips[0]
    return write_mp4(Path(folder) / video_name(key, outcomes), [np.asarray(f) for f in frames])


@dataclass
class Comparison:
    reports: dict[str, EvalReport]  # policy name → its report, in the order given

    @property
    def same_start_states(self) -> bool:
        starts = [[json.dumps(e["start"], sort_keys=True) for e in rep.summary["episodes"]]
                  for rep in self.reports.values()]
        return all(s == starts[0] for s in starts)

    @property
    def starts_disjoint(self) -> dict[str, bool]:
        return {name: rep.summary["starts_disjoint"] for name, rep in self.reports.items()}

    def recorded(self) -> dict[EpisodeKey, dict[str, EpisodeResult]]:
        """The episodes with frames, by start; first-seen order (the first policy's episodes first)."""
        out: dict[EpisodeKey, dict[str, EpisodeResult]] = {}
        for name, rep in self.reports.items():
            for r in rep.results:
                if r.frames is not None:
                    out.setdefault((r.task, r.perturbation, r.index), {})[name] = r
        return out

    def by_policy(self, perturbation: str, task: str | None = None) -> dict[str, dict]:
        """STATS of every policy that has this condition (or, with `task`, this cell)."""
        out = {}
        for name, rep in self.reports.items():
            rows = rep.summary["conditions"] if task is None else rep.summary["rows"]
            for row in rows:
                if row["perturbation"] == perturbation and (task is None or row["task"] == task):
                    out[name] = {k: row[k] for k in STATS}
        return out


def compare(
    specs: dict[str, PolicySpec], cfg: EvalConfig, progress: Callable[[int, int, str, str], None] | None = None,
    on_report: Callable[[str, EvalReport], None] | None = None,
) -> Comparison:
    """Evaluate every policy (name → spec) with the same config, so on the same seeded starts; progress gets
    (done, total, policy name, task) over all policies, `on_report` each report as soon as it is done."""
    reports: dict[str, EvalReport] = {}
    for k, (name, spec) in enumerate(specs.items()):
        def each(done: int, total: int, task: str, k: int = k, name: str = name) -> None:
            if progress:
                progress(k * total + done, len(specs) * total, name, task)

        reports[name] = evaluate(spec, cfg, progress=each)
        if on_report:
            on_report(name, reports[name])
    return Comparison(reports)
