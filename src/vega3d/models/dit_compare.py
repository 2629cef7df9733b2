"""Does a checkpoint's Wan DiT equal the published Wan2.1 weights? (``vega3d inspect --compare-wan``)

The released spatial-reasoning construction re-initialises the frozen DiT's Linear and Conv3d weights
(REFERENCE-SR section 2, "Critical"), so its checkpoint holds a DiT that differs from Wan2.1 everywhere
except the norms and modulation tables. This module compares the two tensor by tensor, streamed from the
safetensors files (one tensor of each in memory at a time), in diffusers' naming, and reports per group
(the key with its block index replaced by ``*``) whether every tensor is equal, the largest difference
and both standard deviations (a re-initialised weight has std ~0.02).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


class DiTTensors:
    """Lazy ``{diffusers key: tensor}`` view of the Wan DiT in a checkpoint folder, file, or Wan folder."""

    def __init__(self, source, wan_folder: bool = False):
        from vega3d.backbones.wan_loading import dit_files, resolve_weights

        if wan_folder:
            weights = resolve_weights("wan2.1-t2v-1.3b", str(source), vae=str(source))
            self.files, prefix, original = weights.transformer_files, "model.diffusion_model.", weights.original_naming
        else:
            self.files, prefix, original = dit_files(source)
        from safetensors import safe_open

        self._where: dict[str, tuple[Path, str]] = {}
        for file in self.files:
            with safe_open(str(file), "pt") as reader:
                for key in reader.keys():
                    if key.startswith(prefix) or not prefix or wan_folder:
                        self._where[key.removeprefix(prefix)] = (file, key)
        renamed = _diffusers_names(list(self._where)) if original else {k: k for k in self._where}
        self._where = {new: self._where[old] for old, new in renamed.items()}

    def keys(self) -> list[str]:
        return sorted(self._where)

    def __getitem__(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        file, stored = self._where[key]
        with safe_open(str(file), "pt") as reader:
            return reader.get_tensor(stored).float()


def _diffusers_names(original: list[str]) -> dict[str, str]:
    """Original Wan key -> diffusers key, from diffusers' own converter (run on index tensors)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    converted = convert_wan_transformer_to_diffusers({key: torch.tensor([float(i)]) for i, key in enumerate(original)})
    return {original[int(value.item())]: new for new, value in converted.items()}


@dataclass
class GroupReport:
    group: str
    tensors: int
    params: int
    equal: bool
    max_abs_diff: float
    std_checkpoint: float
    std_wan: float


def group_of(key: str) -> str:
    return re.sub(r"^(vace_)?blocks\.\d+\.", r"\1blocks.*.", key)


def compare_dit(checkpoint, wan_folder) -> tuple[list[GroupReport], dict]:
    """Per-group comparison of ``checkpoint``'s DiT with the published one in ``wan_folder``."""
    ours, wan = DiTTensors(checkpoint), DiTTensors(wan_folder, wan_folder=True)
    only_ours, only_wan = sorted(set(ours.keys()) - set(wan.keys())), sorted(set(wan.keys()) - set(ours.keys()))
    stats: dict[str, dict] = {}
    for key in _shared(ours, wan):
        a, b = ours[key], wan[key]
        if a.shape != b.shape:
            raise ValueError(f"{checkpoint}: DiT tensor {key} has shape {tuple(a.shape)}, Wan2.1 {tuple(b.shape)}: other architecture")
        s = stats.setdefault(group_of(key), dict(tensors=0, params=0, equal=True, diff=0.0, sa=0.0, sb=0.0, sqa=0.0, sqb=0.0))
        s["tensors"] += 1
        s["params"] += a.numel()
        s["equal"] &= bool(torch.equal(a, b))
        s["diff"] = max(s["diff"], float((a - b).abs().max()) if a.numel() else 0.0)
        s["sa"], s["sb"] = s["sa"] + float(a.sum()), s["sb"] + float(b.sum())
        s["sqa"], s["sqb"] = s["sqa"] + float((a.double() ** 2).sum()), s["sqb"] + float((b.double() ** 2).sum())
    reports = [GroupReport(group, s["tensors"], s["params"], s["equal"], s["diff"], _std(s["sa"], s["sqa"], s["params"]),
                           _std(s["sb"], s["sqb"], s["params"])) for group, s in sorted(stats.items())]
    summary = {"checkpoint": str(checkpoint), "wan": str(wan_folder), "groups": len(reports),
               "groups_equal": sum(r.equal for r in reports), "tensors": sum(r.tensors for r in reports),
               "params": sum(r.params for r in reports),
               "params_equal": sum(r.params for r in reports if r.equal),
               "only_in_checkpoint": only_ours, "only_in_wan": only_wan}
    return reports, summary


def _shared(ours: DiTTensors, wan: DiTTensors) -> Iterator[str]:
    wanted = set(wan.keys())
    return (key for key in ours.keys() if key in wanted)


def _std(total: float, squares: float, count: int) -> float:
    if count < 2:
        return 0.0
    mean = total / count
    return max(squares / count - mean * mean, 0.0) ** 0.5 * (count / (count - 1)) ** 0.5


def report_table(reports: list[GroupReport], summary: dict) -> str:
    lines = [f"{'group':44s} {'tensors':>7s} {'params':>12s} {'equal':>5s} {'max|diff|':>10s} {'std ckpt':>9s} {'std wan':>9s}"]
    for r in reports:
        lines.append(f"{r.group:44s} {r.tensors:7d} {r.params:12d} {'yes' if r.equal else 'NO':>5s} "
                     f"{r.max_abs_diff:10.3g} {r.std_checkpoint:9.4f} {r.std_wan:9.4f}")
    lines.append(f"{summary['groups_equal']} of {summary['groups']} groups ({summary['params_equal']:,} of "
                 f"{summary['params']:,} parameters) equal the published Wan2.1 weights")
    return "\n".join(lines)


def report_json(reports: list[GroupReport], summary: dict) -> dict:
    return {**summary, "per_group": [asdict(r) for r in reports]}
