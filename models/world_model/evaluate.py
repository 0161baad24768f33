"""Held-out evaluation of a world model: what `vlarft eval-wm --json` prints.

Rows: the model under the true actions, under actions shuffled across episodes, the copy-last-frame
baseline and the autoencoder's ceiling (real future frames encoded and decoded). For each row and
horizon: whole-frame PSNR and SSIM, and PSNR over the moving region (pixels where the real frame
differs from the context frame by more than 0.05). Then reward fidelity against the real simulator
(fidelity.py) and throughput: batched rollout frames/s against MuJoCo step+render frames/s, both
measured in this run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import CheckpointError
from models.world_model.data import WMDataError, load_store
from models.world_model.fidelity import FidelityConfig, reward_fidelity
from models.world_model.metrics import frame_psnr, frame_ssim, moving_mask, moving_sums, psnr_from_mse
from models.world_model.model import load_world_model, native_bf16
from models.world_model.train import _shuffle_other_episode

ROWS = ("true_actions", "shuffled_actions", "copy_last", "autoencoder")
HORIZONS = (1, 2, 3, 4, 5, 6, 7, 8, 16)


def _f(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


def frame_metrics(wm, store, horizons=HORIZONS, max_windows: int = 256, batch: int = 32,
                  video: str | None = None, videos: int = 4, progress=None) -> dict:
    hmax = max(horizons)
    starts = store.window_starts(np.arange(store.episodes), hmax)
    if len(starts) == 0:
        raise WMDataError(f"no held-out episode is longer than {hmax} steps")
    starts = starts[np.linspace(0, len(starts) - 1, min(max_windows, len(starts))).round().astype(np.int64)]
    perm = _shuffle_other_episode(store.episode_of(starts))
    acc = {r: {h: {"psnr": [], "ssim": [], "sq": 0.0, "n": 0.0} for h in horizons} for r in ROWS}
    moving_frac = {h: [] for h in horizons}
    clips = []
    for i in range(0, len(starts), batch):
        idx = np.arange(i, min(i + batch, len(starts)))
        b = store.gather(starts[idx], wm.context_frames, hmax)
        shuf = store.gather(starts[perm[idx]], wm.context_frames, hmax)["actions"]
        ctx = _f(b["context"])
        real = _f(b["future"])
        preds = {
            "true_actions": wm.rollout(ctx, b["actions"]).cpu(),
            "shuffled_actions": wm.rollout(ctx, shuf).cpu(),
            "copy_last": ctx[:, -1:].expand_as(real),
            "autoencoder": wm.reconstruct(ctx, b["future"]).cpu(),
        }
        for h in horizons:
            r = real[:, h - 1]
            mask = moving_mask(r, ctx[:, -1])
            moving_frac[h].append(mask.float().flatten(1).mean(1))
            for row, p in preds.items():
                a = acc[row][h]
                a["psnr"].append(frame_psnr(p[:, h - 1], r))
                a["ssim"].append(frame_ssim(p[:, h - 1], r))
                sq, n = moving_sums(p[:, h - 1], r, mask)
                a["sq"] += sq
                a["n"] += n
        if video and len(clips) < videos:
            for j in range(min(videos - len(clips), len(idx))):
                clips.append((starts[idx[j]], real[j], preds["true_actions"][j], preds["shuffled_actions"][j]))
        if progress:
            progress(min(1.0, (i + batch) / len(starts)), f"frames: window {min(i + batch, len(starts))}/{len(starts)}")
    rows = {}
    for row in ROWS:
        rows[row] = {}
        for h in horizons:
            a = acc[row][h]
            rows[row][f"h{h}"] = {
                "psnr": round(float(torch.cat(a["psnr"]).mean()), 3),
                "ssim": round(float(torch.cat(a["ssim"]).mean()), 4),
                "psnr_moving": round(float(psnr_from_mse(a["sq"] / a["n"])), 3) if a["n"] else None,
            }
    out = {"windows": len(starts), "rows": rows,
           "moving_fraction": {f"h{h}": round(float(torch.cat(moving_frac[h]).mean()), 4) for h in horizons}}
    if video:
        out["videos"] = _write_videos(video, clips)
    return out


def _write_videos(folder: str, clips: list) -> list[str]:
    from sim.video import side_by_side, write_mp4

    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for start, real, pred, shuf in clips:
        seqs = [(x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8) for x in (real, pred, shuf)]
        path = Path(folder) / f"window_{int(start):06d}_real_pred_shuffled.mp4"
        write_mp4(path, side_by_side(*seqs), fps=4)
        paths.append(str(path))
    return paths


def prediction_grid(wm, store, path: str, per_task: int = 2, horizon: int = 8, scale: int = 4) -> str:
    """PNG: one row per window (spread over tasks): context | real h{horizon} | autoencoder | prediction under
    the true actions | prediction under shuffled actions, each upscaled `scale` times."""
    from PIL import Image

    from sim.video import grid, upscale

    starts = store.window_starts(np.arange(store.episodes), horizon)
    tasks = np.asarray(store.ep_task)[store.episode_of(starts)]
    pick = []
    for task in sorted(set(tasks.tolist())):
        idx = np.flatnonzero(tasks == task)
        pick += idx[np.linspace(len(idx) // 4, len(idx) - 1, per_task).round().astype(int)].tolist()
    t = starts[pick]
    perm = _shuffle_other_episode(store.episode_of(t))
    b = store.gather(t, wm.context_frames, horizon)
    ctx = _f(b["context"])
    cols = [ctx[:, -1], _f(b["future"][:, -1]), wm.reconstruct(ctx, b["future"][:, -1:])[:, 0],
            wm.rollout(ctx, b["actions"])[:, -1], wm.rollout(ctx, b["actions"][perm])[:, -1]]

    def img(x):
        return upscale((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), scale)

    rows = [[img(c[i]) for c in cols] for i in range(len(t))]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid(rows)).save(path)
    return str(path)


def targets(rows: dict) -> dict:
    """The issue's h8 targets, computed from the rows."""
    t, s, c = rows["true_actions"]["h8"], rows["shuffled_actions"]["h8"], rows["copy_last"]["h8"]
    return {
        "moving_true_minus_shuffled_h8": round(t["psnr_moving"] - s["psnr_moving"], 3),
        "moving_true_minus_copy_h8": round(t["psnr_moving"] - c["psnr_moving"], 3),
        "whole_true_minus_copy_h8": round(t["psnr"] - c["psnr"], 3),
        "autoencoder_whole_h8": rows["autoencoder"]["h8"]["psnr"],
    }


