"""One small function per job kind: `run_<kind>(params, ctx) -> dict` (the run's result).

Stage modules are imported when a job runs, so a worker starts without torch, and a kind whose
stage is not installed fails its run with a message that says so.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from backend import worker_store
from backend.db import session_scope
from backend.kinds import Kind
from backend.models import Artifact, Dataset, Run
from backend.params import (
    CollectParams,
    EvaluateParams,
    ImagineParams,
    Params,
    PipelineParams,
    RFTParams,
    TrainParams,
    TrainRewardParams,
    TrainWMParams,
    WMEvalParams,
)
from models.hooks import Hooks
from sim.errors import InputError
from workers.context import RunContext, RunStopped
from workers.import_job import run_import


class StageUnavailable(RuntimeError):
    pass


def stage(kind: str, module: str, function: str) -> Callable:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise StageUnavailable(f"the {kind} stage ({module}.{function}) is not available in this worker: "
                                   f"module {exc.name} is not installed") from exc
        raise
    fn = getattr(mod, function, None)
    if fn is None:
        raise StageUnavailable(f"the {kind} stage: {module} has no function {function}")
    return fn


# Simulator jobs (queue `sim`) ----------------------------------------------------------------------

def run_collect(p: CollectParams, ctx: RunContext) -> dict:
    from sim.collect import CollectConfig, collect

    with session_scope(ctx.url) as s:  # an earlier attempt may have finished and registered it
        done = s.query(Dataset).filter(Dataset.run_id == ctx.run_id, Dataset.source == "collect").first()
        if done is not None:
            return {"dataset_id": done.id, "dataset_name": done.name, "episodes": done.episodes}
    out = ctx.settings.artifacts / "datasets" / f"collect-run{ctx.run_id}.h5"
    spec = None
    if p.policy:  # the policy acts instead of the expert (every episode kept)
        spec = policy_spec(p.policy, ctx, noise_std=p.noise_std, kind="collect")
        if (spec.camera, spec.image_size) != (p.camera, p.image_size):
            raise InputError(f"{p.policy} sees camera {spec.camera} at {spec.image_size} px; set camera "
                             f"{spec.camera} and image_size {spec.image_size}")
    cfg = CollectConfig(
        tasks=tuple(p.tasks), episodes=p.episodes, perturbation=p.perturbation, action_noise=p.action_noise,
        seed=p.seed, camera=p.camera, image_size=p.image_size, max_steps=p.max_steps,
        keep_failures=p.keep_failures, workers=0, policy=spec, after_success=p.after_success,
    )
    report = collect(cfg, str(out), progress=ctx.sim_progress)
    summary = report.summary.to_json()
    ds = worker_store.register_dataset(ctx.url, ctx.settings.artifacts, ctx.run_id, p.dataset_name or
                                f"collect-{ctx.run_id}", out, summary, "collect")
    for task, missing in report.shortfall.items():
        ctx.log(f"{task}: {missing} episodes short; the expert failed too often", "warning")
    return {"dataset_id": ds.id, "dataset_name": ds.name, "episodes": summary["episodes"],
            "steps": summary["steps"], "tasks": summary["tasks"], "attempts": report.attempts,
            "shortfall": report.shortfall}


def policy_spec(ref: str, ctx: RunContext, noise_std: float = 0.0, kind: str = "evaluate"):
    from sim.evaluate import EXPERT

    folder = ctx.checkpoint(ref, "policy")
    if folder is None:
        return EXPERT
    eval_spec = stage(kind, "models.policy_io", "eval_spec")
    return eval_spec(str(folder), noise_std=noise_std)


def _perturbation_parts(name: str) -> tuple[str, str | None]:
    family, _, level = name.partition(":")
    return family, level or None


def _instruction_matches(p: EvaluateParams, ctx: RunContext) -> dict[str, dict]:
    """A custom instruction against each evaluated task's scene, per policy ref (the expert ignores language);
    the ones a policy does not understand are also logged as warnings."""
    out = {}
    for ref in p.policies:
        folder = ctx.checkpoint(ref, "policy")
        if folder is None or p.instruction is None:
            continue
        match = stage("evaluate", "models.policy.language", "match_policy_tasks")
        out[ref] = match(str(folder), p.instruction, list(p.tasks))
        for task, m in out[ref].items():
            if not m["understood"]:
                ctx.log(f"{ref} on {task}: {m['warning']}", "warning")
    return out


def policy_labels(ctx: RunContext, refs: list[str], fallback: dict[str, str]) -> dict[str, str]:
    """What a video calls each policy: a checkpoint by the one name the UI shows (`<name> #<artifact id> · run
    <run id>`, frontend/names.py), the expert and anything else by its spec's name."""
    out = {}
    for ref in refs:
        label = fallback.get(ref, ref)
        kind, _, num = ref.partition(":")
        if kind == "artifact" and num.isdigit():
            with session_scope(ctx.url) as s:
                art = s.get(Artifact, int(num))
                if art is not None:
                    label = f"{art.name} #{art.id} · run {art.run_id}"
        out[ref] = label
    return out


