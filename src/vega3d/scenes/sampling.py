"""Frame sampling: the paper's uniform rule, seedless and recorded with every result."""

from __future__ import annotations

import numpy as np

SAMPLING_RULE = "floor(linspace(0, N-1, n)) over the frames with a finite pose"


def uniform_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """``floor(linspace(0, N-1, n))``: deterministic, no seed, first and last frame always included."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; got {num_frames}")
    if num_available < num_frames:
        raise ValueError(f"asked for {num_frames} frames but only {num_available} usable frame(s) exist")
    return [int(i) for i in np.floor(np.linspace(0, num_available - 1, num_frames))]