def throughput(wm, store, batch: int = 64, horizon: int = 8, repeats: int = 3, sim_steps: int = 150) -> dict:
    """Rollout frames/s (with and without decoding) and MuJoCo step+render frames/s, in this process.

    Rollout and simulator rounds alternate (`repeats` rounds, best of each), so a busy machine slows both alike.
    The top-level figures use the model's own rollout precision; `precisions` has the decoded rollout in each
    precision this CPU runs natively (float32, and bfloat16 where it has AVX512-BF16/AMX)."""
    from sim.env import SimEnv
    from sim.episodes import EpisodeFile

    t = store.window_starts(np.arange(store.episodes), horizon)
    t = t[np.linspace(0, len(t) - 1, batch).round().astype(np.int64)]
    b = store.gather(t, wm.context_frames, horizon)
    own = wm.rollout_dtype
    dtypes = ["float32", "bfloat16"] if native_bf16() else ["float32"]
    runs = [(d, True) for d in dtypes] + [(own, False)]
    best = dict.fromkeys(runs, float("inf"))
    path, i = store.ep_file[0]
    ef = EpisodeFile(path)
    ep = ef.load(i, frames=False)
    ef.close()
    sim_best = float("inf")
    try:
        with SimEnv(ep.task, camera=store.camera, image_size=store.image_size) as env:
            env.reset(ep.start if ep.start is not None else env.sample_start())
            for a in ep.actions[:5]:
                env.step(a)
            for d, decode in runs:  # warm-up
                wm.set_rollout_dtype(d)
                wm.rollout(b["context"], b["actions"], decode=decode)
            k = 0
            for _ in range(repeats):
                for d, decode in runs:
                    wm.set_rollout_dtype(d)
                    t0 = time.perf_counter()
                    wm.rollout(b["context"], b["actions"], decode=decode)
                    best[(d, decode)] = min(best[(d, decode)], time.perf_counter() - t0)
                t0 = time.perf_counter()
                for _ in range(sim_steps):
                    env.step(ep.actions[k % len(ep.actions)])
                    k += 1
                sim_best = min(sim_best, (time.perf_counter() - t0) / sim_steps)
    finally:
        wm.set_rollout_dtype(own)
    sim_fps = 1.0 / sim_best
    frames = batch * horizon
    res = {"rollout_fps_decoded": round(frames / best[(own, True)], 1),
           "rollout_fps_latent": round(frames / best[(own, False)], 1), "rollout_dtype": own,
           "batch": batch, "horizon": horizon, "mujoco_fps": round(sim_fps, 1), "mujoco_task": ep.task,
           "threads": torch.get_num_threads(),
           "ratio_decoded_vs_mujoco": round(frames / best[(own, True)] / sim_fps, 2),
           "precisions": {d: {"rollout_fps_decoded": round(frames / best[(d, True)], 1),
                              "ratio_decoded_vs_mujoco": round(frames / best[(d, True)] / sim_fps, 2)}
                          for d in dtypes}}
    return res