def run_evaluate(p: EvaluateParams, ctx: RunContext) -> dict:
    """One policy, or two on the same seeded start states (evaluation seeds are deterministic)."""
    from sim.evaluate import EvalConfig, compare, outcome, video_name
    from sim.video_labels import write_labelled_side_by_side

    specs = {ref: policy_spec(ref, ctx) for ref in p.policies}
    matches = _instruction_matches(p, ctx) if p.instruction else None
    exclude = tuple(ctx.dataset_path(i) for i in p.exclude_dataset_ids)
    cfg = EvalConfig(
        tasks=tuple(p.tasks), perturbations=list(p.perturbations), episodes=p.episodes, seed=p.seed,
        max_steps=p.max_steps, instruction=p.instruction, instruction_set=p.instruction_set, video_dir=None,
        exclude_datasets=exclude, workers=0, keep_frames=p.videos_per_cell,
    )
    cmp = compare(specs, cfg, progress=lambda done, total, ref, task: ctx.sim_progress(done, total, f"{ref} {task}"),
                  on_report=lambda ref, rep: worker_store.write_evaluations(ctx.url, ctx.run_id, ref, p.seed,
                                                                     rep.summary["rows"]))

    # Side-by-side (or single) videos of the recorded episodes, keyed by (task, perturbation, index).
    videos = []
    (ctx.out / "videos").mkdir(exist_ok=True)
    labels = policy_labels(ctx, list(p.policies), {ref: spec.name for ref, spec in specs.items()})
    for key, by_ref in cmp.recorded().items():
        path = ctx.out / "videos" / video_name(key, [outcome(r) for r in by_ref.values()])
        write_labelled_side_by_side(path, {labels[ref]: (list(r.frames), r.success) for ref, r in by_ref.items()
                                           if r.frames is not None})
        ctx.artifact("video", path)
        videos.append({"task": key[0], "perturbation": key[1], "index": key[2], "policies": list(by_ref),
                       "success": {ref: r.success for ref, r in by_ref.items()}, "artifact": f"videos/{path.name}"})

    families = []
    for pert in p.perturbations:
        family, level = _perturbation_parts(pert)
        if cond := cmp.by_policy(pert):
            families.append({"perturbation": pert, "family": family, "level": level, "by_policy": cond})
    cells = [{"task": task, "perturbation": pert, "by_policy": row}
             for task in p.tasks for pert in p.perturbations if (row := cmp.by_policy(pert, task))]
    result = {
        "policies": p.policies,
        "policy_names": {ref: spec.name for ref, spec in specs.items()},
        "seed": p.seed, "seed_stream": "eval", "episodes": p.episodes, "max_steps": p.max_steps,
        "same_start_states": cmp.same_start_states,
        "families": families, "cells": cells, "videos": videos,
        "starts_disjoint": cmp.starts_disjoint,
    }
    if matches is not None:
        result["instruction_match"] = matches
    report_path = ctx.out / "report.json"
    report_path.write_text(json.dumps({"comparison": result,
                                       "reports": {ref: rep.summary for ref, rep in cmp.reports.items()}}, indent=1))
    ctx.artifact("table", report_path)
    return result


