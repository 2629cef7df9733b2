"""LIBERO for the OFT evaluation protocol (REFERENCE-VLA Sec. 3): suites, assets, config, initial states.

LIBERO comes from PyPI (the ``vega3d[libero]`` extra); its scene assets do not (F3.16): pass ``--assets DIR``
or set ``VEGA3D_LIBERO_ASSETS`` to a copy of ``libero/libero/assets`` (GitHub repository
Lifelong-Robot-Learning/LIBERO, or the Hugging Face dataset ``lerobot/libero-assets``). LIBERO's first
import asks for its paths with ``input()`` unless ``$LIBERO_CONFIG_PATH/config.yaml`` exists, so the
config is written before the import (F3.15). Initial-state files are torch pickles of numpy arrays: they
are read with ``weights_only=True`` and an explicit allow-list of the numpy types they hold (F3.7).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import yaml

from vega3d.io import write_text
from vega3d.policies.envs import CAMERAS, EnvAdapter, Task

#: Maximum policy steps per suite (OFT's TASK_MAX_STEPS, F3.1); 50 episodes per task; 10 wait steps.
SUITES = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
ASSET_ENTRIES = ("articulated_objects", "scenes", "stable_hope_objects", "stable_scanned_objects", "textures",
                 "turbosquid_objects")
ASSETS_ENV = "VEGA3D_LIBERO_ASSETS"
ASSETS_HELP = ("get them from the LIBERO GitHub repository (libero/libero/assets) or the Hugging Face dataset "
               f"lerobot/libero-assets, then pass --assets DIR or set {ASSETS_ENV}")


def check_suite(suite: str) -> int:
    if suite not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; choose from {', '.join(SUITES)}")
    return SUITES[suite]


def find_assets(assets: str | Path | None) -> Path:
    folder = assets or os.environ.get(ASSETS_ENV)
    if folder is None:
        raise FileNotFoundError(f"LIBERO scene assets are not given (they are in no PyPI package): {ASSETS_HELP}")
    folder = Path(folder).expanduser()
    missing = [entry for entry in ASSET_ENTRIES if not (folder / entry).is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a LIBERO assets folder (no {', '.join(missing)}); {ASSETS_HELP}")
    return folder


def write_libero_config(assets: Path, config_dir: str | Path | None = None) -> Path:
    """Write LIBERO's ``config.yaml`` (paths into the installed package, our assets) and point it there."""
    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("LIBERO is not installed: pip install -c constraints.txt 'vega3d[libero]'")
    root = Path(next(iter(spec.submodule_search_locations))) / "libero"
    config_dir = Path(config_dir or os.environ.get("LIBERO_CONFIG_PATH") or Path.home() / ".libero")
    paths = {"benchmark_root": root, "bddl_files": root / "bddl_files", "init_states": root / "init_files",
             "datasets": root.parent / "datasets", "assets": assets}
    write_text(config_dir / "config.yaml", yaml.safe_dump({k: str(v) for k, v in paths.items()}))
    os.environ["LIBERO_CONFIG_PATH"] = str(config_dir)
    return config_dir / "config.yaml"


def numpy_allow_list() -> list:
    """The numpy globals a pickled float ndarray needs, under numpy 2's and numpy 1's module names
    (LIBERO's files were written with numpy 1: ``numpy.core.multiarray._reconstruct``)."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32)]
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, *dtypes]


def load_init_states(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: LIBERO initial-state file not found")
    with torch.serialization.safe_globals(numpy_allow_list()):
        try:
            states = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # an unlisted global or a broken pickle: refuse, never weights_only=False
            raise ValueError(f"{path}: cannot load the initial states safely ({error})") from None
    states = np.asarray(states)
    if states.ndim != 2:
        raise ValueError(f"{path}: initial states must be [episodes, state_dim]; got shape {states.shape}")
    return states


class LiberoAdapter(EnvAdapter):
    """A LIBERO suite under OFT's protocol: ``OffScreenRenderEnv`` at 256 px, ``env.seed(0)``, episode i starts
    from ``init_states[i]`` (F3.3); success is LIBERO's ``done`` (every BDDL goal predicate holds, F3.5)."""

    def __init__(self, suite: str, assets: str | Path | None = None, image_size: int = 256, episodes_per_task: int = 50):
        self.suite, self.max_steps, self.wait_steps = suite, check_suite(suite), 10
        self.image_size, self.episodes_per_task = image_size, episodes_per_task
        write_libero_config(find_assets(assets))
        from libero.libero import benchmark, get_libero_path

        self._get_path = get_libero_path
        self.benchmark = benchmark.get_benchmark_dict()[suite]()
        self._env, self._env_task, self._init = None, None, {}

    def tasks(self) -> list[Task]:
        return [Task(self.benchmark.get_task(i).name, self.benchmark.get_task(i).language) for i in range(self.benchmark.n_tasks)]

    def _task(self, task: Task):
        index = [t.name for t in self.tasks()].index(task.name)
        return index, self.benchmark.get_task(index)

    def reset(self, task: Task, episode: int) -> dict:
        from libero.libero.envs import OffScreenRenderEnv

        index, info = self._task(task)
        if self._env_task != task.name:
            if self._env is not None:
                self._env.close()
            bddl = Path(self._get_path("bddl_files")) / info.problem_folder / info.bddl_file
            self._env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=self.image_size,
                                           camera_widths=self.image_size, camera_names=list(CAMERAS))
            self._env.seed(0)
            self._env_task = task.name
            self._init[task.name] = load_init_states(Path(self._get_path("init_states")) / info.problem_folder / info.init_states_file)
        self._env.reset()
        return self._env.set_init_state(self._init[task.name][episode])

    def step(self, action) -> tuple[dict, bool]:
        obs, _, done, _ = self._env.step(list(action))
        return obs, bool(done)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
