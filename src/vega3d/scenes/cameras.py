"""Cameras of sampled frames: what camera-conditioned backbones (SEVA, Vmem) receive besides the images.

``cam_to_world [T, 4, 4]`` are the aligned poses (OpenCV axes), ``intrinsics [T, 3, 3]`` the colour camera
in pixels of ``image_size`` (the images as passed to the backbone). A backbone that resizes or crops the
images moves the intrinsics with them through :meth:`Cameras.resized` / :meth:`Cameras.cropped`.
``depth_coverage [T]`` (fraction of pixels with a depth return, optional) is scene information that SEVA's
released extractor uses to choose its input frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Cameras:
    cam_to_world: torch.Tensor
    intrinsics: torch.Tensor
    image_size: tuple[int, int]
    depth_coverage: torch.Tensor | None = None

    def __post_init__(self):
        t = self.cam_to_world.shape[0] if self.cam_to_world.ndim == 3 else -1
        if self.cam_to_world.shape != (t, 4, 4) or self.intrinsics.shape != (t, 3, 3):
            raise ValueError(f"cameras need cam_to_world [T, 4, 4] and intrinsics [T, 3, 3]; got "
                             f"{tuple(self.cam_to_world.shape)} and {tuple(self.intrinsics.shape)}")
        if self.depth_coverage is not None and self.depth_coverage.shape != (t,):
            raise ValueError(f"depth_coverage must be [T={t}]; got {tuple(self.depth_coverage.shape)}")
        if not (torch.isfinite(self.cam_to_world).all() and torch.isfinite(self.intrinsics).all()):
            raise ValueError("cameras hold non-finite poses or intrinsics")

    def __len__(self) -> int:
        return self.cam_to_world.shape[0]

    def resized(self, size: tuple[int, int]) -> "Cameras":
        """The same cameras for the images resized (as a whole) to ``size`` = (H, W): pixel rows scale."""
        (h, w), (new_h, new_w) = self.image_size, size
        scale = torch.tensor([new_w / w, new_h / h, 1.0], dtype=self.intrinsics.dtype)
        return replace(self, intrinsics=self.intrinsics * scale.view(1, 3, 1), image_size=(int(new_h), int(new_w)))

    def cropped(self, top: int, left: int, size: tuple[int, int]) -> "Cameras":
        """The same cameras for the crop ``[top:top + H, left:left + W]``: the principal point moves."""
        intrinsics = self.intrinsics.clone()
        intrinsics[:, 0, 2] -= left
        intrinsics[:, 1, 2] -= top
        return replace(self, intrinsics=intrinsics, image_size=(int(size[0]), int(size[1])))
