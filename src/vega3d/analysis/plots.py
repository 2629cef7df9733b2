"""Plots a person wants to look at: PCA of features across views (paper Fig. 2a), the per-token
consistency heat map, and correspondence vs NOS (Fig. 3b). All files are written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from vega3d.io import atomic_path  # noqa: E402


def pca_rgb(tokens: torch.Tensor) -> np.ndarray:
    """Project tokens ``[V, h, w, C]`` on their first 3 principal components, fitted jointly over all
    views so a colour means the same feature in every view; returns ``[V, h, w, 3]`` in [0, 1]."""
    v, h, w, c = tokens.shape
    x = tokens.reshape(-1, c).to(torch.float64)
    x = x - x.mean(0)
    k = min(3, c)
    _, _, basis = torch.linalg.svd(x, full_matrices=False)
    projected = (x @ basis[:k].T).numpy()
    if k < 3:
        projected = np.concatenate([projected, np.zeros((len(projected), 3 - k))], axis=1)
    low, high = np.percentile(projected, 1, axis=0), np.percentile(projected, 99, axis=0)
    rgb = np.clip((projected - low) / np.maximum(high - low, 1e-12), 0, 1)
    return rgb.reshape(v, h, w, 3)


def _pick(num: int, limit: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, num - 1, min(num, limit))})


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)


def plot_pca_views(images: torch.Tensor, tokens: torch.Tensor, path: str | Path, title: str, max_views: int = 6) -> Path:
    """Frames (top) and their features' joint PCA as RGB (bottom)."""
    rgb = pca_rgb(tokens)
    views = _pick(len(images), max_views)
    fig, axes = plt.subplots(2, len(views), figsize=(2.4 * len(views), 5.0), squeeze=False)
    for col, i in enumerate(views):
        axes[0, col].imshow(images[i].permute(1, 2, 0).numpy())
        axes[0, col].set_title(f"frame {i}", fontsize=8)
        axes[1, col].imshow(rgb[i], interpolation="nearest")
        for ax in axes[:, col]:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))


def plot_consistency(images: torch.Tensor, token_scores: torch.Tensor, path: str | Path, title: str, max_views: int = 6) -> Path:
    """Each token's mean cosine to the other views' prototypes of its voxel, over the frames.

    Tokens without a cross-view partner (NaN) are left uncoloured."""
    views = _pick(len(images), max_views)
    fig, axes = plt.subplots(1, len(views), figsize=(2.4 * len(views), 2.9), squeeze=False)
    mappable = None
    for col, i in enumerate(views):
        height, width = images[i].shape[-2:]
        ax = axes[0, col]
        ax.imshow(images[i].permute(1, 2, 0).numpy())
        mappable = ax.imshow(np.ma.masked_invalid(token_scores[i].numpy()), cmap="viridis", vmin=-1, vmax=1,
                             alpha=0.65, extent=(0, width, height, 0), interpolation="nearest")
        ax.set_title(f"frame {i}", fontsize=8)
        ax.axis("off")
    fig.colorbar(mappable, ax=axes[0].tolist(), fraction=0.02, pad=0.01, label="cross-view cosine")
    fig.suptitle(title, fontsize=9)
    return _save(fig, Path(path))


def plot_correspondence_vs_nos(correspondence: Mapping[str, float], nos: Mapping[str, float], path: str | Path,
                               title: str, groups: Mapping[str, str] | None = None) -> Path:
    """Fig. 3b: one point per model, x = correspondence score, y = NOS, coloured by group."""
    names = [n for n in nos if np.isfinite(correspondence.get(n, np.nan))]
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    group_of = groups or {}
    for group in sorted({group_of.get(n, "") for n in names}):
        members = [n for n in names if group_of.get(n, "") == group]
        ax.scatter([correspondence[n] for n in members], [nos[n] for n in members], label=group or None, s=30)
    for n in names:
        ax.annotate(n, (correspondence[n], nos[n]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if len(names) >= 2:
        x, y = np.array([correspondence[n] for n in names]), np.array([nos[n] for n in names])
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 2)
        ax.plot(xs, slope * xs + intercept, "--", color="grey", linewidth=1)
    ax.set_xlabel("multi-view correspondence score (%)")
    ax.set_ylabel("NOS (%)")
    ax.set_title(title, fontsize=9)
    if any(group_of.get(n) for n in names):
        ax.legend(fontsize=8)
    return _save(fig, Path(path))
