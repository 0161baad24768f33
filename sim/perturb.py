"""Start states and the paper's perturbation families, deterministic from a seed.

A start state is a task's reset vector (`rand_vec`: object and goal placement) plus the hand's
start position. In-distribution starts are drawn uniformly from the task's own reset space; a
perturbation then shifts the object, the goal or the hand by a fixed distance in a random
direction, as in the paper (object and goal ±2.5 cm minor / ±5 cm major in x-y).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from sim.errors import InputError
from sim.tasks import TaskSpec

FAMILIES = ("none", "object", "goal", "robot", "combined")
LEVELS = ("minor", "major")

# metres; object and goal move in x-y, the hand in x-y-z
MAGNITUDES: dict[str, dict[str, float]] = {
    "object": {"minor": 0.025, "major": 0.05},
    "goal": {"minor": 0.025, "major": 0.05},
    "robot": {"minor": 0.05, "major": 0.10},
}

# Seed streams keep dataset starts and evaluation starts apart by construction.
STREAMS = {"collect": 1, "eval": 2, "heldout": 3, "demo": 4, "rl": 5}  # rl: start states of RL episodes


class PerturbationError(InputError):
    pass


@dataclass(frozen=True)
class Perturbation:
    family: str = "none"
    level: str | None = None

    @property
    def name(self) -> str:
        return self.family if self.family == "none" else f"{self.family}:{self.level}"

    def offsets(self) -> dict[str, float]:
        """Distance per entity ('object', 'goal', 'robot') that this perturbation moves."""
        if self.family == "none":
            return {}
        assert self.level is not None
        if self.family == "combined":
            return {k: MAGNITUDES[k][self.level] for k in ("object", "goal", "robot")}
        return {self.family: MAGNITUDES[self.family][self.level]}

    def applies_to(self, spec: TaskSpec) -> bool:
        """False where the task lacks the entity (no goal perturbation for a drawer)."""
        if self.family == "object":
            return spec.obj_xy is not None
        if self.family == "goal":
            return spec.goal_xy is not None
        return True


def parse_perturbation(text: str) -> Perturbation:
    text = text.strip().lower()
    if text in ("none", "in-distribution", "id", ""):
        return Perturbation()
    family, _, level = text.partition(":")
    if family not in FAMILIES or family == "none":
        raise PerturbationError(
            f"unknown perturbation '{text}': use none or FAMILY:LEVEL with FAMILY in "
            f"{', '.join(FAMILIES[1:])} and LEVEL in {', '.join(LEVELS)}"
        )
    if level not in LEVELS:
        raise PerturbationError(f"perturbation '{text}' needs a level: {family}:minor or {family}:major")
    return Perturbation(family, level)


def perturbation_suite() -> list[Perturbation]:
    """In-distribution plus every family at both levels: the paper's Table 2 grid."""
    suite = [Perturbation()]
    for fam in FAMILIES[1:]:
        suite += [Perturbation(fam, lvl) for lvl in LEVELS]
    return suite


def parse_perturbations(text: str) -> list[Perturbation]:
    """'all' → the suite; otherwise a comma-separated list of FAMILY:LEVEL."""
    if text.strip().lower() in ("all", "suite"):
        return perturbation_suite()
    items = [s for s in text.split(",") if s.strip()] or ["none"]
    return list(dict.fromkeys(parse_perturbation(s) for s in items))


@dataclass(frozen=True)
class StartState:
    task: str
    rand_vec: tuple[float, ...]
    hand_init: tuple[float, float, float]
    perturbation: str = "none"
    seed: int = 0
    index: int = 0
    stream: str = "collect"
    offsets: dict[str, list[float]] = field(default_factory=dict, compare=False)

    def key(self) -> np.ndarray:
        """The numbers that define the start; two starts are the same iff these match."""
        return np.concatenate([np.asarray(self.rand_vec, float), np.asarray(self.hand_init, float)])

    def to_json(self) -> dict:
        d = asdict(self)
        d["rand_vec"] = list(self.rand_vec)
        d["hand_init"] = list(self.hand_init)
        return d

    @staticmethod
    def from_json(d: dict) -> StartState:
        return StartState(
            task=d["task"], rand_vec=tuple(d["rand_vec"]), hand_init=tuple(d["hand_init"]),
            perturbation=d.get("perturbation", "none"), seed=int(d.get("seed", 0)),
            index=int(d.get("index", 0)), stream=d.get("stream", "collect"), offsets=d.get("offsets", {}),
        )


