"""Is an instruction understood? Its MiniLM embedding against the training phrasings of the policy's tasks.

similarity(task) = the cosine of the instruction's embedding to the nearest of that task's training phrasings
(sim/instructions.py: training_phrasings). The nearest task and the runner-up give `similarity` and `margin`
(nearest − second). An instruction is *not understood* when
  - a scene task is given and the nearest task is another one (always, whatever the thresholds), or
  - the scene task is not one the policy was trained on, or
  - similarity < the similarity threshold (it matches no task well), or
  - margin < the margin threshold (two tasks are about equally close).

The thresholds are chosen on the held-out phrasings (`choose_thresholds`): positives are held-out phrasings
(every set of sim/instructions.HELDOUT_SETS) on their own task's scene; negatives are task A's training and
held-out phrasings on task B's scene (cross-task), and phrasings of tasks the policy was not trained on, on
each of its scenes (unknown-task: the first UNKNOWN_PER_TASK training phrasings of every other task). On a
grid, the pair that keeps false alarms on held-out phrasings <= 5 % and misses the fewest negatives (mean of
the two miss rates) wins; ties go to fewer false alarms, then to the higher thresholds. If no pair keeps false
alarms <= 5 %, false alarms + misses are minimised instead.

They travel with the policy as `language.json` next to its checkpoint, written by
`vlarft language-check --policy DIR`; the file is only used while its fingerprint (the policy's tasks and
the phrasing tables) still matches. Without it they are recomputed once per process and task set
(`policy_language`): numpy over the embeddings, plus MiniLM (~6 s) for phrasings the checkpoint's cache lacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from models.policy.text import InstructionEncoder, check_instruction
from sim.errors import InputError
from sim.instructions import HELDOUT_SETS, heldout_phrasings, training_phrasings
from sim.tasks import TASKS, get_task

# used only when no thresholds are given; chosen on the held-out sets: 0.63 / 0.0 (cpu-quick), 0.59 / 0.0 (mt10)
DEFAULT_THRESHOLD = 0.6
DEFAULT_MARGIN = 0.0
MAX_FALSE_ALARM = 0.05
UNKNOWN_PER_TASK = 4  # phrasings of each task the policy does not know (unknown-task negatives; MiniLM time)
LANGUAGE_FILE = "language.json"
FORMAT = "vlarft-language/1"
ENCODER_NAME = "all-MiniLM-L6-v2"
SIM_GRID = np.round(np.arange(0.0, 1.0 + 1e-9, 0.01), 4)
MARGIN_GRID = np.round(np.arange(0.0, 0.3 + 1e-9, 0.005), 4)

_MEMO: dict[str, dict[str, Any]] = {}
_MEMO_LOCK = threading.Lock()


def _task_names(tasks: list[str] | tuple[str, ...]) -> list[str]:
    names = list(dict.fromkeys(get_task(t).name for t in tasks))
    if not names:
        raise InputError("the policy was trained on no known task")
    return names


class _Bank:
    """The training phrasings of some tasks, embedded: similarities of any embeddings to each task."""

    def __init__(self, encoder: InstructionEncoder, tasks: list[str]) -> None:
        self.tasks = tasks
        phrasings = [training_phrasings(t) for t in tasks]
        self.owner = np.repeat(np.arange(len(tasks)), [len(p) for p in phrasings])
        self.emb = _embed(encoder, [s for p in phrasings for s in p])

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """[N, d] unit vectors → [N, tasks]: the max cosine over each task's training phrasings."""
        cos = queries @ self.emb.T
        out = np.full((len(queries), len(self.tasks)), -1.0, np.float32)
        for i in range(len(self.tasks)):
            out[:, i] = cos[:, self.owner == i].max(axis=1)
        return out


def _embed(encoder: InstructionEncoder, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, encoder.dim), np.float32)
    return encoder.encode(texts).float().cpu().numpy()


