"""A procedural test scene: a textured room ray-cast along a camera path, exact depth and poses.

It ships with the package as the bundled default for the demo and as ground truth for tests: every
pixel's world point is known exactly, so a feature that is a function of the 3-D point scores 1.
Written in the ``posed_images`` layout so it goes through the same reader as real scans.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# Axis-aligned boxes (min corner, max corner) in metres, z up: the room, then furniture inside it.
ROOM = (np.array([0.0, 0.0, 0.0]), np.array([6.0, 5.0, 3.0]))
OBJECTS = [
    (np.array([2.2, 1.8, 0.0]), np.array([3.6, 2.8, 0.75])),  # table
    (np.array([0.3, 3.6, 0.0]), np.array([1.1, 4.7, 1.9])),  # cabinet
    (np.array([4.4, 0.5, 0.0]), np.array([5.2, 1.3, 0.5])),  # crate
    (np.array([2.7, 2.1, 0.75]), np.array([3.0, 2.4, 1.05])),  # box on the table
]


def _texture(points: np.ndarray, surface: np.ndarray, rng_seed: int) -> np.ndarray:
    """Colour as a deterministic function of the 3-D point and the surface it lies on."""
    rng = np.random.default_rng(rng_seed)
    freqs = rng.uniform(2.0, 9.0, size=(len(OBJECTS) + 1, 3, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(len(OBJECTS) + 1, 3))
    base = rng.uniform(0.25, 0.75, size=(len(OBJECTS) + 1, 3))
    f, ph, b = freqs[surface], phases[surface], base[surface]
    waves = 0.18 * np.sin(np.einsum("...ij,...j->...i", f, points) + ph)
    checker = ((np.floor(points / 0.5).sum(-1) % 2) - 0.5)[..., None] * 0.2
    return np.clip(b + waves + checker, 0.0, 1.0)


def _slab(origin, dirs, lo, hi):
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (lo - origin) / dirs
        t2 = (hi - origin) / dirs
    # fmax/fmin skip the NaN of 0/0 (a ray lying in a slab plane), cheaper than nanmax/nanmin; taken axis by
    # axis, since numpy's reduce over a last axis of length 3 is ~5x slower than two elementwise calls
    low, high = np.fmin(t1, t2), np.fmax(t1, t2)
    near = np.fmax(np.fmax(low[..., 0], low[..., 1]), low[..., 2])
    far = np.fmin(np.fmin(high[..., 0], high[..., 1]), high[..., 2])
    return near, far


def look_at(eye: np.ndarray, target: np.ndarray, up=np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """Camera-to-world pose with OpenCV axes (x right, y down, z forward)."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([right, down, forward], axis=1)
    pose[:3, 3] = eye
    return pose


def render_view(pose: np.ndarray, intrinsic: np.ndarray, size: tuple[int, int], seed: int = 0):
    """Ray-cast one view: returns (rgb uint8 [H, W, 3], depth metres [H, W] along the optical axis)."""
    h, w = size
    v, u = np.indices((h, w), dtype=np.float64)
    k = intrinsic
    rays_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
    dirs = rays_cam @ pose[:3, :3].T  # unnormalised: the ray parameter t is the camera-frame depth
    origin = pose[:3, 3]
    _, depth = _slab(origin, dirs, *ROOM)  # inside the room: the exit distance
    surface = np.zeros((h, w), dtype=np.int64)
    for index, (lo, hi) in enumerate(OBJECTS, start=1):
        near, far = _slab(origin, dirs, lo, hi)
        hit = (near <= far) & (near > 1e-6) & (near < depth)
        depth = np.where(hit, near, depth)
        surface = np.where(hit, index, surface)
    points = origin + dirs * depth[..., None]
    rgb = (_texture(points, surface, seed) * 255.0 + 0.5).astype(np.uint8)
    return rgb, depth


def camera_path(num_frames: int) -> list[np.ndarray]:
    """An orbit at eye height around the table, looking across the room with a slow pan."""
    poses = []
    for i in range(num_frames):
        a = 2 * np.pi * i / num_frames
        eye = np.array([3.0 + 1.6 * np.cos(a), 2.5 + 1.4 * np.sin(a), 1.5 + 0.1 * np.sin(3 * a)])
        target = np.array([3.0 + 0.8 * np.cos(a + 2.4), 2.5 + 0.8 * np.sin(a + 2.4), 0.6])
        poses.append(look_at(eye, target))
    return poses


def render_synthetic_scene(
    out_dir: str | Path, num_frames: int = 48, size: tuple[int, int] = (240, 320), seed: int = 0
) -> Path:
    """Render the procedural room into ``out_dir`` (posed_images layout) and return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h, w = size
    f = 0.9 * w
    intrinsic = np.array([[f, 0, (w - 1) / 2, 0], [0, f, (h - 1) / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    for name in ("intrinsic.txt", "depth_intrinsic.txt"):
        np.savetxt(out / name, intrinsic, fmt="%.9f")
    for i, pose in enumerate(camera_path(num_frames)):
        rgb, depth = render_view(pose, intrinsic, size, seed)
        Image.fromarray(rgb).save(out / f"{i:05d}.jpg", quality=95)
        Image.fromarray(np.round(depth * 1000.0).astype(np.uint16)).save(out / f"{i:05d}.png")
        np.savetxt(out / f"{i:05d}.txt", pose, fmt="%.9f")
    (out / "README.txt").write_text(
        "Procedural synthetic room rendered by vega3d.scenes.synthetic (exact depth and poses; not a real scan).\n"
    )
    return out


DEFAULT_SCENE_NAME = "synthetic_room"


def default_scene_path(cache_dir: str | Path | None = None) -> Path:
    """The bundled default scene, rendered once into a cache (``$VEGA3D_CACHE`` or ``~/.cache/vega3d``).

    Rendering goes to a temporary folder that is renamed when complete, so an interrupted render is
    never mistaken for the scene.
    """
    root = Path(cache_dir or os.environ.get("VEGA3D_CACHE") or Path.home() / ".cache" / "vega3d")
    folder = root / DEFAULT_SCENE_NAME
    if not folder.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_SCENE_NAME}.", dir=root))
        try:
            render_synthetic_scene(tmp)
            os.replace(tmp, folder)
        except OSError:
            if not folder.is_dir():  # another process may have won the race; anything else is an error
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