def _direction(rng: np.random.Generator, dims: int) -> np.ndarray:
    if dims == 2:
        a = rng.uniform(0.0, 2.0 * math.pi)
        return np.array([math.cos(a), math.sin(a)])
    v = rng.normal(size=3)
    v[2] *= 0.5  # keep most of the hand's offset horizontal
    return v / np.linalg.norm(v)


def candidate_starts(
    spec: TaskSpec,
    reset_low: np.ndarray,
    reset_high: np.ndarray,
    hand_init: np.ndarray,
    hand_low: np.ndarray,
    hand_high: np.ndarray,
    perturbation: Perturbation,
    seed: int,
    index: int,
    stream: str,
) -> Iterator[StartState]:
    """Endless deterministic candidates; the environment keeps the first its reset accepts.

    MetaWorld rejects some placements (object too close to goal) by re-sampling forever; the
    environment detects that and asks for the next candidate instead of hanging.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown seed stream {stream!r}")
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), STREAMS[stream]])
    rng_base, rng_off = (np.random.default_rng(s) for s in ss.spawn(2))
    offs = perturbation.offsets()
    while True:
        vec = rng_base.uniform(reset_low, reset_high)
        hand = np.array(hand_init, dtype=float)
        applied: dict[str, list[float]] = {}
        if "object" in offs and spec.obj_xy is not None:
            d = offs["object"] * _direction(rng_off, 2)
            vec[list(spec.obj_xy)] += d
            applied["object"] = d.tolist()
        if "goal" in offs and spec.goal_xy is not None:
            d = offs["goal"] * _direction(rng_off, 2)
            vec[list(spec.goal_xy)] += d
            applied["goal"] = d.tolist()
        if "robot" in offs:
            # a direction that keeps the hand inside its workspace, so it moves the full distance
            for _ in range(32):
                d = offs["robot"] * _direction(rng_off, 3)
                if np.all(hand + d >= hand_low) and np.all(hand + d <= hand_high):
                    break
            hand = np.clip(hand + d, hand_low, hand_high)
            applied["robot"] = (hand - np.asarray(hand_init)).tolist()
        yield StartState(
            task=spec.name,
            rand_vec=tuple(float(x) for x in vec),
            hand_init=tuple(float(x) for x in hand),
            perturbation=perturbation.name,
            seed=int(seed),
            index=int(index),
            stream=stream,
            offsets=applied,
        )


MAX_CUSTOM_OFFSET = 0.15  # metres: beyond this most placements leave the table or the arm's reach


def with_offsets(start: StartState, spec: TaskSpec, offsets: dict[str, list[float]]) -> StartState:
    """A start moved by explicit offsets {"object": [dx, dy], "goal": [dx, dy], "robot": [dx, dy, dz]} (metres)."""
    vec = np.array(start.rand_vec, dtype=float)
    hand = np.array(start.hand_init, dtype=float)
    applied: dict[str, list[float]] = {}
    sizes = {"object": 2, "goal": 2, "robot": 3}
    for name, value in offsets.items():
        if name not in sizes:
            raise PerturbationError(f"unknown offset '{name}': use object, goal or robot")
        d = np.asarray(value, dtype=float).reshape(-1)
        if d.shape != (sizes[name],) or not np.all(np.isfinite(d)):
            raise PerturbationError(f"offset '{name}' needs {sizes[name]} finite numbers, got {value!r}")
        if np.linalg.norm(d) > MAX_CUSTOM_OFFSET:
            raise PerturbationError(f"offset '{name}' is {np.linalg.norm(d):.3f} m; at most {MAX_CUSTOM_OFFSET} m")
        if not np.any(d):
            continue
        idx = {"object": spec.obj_xy, "goal": spec.goal_xy}.get(name)
        if name == "robot":
            hand = hand + d
        elif idx is None:
            raise PerturbationError(f"{spec.name} has no independent {name} to move")
        else:
            vec[list(idx)] += d
        applied[name] = d.tolist()
    return StartState(task=start.task, rand_vec=tuple(float(x) for x in vec), hand_init=tuple(float(x) for x in hand),
                      perturbation="custom" if applied else start.perturbation, seed=start.seed, index=start.index,
                      stream=start.stream, offsets=applied or start.offsets)