def evaluate_world_model(
    wm: str,
    dataset: str,
    max_windows: int = 256,
    horizons: tuple[int, ...] = HORIZONS,
    video: str | None = None,
    fidelity: bool = True,
    fidelity_config: FidelityConfig | None = None,
    measure_throughput: bool = True,
    png: str | None = None,
    device: str = "cpu",
    progress=None,
) -> dict:
    """Evaluate the checkpoint `wm` on the held-out episode file `dataset` (see module docstring)."""
    t0 = time.time()
    model = load_world_model(wm, device)
    if Path(str(dataset)).is_dir():
        raise WMDataError(f"dataset {dataset} is a directory, not an HDF5 file")
    store = load_store(dataset, action_dim=model.cfg.action_dim, proprio_dim=model.cfg.proprio_dim)
    if store.image_size != model.image_size:
        raise WMDataError(f"{dataset}: images are {store.image_size}px, the world model needs {model.image_size}px")
    if model.camera and store.camera != model.camera:
        raise WMDataError(f"{dataset}: camera '{store.camera}', the world model was trained on '{model.camera}'")
    if not horizons or min(horizons) < 1:
        raise CheckpointError("horizons must be positive")
    prog = progress or (lambda f, m: None)
    report = {"wm": str(wm), "dataset": str(dataset), "image_size": model.image_size, "camera": model.camera,
              "context_frames": model.context_frames,
              "params": {"autoencoder": sum(p.numel() for p in model.ae.parameters()),
                         "dynamics": sum(p.numel() for p in model.dynamics.parameters())}}
    report["frames"] = frame_metrics(model, store, horizons, max_windows, video=video,
                                     progress=lambda f, m: prog(0.4 * f, m))
    if 8 in horizons:
        report["targets"] = targets(report["frames"]["rows"])
    if png:
        report["png"] = prediction_grid(model, store, png)
    if fidelity:
        report["reward_fidelity"] = reward_fidelity(model, dataset, fidelity_config,
                                                    progress=lambda f, m: prog(0.4 + 0.5 * f, m))
    if measure_throughput:
        prog(0.95, "throughput")
        report["throughput"] = throughput(model, store)
    report["wall_s"] = round(time.time() - t0, 1)
    prog(1.0, "done")
    return report
