"""The whole VLA-RFT chain in one command:

    1. collect expert episodes (clean, and noisy-action ones for the world model and DART labels);
    2. train the world model;
    3. train the base policy (behaviour cloning; the "base" snapshot is deliberately short of convergence);
    4. fine-tune the base policy with GRPO inside the frozen world model (models/rft.py, the paper's recipe);
    5. (presets with `rl_preset`) fine-tune the base policy with closed-loop GRPO on task success in the
       real simulator (models/rl.py);
    6. (presets with `wm_rl_preset`) the world-model path: record the base policy's own episodes (failures
       too, a few steps past success), fine-tune the world model on them (policy alignment), train the success
       reward model on its latents, then closed-loop GRPO inside the aligned world model (models/worlds.py);
    7. evaluate base, RFT (and RL, world-model RL) in the real simulator on the perturbation suite, on the
       same held-out evaluation seeds for every policy (the `eval` seed stream, never used for data).

Writes OUT/results.json, OUT/results.md (shaped like the paper's Tables 1 and 2) and side-by-side MP4s
(base | RFT, same start) under OUT/videos. Every stage is resumable: a finished stage leaves
OUT/<stage>/stage.json and is skipped on `resume`; an unfinished one continues from its checkpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from models.hooks import Hooks
from sim.errors import InputError


@dataclass
class PipelinePreset:
    tasks: str
    clean_episodes: int  # expert episodes per task
    noisy_episodes: int  # noisy-action episodes per task (expert labels kept)
    action_noise: float
    wm_preset: str
    policy_preset: str
    rft_preset: str
    perturbations: str  # "all" or a comma-separated list
    eval_episodes: int  # per task and perturbation
    eval_max_steps: int = 200
    wm_steps: int | None = None
    policy_steps: int | None = None
    rft_steps: int | None = None
    rft_start: str = "base"  # which BC checkpoint RFT (and RL) fine-tune: base | full
    rl_preset: str | None = None  # closed-loop RL with a success reward (models/rl.py); None: no RL stage
    rl_steps: int | None = None
    rl_options: dict = field(default_factory=dict)  # overrides for models.rl
    wm_rl_preset: str | None = None  # the world-model path (rollouts → align → reward model → RL in imagination)
    wm_rl_steps: int | None = None
    wm_rl_options: dict = field(default_factory=dict)  # overrides for models.rl in the imagined world
    rollout_episodes: int = 32  # base-policy episodes per task, deterministic and again with noise
    rollout_noise: float = 0.3
    rollout_max_steps: int = 150
    after_success: int = 8  # steps recorded past the first success (positives for the reward model)
    align_preset: str = "align"
    align_steps: int | None = None
    reward_preset: str = "cpu-quick"
    reward_steps: int | None = None
    policy_options: dict = field(default_factory=dict)  # overrides for models.policy.train
    rft_options: dict = field(default_factory=dict)  # overrides for models.rft
    videos: int = 6
    seed: int = 0


PRESETS: dict[str, PipelinePreset] = {
    "smoke": PipelinePreset(
        tasks="smoke", clean_episodes=3, noisy_episodes=1, action_noise=0.3, wm_preset="smoke",
        policy_preset="smoke", rft_preset="smoke", perturbations="none,object:minor", eval_episodes=1,
        eval_max_steps=60, videos=2, rl_preset="smoke", rl_options={"tasks": "smoke"},
        wm_rl_preset="smoke", wm_rl_options={"tasks": "smoke"}, rollout_episodes=1, rollout_max_steps=24,
        after_success=2, align_steps=4, reward_preset="smoke",
    ),
    "cpu-quick": PipelinePreset(
        tasks="cpu-quick", clean_episodes=50, noisy_episodes=50, action_noise=0.3, wm_preset="cpu-quick",
        policy_preset="cpu-quick", rft_preset="cpu-quick", perturbations="all", eval_episodes=20,
        policy_options={"snapshot_every": 250},
    ),
    # cpu-quick plus closed-loop RL in the simulator (about 17 more minutes of RL and 6 of evaluation on 2 cores)
    "cpu-quick-rl": PipelinePreset(
        tasks="cpu-quick", clean_episodes=50, noisy_episodes=50, action_noise=0.3, wm_preset="cpu-quick",
        policy_preset="cpu-quick", rft_preset="cpu-quick", perturbations="all", eval_episodes=20,
        policy_options={"snapshot_every": 250}, rl_preset="cpu-quick",
    ),
    # cpu-quick plus the world-model path: RL in the aligned world model with a learned success reward
    "cpu-quick-wm": PipelinePreset(
        tasks="cpu-quick", clean_episodes=50, noisy_episodes=50, action_noise=0.3, wm_preset="cpu-quick",
        policy_preset="cpu-quick", rft_preset="cpu-quick", perturbations="all", eval_episodes=20,
        policy_options={"snapshot_every": 250}, wm_rl_preset="cpu-quick",
    ),
    "mt10-gpu": PipelinePreset(
        tasks="mt10", clean_episodes=100, noisy_episodes=100, action_noise=0.3, wm_preset="gpu",
        policy_preset="gpu", rft_preset="gpu", perturbations="all", eval_episodes=50, rl_preset="gpu",
        rl_options={"tasks": "mt10"}, wm_rl_preset="gpu", wm_rl_options={"tasks": "mt10"}, rollout_episodes=128,
        reward_preset="gpu",
    ),
}

STAGES = ("collect", "world_model", "policy", "rft", "rl", "rollouts", "align", "reward_model", "wm_rl", "evaluate")
# rough share of wall time per stage on cpu-quick, for one progress bar over the whole run
WEIGHTS = {"collect": 0.05, "world_model": 0.25, "policy": 0.12, "rft": 0.1, "rl": 0.12, "rollouts": 0.04,
           "align": 0.06, "reward_model": 0.04, "wm_rl": 0.1, "evaluate": 0.12}
POLICY_STAGES = ("base", "rft", "rl", "wm_rl")  # the policies a pipeline evaluates, in table order


def make_preset(name: str, **overrides: Any) -> PipelinePreset:
    if name not in PRESETS:
        raise InputError(f"unknown pipeline preset {name!r}: choose from {', '.join(PRESETS)}")
    bad = sorted(set(overrides) - set(PipelinePreset.__dataclass_fields__))
    if bad:
        raise InputError(f"unknown pipeline option(s): {', '.join(bad)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def start_policy(root: Path, p: PipelinePreset) -> Path:
    """The BC checkpoint every fine-tuning stage starts from (and the table's base row)."""
    return root / "policy" / "base" if p.rft_start == "base" else root / "policy"


def _stage_hooks(hooks: Hooks, stage: str) -> Hooks:
    before = sum(WEIGHTS[s] for s in STAGES[: STAGES.index(stage)])

    def progress(frac: float, msg: str) -> None:
        hooks.progress(before + WEIGHTS[stage] * min(max(frac, 0.0), 1.0), f"{stage}: {msg}")

    def metrics(step: int, values: dict[str, float]) -> None:
        hooks.metrics(step, {f"{stage}/{k}": v for k, v in values.items()})

    return Hooks(progress=progress, metrics=metrics, artifact=hooks.artifact, should_stop=hooks.should_stop)


class Stopped(Exception):
    """The run was asked to stop; finished stages are kept and `resume` continues."""


def run_pipeline(
    preset: str, out: str, resume: bool = False, hooks: Hooks | None = None, **overrides: Any
) -> dict:
    hooks = hooks or Hooks()
    p = make_preset(preset, **overrides)
    root = Path(out)
    if root.exists() and any(root.iterdir()) and not resume and not (root / "pipeline.json").exists():
        raise InputError(f"{root} is not empty and holds no pipeline: pick a new --out")
    if (root / "pipeline.json").exists() and not resume:
        raise InputError(f"{root} already holds a pipeline run: pass --resume to continue it or pick a new --out")
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.json").write_text(json.dumps({"preset": preset, "config": asdict(p)}, indent=1))
    timings: dict[str, float] = {}
    summaries: dict[str, Any] = {}
    t_all = time.time()

    def stage(name: str, fn: Callable[[Hooks, Path], dict]) -> dict:
        folder = root / name
        marker = folder / "stage.json"
        if marker.exists():
            done = json.loads(marker.read_text())
            timings[name] = done["seconds"]
            summaries[name] = done["summary"]
            return done["summary"]
        if hooks.should_stop():
            raise Stopped(name)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        sh = _stage_hooks(hooks, name)
        summary = fn(sh, folder)
        if hooks.should_stop() or summary.get("complete") is False:
            raise Stopped(name)
        timings[name] = time.time() - t0
        summaries[name] = summary
        marker.write_text(json.dumps({"seconds": timings[name], "summary": summary}, indent=1, default=str))
        sh.progress(1.0, "done")
        return summary

    data = root / "collect"
    clean, noisy = data / "clean.h5", data / "noisy.h5"

    def collect_stage(h: Hooks, folder: Path) -> dict:
        from sim.collect import CollectConfig, collect
        from sim.tasks import resolve_tasks

        n_tasks = len(resolve_tasks(p.tasks))
        grand_total = (p.clean_episodes + p.noisy_episodes) * n_tasks
        out = {}
        for path, episodes, noise, seed, before in (
            (clean, p.clean_episodes, 0.0, p.seed, 0),
            (noisy, p.noisy_episodes, p.action_noise, p.seed + 1, p.clean_episodes * n_tasks),
        ):
            if episodes <= 0 or path.exists():
                continue

            def progress(done: int, total: int, task: str, before: int = before) -> None:
                if h.should_stop():
                    raise Stopped("collect")
                h.progress((before + done) / grand_total, task)

            rep = collect(CollectConfig(tasks=p.tasks, episodes=episodes, action_noise=noise, seed=seed,
                                        keep_failures=noise > 0), str(path), progress=progress)
            out[path.name] = rep.summary.to_json()
            h.artifact("table", str(path))
        return out

    def datasets() -> str:
        return ",".join(str(x) for x in (clean, noisy) if x.exists())

    def wm_stage(h: Hooks, folder: Path) -> dict:
        from models.world_model.train import train_world_model

        return train_world_model(datasets(), str(folder), preset=p.wm_preset, steps=p.wm_steps,
                                 resume=(folder / "train_state.pt").exists(), hooks=h)

    def policy_stage(h: Hooks, folder: Path) -> dict:
        from models.policy.train import train_policy

        return train_policy(datasets(), str(folder), preset=p.policy_preset, steps=p.policy_steps,
                            resume=(folder / "train_state.pt").exists(), hooks=h, **p.policy_options)

    def rft_stage(h: Hooks, folder: Path) -> dict:
        from models.rft import train_rft

        start = start_policy(root, p)
        return train_rft(str(start), str(root / "world_model"), str(clean), str(folder), steps=p.rft_steps,
                         resume=(folder / "train_state.pt").exists(), hooks=h, preset=p.rft_preset,
                         **p.rft_options)

    def rl_stage(h: Hooks, folder: Path) -> dict:
        from models.rl import train_rl

        start = start_policy(root, p)
        assert p.rl_preset is not None
        opts = {"tasks": p.tasks, **p.rl_options}
        return train_rl(str(start), str(folder), world="sim", steps=p.rl_steps,
                        resume=(folder / "train_state.pt").exists(), hooks=h, preset=p.rl_preset, **opts)

    rollouts = root / "rollouts"

    def rollouts_stage(h: Hooks, folder: Path) -> dict:
        from models.policy_io import eval_spec
        from sim.collect import CollectConfig, collect

        start = start_policy(root, p)
        jobs = [("base_det.h5", eval_spec(start), p.rollout_episodes, p.seed + 2),
                ("base_noisy.h5", eval_spec(start, noise_std=p.rollout_noise), p.rollout_episodes, p.seed + 3),
                ("expert_after.h5", None, max(1, p.rollout_episodes // 2), p.seed + 4)]
        out = {}
        for i, (name, spec, episodes, seed) in enumerate(jobs):
            if (folder / name).exists():
                continue
            h.progress(i / len(jobs), name)
            rep = collect(CollectConfig(tasks=p.tasks, episodes=episodes, seed=seed, policy=spec,
                                        max_steps=p.rollout_max_steps if spec else p.eval_max_steps,
                                        after_success=p.after_success), str(folder / name))
            out[name] = rep.summary.to_json()
            h.artifact("table", str(folder / name))
        return out

    def rollout_files() -> str:
        return ",".join(str(rollouts / n) for n in ("base_det.h5", "base_noisy.h5", "expert_after.h5"))

    def align_stage(h: Hooks, folder: Path) -> dict:
        from models.world_model.train import train_world_model

        return train_world_model(f"{datasets()},{rollout_files()}", str(folder), preset=p.align_preset,
                                 steps=p.align_steps, resume=(folder / "train_state.pt").exists(), hooks=h,
                                 init_from=str(root / "world_model"))

    def reward_stage(h: Hooks, folder: Path) -> dict:
        from models.reward_model import train_reward_model

        return train_reward_model(str(root / "align"), rollout_files(), str(folder), preset=p.reward_preset,
                                  hooks=h, steps=p.reward_steps)

    def wm_rl_stage(h: Hooks, folder: Path) -> dict:
        from models.rl import train_rl

        start = start_policy(root, p)
        assert p.wm_rl_preset is not None
        opts = {"tasks": p.tasks, **p.wm_rl_options}
        return train_rl(str(start), str(folder), world="wm", steps=p.wm_rl_steps,
                        resume=(folder / "train_state.pt").exists(), hooks=h, preset=p.wm_rl_preset,
                        wm=str(root / "align"), reward_model=str(root / "reward_model"), **opts)

    def eval_stage(h: Hooks, folder: Path) -> dict:
        return evaluate_policies(root, p, folder, h)

    try:
        for name, fn in (("collect", collect_stage), ("world_model", wm_stage), ("policy", policy_stage),
                         ("rft", rft_stage), ("rl", rl_stage), ("rollouts", rollouts_stage), ("align", align_stage),
                         ("reward_model", reward_stage), ("wm_rl", wm_rl_stage), ("evaluate", eval_stage)):
            if name == "rl" and p.rl_preset is None:
                continue
            if name in ("rollouts", "align", "reward_model", "wm_rl") and p.wm_rl_preset is None:
                continue
            stage(name, fn)
    except Stopped as exc:
        return {"out": str(root), "complete": False, "stopped_in": str(exc), "timings": timings}
    results = {
        "preset": preset, "config": asdict(p), "timings_s": timings, "wall_s_this_call": time.time() - t_all,
        "total_stage_s": sum(timings.values()), **summaries["evaluate"],
        "stages": {k: v for k, v in summaries.items() if k != "evaluate"},
    }
    (root / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (root / "results.md").write_text(results_markdown(results))
    hooks.artifact("table", str(root / "results.md"))
    hooks.progress(1.0, "pipeline done")
    return {"out": str(root), "complete": True, "results": str(root / "results.json"), "timings": timings,
            "success": results["success"]}


def evaluate_policies(root: Path, p: PipelinePreset, folder: Path, hooks: Hooks) -> dict:
    """Base and every fine-tuned policy on the same evaluation starts; side-by-side videos (base | RFT [| RL])
    where the outcomes differ first."""
    from models.policy_io import eval_spec
    from sim.evaluate import EvalConfig, EvalReport, compare, write_side_by_side
    from sim.perturb import parse_perturbations

    specs = {"base": eval_spec(start_policy(root, p)), "rft": eval_spec(root / "rft")}
    for name in ("rl", "wm_rl"):
        if (root / name / "config.json").exists():
            specs[name] = eval_spec(root / name)
    training_data = tuple(str(x) for d in ("collect", "rollouts") for x in (root / d).glob("*.h5"))
    cfg = EvalConfig(tasks=p.tasks, perturbations=parse_perturbations(p.perturbations), episodes=p.eval_episodes,
                     seed=p.seed, max_steps=p.eval_max_steps, keep_frames=1, exclude_datasets=training_data)

    def progress(done: int, total: int, name: str, task: str) -> None:
        if hooks.should_stop():
            raise Stopped("evaluate")
        hooks.progress(done / total, f"{task} ({name})")

    def save(name: str, report: EvalReport) -> None:
        (folder / f"{name}.json").write_text(json.dumps(report.summary, indent=1))

    cmp = compare(specs, cfg, progress=progress, on_report=save)
    # side-by-side videos: same start, base | the fine-tuned ones; outcomes that differ first
    videos_dir = root / "videos"
    videos_dir.mkdir(exist_ok=True)
    starts = [(key, eps) for key, eps in cmp.recorded().items() if len(eps) == len(specs)]  # in base's order

    def order(item: tuple) -> tuple[bool, bool]:  # outcomes that differ first, then the last policy failing
        outcomes = [r.success for r in item[1].values()]
        return len(set(outcomes)) == 1, not outcomes[-1]

    starts.sort(key=order)
    videos = []
    for key, eps in starts[: p.videos]:
        videos.append(str(write_side_by_side(videos_dir, key, eps, labelled=True)))
        hooks.artifact("video", videos[-1])
    return {
        "success": {name: rep.summary["conditions"] for name, rep in cmp.reports.items()},
        "per_task": {name: rep.summary["rows"] for name, rep in cmp.reports.items()},
        "eval": {"episodes_per_cell": p.eval_episodes, "seed": p.seed, "seed_stream": "eval",
                 "max_steps": p.eval_max_steps,
                 "starts_disjoint_from_training_data": all(cmp.starts_disjoint.values())},
        "videos": videos,
    }


def _pct(c: dict | None) -> str:
    if c is None:
        return "n/a"
    lo, hi = c["ci95"]
    return f"{100 * c['success_rate']:.1f} [{100 * lo:.0f}, {100 * hi:.0f}]"


LABELS = {"base": "base (BC)", "rft": "RFT, one-chunk verified reward (paper)", "rl": "RL, closed-loop success",
          "wm_rl": "RL in the world model, learned success reward"}


def results_markdown(results: dict) -> str:
    names = [n for n in POLICY_STAGES if n in results["success"]]
    cond = {n: {c["perturbation"]: c for c in results["success"][n]} for n in names}
    tasks = list(dict.fromkeys(r["task"] for r in results["per_task"]["base"]))
    cell = {(name, r["task"], r["perturbation"]): r for name in names for r in results["per_task"][name]}
    ev = results["eval"]
    lines = [
        f"# VLA-RFT pipeline: preset {results['preset']}",
        "",
        f"Success in the real simulator, % [95% Wilson interval]; {ev['episodes_per_cell']} episodes per task and "
        f"condition, evaluation seed {ev['seed']} (stream `eval`, disjoint from training data: "
        f"{'yes' if ev['starts_disjoint_from_training_data'] else 'NO'}), max {ev['max_steps']} steps.",
        "",
        "## Table 1: in-distribution",
        "",
        "| policy | " + " | ".join(tasks) + " | Avg |",
        "|---|" + "---|" * (len(tasks) + 1),
    ]
    for name in names:
        row = [_pct(cell.get((name, t, "none"))) for t in tasks]
        lines.append(f"| {LABELS[name]} | " + " | ".join(row) + f" | {_pct(cond[name].get('none'))} |")
    arrow = " → ".join(names)
    lines += ["", f"## Table 2: perturbations ({arrow})", "", "| perturbation | minor | major |", "|---|---|---|"]
    for fam in ("object", "goal", "robot", "combined"):
        cols = []
        for lvl in ("minor", "major"):
            k = f"{fam}:{lvl}"
            cols.append("n/a" if k not in cond["base"] else " → ".join(_pct(cond[n].get(k)) for n in names))
        lines.append(f"| {fam} | " + " | ".join(cols) + " |")
    lines += ["", "## Wall time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in results["timings_s"].items()]
    lines += [f"| total | {results['total_stage_s']:.0f} |", ""]
    rft_stage = results["stages"].get("rft", {})
    if rft_stage:
        lines += [f"RFT: {rft_stage.get('steps')} steps, {rft_stage.get('seconds_per_step', 0):.2f} s/step, "
                  f"reward {rft_stage.get('reward_first', 0):.4f} → {rft_stage.get('reward_last', 0):.4f}.", ""]
    rl_stage = results["stages"].get("rl", {})
    if rl_stage:
        lines += [f"RL: {rl_stage.get('steps')} steps, {rl_stage.get('seconds_per_step', 0):.1f} s/step, "
                  f"{rl_stage.get('env_steps', 0)} simulator steps, held-out success "
                  f"{rl_stage.get('heldout_first', 0):.2f} → {rl_stage.get('heldout_last', 0):.2f}.", ""]
    wm_rl = results["stages"].get("wm_rl", {})
    if wm_rl:
        lines += [f"World-model RL: {wm_rl.get('steps')} steps, {wm_rl.get('seconds_per_step', 0):.1f} s/step, "
                  f"{wm_rl.get('world_steps', 0)} imagined steps and 0 simulator steps in training; held-out success "
                  f"in the simulator {wm_rl.get('heldout_first', 0):.2f} → {wm_rl.get('heldout_last', 0):.2f}, in "
                  f"imagination {wm_rl.get('heldout_imagined_first', 0):.2f} → "
                  f"{wm_rl.get('heldout_imagined_last', 0):.2f}.", ""]
    if results.get("videos"):
        lines += [f"Side-by-side videos ({' | '.join(names)}, same start): "
                  + ", ".join(Path(v).name for v in results["videos"])]
    return "\n".join(lines) + "\n"
