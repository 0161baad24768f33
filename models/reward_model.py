"""A learned success reward for imagined episodes: a classifier on world-model latents, top to bottom.

The simulator knows when a task succeeds; a world model does not. This model learns it from real
episodes with per-step success labels (expert and policy episodes, failures included, ideally recorded
a few steps past success: `vlarft collect --after-success 8`):

  1. data: every step t of every episode gives the latent after action t, the proprio after it and the
     simulator's success flag after it. Latents come from two sources: the world model's encoder on the
     real frames ("real"), and the world model's own closed-loop imagination of the same actions from the
     same first frame, re-anchored every chunk exactly as the imagined world runs ("imagined"), so the
     classifier sees the blur and drift it will be scored on;
  2. model: a small conv net on the latent grid + the proprio, one logit per task;
  3. loss: balanced binary cross-entropy (half positive, half negative windows per batch);
  4. detection: an episode succeeds at the first step t ≥ `min_steps` where p ≥ threshold for `confirm`
     consecutive steps (the guard and the confirmation keep one bright frame from ending an episode);
  5. the threshold is chosen on a validation split of episodes to maximise episode-level F1 on the
     imagined sequences (the ones RL will see), and reported with precision and recall.

The classifier is tied to the world model's latent space: its checkpoint records the autoencoder's
fingerprint, and a world model with another autoencoder is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import CheckpointError, load_checkpoint, load_into, output_folder, save_checkpoint
from models.hooks import Hooks, MetricsLog
from models.world_model.model import to_uint8
from sim.episodes import DatasetError, EpisodeFile
from sim.errors import InputError

KIND = "reward_model"
ARCH = "latent-success-classifier/1"


@dataclass
class RewardConfig:
    tasks: list[str] = field(default_factory=list)  # filled from the data: one logit per task
    proprio_dim: int = 4  # filled from the world model (and its dataset)
    channels: int = 32
    hidden: int = 64
    steps: int = 1500
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    latent_noise: float = 0.05  # uniform noise on real latents in training
    imagined: bool = True  # also train on the world model's imagined latents of the training episodes
    chunk: int = 8  # re-anchoring length of imagined rollouts (the policy's chunk)
    val_fraction: float = 0.25  # episodes held out for choosing the threshold
    min_steps: int = 8  # no success is detected before this step
    confirm: int = 2  # consecutive steps at or above the threshold
    threshold: float = 0.5  # replaced by the validated one
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("channels", "hidden", "steps", "batch_size", "chunk", "confirm"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.min_steps < 0:
            raise InputError(f"min-steps must be 0 or positive, got {self.min_steps}")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"val-fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 < self.threshold < 1:
            raise InputError(f"threshold must be in (0, 1), got {self.threshold}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr}")


PRESETS: dict[str, dict] = {
    "smoke": dict(channels=8, hidden=16, steps=30, batch_size=32),
    "cpu-quick": dict(threads=2),
    "gpu": dict(channels=64, hidden=128, steps=4000, batch_size=512),
}


def make_config(preset: str = "cpu-quick", **overrides: Any) -> RewardConfig:
    if preset not in PRESETS:
        raise InputError(f"unknown reward-model preset {preset!r}: choose from {', '.join(PRESETS)}")
    names = {f.name for f in fields(RewardConfig)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise InputError(f"unknown reward-model option(s): {', '.join(bad)}")
    return RewardConfig(**{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})


# -- detection: one definition for whole sequences and for step-by-step imagined worlds -----------------
@dataclass
class Detector:
    threshold: float
    confirm: int
    min_steps: int

    def update(self, run: np.ndarray, steps: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots with `run` consecutive steps above threshold so far and `steps` steps taken see K more
        probabilities (N, K). Returns (index in 0..K−1 of the first detection, −1 if none; the new run)."""
        run = run.copy()
        hit = np.full(len(run), -1)
        for k in range(probs.shape[1]):
            run = np.where(probs[:, k] >= self.threshold, run + 1, 0)
            fire = (hit < 0) & (run >= self.confirm) & (steps + k + 1 >= self.min_steps)
            hit[fire] = k
        return hit, run

    def first(self, probs: np.ndarray) -> int:
        """The step (1-based) at which a whole sequence of per-step probabilities is detected as a success,
        or 0 if never."""
        hit, _ = self.update(np.zeros(1, int), np.zeros(1, int), np.asarray(probs, np.float64)[None])
        return int(hit[0]) + 1 if hit[0] >= 0 else 0