# Model jobs (queue `train`) ------------------------------------------------------------------------

def _datasets(ctx: RunContext, ids: list[int]) -> str:
    """Episode files as the stages take several: comma-separated paths."""
    return ",".join(ctx.dataset_path(i) for i in ids)


def run_train_wm(p: TrainWMParams, ctx: RunContext) -> dict:
    fn = stage("train_wm", "models.world_model.train", "train_world_model")
    init = {"init_from": _folder(ctx, p.init_world_model, "world_model")} if p.init_world_model else {}
    return fn(dataset=_datasets(ctx, [p.dataset_id, *p.extra_dataset_ids]), out=str(ctx.out), preset=p.preset,
              steps=p.steps, resume=ctx.resume, hooks=ctx.hooks, **init)


def run_train_policy(p: TrainParams, ctx: RunContext) -> dict:
    fn = stage("train_policy", "models.policy.train", "train_policy")
    return fn(dataset=ctx.dataset_path(p.dataset_id), out=str(ctx.out), preset=p.preset, steps=p.steps,
              resume=ctx.resume, hooks=ctx.hooks)


def _folder(ctx: RunContext, ref: str, want: str) -> str:
    folder = ctx.checkpoint(ref, want)
    if folder is None:
        raise InputError(f"{ref} is not a {want} checkpoint")
    return str(folder)


def run_train_reward(p: TrainRewardParams, ctx: RunContext) -> dict:
    """The success classifier on the world model's latents; its checkpoint is the run's folder."""
    fn = stage("train_reward", "models.reward_model", "train_reward_model")
    return fn(wm_path=_folder(ctx, p.world_model, "world_model"), dataset=_datasets(ctx, p.dataset_ids),
              out=str(ctx.out), preset=p.preset, hooks=ctx.hooks, steps=p.steps, imagined=p.imagined)


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f} %"


def run_wm_eval(p: WMEvalParams, ctx: RunContext) -> dict:
    """Each policy closed loop inside the world model (and, with `real`, in the simulator) on the held-out
    starts; report.json / report.md tables; imagined-vs-real correlations with three or more policies."""
    evaluate = stage("wm_eval", "models.wm_eval", "evaluate_policies_in_imagination")
    refs = list(p.policies)
    ranked = evaluate([_folder(ctx, ref, "policy") for ref in refs], _folder(ctx, p.world_model, "world_model"),
                      _folder(ctx, p.reward_model, "reward_model"), real=p.real, hooks=ctx.hooks,
                      tasks=",".join(p.tasks), perturbations=",".join(p.perturbations), episodes=p.episodes,
                      seed=p.seed, max_steps=p.max_steps)
    reports = [{"ref": ref, **rep} for ref, rep in zip(refs, ranked["policies"], strict=False)]
    result: dict = {"policies": reports, "world_model": p.world_model, "reward_model": p.reward_model,
                    "seed": p.seed, "seed_stream": "eval", "episodes": p.episodes, "real": p.real}
    if "correlations" in ranked:
        result["correlations"] = ranked["correlations"]
    (ctx.out / "report.json").write_text(json.dumps(result, indent=1, default=float))
    ctx.artifact("table", ctx.out / "report.json")
    lines = ["| policy | imagined success | real success | episode agreement |", "|---|---|---|---|"]
    for r in reports:
        lines.append(f"| {r['ref']} | {_pct(r['imagined']['success'])} | {_pct(r.get('real', {}).get('success'))} | "
                     f"{_pct(r.get('agreement', {}).get('episode_accuracy'))} |")
    c = result.get("correlations", {}).get("all")
    if c:
        lines += ["", f"Imagined vs real success over {c['policies']} policies: Pearson {c['pearson']:.3f}, "
                  f"Spearman {c['spearman']:.3f}, mean |gap| {c['mean_abs_gap']:.3f}."]
    (ctx.out / "report.md").write_text("\n".join(lines) + "\n")
    ctx.artifact("table", ctx.out / "report.md")
    return result


