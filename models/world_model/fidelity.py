"""Reward fidelity: does the world model rank action chunks the way the real simulator does?

For held-out dataset states, groups of action chunks are drawn the way GRPO draws them (the
expert's chunk plus Gaussian noise at one sigma per group; sigmas in the sigma-net's range
[0.08, 0.2] and 0.3), plus a group of mixed scales and uniformly random chunks. Each chunk gets the
verified reward (models.rewards) twice: in the world model against its own rollout of the
ground-truth chunk, and in MuJoCo restored to the exact dataset state against the real frames of
the ground-truth chunk. Per state and group we take Spearman's rho between the two reward vectors
and average over states. Two image-free baselines get the same treatment: the L1 distance of the
chunk to the ground-truth chunk, and the deviation of the hand path obtained by integrating the
actions. Interaction states are states where the ground-truth chunk moves the task's object in the
simulator (puck, drawer, button; SimEnv.object_pos tracks all four cpu-quick objects). The simulator
replay (`replay_chunk`), the frame conversion and the action-L1 baseline are those of RFT's reward
sources (models/rewards.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from models.rewards import PERCEPTUAL, action_l1, frames_to_tensor, replay_chunk, verified_reward
from models.world_model.model import WorldModel
from sim.episodes import EpisodeFile
from sim.evaluate import process_env
from sim.parallel import Pool, resolve_workers
from sim.perturb import StartState

GROUP_NAMES = ("grpo", "mixed")


@dataclass
class FidelityConfig:
    interaction_states: int = 24
    other_states: int = 12
    group: int = 16
    sigmas: tuple[float, ...] = (0.1, 0.2, 0.3)
    horizon: int = 8
    stride: int = 4  # candidate states every `stride` steps of each episode
    move_threshold: float = 0.002  # metres the object must move under the ground-truth chunk
    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    workers: int = 0
    seed: int = 0


# -- simulator side (runs in worker processes) ------------------------------------------------------
def sim_object_motion(task: str, camera: str, size: int, start: dict, states: np.ndarray,
                      chunks: np.ndarray) -> np.ndarray:
    """How far (m) the object moves under each ground-truth chunk from each state."""
    env = process_env(task, camera, size)
    s = StartState.from_json(start)
    out = np.zeros(len(states))
    for i, (state, chunk) in enumerate(zip(states, chunks, strict=True)):
        env.restore(s, state)
        before = env.object_pos()
        for a in chunk:
            env.step(a)
        out[i] = float(np.linalg.norm(env.object_pos() - before))
    return out


def sim_rollouts(task: str, camera: str, size: int, start: dict, state: np.ndarray,
                 chunks: np.ndarray) -> tuple[np.ndarray, float]:
    """Real frames (N, T, H, W, 3) uint8 for each chunk from one restored state, and seconds per chunk."""
    env = process_env(task, camera, size)
    s = StartState.from_json(start)
    t0 = time.perf_counter()
    frames = np.stack([replay_chunk(env, s, state, chunk) for chunk in chunks])
    return frames, (time.perf_counter() - t0) / len(chunks)


# -- chunk groups and baselines ---------------------------------------------------------------------
def chunk_groups(rng: np.random.Generator, expert: np.ndarray, cfg: FidelityConfig) -> dict[str, np.ndarray]:
    """name -> (G, T, A) chunks, clipped to the simulator's action range [-1, 1]."""
    g, (t, a) = cfg.group, expert.shape
    groups = {f"sigma_{s:g}": np.clip(expert + rng.normal(0, s, (g, t, a)), -1, 1) for s in cfg.sigmas}
    scales = np.exp(rng.uniform(np.log(0.05), np.log(1.0), (g, 1, 1)))
    mixed = np.clip(expert + rng.normal(0, 1, (g, t, a)) * scales, -1, 1)
    mixed[g - g // 4 :] = rng.uniform(-1, 1, (g // 4, t, a))  # a quarter are random chunks
    groups["mixed"] = mixed
    return {k: v.astype(np.float32) for k, v in groups.items()}


def hand_path_reward(chunks: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Minus the mean distance between the hand paths obtained by integrating the xyz actions."""
    dev = np.cumsum(chunks[..., :3], 1) - np.cumsum(gt[None, :, :3], 1)
    return -np.linalg.norm(dev, axis=-1).mean(1)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation with average ranks for ties; nan when either side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


# -- state selection --------------------------------------------------------------------------------
@dataclass
class Candidate:
    episode: int
    t: int
    task: str
    moved: float


def select_states(ef: EpisodeFile, camera: str, size: int, cfg: FidelityConfig, pool: Pool,
                  progress=None) -> tuple[list[Candidate], list[Candidate], dict]:
    jobs = {}
    eps = {}
    for i in range(len(ef)):
        ep = ef.load(i, frames=False)
        if ep.states is None or ep.start is None or len(ep) < cfg.horizon + 1:
            continue
        ts = np.arange(0, len(ep) - cfg.horizon + 1, cfg.stride)
        chunks = np.stack([ep.actions[t : t + cfg.horizon] for t in ts])
        eps[i] = (ep.task, ts)
        jobs[i] = pool.submit(sim_object_motion, ep.task, camera, size, ep.start.to_json(), ep.states[ts], chunks)
    cands: list[Candidate] = []
    for n, (i, fut) in enumerate(jobs.items()):
        task, ts = eps[i]
        cands += [Candidate(i, int(t), task, float(m)) for t, m in zip(ts, fut.result(), strict=True)]
        if progress:
            progress((n + 1) / max(1, len(jobs)) * 0.2, "fidelity: finding interaction states")
    rng = np.random.default_rng(cfg.seed)
    inter = [c for c in cands if c.moved > cfg.move_threshold]
    other = [c for c in cands if c.moved <= cfg.move_threshold]
    stats = {"candidates": len(cands), "interaction_candidates": {}}
    for c in inter:
        stats["interaction_candidates"][c.task] = stats["interaction_candidates"].get(c.task, 0) + 1
    return _balanced(inter, cfg.interaction_states, rng), _balanced(other, cfg.other_states, rng), stats


def _balanced(cands: list[Candidate], n: int, rng: np.random.Generator) -> list[Candidate]:
    """Round-robin over tasks, random order within a task."""
    by_task: dict[str, list[Candidate]] = {}
    for c in cands:
        by_task.setdefault(c.task, []).append(c)
    queues = {k: [v[j] for j in rng.permutation(len(v))] for k, v in sorted(by_task.items())}
    out: list[Candidate] = []
    while len(out) < n and any(queues.values()):
        for q in queues.values():
            if q and len(out) < n:
                out.append(q.pop())
    return out


# -- the measurement ----------------------------------------------------------------------------------
def reward_fidelity(wm: WorldModel, dataset: str, cfg: FidelityConfig | None = None, progress=None) -> dict:
    cfg = cfg or FidelityConfig()
    ef = EpisodeFile(dataset)
    camera, size = str(wm.camera or ef.camera), wm.image_size
    if str(ef.camera) != camera or ef.image_size != size:
        return {"skipped": f"{dataset} has {ef.image_size}px '{ef.camera}' frames, the model {size}px '{camera}'"}
    if not ef.has_sim_states:
        src = ef.attrs.get("source_format")
        return {"skipped": f"{dataset} stores no simulator states{f' (imported from {src})' if src else ''}"
                           ", so the simulator cannot be restored: reward fidelity needs them"}
    rng = np.random.default_rng(cfg.seed)
    workers = resolve_workers(cfg.workers, 8)
    with Pool(workers) as pool:
        inter, other, stats = select_states(ef, camera, size, cfg, pool, progress)
        states = [(c, True) for c in inter] + [(c, False) for c in other]
        jobs, inputs = [], []
        for c, is_inter in states:
            ep = ef.load(c.episode)
            gt = ep.actions[c.t : c.t + cfg.horizon]
            groups = chunk_groups(rng, ep.expert_actions[c.t : c.t + cfg.horizon], cfg)
            chunks = np.concatenate([gt[None], *groups.values()])  # chunk 0: the ground truth (reference)
            ctx_idx = np.maximum(np.arange(c.t - wm.context_frames + 1, c.t + 1), 0)
            inputs.append((c, is_inter, gt, groups, chunks, ep.frames[ctx_idx]))
            jobs.append(pool.submit(sim_rollouts, c.task, camera, size, ep.start.to_json(), ep.states[c.t], chunks))
        rows = []
        sim_s, wm_s = [], []
        perceptual_sets = [(lam, "ssim") for lam in cfg.lambdas]
        for n, ((c, is_inter, gt, groups, chunks, ctx), fut) in enumerate(zip(inputs, jobs, strict=True)):
            real, sec = fut.result()
            sim_s.append(sec)
            real_t = frames_to_tensor(real)
            ctx_t = torch.from_numpy(ctx).permute(0, 3, 1, 2)[None].expand(len(chunks), -1, -1, -1, -1)
            t0 = time.perf_counter()
            pred = wm.rollout(ctx_t, torch.from_numpy(chunks))
            wm_s.append((time.perf_counter() - t0) / len(chunks))
            row = {"episode": c.episode, "t": c.t, "task": c.task, "interaction": is_inter,
                   "object_moved_m": round(c.moved, 4), "rho": {}}
            k = 1
            for name, g in groups.items():
                sl = slice(k, k + len(g))
                k += len(g)
                r = {}
                for lam, fn in perceptual_sets:
                    r_sim = verified_reward(real_t[sl], real_t[:1], lam, PERCEPTUAL[fn]).numpy()
                    r_wm = verified_reward(pred[sl], pred[:1], lam, PERCEPTUAL[fn]).numpy()
                    r[f"wm_lambda_{lam:g}"] = spearman(r_wm, r_sim)
                    if lam == 0.0:
                        r["action_l1"] = spearman(action_l1(g, gt[None]), r_sim)
                        r["hand_path"] = spearman(hand_path_reward(g, gt), r_sim)
                        # how different the real frames are within the group (sanity: near 0 means no signal)
                        r["sim_reward_std"] = float(np.std(r_sim))
                row["rho"][name] = r
            rows.append(row)
            if progress:
                progress(0.2 + 0.8 * (n + 1) / len(inputs), f"fidelity: state {n + 1}/{len(inputs)}")
    ef.close()
    return {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
            "selection": stats, "summary": summarize(rows, cfg),
            "seconds_per_chunk": {"simulator": float(np.mean(sim_s)) if sim_s else None,
                                  "world_model": float(np.mean(wm_s)) if wm_s else None,
                                  "world_model_batch": 1 + len(cfg.sigmas) * cfg.group + cfg.group},
            "states": json.loads(json.dumps(rows, default=float))}


def summarize(rows: list[dict], cfg: FidelityConfig) -> dict:
    """Mean rho per state class ('interaction', 'other', 'all') x group set ('grpo' = the fixed-sigma groups,
    each sigma, 'mixed') x scorer."""
    out: dict = {}
    sigma_names = [f"sigma_{s:g}" for s in cfg.sigmas]
    for cls, keep in (("interaction", lambda r: r["interaction"]), ("other", lambda r: not r["interaction"]),
                      ("all", lambda r: True)):
        sel = [r for r in rows if keep(r)]
        if not sel:
            continue
        block = {"states": len(sel)}
        for gname, members in (("grpo", sigma_names), *[(s, [s]) for s in sigma_names], ("mixed", ["mixed"])):
            scorers = sel[0]["rho"][members[0]].keys()
            block[gname] = {
                s: _nanmean([r["rho"][m][s] for r in sel for m in members]) for s in scorers
            }
        out[cls] = block
    return out


def _nanmean(v: list[float]) -> float | None:
    a = np.asarray(v, float)
    a = a[np.isfinite(a)]
    return round(float(a.mean()), 4) if len(a) else None