# -- the classifier ----------------------------------------------------------------------------------
class SuccessClassifier(nn.Module):
    def __init__(self, cfg: RewardConfig, latent_channels: int) -> None:
        super().__init__()
        c = cfg.channels
        self.cfg = cfg
        self.conv = nn.Sequential(
            nn.Conv2d(latent_channels, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
        )
        p = cfg.proprio_dim
        self.head = nn.Sequential(nn.Linear(4 * c + p, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, len(cfg.tasks)))
        self.register_buffer("proprio_mean", torch.zeros(p))
        self.register_buffer("proprio_std", torch.ones(p))

    def task_index(self, tasks: list[str]) -> torch.Tensor:
        known = {t: i for i, t in enumerate(self.cfg.tasks)}
        missing = sorted({t for t in tasks if t not in known})
        if missing:
            raise InputError(f"the reward model knows {', '.join(self.cfg.tasks)}; not {', '.join(missing)}")
        return torch.tensor([known[t] for t in tasks], dtype=torch.long)

    def forward(self, z: torch.Tensor, proprio: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Latents (N, lat, h, w), raw proprio (N, 4), task indices (N,) -> success logits (N,)."""
        h = self.conv(z.float())
        feats = torch.cat([h.mean((2, 3)), h.amax((2, 3)), (proprio.float() - self.proprio_mean) / self.proprio_std], 1)
        return self.head(feats).gather(1, task[:, None].to(z.device))[:, 0]

    @torch.no_grad()
    def probs(self, z: torch.Tensor, proprio: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """(N, K, lat, h, w), (N, K, 4), (N,) -> success probabilities (N, K)."""
        n, k = z.shape[:2]
        logits = self(z.flatten(0, 1), proprio.flatten(0, 1), task.repeat_interleave(k))
        return torch.sigmoid(logits).view(n, k)

    def detector(self) -> Detector:
        return Detector(self.cfg.threshold, self.cfg.confirm, self.cfg.min_steps)


def autoencoder_fingerprint(wm) -> str:
    h = hashlib.sha256()
    for name, t in sorted(wm.ae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def save_reward_model(model: SuccessClassifier, folder: str | os.PathLike, extra: dict) -> None:
    save_checkpoint(folder, KIND, {"architecture": ARCH, "config": asdict(model.cfg),
                                   "latent_channels": model.conv[0].in_channels, **extra}, model.state_dict())


def load_reward_model(path: str | os.PathLike, wm=None) -> SuccessClassifier:
    """Load a reward model; with `wm`, check that it reads this world model's latents."""
    meta, state = load_checkpoint(path, KIND)
    if meta.get("architecture") != ARCH:
        raise CheckpointError(f"{path}: reward-model architecture {meta.get('architecture')!r} is not supported")
    model = SuccessClassifier(RewardConfig(**meta["config"]), int(meta["latent_channels"]))
    load_into(model, state, f"reward model {path}")
    if wm is not None and meta.get("autoencoder") != autoencoder_fingerprint(wm):
        raise InputError(f"reward model {path} was trained on the latents of another world model's autoencoder "
                         f"({meta.get('world_model')}); train one for this world model with `vlarft train-reward`")
    return model.eval()


# -- data -----------------------------------------------------------------------------------------------
@dataclass
class Sequences:
    """Per-episode latents after every action, real and imagined, with the simulator's labels."""

    task: list[str]
    success: list[np.ndarray]  # per episode (T,) bool: success after action t
    real_z: list[torch.Tensor]  # (T−1, lat, h, w) float16: encoded frames 1..T−1 (frame T is not stored)
    real_p: list[torch.Tensor]  # (T−1, 4)
    imag_z: list[torch.Tensor]  # (T, lat, h, w) float16, or empty when not imagined
    imag_p: list[torch.Tensor]  # (T, 4)
    policy: list[str]  # who acted (the file's collector)


def read_episodes(dataset: str) -> list[dict]:
    from models.world_model.data import dataset_paths

    out = []
    for path in dataset_paths(dataset):
        ef = EpisodeFile(path)
        try:
            who = str(ef.attrs.get("policy", "expert"))
            for i in range(len(ef)):
                ep = ef.load(i)
                if len(ep.actions) < 2:
                    continue
                out.append({"task": ep.task, "frames": ep.frames, "actions": ep.actions.astype(np.float32),
                            "proprio": ep.proprio.astype(np.float32), "success": ep.successes.astype(bool),
                            "policy": who, "file": path})
        finally:
            ef.close()
    if not out:
        raise DatasetError(f"{dataset}: no episode with at least 2 steps")
    return out


@torch.no_grad()
def imagine_sequences(wm, episodes: list[dict], chunk: int, batch: int = 64, decode_all: bool = False,
                      progress=None) -> list[dict]:
    """The world model's closed-loop imagination of each episode's own actions from its first frame,
    re-anchored every `chunk` steps on its own decoded frame. Returns per episode latents (T, ...) float16,
    proprio (T, 4) and, with `decode_all`, frames (T, H, W, 3) uint8."""
    out: list[dict] = [{} for _ in episodes]
    order = np.argsort([-len(e["actions"]) for e in episodes])
    for b0 in range(0, len(order), batch):
        idx = order[b0 : b0 + batch]
        lens = np.array([len(episodes[i]["actions"]) for i in idx])
        t_max = int(lens.max())
        acts = np.zeros((len(idx), t_max, episodes[idx[0]]["actions"].shape[1]), np.float32)
        for j, i in enumerate(idx):
            acts[j, : lens[j]] = episodes[i]["actions"]
        frame = torch.from_numpy(np.stack([episodes[i]["frames"][0] for i in idx])).permute(0, 3, 1, 2)
        frame = frame.to(wm.device).float() / 255.0
        zs, ps, fs = [], [], []
        for t0 in range(0, t_max, chunk):
            a = torch.from_numpy(acts[:, t0 : t0 + chunk]).to(wm.device)
            z, p, f = wm.imagine_chunk(frame, a, decode_all=decode_all)
            zs.append(z.half().cpu())
            ps.append(p.float().cpu())
            if decode_all:
                fs.append(to_uint8(f))
                frame = f[:, -1]
            else:
                frame = f
        z_all, p_all = torch.cat(zs, 1), torch.cat(ps, 1)
        f_all = np.concatenate(fs, 1) if decode_all else None
        for j, i in enumerate(idx):
            out[i] = {"z": z_all[j, : lens[j]].clone(), "p": p_all[j, : lens[j]].clone()}
            if f_all is not None:
                out[i]["frames"] = f_all[j, : lens[j]]
        if progress:
            progress(min(len(order), b0 + batch) / len(order))
    return out


@torch.no_grad()
def encode_real(wm, episodes: list[dict]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The encoder's latents (float16) and the proprio of frames 1..T−1 of every episode (after actions 0..T−2)."""
    real_z, real_p = [], []
    for e in episodes:
        x = torch.from_numpy(e["frames"][1:]).permute(0, 3, 1, 2).to(wm.device).float() / 255.0
        real_z.append(torch.cat([wm.ae.encode(x[i : i + 256]).half().cpu() for i in range(0, len(x), 256)]))
        real_p.append(torch.from_numpy(e["proprio"][1:]))
    return real_z, real_p


def make_sequences(episodes: list[dict], real: tuple[list, list], imagined: list[dict]) -> Sequences:
    return Sequences(task=[e["task"] for e in episodes], success=[e["success"] for e in episodes],
                     real_z=real[0], real_p=real[1], imag_z=[d.get("z", torch.zeros(0)) for d in imagined],
                     imag_p=[d.get("p", torch.zeros(0)) for d in imagined], policy=[e["policy"] for e in episodes])


def build_sequences(wm, episodes: list[dict], imagined: bool, chunk: int, progress=None) -> Sequences:
    imag = imagine_sequences(wm, episodes, chunk, progress=progress) if imagined else [{} for _ in episodes]
    return make_sequences(episodes, encode_real(wm, episodes), imag)


def _split(tasks: list[str], success: list[bool], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Episodes into (train, validation), stratified by task and outcome; a group of one stays in training."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for key in sorted(set(zip(tasks, success, strict=True))):
        idx = rng.permutation([i for i, x in enumerate(zip(tasks, success, strict=True)) if x == key])
        k = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        val += list(idx[:k])
        train += list(idx[k:])
    return np.sort(np.array(train, int)), np.sort(np.array(val, int))


# -- scoring ----------------------------------------------------------------------------------------------
def view(seq: Sequences, i: int, source: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Episode i's (latents, proprio, per-step success labels) on the real frames or in imagination (the real
    view has no latent after the last action: its frame is not stored)."""
    if source == "imagined":
        return seq.imag_z[i], seq.imag_p[i], seq.success[i]
    return seq.real_z[i], seq.real_p[i], seq.success[i][:-1]


@torch.no_grad()
def sequence_probs(model: SuccessClassifier, z: torch.Tensor, p: torch.Tensor, task: str) -> np.ndarray:
    if len(z) == 0:
        return np.zeros(0)
    t = model.task_index([task])
    return model.probs(z[None].float(), p[None], t)[0].numpy()


def prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 of episode-level success, and the hallucination rate (detected | truly failed)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    fails = int((~truth).sum())
    return {"episodes": len(pred), "true_successes": int(truth.sum()), "detected": int(pred.sum()),
            "precision": precision, "recall": recall, "f1": f1,
            "hallucinated": int((pred & ~truth).sum()), "hallucination_rate": (pred & ~truth).sum() / fails
            if fails else float("nan")}


def score_sequences(model: SuccessClassifier, seq: Sequences, rows: np.ndarray, source: str,
                    detector: Detector | None = None) -> dict[str, Any]:
    """Episode-level detection against the simulator's truth on the real or the imagined sequences."""
    det = detector or model.detector()
    preds, truth, tasks = [], [], []
    for i in rows:
        z, p, y = view(seq, i, source)
        preds.append(det.first(sequence_probs(model, z, p, seq.task[i])) > 0)
        truth.append(bool(y.any()))
        tasks.append(seq.task[i])
    preds, truth = np.array(preds, bool), np.array(truth, bool)
    out = {"all": prf(preds, truth)}
    for t in sorted(set(tasks)):
        m = np.array([x == t for x in tasks])
        out[t] = prf(preds[m], truth[m])
    return out


def best_threshold(probs: list[np.ndarray], truth: np.ndarray, confirm: int, min_steps: int) -> tuple[float, float]:
    """The threshold with the best episode-level F1 over per-episode probability sequences (ties: the higher)."""
    best = (-1.0, 0.5)
    for thr in np.round(np.arange(0.05, 0.991, 0.01), 2):
        det = Detector(float(thr), confirm, min_steps)
        f1 = prf(np.array([det.first(p) > 0 for p in probs]), truth)["f1"]
        f1 = -1.0 if math.isnan(f1) else f1
        if f1 >= best[0]:
            best = (f1, float(thr))
    return best[1], best[0]


def choose_threshold(model: SuccessClassifier, seq: Sequences, rows: np.ndarray, source: str) -> tuple[float, float]:
    views = [view(seq, i, source) for i in rows]
    probs = [sequence_probs(model, z, p, seq.task[i]) for (z, p, _), i in zip(views, rows, strict=True)]
    truth = np.array([bool(y.any()) for _, _, y in views])
    return best_threshold(probs, truth, model.cfg.confirm, model.cfg.min_steps)


# -- training ----------------------------------------------------------------------------------------------
def train_reward_model(wm_path: str, dataset: str, out: str, preset: str = "cpu-quick", hooks: Hooks | None = None,
                       **overrides: Any) -> dict[str, Any]:
    """Train the success classifier on the latents of the world model `wm_path`; writes a checkpoint to `out`."""
    from models.world_model import load_world_model

    hooks = hooks or Hooks()
    cfg = make_config(preset, **overrides)
    out_dir = output_folder(out, create=False)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.time()
    wm = load_world_model(wm_path)
    hooks.progress(0.0, "reading episodes")
    episodes = read_episodes(dataset)
    cfg.tasks = sorted({e["task"] for e in episodes})
    cfg.proprio_dim = wm.cfg.proprio_dim
    shapes = {(e["proprio"].shape[-1], e["actions"].shape[-1]) for e in episodes}
    if shapes != {(wm.cfg.proprio_dim, wm.cfg.action_dim)}:
        got = ", ".join(f"{p}-D proprio and {a}-D actions" for p, a in sorted(shapes))
        raise DatasetError(f"{dataset} has {got}; world model {wm_path} takes {wm.cfg.proprio_dim}-D proprio and "
                           f"{wm.cfg.action_dim}-D actions")
    if not any(e["success"].any() for e in episodes):
        raise DatasetError(f"{dataset}: no episode succeeds, so there is nothing to learn success from")
    hooks.progress(0.02, "encoding and imagining episodes")
    seq = build_sequences(wm, episodes, cfg.imagined, cfg.chunk,
                          progress=lambda f: hooks.progress(0.02 + 0.28 * f, "imagining episodes"))
    train_rows, val_rows = _split(seq.task, [bool(y.any()) for y in seq.success], cfg.val_fraction, cfg.seed)

    # flat pools of (latent, proprio, task, label) from the training episodes
    zs, ps, ts, ys = [], [], [], []
    for i in train_rows:
        for z, p, y in [view(seq, i, s) for s in ("real", "imagined")[: 1 + cfg.imagined]]:
            zs.append(z)
            ps.append(p)
            ys.append(torch.from_numpy(y.astype(np.float32)))
            ts.append(torch.full((len(y),), cfg.tasks.index(seq.task[i]), dtype=torch.long))
    z_all, p_all, t_all, y_all = torch.cat(zs), torch.cat(ps), torch.cat(ts), torch.cat(ys)
    pos, neg = torch.nonzero(y_all > 0.5)[:, 0], torch.nonzero(y_all < 0.5)[:, 0]
    if len(pos) == 0 or len(neg) == 0:
        raise DatasetError(f"{dataset}: the training split needs steps both with and without success")

    torch.manual_seed(cfg.seed)
    model = SuccessClassifier(cfg, int(z_all.shape[1]))
    model.proprio_mean.copy_(p_all.mean(0))
    model.proprio_std.copy_(p_all.std(0) + 1e-3)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    log = MetricsLog(out_dir / "metrics.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    if log.path.exists():
        log.path.unlink()
    half = cfg.batch_size // 2
    model.train()
    for step in range(1, cfg.steps + 1):
        if hooks.should_stop():
            break
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.cat([pos[torch.randint(len(pos), (half,), generator=gen)],
                         neg[torch.randint(len(neg), (cfg.batch_size - half,), generator=gen)]])
        z = z_all[idx].float()
        z = z + cfg.latent_noise * (2 * torch.rand(z.shape, generator=gen) - 1)
        logits = model(z, p_all[idx], t_all[idx])
        loss = F.binary_cross_entropy_with_logits(logits, y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps:
            acc = float(((logits > 0).float() == y_all[idx]).float().mean())
            log.write(step, {"loss": loss.item(), "balanced_accuracy": acc, "lr": lr})
            hooks.metrics(step, {"loss": loss.item(), "balanced_accuracy": acc})
            hooks.progress(0.3 + 0.6 * step / cfg.steps, f"step {step}/{cfg.steps} loss {loss.item():.3f}")
    model.eval()

    source = "imagined" if cfg.imagined else "real"
    cfg.threshold, val_f1 = choose_threshold(model, seq, val_rows, source)
    report = {"threshold": cfg.threshold, "threshold_source": source, "validation_f1": val_f1,
              "validation": {"real": score_sequences(model, seq, val_rows, "real")}}
    if cfg.imagined:
        report["validation"]["imagined"] = score_sequences(model, seq, val_rows, "imagined")
    log.write(cfg.steps, {"threshold": cfg.threshold, "validation_f1": val_f1}, split="validation")
    save_reward_model(model, out_dir, {"world_model": str(Path(wm_path).resolve()),
                                       "autoencoder": autoencoder_fingerprint(wm), "dataset": str(dataset),
                                       "report": report})
    hooks.artifact("checkpoint", str(out_dir))
    summary = {"out": str(out_dir), "tasks": cfg.tasks, "episodes": len(episodes), "train_episodes": len(train_rows),
               "validation_episodes": len(val_rows), "positives": len(pos), "negatives": len(neg),
               "wall_s": round(time.time() - t_start, 1), **report}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    hooks.progress(1.0, "done")
    return summary


def evaluate_reward_model(path: str, wm_path: str, dataset: str, progress=None) -> dict[str, Any]:
    """Episode-level precision / recall / F1 of the reward model on `dataset` against the simulator's truth, on
    the real frames' latents and on the world model's imagination of the same actions from the same start."""
    from models.world_model import load_world_model

    wm = load_world_model(wm_path)
    model = load_reward_model(path, wm)
    episodes = read_episodes(dataset)
    seq = build_sequences(wm, episodes, True, model.cfg.chunk, progress=progress)
    rows = np.arange(len(episodes))
    return {"reward_model": str(path), "world_model": str(wm_path), "dataset": str(dataset),
            "threshold": model.cfg.threshold, "confirm": model.cfg.confirm, "min_steps": model.cfg.min_steps,
            "real": score_sequences(model, seq, rows, "real"),
            "imagined": score_sequences(model, seq, rows, "imagined")}
