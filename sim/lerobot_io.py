"""LeRobot datasets (v3.0 layout: parquet tables, MP4 videos, meta/) in and out of the studio's episode files.

Import: the package's `LeRobotDataset` reads the metadata and the tables from a local root (nothing is fetched);
the videos are decoded with PyAV, each file once, and resized to the studio's square frame size (centre crop,
area filter). `observation.state` becomes proprio, `action` the actions, the task strings the instructions;
`next.reward` / `next.success` are kept where present. Imported episodes carry no simulator states.

Export: `LeRobotDataset.create` + `add_frame` + `save_episode` + `finalize` write a dataset (H.264 videos) into
a temporary folder that is renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from sim.episodes import DatasetError, Episode, EpisodeFile, EpisodeWriter, check_writable
from sim.lerobot_pkg import LeRobotMissingError, lerobot

STATE, ACTION, REWARD, SUCCESS = "observation.state", "action", "next.reward", "next.success"
IMAGE_PREFIX = "observation.images."
REPO_ID = "local/dataset"  # the package wants a repo id; with a local root it is only a label
MAX_IMAGE_SIZE = 512


@dataclass(frozen=True)
class ImportReport:
    path: str
    episodes: int
    steps: int
    camera: str
    other_cameras: list[str]
    source_size: list[int]
    image_size: int
    action_dim: int
    proprio_dim: int
    fps: float
    has_reward: bool
    has_success: bool
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _camera_name(key: str) -> str:
    return key.removeprefix(IMAGE_PREFIX).replace(".", "_").replace("/", "_") or "camera"


def _check_root(root: Path) -> dict:
    """The folder looks like a LeRobot dataset; returns meta/info.json (read by the package afterwards)."""
    import json

    if not root.exists():
        raise DatasetError(f"LeRobot dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: give the root of a LeRobot dataset (with meta/info.json)")
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise DatasetError(f"{root} has no meta/info.json: not a LeRobot dataset")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{info_path} is unreadable ({_one_line(exc)})") from exc
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3"):
        raise DatasetError(f"{root} is a LeRobot {version} dataset; this reader takes v3.0 (convert it with "
                           "LeRobot's convert_dataset_v21_to_v30 first)")
    return info


def _features(info: dict, root: Path, camera: str | None) -> tuple[str, list[str], int, int]:
    feats = info.get("features")
    if not isinstance(feats, dict):
        raise DatasetError(f"{root}: meta/info.json has no 'features': unknown feature layout")
    images = sorted(k for k, v in feats.items() if isinstance(v, dict) and v.get("dtype") in ("video", "image"))
    if not images:
        raise DatasetError(f"{root}: unknown feature layout: no image or video feature (features: {', '.join(feats)})")
    for need in (STATE, ACTION):
        ft = feats.get(need)
        if not isinstance(ft, dict) or len(ft.get("shape", ())) != 1 or ft.get("dtype") not in ("float32", "float64"):
            raise DatasetError(f"{root}: unknown feature layout: needs a 1-D float '{need}' feature "
                               f"(features: {', '.join(feats)})")
    if camera is None:
        key = images[0]
    else:
        matches = [k for k in images if k == camera or _camera_name(k) == camera]
        if not matches:
            raise DatasetError(f"camera {camera!r} is not in {root}: cameras are {', '.join(images)}")
        key = matches[0]
    return key, [k for k in images if k != key], int(feats[ACTION]["shape"][0]), int(feats[STATE]["shape"][0])


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, then area-resize to size×size."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = rgb[top : top + s, left : left + s]
    if s == size:
        return np.ascontiguousarray(crop)
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BOX))


class _VideoFrames:
    """Decoded frames of one video file, by presentation time; each file is decoded once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.path: Path | None = None
        self.times: np.ndarray = np.zeros(0)
        self.frames: list[np.ndarray] = []

    def load(self, path: Path) -> None:
        import av

        if path == self.path:
            return
        if not path.is_file():
            raise DatasetError(f"video {path} is missing: the videos do not match the table")
        times, frames = [], []
        try:
            with av.open(str(path)) as box:
                stream = box.streams.video[0]
                stream.thread_type = "AUTO"
                base = stream.time_base or Fraction(1, 1)
                for frame in box.decode(stream):
                    if frame.pts is None:
                        continue
                    times.append(float(frame.pts * base))
                    if frame.width == frame.height:
                        rgb = frame.to_ndarray(format="rgb24", width=self.size, height=self.size,
                                               interpolation="AREA")
                    else:
                        rgb = _square(frame.to_ndarray(format="rgb24"), self.size)
                    frames.append(rgb)
        except (OSError, ValueError, av.error.FFmpegError) as exc:
            raise DatasetError(f"video {path} is unreadable ({_one_line(exc)})") from exc
        order = np.argsort(times)
        self.path, self.times, self.frames = path, np.asarray(times)[order], [frames[i] for i in order]

    def segment(self, start: float, n: int, fps: float, what: str) -> np.ndarray:
        """n frames from timestamp `start` on, one every 1/fps."""
        want = start + np.arange(n) / fps
        idx = np.searchsorted(self.times, want - 0.5 / fps)
        if len(self.times) == 0 or idx[-1] >= len(self.times) or np.any(np.abs(self.times[idx] - want) > 0.5 / fps):
            have = int(np.sum((self.times >= start - 0.5 / fps) & (self.times < want[-1] + 0.5 / fps)))
            raise DatasetError(f"{what}: the table has {n} steps but the video {self.path} holds {have} frames for "
                               "them: the videos do not match the table")
        return np.stack([self.frames[i] for i in idx])


