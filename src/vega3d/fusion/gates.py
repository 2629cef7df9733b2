"""Per-token gate values on the frames: a gates file (safetensors) and a PNG grid with a heat-map overlay.

Gates file: tensors ``frames`` ``[T, 3, H, W]`` (uint8 0-255, or float in [0, 1]) and ``gates``
``[T, h, w]`` (float in [0, 1], the weight on the semantic stream of each token of the frame's h x w
grid); string metadata ``model`` (what produced the gates), ``weights`` (checkpoint or "random") and
``random_weights`` ("true"/"false"), plus any other string entries (e.g. ``question``, ``preset``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vega3d.io import atomic_write, save_safetensors

REQUIRED_METADATA = ("model", "weights", "random_weights")
GATE_LABEL = "gate g = weight on the semantic stream (1 - g on the generative)"


@dataclass
class GateRecord:
    frames: torch.Tensor  # [T, 3, H, W] float in [0, 1]
    gates: torch.Tensor  # [T, h, w] float in [0, 1]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """Names the model and says plainly whether its weights are random."""
        state = "RANDOM weights (untrained)" if self.metadata["random_weights"] == "true" else f"weights: {self.metadata['weights']}"
        return f"{self.metadata['model']} | {state}"


def check_gates(frames: torch.Tensor, gates: torch.Tensor, source: str = "gates") -> None:
    if frames.numel() == 0 or gates.numel() == 0:
        raise ValueError(f"{source}: empty tensor (frames {tuple(frames.shape)}, gates {tuple(gates.shape)})")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"{source}: frames must have shape [T, 3, H, W]; got {tuple(frames.shape)}")
    if not (0.0 <= float(frames.min()) and float(frames.max()) <= 1.0):
        raise ValueError(f"{source}: frames must be float in [0, 1]; got [{float(frames.min()):.4g}, {float(frames.max()):.4g}]")
    if gates.ndim != 3 or gates.shape[0] != frames.shape[0]:
        raise ValueError(f"{source}: gates must have shape [T={frames.shape[0]}, h, w] (one value per token); "
                         f"got {tuple(gates.shape)}")
    if gates.shape[1] > frames.shape[2] or gates.shape[2] > frames.shape[3]:
        raise ValueError(f"{source}: gate grid {tuple(gates.shape[1:])} is finer than the frames {tuple(frames.shape[2:])}")
    lo, hi = float(gates.min()), float(gates.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise ValueError(f"{source}: gate values must lie in [0, 1]; got [{lo:.4g}, {hi:.4g}]")


def save_gates(path: str | Path, frames: torch.Tensor, gates: torch.Tensor, *, model: str, weights: str,
               random_weights: bool, **metadata: str) -> Path:
    """Write a gates file (frames stored as uint8); atomically, so a failed write leaves nothing behind."""
    frames, gates = frames.detach().float().cpu(), gates.detach().float().cpu()
    check_gates(frames, gates, str(path))
    tensors = {"frames": (frames * 255.0).round().to(torch.uint8).contiguous(), "gates": gates.contiguous()}
    info = {"model": str(model), "weights": str(weights), "random_weights": "true" if random_weights else "false",
            **{key: str(value) for key, value in metadata.items()}}
    return save_safetensors(tensors, path, info)


def load_gates(path: str | Path) -> GateRecord:
    """Read and check a gates file; errors name the file and what is wrong with it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such gates file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys() if key in ("frames", "gates")}
    except Exception as error:  # safetensors raises its own error types for files it cannot parse
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
    missing = [key for key in ("frames", "gates") if key not in tensors]
    if missing:
        raise ValueError(f"{path}: gates file lacks tensor(s) {missing}")
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"{path}: gates file lacks metadata {missing} (needed to label the plot honestly)")
    if metadata["random_weights"] not in ("true", "false"):
        raise ValueError(f"{path}: metadata random_weights must be 'true' or 'false'; got {metadata['random_weights']!r}")
    frames, gates = tensors["frames"], tensors["gates"].float()
    frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    check_gates(frames, gates, str(path))
    return GateRecord(frames, gates, metadata)


def overlay_gates(frames: torch.Tensor, gates: torch.Tensor, alpha: float = 0.5, cmap: str = "viridis") -> np.ndarray:
    """RGB ``[T, H, W, 3]``: ``(1 - alpha) frame + alpha colour(gate)``, each token's gate covering its
    cell of the frame (pixel row y belongs to token row ``floor(y h / H)``, no smoothing)."""
    import matplotlib

    check_gates(frames, gates)
    t, _, height, width = frames.shape
    rows = np.arange(height) * gates.shape[1] // height
    cols = np.arange(width) * gates.shape[2] // width
    cells = gates.detach().float().cpu().numpy()[:, rows][:, :, cols]
    colours = matplotlib.colormaps[cmap](cells)[..., :3]
    images = frames.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    return (1.0 - alpha) * images + alpha * colours


def plot_gates(frames: torch.Tensor, gates: torch.Tensor, path: str | Path, title: str,
               labels: list[str] | None = None, columns: int | None = None, alpha: float = 0.5,
               cmap: str = "viridis") -> Path:
    """Save a PNG grid of ``frames [T, 3, H, W]`` overlaid with ``gates [T, h, w]``, a colour bar on the
    fixed range [0, 1] and ``title`` (state the model and whether its weights are random)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = overlay_gates(frames, gates, alpha, cmap)
    t = len(images)
    labels = labels if labels is not None else [f"frame {i}" for i in range(t)]
    if len(labels) != t:
        raise ValueError(f"plot_gates: {len(labels)} labels for {t} frames")
    columns = columns or min(t, 8)
    rows = math.ceil(t / columns)
    aspect = images.shape[1] / images.shape[2]
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns + 1.2, 2.2 * rows * aspect + 0.9), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < t:
            axis.imshow(images[index].clip(0.0, 1.0))
            axis.set_title(f"{labels[index]}  mean g {float(gates[index].mean()):.2f}", fontsize=7)
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0.0, 1.0), cmap=cmap)
    figure.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02).set_label(GATE_LABEL, fontsize=7)
    figure.suptitle(title, fontsize=9)
    try:
        return atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(figure)
