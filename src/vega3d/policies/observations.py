"""OFT's observation processing at evaluation time (REFERENCE-VLA F3.8-F3.11), shared by every environment.

Each camera image is rotated 180 degrees (robosuite renders in the OpenGL convention), JPEG-encoded and
decoded (as the RLDS training images were stored), resized to the policy's size with Lanczos-3 and
antialiasing, and centre-cropped to 90 % of its area and resized back (the deterministic twin of the
training augmentation's random crop). TF ops are replaced by their PIL equivalents (JPEG quality 95,
LANCZOS, BILINEAR): the same operations, not bit-identical pixels.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

CROP_AREA = 0.9
JPEG_QUALITY = 95


def process_image(image: np.ndarray, size: int = 224, rotate: bool = True, center_crop: bool = True) -> np.ndarray:
    """A raw uint8 camera image ``[H, W, 3]`` -> the policy's uint8 ``[size, size, 3]`` image."""
    image = np.ascontiguousarray(image[::-1, ::-1] if rotate else image)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").resize((size, size), Image.LANCZOS)
    if center_crop:
        side = math.sqrt(CROP_AREA) * size
        offset = (size - side) / 2
        picture = picture.resize((size, size), Image.BILINEAR, box=(offset, offset, offset + side, offset + side))
    return np.asarray(picture)


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) -> axis-angle ``2 acos(w) xyz / sqrt(1 - w^2)`` (0 when the rotation is ~0)."""
    quat = np.asarray(quat, dtype=np.float64).copy()
    quat[3] = np.clip(quat[3], -1.0, 1.0)
    den = math.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return quat[:3] * 2.0 * math.acos(quat[3]) / den


def robot_proprio(obs: dict) -> np.ndarray:
    """OFT's 8-D LIBERO state: end-effector position, its axis-angle orientation, the two finger positions."""
    return np.concatenate([obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]]).astype(np.float32)