def _column(table, name: str, rows: slice) -> np.ndarray:
    """Rows of one column as an array: (n,) for scalars, (n, k) for fixed-size lists."""
    import pyarrow as pa

    col = table.column(name).slice(rows.start, rows.stop - rows.start).combine_chunks()
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        if len(col) == 0 or len(flat) % len(col):
            raise DatasetError(f"column '{name}' has rows of different lengths")
        return flat.reshape(len(col), -1)
    return np.asarray(col.to_numpy(zero_copy_only=False))


def _image_column(table, key: str, rows: slice, size: int) -> np.ndarray:
    import io

    cells = table.column(key).slice(rows.start, rows.stop - rows.start).to_pylist()
    out = []
    for cell in cells:
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            raise DatasetError(f"image feature {key} holds no image bytes")
        out.append(_square(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), size))
    return np.stack(out)


def import_lerobot(
    root: str | os.PathLike, out: str | os.PathLike, image_size: int = 64, camera: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Convert a local LeRobot dataset into one episode file at `out` (written atomically)."""
    t0 = time.perf_counter()
    root = Path(root).expanduser()
    if not 8 <= image_size <= MAX_IMAGE_SIZE or image_size % 8:
        raise DatasetError(f"image size must be a multiple of 8 from 8 to {MAX_IMAGE_SIZE}, got {image_size}")
    info = _check_root(root)
    key, others, action_dim, proprio_dim = _features(info, root, camera)
    out_path = check_writable(out)
    pkg = lerobot()
    try:
        meta = pkg.LeRobotDatasetMetadata(REPO_ID, root=root)
    except Exception as exc:
        raise DatasetError(f"{root}: the LeRobot reader cannot load its meta/ ({_one_line(exc)})") from exc
    for i in range(len(meta.episodes)):  # else the package would try to download what is missing
        for vkey in meta.video_keys:
            path = root / meta.get_video_file_path(i, vkey)
            if not path.is_file():
                raise DatasetError(f"{root}: video {path.relative_to(root)} of episode {i} is missing: the videos "
                                   "do not match the table")
        if not (root / meta.get_data_file_path(i)).is_file():
            raise DatasetError(f"{root}: table {meta.get_data_file_path(i)} of episode {i} is missing")
    try:
        ds = pkg.LeRobotDataset(REPO_ID, root=root, video_backend="pyav")
    except LeRobotMissingError:
        raise
    except Exception as exc:  # the package raises many kinds (pyarrow, datasets, hub offline, KeyError)
        raise DatasetError(f"{root}: the LeRobot reader cannot load it ({_one_line(exc)}): a truncated or "
                           "inconsistent dataset") from exc
    meta = ds.meta
    table = ds.hf_dataset.data.table
    columns = set(table.column_names)
    for need in (STATE, ACTION, "episode_index", "task_index"):
        if need not in columns:
            raise DatasetError(f"{root}: the table has no '{need}' column: unknown feature layout")
    is_video = key in meta.video_keys
    if not is_video and key not in columns:
        raise DatasetError(f"{root}: image feature {key} is neither a video nor a table column")
    has_reward, has_success = REWARD in columns, SUCCESS in columns
    tasks = {int(row.task_index): str(name) for name, row in meta.tasks.iterrows()}
    fps = float(meta.fps)
    episodes = meta.episodes
    n_eps = len(episodes)
    table_eps = table.column("episode_index").to_numpy()
    video = _VideoFrames(image_size)
    writer = EpisodeWriter(out_path, _camera_name(key), image_size,
                           meta={"env": "lerobot", "source": root.name, "source_format": "lerobot-v3.0",
                                 "fps": fps, "lerobot_image_key": key, "sim_states": False})
    steps = 0
    try:
        for i in range(n_eps):
            ep = episodes[i]
            lo, hi = int(ep["dataset_from_index"]), int(ep["dataset_to_index"])
            n = hi - lo
            what = f"{root}: episode {ep['episode_index']}"
            if n < 1 or hi > len(table) or np.any(table_eps[lo:hi] != ep["episode_index"]):
                raise DatasetError(f"{what}: rows {lo}-{hi} of the table do not belong to it: the table is "
                                   "truncated or inconsistent")
            rows = slice(lo, hi)
            if is_video:
                video.load(root / meta.get_video_file_path(int(ep["episode_index"]), key))
                frames = video.segment(float(ep[f"videos/{key}/from_timestamp"]), n, fps, what)
            else:
                frames = _image_column(table, key, rows, image_size)
            actions = _column(table, ACTION, rows).astype(np.float32)
            proprio = _column(table, STATE, rows).astype(np.float32)
            if actions.shape != (n, action_dim) or proprio.shape != (n, proprio_dim):
                raise DatasetError(f"{what}: actions {actions.shape} / state {proprio.shape} do not match the "
                                   f"declared features ({action_dim}, {proprio_dim})")
            task_ids = _column(table, "task_index", rows).astype(int).ravel()
            instruction = tasks.get(int(task_ids[0]))
            if instruction is None:
                raise DatasetError(f"{what}: task index {task_ids[0]} is not in meta/tasks")
            rewards = _column(table, REWARD, rows).astype(np.float32).ravel() if has_reward else np.zeros(n, np.float32)
            success = _column(table, SUCCESS, rows).astype(bool).ravel() if has_success else np.zeros(n, bool)
            writer.add(Episode(
                task=instruction, instruction=instruction, frames=frames, proprio=proprio, actions=actions,
                expert_actions=actions, rewards=rewards, successes=success,
                attrs={"source_episode": int(ep["episode_index"]), "success_labelled": has_success},
            ))
            steps += n
            if progress:
                progress(i + 1, n_eps)
        path = writer.close()
    except BaseException:
        writer.abort()
        raise
    feats = info["features"]
    shape = feats[key].get("shape", [0, 0, 3])
    return ImportReport(
        path=str(path), episodes=n_eps, steps=steps, camera=_camera_name(key), other_cameras=others,
        source_size=[int(s) for s in shape[:2]], image_size=image_size, action_dim=action_dim,
        proprio_dim=proprio_dim, fps=fps, has_reward=has_reward, has_success=has_success,
        seconds=time.perf_counter() - t0,
    )


def export_lerobot(
    dataset: str | os.PathLike, root: str | os.PathLike, fps: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write an episode file as a LeRobot v3.0 dataset at `root` (which must not exist yet)."""
    root = Path(root).expanduser()
    if root.exists():
        raise DatasetError(f"{root} already exists; give a new folder for the LeRobot dataset")
    if not root.parent.is_dir():
        raise DatasetError(f"output folder {root.parent} does not exist")
    if not 1 <= fps <= 1000:
        raise DatasetError(f"fps must be 1 to 1000, got {fps}")
    ef = EpisodeFile(dataset)
    pkg = lerobot()
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    size, cam = ef.image_size, str(ef.camera)
    try:
        first = ef.load(0, frames=False)
        pdim = first.proprio.shape[1]
        features = {
            f"{IMAGE_PREFIX}{cam}": {"dtype": "video", "shape": (size, size, 3),
                                     "names": ["height", "width", "channels"]},
            STATE: {"dtype": "float32", "shape": (pdim,), "names": None},
            ACTION: {"dtype": "float32", "shape": (ef.action_dim,), "names": None},
            REWARD: {"dtype": "float32", "shape": (1,), "names": None},
            SUCCESS: {"dtype": "bool", "shape": (1,), "names": None},
        }
        ds = pkg.LeRobotDataset.create(REPO_ID, fps=fps, features=features, root=tmp, use_videos=True,
                                       vcodec="h264")
        steps = 0
        for i in range(len(ef)):
            ep = ef.load(i)
            if ep.proprio.shape[1] != pdim:
                raise DatasetError(f"{ef.path}: {ef.keys[i]} has {ep.proprio.shape[1]}-D proprio, the first "
                                   f"episode {pdim}-D")
            for t in range(len(ep)):
                ds.add_frame({
                    f"{IMAGE_PREFIX}{cam}": ep.frames[t], STATE: ep.proprio[t].astype(np.float32),
                    ACTION: ep.actions[t].astype(np.float32), REWARD: ep.rewards[t : t + 1].astype(np.float32),
                    SUCCESS: ep.successes[t : t + 1].astype(bool), "task": ep.instruction,
                })
            # the package stacks (1,) values into (T, 1) rows that `datasets` cannot encode with NumPy ≥ 2.3
            for name in (REWARD, SUCCESS):
                ds.episode_buffer[name] = [np.asarray(v).reshape(()) for v in ds.episode_buffer[name]]
            ds.save_episode()
            steps += len(ep)
            if progress:
                progress(i + 1, len(ef))
        ds.finalize()
        shutil.rmtree(tmp / "images", ignore_errors=True)  # the package's per-frame PNGs, already encoded
        os.replace(tmp, root)
    except DatasetError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"writing the LeRobot dataset failed ({_one_line(exc)})") from exc
    finally:
        ef.close()
    return {"path": str(root), "episodes": len(ef), "steps": steps, "camera": cam, "image_size": size,
            "action_dim": ef.action_dim, "proprio_dim": int(pdim), "fps": fps}
