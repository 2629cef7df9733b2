"""3D-awareness analysis over scenes: frames -> backbone tokens -> correspondence score -> report.

``run_awareness`` is the library entry point behind ``vega3d awareness``; ``encode`` lets callers put a
feature store (or anything else) between the frames and the backbone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vega3d.analysis.correspondence import CorrespondenceResult, correspondence_score
from vega3d.analysis.plots import plot_consistency, plot_pca_views
from vega3d.backbones import Backbone
from vega3d.io import json_safe, write_json, write_text
from vega3d.scenes import SAMPLING_RULE, SceneError, SceneFrames, load_scene, sample_frames, scene_ids
from vega3d.store import StoreError

Encoder = Callable[[Backbone, SceneFrames], torch.Tensor]
MIN_VOXELS = 10  # a score averaged over fewer voxels seen twice is flagged "few_voxels"
LOW_VALID_DEPTH = 0.05  # sampled frames with less valid depth than this fraction are flagged "low_valid_depth"
DONE_FOLDER = "scenes"  # out_dir/scenes/<scene id>.json: finished scenes, reused by a rerun of the same setting


def encode_frames(backbone: Backbone, frames: SceneFrames) -> torch.Tensor:
    """Default encoder: run the backbone on the sampled frames, without gradients."""
    with torch.inference_mode():
        return backbone(frames.images, scene_id=frames.scene_id, cameras=frames.cameras).float().cpu()


def scene_correspondence(frames: SceneFrames, tokens: torch.Tensor, voxel_size: float = 0.1, protocol: str = "multiview",
                         min_valid_depth: float | None = None, token_scores: bool = False) -> CorrespondenceResult:
    """Pair each token of ``tokens`` [T, h, w, C] with its pooled world point and score the scene.

    ``min_valid_depth=None`` is the paper's unmasked script (zero-depth pixels averaged in); a fraction
    such as 0.1 keeps tokens whose cell has at least that much valid depth and averages only valid pixels.
    """
    if tokens.ndim != 4 or tokens.shape[0] != len(frames):
        raise ValueError(f"tokens must be [T={len(frames)}, h, w, C] for scene {frames.scene_id}; got {tuple(tokens.shape)}")
    t, h, w, c = tokens.shape
    coords, fraction = frames.token_coordinates((h, w), ignore_invalid=min_valid_depth is not None)
    valid = None if min_valid_depth is None else (fraction >= min_valid_depth).reshape(t, h * w)
    result = correspondence_score(tokens.reshape(t, h * w, c), coords.reshape(t, h * w, 3), valid,
                                  voxel_size=voxel_size, protocol=protocol, token_scores=token_scores)
    if result.token_scores is not None:
        result.token_scores = result.token_scores.reshape(t, h, w)
    return result


@dataclass
class SceneReport:
    scene_id: str
    path: str
    result: CorrespondenceResult
    frame_indices: list[int]
    frame_ids: list[str]
    grid: tuple[int, int]
    seconds: float
    valid_depth: float = 1.0

    @property
    def flags(self) -> list[str]:
        """Why the score should not be trusted: too few voxels seen twice, or too little valid depth."""
        flags = ["few_voxels"] if math.isfinite(self.result.score) and self.result.num_voxels < MIN_VOXELS else []
        return flags + (["low_valid_depth"] if self.valid_depth < LOW_VALID_DEPTH else [])

    def row(self) -> dict:
        return {"scene_id": self.scene_id, "score": self.result.score, "num_pairs": self.result.num_pairs,
                "num_voxels": self.result.num_voxels, "num_frames": len(self.frame_indices),
                "grid": f"{self.grid[0]}x{self.grid[1]}", "seconds": round(self.seconds, 3),
                "valid_depth": round(self.valid_depth, 4), "flags": ";".join(self.flags)}

    def record(self) -> dict:
        return {"scene_id": self.scene_id, "path": self.path, "result": self.result.to_dict(), "frame_indices": self.frame_indices,
                "frame_ids": self.frame_ids, "grid": list(self.grid), "seconds": self.seconds, "valid_depth": self.valid_depth}

    @classmethod
    def from_record(cls, record: dict) -> "SceneReport":
        result = {key: math.nan if value is None else value for key, value in record["result"].items() if key != "pair_scores"}
        pairs = record["result"].get("pair_scores")
        result = CorrespondenceResult(**result, pair_scores=None if pairs is None else [math.nan if p is None else p for p in pairs])
        return cls(record["scene_id"], record["path"], result, record["frame_indices"], record["frame_ids"],
                   tuple(record["grid"]), record["seconds"], record["valid_depth"])


@dataclass
class AwarenessReport:
    backbone: dict
    options: dict
    scenes: list[SceneReport] = field(default_factory=list)
    plot_files: list[Path] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)  # {"scene": path, "error": message}: retried by a rerun

    def statistics(self) -> dict:
        """Mean and (population) std over scenes that have a score; NaN scenes are listed, not averaged."""
        scores = np.array([s.result.score for s in self.scenes], dtype=np.float64)
        ok = np.isfinite(scores)
        return {
            "num_scenes": len(self.scenes),
            "num_scored": int(ok.sum()),
            "mean": float(scores[ok].mean()) if ok.any() else math.nan,
            "std": float(scores[ok].std()) if ok.any() else math.nan,
            "nan_scenes": [s.scene_id for s, good in zip(self.scenes, ok) if not good],
            "flagged_scenes": {s.scene_id: s.flags for s in self.scenes if s.flags},
            "failed_scenes": self.failed,
            "seconds_per_scene": float(np.mean([s.seconds for s in self.scenes])) if self.scenes else math.nan,
        }

    def summary(self) -> dict:
        return {"backbone": self.backbone, "options": self.options, "statistics": self.statistics(),
                "environment": {"torch": torch.__version__, "python": platform.python_version()},
                "scenes": [{**s.row(), **s.result.to_dict(), "path": s.path, "frame_indices": s.frame_indices,
                            "frame_ids": s.frame_ids} for s in self.scenes]}

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        rows = [s.row() for s in self.scenes]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["scene_id", "score"])
        writer.writeheader()
        writer.writerows(rows)
        return {"csv": write_text(out / "scenes.csv", buffer.getvalue()), "json": write_json(out / "summary.json", self.summary()),
                "report": write_text(out / "report.md", self.markdown())}

    def markdown(self) -> str:
        stats = self.statistics()
        b = self.backbone
        lines = [f"# 3D-awareness report: `{b.get('name')}`", "",
                 f"- weights: **{b.get('weights')}**",
                 f"- protocol: {self.options['protocol']}, voxel size {self.options['voxel_size']} m, "
                 f"{self.options['num_frames']} frames per scene ({SAMPLING_RULE}), "
                 f"depth mask: {self.options['min_valid_depth'] if self.options['min_valid_depth'] is not None else 'none (paper)'}",
                 f"- correspondence score over {stats['num_scored']}/{stats['num_scenes']} scenes: "
                 f"**{stats['mean']:.4f} ± {stats['std']:.4f}** (mean ± std)", ""]
        if stats["nan_scenes"]:
            lines += [f"- scenes without any voxel seen twice (NaN): {', '.join(stats['nan_scenes'])}", ""]
        if stats["flagged_scenes"]:
            lines += [f"- **flagged** (few_voxels: < {MIN_VOXELS} voxels seen twice; low_valid_depth: < "
                      f"{LOW_VALID_DEPTH:.0%} valid depth): " + ", ".join(f"{k} ({', '.join(v)})" for k, v in stats["flagged_scenes"].items()), ""]
        if self.failed:
            lines += [f"- **{len(self.failed)} scene(s) failed** (a rerun retries them):"] + [f"  - {f['error']}" for f in self.failed] + [""]
        lines += ["| scene | score | pairs | voxels | frames | grid | valid depth | flags | s |", "|---|---|---|---|---|---|---|---|---|"]
        for s in self.scenes:
            r = s.row()
            lines.append(f"| {r['scene_id']} | {r['score']:.4f} | {r['num_pairs']} | {r['num_voxels']} | "
                         f"{r['num_frames']} | {r['grid']} | {r['valid_depth']:.3f} | {r['flags']} | {r['seconds']:.2f} |")
        plots = sorted({p.name for p in self.plot_files})
        if plots:
            lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
        return "\n".join(lines) + "\n"


def run_awareness(scene_paths: Sequence[str | Path], backbone: Backbone, out_dir: str | Path | None = None,
                  num_frames: int = 32, image_size: tuple[int, int] = (384, 384), voxel_size: float = 0.1,
                  protocol: str = "multiview", min_valid_depth: float | None = None, plot_scenes: int = 4,
                  encode: Encoder = encode_frames, progress: bool = True, dataset_root: str | Path | None = None,
                  skip_bad_scenes: bool = False) -> AwarenessReport:
    """Score every scene with ``backbone``; with ``out_dir``, write scenes.csv, summary.json, report.md and plots.

    Scene identities are paths relative to ``dataset_root`` (default: folder names, which must then be
    unique). With ``skip_bad_scenes`` a scene that cannot be read is listed in ``report.failed`` and the
    others go on; with ``out_dir`` each finished scene is kept in ``out_dir/scenes/`` and a rerun of the
    same setting reuses it, so only what failed is computed again.
    """
    options = {"num_frames": num_frames, "image_size": list(image_size), "voxel_size": voxel_size, "protocol": protocol,
               "min_valid_depth": min_valid_depth, "sampling": SAMPLING_RULE}
    report = AwarenessReport(backbone=backbone.config(), options=options)
    label = f"{backbone.name} ({backbone.weights_label})" if backbone.has_weights else backbone.name
    scene_paths = list(scene_paths)
    ids = scene_ids(scene_paths, dataset_root)
    setting = json.loads(json.dumps(json_safe({"backbone": report.backbone, "options": options}), default=str))
    for index, (path, scene_id) in enumerate(tqdm(list(zip(scene_paths, ids)), desc=f"awareness {backbone.name}",
                                                  unit="scene", disable=not progress)):
        done = Path(out_dir) / DONE_FOLDER / f"{scene_id}.json" if out_dir is not None else None
        if done is not None and done.is_file():
            try:
                saved = json.loads(done.read_text())
                if saved.get("setting") == setting and saved["scene"]["path"] == str(path):
                    report.scenes.append(SceneReport.from_record(saved["scene"]))
                    continue
            except (ValueError, KeyError, TypeError):
                warnings.warn(f"{done}: unreadable; scoring the scene again", stacklevel=2)
        start = time.perf_counter()
        try:
            frames = sample_frames(load_scene(path, scene_id=scene_id), num_frames=num_frames, image_size=image_size)
            valid_depth = float(frames.valid.float().mean())
            if valid_depth == 0:
                raise SceneError(f"{path}: no valid depth in the {len(frames)} sampled frames (all zero): no 3-D points to score")
            tokens = encode(backbone, frames)
        except (SceneError, StoreError, OSError) as error:
            if not skip_bad_scenes:
                raise
            report.failed.append({"scene": str(path), "error": str(error)})
            continue
        if valid_depth < LOW_VALID_DEPTH:
            warnings.warn(f"{path}: only {valid_depth:.1%} of the sampled depth pixels are valid; score flagged low_valid_depth", stacklevel=2)
        plot = out_dir is not None and index < plot_scenes
        result = scene_correspondence(frames, tokens, voxel_size, protocol, min_valid_depth, token_scores=plot and protocol == "multiview")
        seconds = time.perf_counter() - start
        report.scenes.append(SceneReport(frames.scene_id, str(path), result, frames.frame_indices, frames.frame_ids,
                                         tuple(tokens.shape[1:3]), seconds, valid_depth))
        if done is not None:
            write_json(done, {"setting": setting, "scene": report.scenes[-1].record()})
        if plot:
            title = f"{label} | {frames.scene_id} | score {result.score:.3f}"
            report.plot_files.append(plot_pca_views(frames.images, tokens, Path(out_dir) / f"{frames.scene_id}_pca.png", f"PCA of features: {title}"))
            if result.token_scores is not None:
                report.plot_files.append(plot_consistency(frames.images, result.token_scores,
                                                          Path(out_dir) / f"{frames.scene_id}_consistency.png", f"per-token consistency: {title}"))
    if out_dir is not None and report.scenes:
        report.write(out_dir)
    return report
