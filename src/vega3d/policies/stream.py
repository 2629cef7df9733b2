"""Generative tokens of a rollout or a demonstration, with the frozen backbone built once and reused.

Per-step cost matters for a policy: :class:`GenerativeStream` keeps one backbone for the whole evaluation
and encodes each new camera frame exactly once; with ``history = k > 1`` the last k frames' tokens (kept
in a ring) form the clip the policy fuses (``per_frame`` is ``history = 1``). At the start of an episode
the clip is filled by repeating the first frame.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from vega3d.backbones import load_backbone
from vega3d.models.settings import GenerativeSettings


def frames_tensor(images) -> torch.Tensor:
    """uint8 images ``[H, W, 3]`` (a list, or an array ``[T, H, W, 3]``) -> float frames ``[T, 3, H, W]`` in [0, 1]."""
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255.0


class GenerativeStream:
    def __init__(self, settings: GenerativeSettings, history: int = 1, backbone=None, device: str | torch.device = "cpu"):
        if history < 1:
            raise ValueError(f"generative history must be >= 1 frame; got {history}")
        self.settings, self.history, self.device = settings, history, torch.device(device)
        self._backbone = backbone
        self._frames: deque[torch.Tensor] = deque(maxlen=history)

    @property
    def backbone(self):
        if self._backbone is None:
            s = self.settings
            self._backbone = load_backbone(s.backbone, s.backbone_weights, **s.backbone_options).to(self.device)
        return self._backbone

    @torch.inference_mode()
    def encode(self, images) -> torch.Tensor:
        """Tokens ``[T, h, w, C]`` (float32, CPU) of uint8 images, in one backbone call."""
        tokens = self.backbone(frames_tensor(images).to(self.device)).float().cpu()
        if tokens.shape[-1] != self.settings.feature_dim:
            raise ValueError(f"backbone {self.settings.backbone!r} gives {tokens.shape[-1]}-channel tokens; the policy's "
                             f"generative branch expects feature_dim={self.settings.feature_dim}")
        return tokens

    def reset(self) -> None:
        self._frames.clear()

    def step(self, images) -> torch.Tensor:
        """This step's camera images (primary first, the ones the branch fuses) -> ``[1, I, T, h, w, C]``."""
        tokens = self.encode(images)  # [I, h, w, C]: the new frames only
        if not self._frames:
            self._frames.extend([tokens] * self.history)
        else:
            self._frames.append(tokens)
        return torch.stack(list(self._frames), dim=1)[None]

    def clip(self, frames_per_image) -> torch.Tensor:
        """A demonstration step's clip: ``frames_per_image[i]`` = the T frames of image i -> ``[I, T, h, w, C]``."""
        return torch.stack([self.encode(frames) for frames in frames_per_image])
