"""One MetaWorld v3 task with fast headless rendering, seeded start states and exact state restore."""

from __future__ import annotations

import atexit
import warnings
import weakref
from dataclasses import dataclass

import mujoco
import numpy as np

from sim.errors import InputError
from sim.gl import GL_HELP
from sim.perturb import Perturbation, StartState, candidate_starts
from sim.tasks import TaskSpec, get_task

warnings.filterwarnings("ignore", module="gymnasium")
warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")

IMAGE_SIZES = (64, 128, 224)
DEFAULT_CAMERA = "workspace"
DEFAULT_MAX_STEPS = 200

# MetaWorld's fixed cameras are defined with their up axis pointing down: the rendered image is
# rotated by 180°, not merely flipped, so both axes are reversed to make it upright.
NAMED_CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV")


@dataclass(frozen=True)
class FreeCamera:
    lookat: tuple[float, float, float]
    azimuth: float
    elevation: float
    distance: float


# Our own view: the table's working area fills the frame, so pucks, goal markers and the
# gripper's fingers keep a few pixels even at 64×64 (see docs/cameras.png).
FREE_CAMERAS: dict[str, FreeCamera] = {
    "workspace": FreeCamera(lookat=(0.0, 0.7, 0.1), azimuth=140.0, elevation=-30.0, distance=1.1),
}
CAMERAS = (*FREE_CAMERAS, *NAMED_CAMERAS)


_OPEN_ENVS: weakref.WeakSet[SimEnv] = weakref.WeakSet()
_EXIT_HOOK = [False]


def _close_open_envs() -> None:
    for env in list(_OPEN_ENVS):
        env.close()


def _track(env: SimEnv) -> None:
    # MuJoCo registers its EGL teardown when the first context is made; a hook registered after
    # it runs before it, so GL contexts are freed while the display still exists.
    _OPEN_ENVS.add(env)
    if not _EXIT_HOOK[0]:
        atexit.register(_close_open_envs)
        _EXIT_HOOK[0] = True


class StartRejected(RuntimeError):
    """MetaWorld's reset would re-sample forever for this placement."""


class SimError(InputError):
    pass


@dataclass
class Observation:
    frame: np.ndarray  # (H, W, 3) uint8, upright
    proprio: np.ndarray  # (4,) float32: hand xyz + gripper opening
    env_obs: np.ndarray  # (39,) float64: MetaWorld's full observation (used by the scripted experts)


def _env_classes():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return ALL_V3_ENVIRONMENTS


