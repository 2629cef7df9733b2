"""Environment adapters: one evaluation loop for LIBERO and for plain robosuite tasks.

An adapter names its tasks (with their language instruction), resets an episode to a reproducible initial
state, steps a 7-D OSC_POSE delta action and reports success. Observations stay robosuite's raw dicts:
the two cameras ``agentview_image`` / ``robot0_eye_in_hand_image`` and the robot state, processed by
:mod:`vega3d.policies.observations` exactly as OFT does for LIBERO. :class:`RobosuiteAdapter` runs a
robosuite 1.4 task headless (``MUJOCO_GL=egl``): the loop is tested in CI without LIBERO's assets.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

CAMERAS = ("agentview", "robot0_eye_in_hand")
#: The first ``wait_steps`` actions of an episode while objects settle: no motion, gripper open (F3.4).
DUMMY_ACTION = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]


@dataclass(frozen=True)
class Task:
    name: str
    language: str


class EnvAdapter:
    """Interface of an evaluation environment; subclasses implement the four methods."""

    suite: str = "env"
    max_steps: int = 200
    wait_steps: int = 10
    episodes_per_task: int = 50

    def tasks(self) -> list[Task]:
        raise NotImplementedError

    def reset(self, task: Task, episode: int) -> dict:
        """Start ``episode`` of ``task`` from its fixed initial state; returns the first observation."""
        raise NotImplementedError

    def step(self, action) -> tuple[dict, bool]:
        """Apply one action; returns the observation and whether the task is solved."""
        raise NotImplementedError

    def with_images(self, obs: dict) -> dict:
        """``obs`` with the camera images (raw, OpenGL convention); rendered only when asked for where that is costly."""
        return obs

    def close(self) -> None:
        pass


def import_robosuite():
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; robosuite does the same (F3.14)
    try:
        import robosuite
    except ImportError as error:
        raise ImportError("robosuite is not installed: pip install -c constraints.txt 'robosuite==1.4.*' 'mujoco<3.9'") from error
    return robosuite


class RobosuiteAdapter(EnvAdapter):
    """A robosuite task (default Lift with a Panda) under the LIBERO observation and action conventions.

    Episode ``i`` starts from the initial state robosuite's placement sampler draws after seeding numpy with
    ``seed + i``, so held-out episodes are fixed by their seeds; the simulated model itself (robosuite draws
    e.g. Lift's cube size when it builds it) is drawn after seeding numpy with ``seed`` at construction.
    Cameras are rendered only on request (:meth:`with_images`: when the policy is queried, once per chunk),
    since CPU rendering costs far more than the physics; the images are those robosuite's camera
    observations would hold.
    """

    LANGUAGE = {"Lift": "lift the red cube", "Stack": "stack the red cube on the green cube",
                "Door": "open the door", "PickPlaceCan": "put the can into its bin"}

    def __init__(self, env_name: str = "Lift", robot: str = "Panda", image_size: int = 128, max_steps: int = 150,
                 wait_steps: int = 10, episodes_per_task: int = 10, seed: int = 0, depth: bool = False,
                 cameras: tuple[str, ...] = CAMERAS):
        suite = import_robosuite()
        from robosuite import load_controller_config

        self.env_name, self.seed, self.suite, self.image_size = env_name, seed, f"robosuite_{env_name.lower()}", image_size
        self.depth = depth  # also render agentview depth, as a height-above-table image ("agentview_height")
        self.cameras = tuple(cameras)  # the cameras with_images renders (a one-image policy needs no wrist view)
        unknown = sorted(set(self.cameras) - set(CAMERAS))
        if unknown:
            raise ValueError(f"RobosuiteAdapter: unknown camera(s) {unknown}; choose from {list(CAMERAS)}")
        self.max_steps, self.wait_steps, self.episodes_per_task = max_steps, wait_steps, episodes_per_task
        np.random.seed(seed)  # the model is built once here, with numpy draws (Lift's cube size): fixed by the seed
        self.env = suite.make(
            env_name, robots=robot, controller_configs=load_controller_config(default_controller="OSC_POSE"),
            has_renderer=False, has_offscreen_renderer=True, use_camera_obs=False, control_freq=20, horizon=10 * max_steps,
            ignore_done=True, hard_reset=False, reward_shaping=False,
        )

    def tasks(self) -> list[Task]:
        return [Task(self.env_name, self.LANGUAGE.get(self.env_name, self.env_name.lower()))]

    def reset(self, task: Task, episode: int) -> dict:
        np.random.seed(self.seed + episode)
        return self.env.reset()

    def step(self, action) -> tuple[dict, bool]:
        obs, _, _, _ = self.env.step(np.asarray(action, dtype=np.float64))
        return obs, bool(self.env._check_success())

    def with_images(self, obs: dict) -> dict:
        size, images = self.image_size, {}
        for camera in self.cameras:
            if camera == CAMERAS[0] and self.depth:
                rgb, depth = self.env.sim.render(width=size, height=size, camera_name=camera, depth=True)
                images["agentview_height"] = height_image(self.env.sim, camera, depth)
            else:
                rgb = self.env.sim.render(width=size, height=size, camera_name=camera)
            images[f"{camera}_image"] = rgb
        return {**obs, **images}

    def object_position(self, obs: dict) -> np.ndarray:
        return np.asarray(obs["cube_pos"])

    def close(self) -> None:
        self.env.close()


def compile_robosuite() -> None:
    """Build a small Lift, step it still and moving, render it once: robosuite compiles its controller maths
    with numba on the first steps (5-7 s, measured) and caches them on disk, and Mesa caches the shaders of
    the first render, so that later processes (an evaluation, the tests) start without either cost. Where
    robosuite cannot run (no EGL, say) it warns instead: ``make install`` runs this and must not fail for it."""
    try:
        env = RobosuiteAdapter(image_size=32, max_steps=2, wait_steps=0, depth=True)
        try:
            obs = env.reset(env.tasks()[0], 0)
            for action in (DUMMY_ACTION, [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 1.0]):  # each compiles its own loops
                obs, _ = env.step(action)
            env.with_images(obs)
        finally:
            env.close()
    except Exception as error:  # whatever the simulator raises: only its first episode gets slower
        warnings.warn(f"vega3d: robosuite's loops were not compiled ahead ({type(error).__name__}: {error}); "
                      "the first episode of each fresh install compiles them (5-7 s)", stacklevel=2)


def height_image(sim, camera: str, depth: np.ndarray, height_range: tuple[float, float] = (0.8, 0.9)) -> np.ndarray:
    """A rendered depth buffer -> grey uint8 ``[H, W, 3]`` of each pixel's height above the table (world z in
    ``height_range`` mapped to 0..255), in the render's own (OpenGL, upside-down) orientation."""
    from robosuite.utils.camera_utils import get_camera_transform_matrix, get_real_depth_map

    metric = get_real_depth_map(sim, depth).squeeze()[::-1]  # image rows top-down, as the projection expects
    rows, cols = np.mgrid[0: metric.shape[0], 0: metric.shape[1]]
    world_from_pixels = np.linalg.inv(get_camera_transform_matrix(sim, camera, *metric.shape))
    points = np.stack([cols * metric, rows * metric, metric, np.ones_like(metric)], axis=-1) @ world_from_pixels.T
    low, high = height_range
    grey = np.round(255 * np.clip((points[..., 2] - low) / (high - low), 0, 1)).astype(np.uint8)[::-1]
    return np.repeat(grey[..., None], 3, axis=-1)
