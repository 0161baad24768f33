"""A typed Python client of the studio's REST API, shared by the Gradio UI and users' scripts.

    from backend.client import StudioClient
    studio = StudioClient("http://127.0.0.1:8000", token=None)
    run = studio.collect(tasks="reach-v3", episodes=2)
    run = studio.wait(run.id)
    ds = studio.dataset(run.result["dataset_id"])

Every method returns pydantic models from backend.schemas; an error answer raises StudioError with
the HTTP status and the server's one-line message. Imports no FastAPI, SQLAlchemy or Celery.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from backend.kinds import ACTIVE as ACTIVE  # re-exported for the UI
from backend.kinds import KINDS as KINDS
from backend.kinds import TERMINAL
from backend.params import (
    CollectParams,
    CompareParams,
    EvaluateParams,
    ImagineParams,
    Params,
    PipelineParams,
    RFTParams,
    TrainParams,
    TrainRewardParams,
    TrainWMParams,
    WMEvalParams,
    describe_errors,
)
from backend.schemas import (
    ArtifactOut,
    CheckpointOut,
    DatasetOut,
    EpisodeOut,
    EvaluationOut,
    Health,
    LogsOut,
    MetricsOut,
    Page,
    PerturbationsOut,
    RunOut,
    RunPage,
    RunSummary,
    TasksOut,
    Version,
)

DEFAULT_URL = "http://127.0.0.1:8000"


class StudioError(RuntimeError):
    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.detail = detail


def _checked(model: type[Params], **values: Any) -> Params:
    """Validate locally first; a bad value raises the same StudioError(422) the server would."""
    try:
        return model(**values)
    except ValidationError as exc:
        errors = [dict(e) for e in exc.errors()]
        raise StudioError(422, describe_errors(errors), errors) from exc


class StudioClient:
    def __init__(self, base_url: str | None = None, token: str | None = None, timeout: float = 30.0,
                 http: httpx.Client | None = None) -> None:
        """`http` lets a caller pass its own httpx.Client (e.g. FastAPI's TestClient)."""
        self.base_url = (base_url or os.environ.get("VLARFT_API_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("VLARFT_API_TOKEN") or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self.http.headers.update(headers)
        self.prefix = "/api/v1"
        self._etags: dict[tuple[str, str], tuple[str, Any]] = {}  # the last ETag and answer of each polled URL

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> StudioClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # Plumbing ----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        r = self.http.request(method, self.prefix + path, **kwargs)
        if r.status_code >= 400:
            try:
                body = r.json()
                message, detail = body.get("message") or str(body.get("detail")), body.get("detail")
            except ValueError:
                message, detail = r.text[:500] or r.reason_phrase, None
            raise StudioError(r.status_code, message, detail)
        return r

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    def _cached_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET with If-None-Match: an unchanged answer (304) costs the server no body and us no parse."""
        key = (path, repr(sorted((params or {}).items())))
        held = self._etags.get(key)
        r = self._request("GET", path, params=params, headers={"If-None-Match": held[0]} if held else None)
        if r.status_code == 304 and held is not None:
            return held[1]
        parsed = r.json()
        tag = r.headers.get("etag")
        if tag:
            if len(self._etags) >= 256:  # polling touches few URLs; a long-lived client must not grow without end
                self._etags.clear()
            self._etags[key] = (tag, parsed)
        return parsed

    # Health ------------------------------------------------------------------------------------
    def health(self) -> Health:
        r = self.http.get(self.prefix + "/health")
        return Health.model_validate(r.json())

    def version(self) -> Version:
        return Version.model_validate(self._json("GET", "/version"))

    # Runs --------------------------------------------------------------------------------------
    def create_run(self, kind: str, params: dict | Any, name: str | None = None,
                   parent_id: int | None = None) -> RunOut:
        if hasattr(params, "model_dump"):
            params = params.model_dump(mode="json")
        body = {"kind": kind, "params": params, "name": name, "parent_id": parent_id}
        return RunOut.model_validate(self._json("POST", "/runs", json=body))

    def collect(self, name: str | None = None, **params: Any) -> RunOut:
        return self.create_run("collect", _checked(CollectParams, **params), name)

    def train_world_model(self, dataset_id: int, preset: str = "cpu-quick", steps: int | None = None,
                          name: str | None = None, init_world_model: str | None = None,
                          extra_dataset_ids: list[int] | None = None) -> RunOut:
        """A world model on dataset_id (+ extra_dataset_ids); with init_world_model (preset align: required)
        it fine-tunes that one."""
        p = _checked(TrainWMParams, dataset_id=dataset_id, preset=preset, steps=steps,
                     init_world_model=init_world_model, extra_dataset_ids=list(extra_dataset_ids or []))
        return self.create_run("train_wm", p, name)

    def train_policy(self, dataset_id: int, preset: str = "cpu-quick", steps: int | None = None,
                     name: str | None = None) -> RunOut:
        p = _checked(TrainParams, dataset_id=dataset_id, preset=preset, steps=steps)
        return self.create_run("train_policy", p, name)

    def rft(self, policy: str, world_model: str | None, dataset_id: int, preset: str = "cpu-quick",
            steps: int | None = None, name: str | None = None, world: str = "wm", reward: str = "verified",
            **options: Any) -> RunOut:
        """The paper's one-chunk GRPO (reward verified in `world`, or action_l1); options: RFTOptions."""
        p = _checked(RFTParams, policy=policy, world_model=world_model, dataset_id=dataset_id, preset=preset,
                     steps=steps, world=world, reward=reward, options=options)
        return self.create_run("rft", p, name)

    def rl(self, policy: str, preset: str = "cpu-quick", steps: int | None = None, name: str | None = None,
           **options: Any) -> RunOut:
        """Closed-loop GRPO on task success in the simulator (an `rft` run, world sim, reward success);
        options: RLOptions."""
        p = _checked(RFTParams, policy=policy, world="sim", reward="success", preset=preset, steps=steps,
                     options=options)
        return self.create_run("rft", p, name)

    def rl_in_world_model(self, policy: str, world_model: str, reward_model: str, preset: str = "cpu-quick",
                          steps: int | None = None, name: str | None = None, **options: Any) -> RunOut:
        """Closed-loop GRPO inside the world model, success decided by its reward model (an `rft` run, world wm,
        reward success); the held-out curve is measured in the simulator and in imagination. options: RLOptions."""
        p = _checked(RFTParams, policy=policy, world="wm", reward="success", world_model=world_model,
                     reward_model=reward_model, preset=preset, steps=steps, options=options)
        return self.create_run("rft", p, name)

    def train_reward(self, world_model: str, dataset_ids: list[int], preset: str = "cpu-quick",
                     steps: int | None = None, imagined: bool = True, name: str | None = None) -> RunOut:
        """The success reward model of `world_model`, from episodes with per-step success."""
        p = _checked(TrainRewardParams, world_model=world_model, dataset_ids=list(dataset_ids), preset=preset,
                     steps=steps, imagined=imagined)
        return self.create_run("train_reward", p, name)

    def wm_eval(self, policies: list[str], world_model: str, reward_model: str, name: str | None = None,
                **params: Any) -> RunOut:
        """Policies' success inside the world model (and, with real=True, the default, in the simulator)."""
        p = _checked(WMEvalParams, policies=list(policies), world_model=world_model, reward_model=reward_model,
                     **params)
        return self.create_run("wm_eval", p, name)

    def evaluate(self, name: str | None = None, **params: Any) -> RunOut:
        return self.create_run("evaluate", _checked(EvaluateParams, **params), name)

    def pipeline(self, preset: str = "smoke", name: str | None = None) -> RunOut:
        return self.create_run("pipeline", _checked(PipelineParams, preset=preset), name)

    def compare(self, policy_a: str, policy_b: str, name: str | None = None, **params: Any) -> RunOut:
        body = _checked(CompareParams, policy_a=policy_a, policy_b=policy_b, **params).model_dump(mode="json")
        return RunOut.model_validate(self._json("POST", "/compare", json=body, params={"name": name} if name else {}))

    def imagine(self, name: str | None = None, **params: Any) -> RunOut:
        body = _checked(ImagineParams, **params).model_dump(mode="json")
        return RunOut.model_validate(self._json("POST", "/imagine", json=body, params={"name": name} if name else {}))

    def run(self, run_id: int) -> RunOut:
        return RunOut.model_validate(self._cached_json(f"/runs/{run_id}"))

    @staticmethod
    def _run_query(kind: str | None, status: list[str] | str | None, parent_id: int | None, limit: int, offset: int,
                   count: bool) -> dict[str, Any]:
        q: dict[str, Any] = {"limit": limit, "offset": offset}
        if kind:
            q["kind"] = kind
        if status:
            q["status"] = [status] if isinstance(status, str) else list(status)
        if parent_id is not None:
            q["parent_id"] = parent_id
        if count:
            q["count"] = "true"
        return q

    def runs(self, kind: str | None = None, status: list[str] | str | None = None, parent_id: int | None = None,
             limit: int = 50, offset: int = 0, count: bool = False) -> RunPage[RunOut]:
        """Runs newest first, every field. `total` is None unless `count` or this page reaches the last run."""
        q = self._run_query(kind, status, parent_id, limit, offset, count)
        return RunPage[RunOut].model_validate(self._cached_json("/runs", params=q))

    def run_summaries(self, kind: str | None = None, status: list[str] | str | None = None,
                      parent_id: int | None = None, limit: int = 50, offset: int = 0,
                      count: bool = False) -> RunPage[RunSummary]:
        """As `runs`, without each run's `params` and `result` (what a table of runs shows; far smaller)."""
        q = {**self._run_query(kind, status, parent_id, limit, offset, count), "fields": "summary"}
        return RunPage[RunSummary].model_validate(self._cached_json("/runs", params=q))

    def cancel(self, run_id: int) -> RunOut:
        return RunOut.model_validate(self._json("POST", f"/runs/{run_id}/cancel"))

    def resume(self, run_id: int) -> RunOut:
        return RunOut.model_validate(self._json("POST", f"/runs/{run_id}/resume"))

    def delete_run(self, run_id: int) -> None:
        self._request("DELETE", f"/runs/{run_id}")

    def wait(self, run_id: int, timeout: float = 600.0, poll: float = 0.25,
             until: tuple[str, ...] = TERMINAL) -> RunOut:
        """Poll until the run reaches one of `until`; TimeoutError (with the last state) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run.status in until:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run.status} ({run.progress:.0%} {run.message or ''}) "
                                   f"after {timeout:g} s")
            time.sleep(poll)

    def metrics(self, run_id: int, since: int = -1, names: list[str] | None = None,
                after_id: int | None = None) -> MetricsOut:
        """Rows after step `since`; or, with `after_id`, rows written after that row (see MetricsOut.last_id)."""
        q: dict[str, Any] = {"since": since}
        if names:
            q["names"] = ",".join(names)
        if after_id is not None:
            q["after_id"] = after_id
        return MetricsOut.model_validate(self._json("GET", f"/runs/{run_id}/metrics", params=q))

    def logs(self, run_id: int, since: int = 0) -> LogsOut:
        return LogsOut.model_validate(self._json("GET", f"/runs/{run_id}/logs", params={"since": since}))

    def artifacts(self, run_id: int, kind: str | None = None) -> list[ArtifactOut]:
        q = {"kind": kind} if kind else {}
        return [ArtifactOut.model_validate(a) for a in self._json("GET", f"/runs/{run_id}/artifacts", params=q)]

    def download(self, run_id: int, name: str, dest: str | os.PathLike) -> Path:
        """Stream one artifact file (or one file of a folder artifact: 'checkpoint/config.json')."""
        return self._stream(f"/runs/{run_id}/artifacts/{name}", Path(dest))

    def artifact_bytes(self, run_id: int, name: str) -> bytes:
        return self._request("GET", f"/runs/{run_id}/artifacts/{name}").content

    def evaluations(self, run_id: int | None = None, policy: str | None = None, task: str | None = None,
                    limit: int = 100) -> list[EvaluationOut]:
        if run_id is not None:
            return [EvaluationOut.model_validate(e) for e in self._json("GET", f"/runs/{run_id}/evaluations")]
        q = {k: v for k, v in {"policy": policy, "task": task, "limit": limit}.items() if v is not None}
        return Page[EvaluationOut].model_validate(self._json("GET", "/evaluations", params=q)).items

    # Datasets ----------------------------------------------------------------------------------
    def datasets(self, limit: int = 50, offset: int = 0) -> Page[DatasetOut]:
        return Page[DatasetOut].model_validate(self._json("GET", "/datasets", params={"limit": limit,
                                                                                        "offset": offset}))

    def dataset(self, dataset_id: int) -> DatasetOut:
        return DatasetOut.model_validate(self._json("GET", f"/datasets/{dataset_id}"))

    def upload_dataset(self, path: str | os.PathLike, name: str) -> DatasetOut:
        with open(path, "rb") as f:
            files = {"file": (Path(path).name, f, "application/x-hdf5")}
            return DatasetOut.model_validate(self._json("POST", "/datasets", files=files, data={"name": name},
                                                        timeout=None))

    def import_dataset(self, path: str | os.PathLike, name: str | None = None, image_size: int = 64,
                       camera: str | None = None) -> RunOut:
        """Import a LeRobot dataset (a .zip, .tar or .tar.gz of its folder) or a LIBERO .hdf5 file: an `import`
        run converts it; when the run succeeds, `result["dataset_id"]` is the new dataset (its run_id is the run).
        `wait(run.id)` follows it."""
        form: dict[str, Any] = {"image_size": str(image_size)}
        if name:
            form["name"] = name
        if camera:
            form["camera"] = camera
        with open(path, "rb") as f:
            files = {"file": (Path(path).name, f, "application/octet-stream")}
            return RunOut.model_validate(self._json("POST", "/datasets/import", files=files, data=form, timeout=None))

    def delete_dataset(self, dataset_id: int) -> None:
        self._request("DELETE", f"/datasets/{dataset_id}")

    def download_dataset(self, dataset_id: int, dest: str | os.PathLike) -> Path:
        return self._stream(f"/datasets/{dataset_id}/download", Path(dest))

    def episodes(self, dataset_id: int, limit: int = 500, offset: int = 0) -> list[EpisodeOut]:
        q = {"limit": limit, "offset": offset}
        return [EpisodeOut.model_validate(e) for e in self._json("GET", f"/datasets/{dataset_id}/episodes", params=q)]

    def episode_video(self, dataset_id: int, index: int, dest: str | os.PathLike) -> Path:
        """An MP4 preview of one episode's camera frames."""
        return self._stream(f"/datasets/{dataset_id}/episodes/{index}/video", Path(dest))

    # Catalog -----------------------------------------------------------------------------------
    def tasks(self) -> TasksOut:
        return TasksOut.model_validate(self._json("GET", "/tasks"))

    def perturbations(self) -> PerturbationsOut:
        return PerturbationsOut.model_validate(self._json("GET", "/perturbations"))

    def checkpoints(self, kind: str | None = None, limit: int = 200) -> list[CheckpointOut]:
        """Trained checkpoints (kind: policy | world_model | reward_model), newest first; use `.ref` as a model
        reference."""
        q: dict[str, Any] = {"limit": limit, **({"kind": kind} if kind else {})}
        return [CheckpointOut.model_validate(c) for c in self._json("GET", "/checkpoints", params=q)]

    def _stream(self, path: str, dest: Path) -> Path:
        tmp = dest.with_name(f".{dest.name}.part")
        with self.http.stream("GET", self.prefix + path) as r:
            if r.status_code >= 400:
                r.read()
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                raise StudioError(r.status_code, body.get("message") or r.reason_phrase, body.get("detail"))
            with tmp.open("wb") as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
        tmp.replace(dest)
        return dest

    def follow(self, run_id: int, poll: float = 1.0) -> Iterator[RunOut]:
        """Yield the run each time its progress, message or status changes, until it ends."""
        last = None
        while True:
            run = self.run(run_id)
            key = (run.status, run.progress, run.message)
            if key != last:
                yield run
                last = key
            if run.done:
                return
            time.sleep(poll)