class SimEnv:
    """A MetaWorld task plus an offscreen renderer.

    The state vector returned by `state()` restores the simulation exactly (`restore`): MuJoCo's
    integration state followed by MetaWorld's own bookkeeping (path length, previous observation).
    """

    def __init__(
        self,
        task: str,
        camera: str = DEFAULT_CAMERA,
        image_size: int = 64,
        max_steps: int = DEFAULT_MAX_STEPS,
        renderer: mujoco.Renderer | None = None,
    ) -> None:
        """`renderer`: share another environment's renderer of the same task and image size (each one holds
        an offscreen GL context of about 130 MB); the sharer never closes it."""
        self.spec: TaskSpec = get_task(task)
        if camera not in CAMERAS:
            raise SimError(f"unknown camera '{camera}': choose from {', '.join(CAMERAS)}")
        if image_size not in IMAGE_SIZES:
            raise SimError(f"image size {image_size} not supported: choose from {IMAGE_SIZES}")
        self.camera = camera
        self.image_size = image_size
        self.max_steps = max_steps
        env = _env_classes()[self.spec.name]()
        env._partially_observable = False  # the experts read the goal from the observation
        env.__dict__.pop("sawyer_observation_space", None)  # cached with the goal hidden
        env._set_task_called = True
        env.max_path_length = max(max_steps, 1)
        self._env = env
        self._install_reset_guard()
        m = env.model
        # Before the first render: no MSAA, no shadow map, no reflections (~10x faster, same content).
        m.vis.quality.offsamples = 0
        m.light_castshadow[:] = 0
        m.mat_reflectance[:] = 0
        self._owns_renderer = renderer is None
        try:
            self._renderer = renderer if renderer is not None else mujoco.Renderer(m, image_size, image_size)
        except Exception as exc:
            raise RuntimeError(f"{GL_HELP} ({exc})") from exc
        if (self._renderer.height, self._renderer.width) != (image_size, image_size):
            raise SimError(f"shared renderer is {self._renderer.width}px, this environment needs {image_size}px")
        self._cam: str | mujoco.MjvCamera = camera
        if camera in FREE_CAMERAS:
            fc = FREE_CAMERAS[camera]
            cam = mujoco.MjvCamera()
            cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            cam.lookat[:] = fc.lookat
            cam.azimuth, cam.elevation, cam.distance = fc.azimuth, fc.elevation, fc.distance
            self._cam = cam
        self._rotate = camera in NAMED_CAMERAS
        self._state_size = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_INTEGRATION)
        self.default_hand = np.array(env.hand_init_pos, dtype=float)
        self.start: StartState | None = None
        self.steps = 0
        _track(self)

    # -- reset -------------------------------------------------------------------------------
    def _install_reset_guard(self) -> None:
        env = self._env
        original_vec, original_reset_model = env._get_state_rand_vec, env.reset_model
        calls = [0]

        def guarded_vec():
            calls[0] += 1
            if calls[0] > 1 and env._freeze_rand_vec:
                raise StartRejected(f"{self.spec.name}: placement violates the task's own spacing rule")
            return original_vec()

        def counted_reset_model():
            calls[0] = 0
            return original_reset_model()

        env._get_state_rand_vec = guarded_vec
        env.reset_model = counted_reset_model

    @property
    def reset_space(self) -> tuple[np.ndarray, np.ndarray]:
        sp = self._env._random_reset_space
        return np.asarray(sp.low, float), np.asarray(sp.high, float)

    def sample_start(
        self, perturbation: Perturbation | None = None, seed: int = 0, index: int = 0, stream: str = "collect"
    ) -> StartState:
        """The first deterministic candidate for (seed, index, stream) that the task accepts."""
        perturbation = perturbation or Perturbation()
        low, high = self.reset_space
        env = self._env
        candidates = candidate_starts(
            self.spec, low, high, self.default_hand, np.asarray(env.mocap_low), np.asarray(env.mocap_high),
            perturbation, seed, index, stream,
        )
        for _, start in zip(range(200), candidates, strict=False):
            try:
                self.reset(start)
                return start
            except StartRejected:
                continue
        raise SimError(f"{self.spec.name}: no valid start found for {perturbation.name} (seed {seed})")

    def reset(self, start: StartState) -> Observation:
        if start.task != self.spec.name:
            raise SimError(f"start state is for {start.task}, environment is {self.spec.name}")
        env = self._env
        env._freeze_rand_vec = True
        env._last_rand_vec = np.array(start.rand_vec, dtype=float)
        env.hand_init_pos = np.array(start.hand_init, dtype=float)
        env.reset()
        self.start = start
        self.steps = 0
        return self.observe()

    # -- stepping ----------------------------------------------------------------------------
    def step(self, action: np.ndarray) -> tuple[Observation, float, bool]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        env_obs, reward, _, _, info = self._env.step(a)
        self.steps += 1
        return self._observe(env_obs), float(reward), bool(info["success"])

    def advance(self, action: np.ndarray) -> bool:
        """One step without rendering (the policy looks only at chunk ends); returns success."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(4), -1.0, 1.0)
        _, _, _, _, info = self._env.step(a)
        self.steps += 1
        return bool(info["success"])

    @property
    def done(self) -> bool:
        return self.steps >= self.max_steps

    # -- observation -------------------------------------------------------------------------
    @property
    def renderer(self) -> mujoco.Renderer:
        return self._renderer

    def render(self) -> np.ndarray:
        # the scene is built from this environment's own model (goal sites, colours); the GL context only
        # holds meshes and textures, which every instance of a task shares
        self._renderer._model = self._env.model
        self._renderer.update_scene(self._env.data, camera=self._cam)
        frame = self._renderer.render()
        if self._rotate:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame)

    def _observe(self, env_obs: np.ndarray) -> Observation:
        env_obs = np.asarray(env_obs, dtype=np.float64)
        return Observation(self.render(), env_obs[:4].astype(np.float32), env_obs)

    def observe(self) -> Observation:
        env = self._env
        curr = env._get_curr_obs_combined_no_goal()
        env_obs = np.hstack([curr, env._prev_obs, env._get_pos_goal()])
        space = env.sawyer_observation_space
        return self._observe(np.clip(env_obs, space.low, space.high))

    def hand_pos(self) -> np.ndarray:
        return np.asarray(self._env.tcp_center, dtype=float).copy()

    def object_pos(self) -> np.ndarray:
        return np.asarray(self._env._get_pos_objects()[:3], dtype=float).copy()

    def goal_pos(self) -> np.ndarray:
        return np.asarray(self._env._target_pos, dtype=float).copy()

    # -- exact state save / restore ----------------------------------------------------------
    def state(self) -> np.ndarray:
        env = self._env
        buf = np.empty(self._state_size, dtype=np.float64)
        mujoco.mj_getState(env.model, env.data, buf, mujoco.mjtState.mjSTATE_INTEGRATION)
        return np.concatenate([buf, [float(env.curr_path_length), float(self.steps)], env._prev_obs])

    @property
    def state_size(self) -> int:
        return self._state_size + 2 + 18

    def restore(self, start: StartState, state: np.ndarray) -> Observation:
        """Reset to `start`, then load a vector from `state()`; the frame is reproduced exactly."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self.state_size,):
            raise SimError(f"state has {state.shape} entries, {self.spec.name} needs ({self.state_size},)")
        if start != self.start:  # a reset places the objects in the model; the same start needs none
            self.reset(start)
        env = self._env
        n = self._state_size
        mujoco.mj_setState(env.model, env.data, state[:n], mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(env.model, env.data)
        env.curr_path_length = int(state[n])
        self.steps = int(state[n + 1])
        env._prev_obs = state[n + 2 :].copy()
        for site in env._target_site_config:
            env._set_pos_site(*site)
        return self.observe()

    def close(self) -> None:
        r, self._renderer = getattr(self, "_renderer", None), None
        if r is not None and getattr(self, "_owns_renderer", True):
            r.close()
        env, self._env = getattr(self, "_env", None), None
        if env is not None:
            env.close()

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