def run_rft(p: RFTParams, ctx: RunContext) -> dict:
    policy = _folder(ctx, p.policy, "policy")
    if p.reward == "success":
        fn = stage("rft", "models.rl", "train_rl")
        worlds = {}
        if p.world == "wm":  # RFTParams requires both here
            assert p.world_model is not None and p.reward_model is not None
            worlds = {"wm": _folder(ctx, p.world_model, "world_model"),
                      "reward_model": _folder(ctx, p.reward_model, "reward_model")}
        return fn(policy=policy, out=str(ctx.out), world=p.world, steps=p.steps, resume=ctx.resume, hooks=ctx.hooks,
                  preset=p.preset, **worlds, **p.train_kwargs())
    fn = stage("rft", "models.rft", "train_rft")
    wm = _folder(ctx, p.world_model, "world_model") if p.world_model else None
    assert p.dataset_id is not None  # checked by RFTParams
    return fn(policy=policy, wm=wm, dataset=ctx.dataset_path(p.dataset_id), out=str(ctx.out), steps=p.steps,
              resume=ctx.resume, hooks=ctx.hooks, preset=p.preset, **p.train_kwargs())


def run_pipeline(p: PipelineParams, ctx: RunContext) -> dict:
    fn = stage("pipeline", "models.pipeline", "run_pipeline")
    result = fn(preset=p.preset, out=str(ctx.out), resume=ctx.resume, hooks=registering_datasets(ctx))
    result["datasets"] = register_run_datasets(ctx)  # also those an earlier attempt wrote
    return result


# Datasets a run writes (the pipeline's collected episodes and policy rollouts) ---------------------

def registering_datasets(ctx: RunContext) -> Hooks:
    """The run's hooks, with every episode file it reports also registered as a dataset as soon as it exists."""
    def artifact(kind: str, path: str) -> None:
        ctx.artifact(kind, path)
        if str(path).endswith(".h5"):
            register_run_dataset(ctx, Path(path))

    h = ctx.hooks
    return Hooks(progress=h.progress, metrics=h.metrics, artifact=artifact, should_stop=h.should_stop)