def _top2(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: nearest index, its similarity, runner-up index (−1 if none), margin (inf if none)."""
    order = np.argsort(-sims, axis=1, kind="stable")
    rows = np.arange(len(sims))
    nearest, best = order[:, 0], sims[rows, order[:, 0]]
    if sims.shape[1] < 2:
        return nearest, best, np.full(len(sims), -1), np.full(len(sims), np.inf)
    second = order[:, 1]
    return nearest, best, second, best - sims[rows, second]


def instruction_match(
    encoder: InstructionEncoder,
    tasks: list[str],
    text: str,
    scene_task: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = DEFAULT_MARGIN,
) -> dict[str, Any]:
    """How well the policy (trained on `tasks`) knows `text`, optionally on the scene of `scene_task`."""
    names = _task_names(tasks)
    instruction = check_instruction(text)
    scene = get_task(scene_task).name if scene_task is not None else None
    sims = _Bank(encoder, names).similarities(_embed(encoder, [instruction]))
    nearest_i, best, second_i, gap = (a[0] for a in _top2(sims))
    nearest = names[int(nearest_i)]
    second = names[int(second_i)] if second_i >= 0 else None
    similarity = float(best)
    margin_value = float(gap) if second is not None else None
    scene_similarity = float(sims[0, names.index(scene)]) if scene in names else None

    warning = None
    if scene is not None and scene not in names:
        warning = f"the policy was not trained on {scene}; this instruction is closest to {nearest}"
    elif scene is not None and nearest != scene:
        warning = f"this instruction is closer to {nearest} than to {scene}"
        if similarity < threshold:
            warning += f", and it matches no task the policy knows well (similarity {similarity:.2f})"
    elif similarity < threshold:
        warning = f"this instruction matches no task the policy knows well (similarity {similarity:.2f})"
    elif margin_value is not None and margin_value < margin:
        warning = f"this instruction is almost as close to {second} as to {nearest} (margin {margin_value:.2f})"
    return {
        "instruction": instruction, "nearest_task": nearest, "similarity": round(similarity, 4),
        "second_task": second, "margin": None if margin_value is None else round(margin_value, 4),
        "scene_task": scene, "scene_similarity": None if scene_similarity is None else round(scene_similarity, 4),
        "understood": warning is None, "warning": warning,
        "thresholds": {"similarity": float(threshold), "margin": float(margin)},
    }


def _queries(encoder: InstructionEncoder, bank: _Bank, groups: list[tuple[int, str, tuple[str, ...]]]):
    """(owner, label, phrasings) groups → owner [N], label [N], nearest [N], similarity [N], margin [N], sims."""
    texts = [s for _, _, ps in groups for s in ps]
    owner = np.array([o for o, _, ps in groups for _ in ps], int)
    label = np.array([lab for _, lab, ps in groups for _ in ps], object)
    sims = bank.similarities(_embed(encoder, texts))
    nearest, best, _, gap = _top2(sims)
    return owner, label, nearest, best, gap, sims


def _rate(num: float, den: float) -> float | None:
    return round(float(num) / float(den), 4) if den else None


def choose_thresholds(encoder: InstructionEncoder, tasks: list[str],
                      max_false_alarm: float = MAX_FALSE_ALARM) -> dict[str, Any]:
    """The similarity and margin thresholds, with false-alarm and miss rates on the held-out sets and the
    per-task nearest-task table (see the module's docstring for the rule)."""
    names = _task_names(tasks)
    bank = _Bank(encoder, names)
    n = len(names)
    idx = {t: i for i, t in enumerate(names)}
    pos = _queries(encoder, bank, [(idx[t], s, heldout_phrasings(t, s)) for t in names for s in HELDOUT_SETS])
    cross = _queries(encoder, bank, [(idx[t], "training", training_phrasings(t)) for t in names]
                     + [(idx[t], s, heldout_phrasings(t, s)) for t in names for s in HELDOUT_SETS])
    others = [t for t in sorted(TASKS) if t not in idx]
    unknown = _queries(encoder, bank, [(-1, t, training_phrasings(t)[:UNKNOWN_PER_TASK]) for t in others])

    p_owner, p_set, p_near, p_sim, p_gap, p_sims = pos
    c_owner, c_src, c_near, c_sim, c_gap, _ = cross
    u_sim, u_gap = unknown[3], unknown[4]
    p_right = p_near == p_owner
    c_wrong = c_near != c_owner  # on the scene of its nearest task: flagged only by the thresholds
    c_total, u_total = len(c_owner) * (n - 1), len(u_sim) * n

    def rates(s: float, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """False alarms [M], cross-task misses [M], unknown-task misses [M] for similarity s, margins m."""
        pass_p = p_right & (p_sim >= s) & (p_gap[None] >= m[:, None])
        fa = 1.0 - pass_p.mean(1) if len(p_sim) else np.zeros(len(m))
        cm = (c_wrong & (c_sim >= s) & (c_gap[None] >= m[:, None])).sum(1) / max(c_total, 1)
        um = ((u_sim >= s) & (u_gap[None] >= m[:, None])).sum(1) / max(u_total, 1)
        return fa, cm, um

    kinds = [k for k, total in (("cross", c_total), ("unknown", u_total)) if total]
    rows = []  # (s, m, fa, objective)
    for s in SIM_GRID:
        fa, cm, um = rates(float(s), MARGIN_GRID)
        parts = [cm if k == "cross" else um for k in kinds]
        obj = np.mean(parts, axis=0) if parts else np.zeros(len(MARGIN_GRID))
        rows += [(float(s), float(m), float(f), float(o)) for m, f, o in zip(MARGIN_GRID, fa, obj, strict=True)]
    feasible = [r for r in rows if r[2] <= max_false_alarm + 1e-12]
    if feasible:
        rule = f"false alarms on held-out phrasings <= {max_false_alarm:.0%}, fewest misses"
        s, m, _, _ = min(feasible, key=lambda r: (round(r[3], 9), round(r[2], 9), -r[0], -r[1]))
    else:
        rule = f"no thresholds keep false alarms <= {max_false_alarm:.0%}: fewest false alarms + misses"
        s, m, _, _ = min(rows, key=lambda r: (round(r[2] + r[3], 9), -r[0], -r[1]))

    # the rates at the chosen thresholds, per held-out set and per source of negatives
    flag_p = ~(p_right & (p_sim >= s) & (p_gap >= m))
    miss_c = c_wrong & (c_sim >= s) & (c_gap >= m)
    miss_u = (u_sim >= s) & (u_gap >= m)
    false_alarm = {name: _rate(flag_p[p_set == name].sum(), (p_set == name).sum()) for name in HELDOUT_SETS}
    false_alarm["all"] = _rate(flag_p.sum(), len(flag_p))
    miss: dict[str, float | None] = {src: _rate(miss_c[c_src == src].sum(), (c_src == src).sum() * (n - 1))
                                     for src in ("training", *HELDOUT_SETS)}
    miss["cross_task"] = _rate(miss_c.sum(), c_total)
    miss["unknown_task"] = _rate(miss_u.sum(), u_total)

    per_task = []
    for i, t in enumerate(names):
        mine = p_owner == i
        sims_t = p_sims[mine]
        wrong = [names[j] for j in p_near[mine] if j != i]
        other = [j for j in range(n) if j != i]
        closest = max(other, key=lambda j: float(sims_t[:, j].mean())) if other and len(sims_t) else None
        per_task.append({
            "task": t, "heldout": int(mine.sum()),
            "nearest_is_task": _rate((p_near[mine] == i).sum(), mine.sum()),
            "mean_similarity": round(float(sims_t[:, i].mean()), 4) if len(sims_t) else None,
            "closest_other": names[closest] if closest is not None else None,
            "closest_other_similarity": round(float(sims_t[:, closest].mean()), 4) if closest is not None else None,
            "confused_with": max(set(wrong), key=wrong.count) if wrong else None,
        })
    return {
        "format": FORMAT, "encoder": ENCODER_NAME, "fingerprint": fingerprint(names), "tasks": names,
        "similarity": s, "margin": m, "rule": rule, "max_false_alarm": max_false_alarm,
        "false_alarm": false_alarm, "miss": miss,
        "counts": {"positives": len(p_sim), "cross_task_negatives": int(c_total),
                   "unknown_task_negatives": int(u_total)},
        "per_task": per_task,
    }


def fingerprint(tasks: list[str]) -> str:
    """What the thresholds depend on: the policy's tasks and every task's phrasings (the encoder is fixed)."""
    table = {t: [training_phrasings(t), *(heldout_phrasings(t, s) for s in HELDOUT_SETS)] for t in sorted(TASKS)}
    blob = json.dumps({"encoder": ENCODER_NAME, "tasks": list(tasks), "sets": list(HELDOUT_SETS), "table": table,
                       "max_false_alarm": MAX_FALSE_ALARM, "unknown_per_task": UNKNOWN_PER_TASK,
                       "grid": [SIM_GRID.tolist(), MARGIN_GRID.tolist()]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Policies -------------------------------------------------------------------------------------------

def policy_tasks(folder: str | os.PathLike, _depth: int = 0) -> list[str]:
    """The tasks a policy checkpoint was trained on: config.json's `tasks` (behaviour cloning records them),
    else its base policy's (RFT / RL checkpoints), else the tasks whose instruction its text cache holds."""
    from models.checkpoint import CheckpointError, read_config

    cfg = read_config(folder, "policy")
    tasks = cfg.get("tasks")
    if isinstance(tasks, list) and tasks and all(isinstance(t, str) and t in TASKS for t in tasks):
        return list(dict.fromkeys(tasks))
    base = cfg.get("base_policy")
    if isinstance(base, str) and _depth < 5 and (Path(base) / "config.json").exists():
        try:
            return policy_tasks(base, _depth + 1)
        except CheckpointError:
            pass
    cache = set(cfg.get("instruction_cache") or [])
    found = [t for t in sorted(TASKS) if TASKS[t].instruction in cache]
    if not found:
        raise CheckpointError(f"{folder}: the checkpoint does not say which tasks the policy was trained on")
    return found


def read_language(folder: str | os.PathLike, tasks: list[str]) -> dict[str, Any] | None:
    """language.json next to the checkpoint, if it is there and still matches its tasks and phrasings."""
    path = Path(folder) / LANGUAGE_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("fingerprint") != fingerprint(tasks):
        return None
    return saved


def write_language(folder: str | os.PathLike, report: dict[str, Any]) -> Path:
    """Write the thresholds next to the checkpoint (atomically)."""
    path = Path(folder) / LANGUAGE_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write {path} ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def policy_language(folder: str | os.PathLike, encoder: InstructionEncoder | None = None,
                    recompute: bool = False) -> dict[str, Any]:
    """The policy's thresholds report: language.json when it matches, else computed (once per process and
    task set). `encoder`: the policy's own (its cache spares MiniLM); default: loaded from the checkpoint."""
    tasks = policy_tasks(folder)
    if not recompute and (saved := read_language(folder, tasks)) is not None:
        return saved
    key = fingerprint(tasks)
    with _MEMO_LOCK:
        if not recompute and key in _MEMO:
            return _MEMO[key]
    report = choose_thresholds(encoder or _encoder_of(folder), tasks)
    with _MEMO_LOCK:
        _MEMO[key] = report
    return report


def _encoder_of(folder: str | os.PathLike) -> InstructionEncoder:
    from models.policy_io import load_policy

    return load_policy(folder).text


def match_policy(folder: str | os.PathLike, text: str, scene_task: str | None = None,
                 encoder: InstructionEncoder | None = None) -> dict[str, Any]:
    """instruction_match for a policy checkpoint, with its tasks and chosen thresholds."""
    encoder = encoder or _encoder_of(folder)
    report = policy_language(folder, encoder)
    return instruction_match(encoder, report["tasks"], text, scene_task, report["similarity"], report["margin"])


def match_policy_tasks(folder: str | os.PathLike, text: str, scene_tasks: list[str],
                       encoder: InstructionEncoder | None = None) -> dict[str, dict[str, Any]]:
    """match_policy on each scene task (one checkpoint load): {task: match}."""
    encoder = encoder or _encoder_of(folder)
    return {get_task(t).name: match_policy(folder, text, t, encoder) for t in scene_tasks}
