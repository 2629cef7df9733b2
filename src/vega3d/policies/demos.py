"""LIBERO demonstrations in the original HDF5 layout (REFERENCE-VLA F4.6), read with h5py.

``<task>_demo.hdf5``: ``data.attrs["problem_info"]`` (JSON with ``language_instruction``) and
``data/demo_i/{actions (T, 7), obs/{agentview_rgb, eye_in_hand_rgb (T, H, W, 3) uint8, upside down,
ee_states (T, 6) = position + axis-angle, gripper_states (T, 2)}}``. Training samples follow OFT's RLDS
pipeline (F4.4): the observation at t, the actions t .. t+K-1 (start indices up to T-K, no padding),
the proprio ``ee_states || gripper_states``, the gripper converted to 1 = open / 0 = close (F2.15), both
normalised with the Q99 statistics of the training demos.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vega3d.io import atomic_path
from vega3d.policies.normalization import compute_statistics, libero_gripper_for_training

IMAGE_KEYS = ("agentview_rgb", "eye_in_hand_rgb")
STATE_KEYS = ("ee_states", "gripper_states")


@dataclass
class Demo:
    source: str
    language: str
    actions: np.ndarray          # [T, 7] raw (gripper -1 open / +1 close)
    proprio: np.ndarray          # [T, 8]
    images: list[np.ndarray]     # per camera: [T, H, W, 3] uint8 as stored (upside down)
    #: Frames the generative stream sees instead of the cameras (the toy task: rendered depth), same layout.
    generative_images: list[np.ndarray] | None = None

    @property
    def training_actions(self) -> np.ndarray:
        actions = self.actions.astype(np.float64).copy()
        actions[:, -1] = libero_gripper_for_training(actions[:, -1])
        return actions


def language_of(path: Path, attrs) -> str:
    """The instruction: ``problem_info.language_instruction``, else the file name (LIBERO's rule, F3.1)."""
    info = attrs.get("problem_info")
    if info is not None:
        try:
            language = json.loads(info).get("language_instruction")
        except (json.JSONDecodeError, AttributeError):
            raise ValueError(f"{path}: data.attrs['problem_info'] is not a JSON object") from None
        if language:
            return str(language).strip()
    name = re.sub(r"^(KITCHEN|LIVING_ROOM|STUDY)?_?SCENE\d+_", "", path.stem.removesuffix("_demo"))
    return name.replace("_", " ").strip()


def read_demos(path: str | Path, num_images: int = 2) -> list[Demo]:
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: demonstration file not found")
    with h5py.File(path, "r") as handle:
        if "data" not in handle:
            raise ValueError(f"{path}: no 'data' group (expected LIBERO's data/demo_i/... layout)")
        data = handle["data"]
        language = language_of(path, data.attrs)
        names = sorted((k for k in data if k.startswith("demo_")), key=lambda k: int(k.split("_")[1]))
        if not names:
            raise ValueError(f"{path}: 'data' holds no demo_i groups")
        demos = []
        for name in names:
            group = data[name]
            needed = ["actions"] + [f"obs/{k}" for k in (*IMAGE_KEYS[:num_images], *STATE_KEYS)]
            missing = [key for key in needed if key not in group]
            if missing:
                raise ValueError(f"{path}: data/{name} lacks {missing}")
            actions = np.asarray(group["actions"], dtype=np.float64)
            proprio = np.concatenate([np.asarray(group[f"obs/{k}"], dtype=np.float64) for k in STATE_KEYS], axis=1)
            images = [np.asarray(group[f"obs/{k}"]) for k in IMAGE_KEYS[:num_images]]
            if not all(len(x) == len(actions) for x in (proprio, *images)):
                raise ValueError(f"{path}: data/{name} has actions, states and images of different lengths")
            demos.append(Demo(f"{path.name}:{name}", language, actions, proprio.astype(np.float32), images))
    return demos


def write_demos(path: str | Path, demos: list[Demo], problem_info: dict | None = None) -> Path:
    """Write demonstrations in the same layout (the toy task's scripted-expert demos), atomically."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        data = handle.create_group("data")
        data.attrs["problem_info"] = json.dumps(problem_info or {"language_instruction": demos[0].language})
        for i, demo in enumerate(demos):
            group = data.create_group(f"demo_{i}")
            group.create_dataset("actions", data=demo.actions)
            group.create_dataset("obs/ee_states", data=demo.proprio[:, :6])
            group.create_dataset("obs/gripper_states", data=demo.proprio[:, 6:])
            for key, frames in zip(IMAGE_KEYS, demo.images):
                group.create_dataset(f"obs/{key}", data=frames, compression="gzip")
            group.attrs["num_samples"] = len(demo.actions)
    return Path(path)


def demo_statistics(demos: list[Demo]) -> dict:
    return compute_statistics(np.concatenate([d.training_actions for d in demos]),
                              np.concatenate([d.proprio for d in demos]), len(demos))