def register_run_dataset(ctx: RunContext, path: Path) -> int:
    """Register one episode file of this run as a dataset (source: the run's kind, run_id: the run); the
    dataset's file is a hard link (a copy across file systems) so deleting the run keeps it. Idempotent."""
    from sim.episodes import validate_file

    rel = path.resolve().relative_to(Path(ctx.out).resolve()).with_suffix("")
    name = f"run{ctx.run_id}-" + "-".join(rel.parts)
    stored = ctx.settings.artifacts / "datasets" / f"{name}.h5"
    with session_scope(ctx.url) as s:
        done = s.scalar(select(Dataset).where(Dataset.run_id == ctx.run_id, Dataset.name == name))
        if done is not None:
            return done.id
    summary = validate_file(path).to_json()
    stored.parent.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_name(f".{stored.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, stored)
    with session_scope(ctx.url) as s:
        kind = s.scalar(select(Run.kind).where(Run.id == ctx.run_id)) or "run"
    ds = worker_store.register_dataset(ctx.url, ctx.settings.artifacts, ctx.run_id, name, stored, summary, kind)
    ctx.log(f"dataset #{ds.id} {ds.name}: {summary['episodes']} episodes from {rel.as_posix()}.h5")
    return ds.id


def register_run_datasets(ctx: RunContext) -> list[int]:
    """Every episode file under the run's folder, registered (see register_run_dataset); their ids."""
    return [register_run_dataset(ctx, f) for f in sorted(Path(ctx.out).rglob("*.h5")) if not f.name.startswith(".")]


def run_imagine(p: ImagineParams, ctx: RunContext) -> dict:
    fn = stage("imagine", "models.imagine", "imagine")
    refs = dict(p.policies) or {"policy": p.policy or "expert"}
    policies = {}
    for label, ref in refs.items():
        folder = ctx.checkpoint(ref, "policy")
        policies[label] = str(folder) if folder is not None else "expert"
    wm = _folder(ctx, p.world_model, "world_model") if p.world_model else None
    rm = _folder(ctx, p.reward_model, "reward_model") if p.reward_model else None
    result = fn(world_model=wm, policies=policies, task=p.task, instruction=p.instruction, perturbation=p.perturbation,
                offsets=p.offsets, seed=p.seed, index=p.index, horizon=p.horizon, max_steps=p.max_steps,
                out=str(ctx.out), hooks=ctx.hooks, reward_model=rm)
    for video in sorted(Path(ctx.out).glob("*.mp4")):
        ctx.artifact("video", video)
    return result


# Server paths in failure messages -----------------------------------------------------------------

def without_paths(text: str, ctx: RunContext) -> str:
    """`text` with paths under the artifact folder replaced by what the user knows them by: a dataset's file
    by the dataset's name and id, a collect run's output by its run, anything else by its path there."""
    root = str(ctx.settings.artifacts)
    if root not in text:
        return text

    def name(m: re.Match) -> str:
        said, rel = m.group(1) or "", (m.group(2) or "").lstrip("/")
        if not rel:
            return f"{said}the artifact folder"
        with session_scope(ctx.url) as s:
            ds = s.scalar(select(Dataset).where(Dataset.path == rel))
        if ds is not None:  # "dataset 3's file <path> is missing" → "dataset 3's file is missing"
            return "file" if said == "file " else f"dataset {ds.name!r} (id {ds.id})"
        if out := re.fullmatch(r"datasets/collect-run(\d+)\.h5", rel):
            return f"the dataset of run {out.group(1)}"
        return said + rel

    return re.sub(r"(dataset |file )?" + re.escape(root) + r"(/[^\s'\"(),;:]*)?", name, text)


def _without_paths(job: Callable[[Params, RunContext], dict]) -> Callable[[Params, RunContext], dict]:
    """The job, its failure re-raised with a message that names no server path."""

    @functools.wraps(job)
    def run(p: Params, ctx: RunContext) -> dict:
        try:
            return job(p, ctx)
        except RunStopped:
            raise
        except Exception as exc:
            text = str(exc)
            clean = without_paths(text, ctx)
            if clean == text:
                raise
            exc.args = (clean,)
            if isinstance(exc, OSError):
                exc.errno = exc.strerror = exc.filename = exc.filename2 = None
            if str(exc) == clean:
                raise
            raise RuntimeError(f"{type(exc).__name__}: {clean}") from None

    return run


def resolved_params(p: Params, result: dict) -> dict:
    """What a run actually ran with: every parameter with its default filled in, and the stage's expanded
    configuration (preset applied) when the stage reports one."""
    out: dict = {"params": p.model_dump(mode="json")}
    if isinstance(result.get("config"), dict):
        out["config"] = result["config"]
    return out


def _resolving(job: Callable[[Params, RunContext], dict]) -> Callable[[Params, RunContext], dict]:
    """The job, its result carrying `resolved_params`."""

    @functools.wraps(job)
    def run(p: Params, ctx: RunContext) -> dict:
        result = job(p, ctx)
        if isinstance(result, dict):
            result.setdefault("resolved_params", resolved_params(p, result))
        return result

    return run


# One job per kind of run (backend.kinds.KINDS; tests/test_workers_lifecycle.py checks that none is missing).
JOBS: dict[Kind, Callable[[Params, RunContext], dict]] = {kind: _without_paths(_resolving(job)) for kind, job in {
    "collect": run_collect,
    "evaluate": run_evaluate,
    "train_wm": run_train_wm,
    "train_policy": run_train_policy,
    "train_reward": run_train_reward,
    "rft": run_rft,
    "wm_eval": run_wm_eval,
    "pipeline": run_pipeline,
    "imagine": run_imagine,
    "import": run_import,
}.items()}
