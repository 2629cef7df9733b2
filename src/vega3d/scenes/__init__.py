"""Scenes: reading posed RGB-D scans, sampling frames, and the geometry of tokens."""

from vega3d.scenes.cameras import Cameras
from vega3d.scenes.frames import DEFAULT_IMAGE_SIZE, SceneFrames, resize_center_crop, resize_frames, sample_frames
from vega3d.scenes.geometry import token_world_coordinates, unproject_depth
from vega3d.scenes.reader import Scene, SceneError, find_scenes, load_scene, read_matrix, scene_ids
from vega3d.scenes.sampling import SAMPLING_RULE, uniform_frame_indices
from vega3d.scenes.synthetic import default_scene_path, render_synthetic_scene

__all__ = [
    "Cameras", "DEFAULT_IMAGE_SIZE", "SAMPLING_RULE", "Scene", "SceneError", "SceneFrames", "find_scenes", "load_scene",
    "default_scene_path", "read_matrix", "render_synthetic_scene", "resize_center_crop", "resize_frames", "sample_frames", "scene_ids",
    "token_world_coordinates", "uniform_frame_indices",
    "unproject_depth",
]
