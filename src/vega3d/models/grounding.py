"""3-D grounding for the LLaVA-Video 3D model: object features of box proposals, the InfoNCE grounding
head and the box-selection rules of ScanRefer and Multi3DRefer (REFERENCE-3D facts 22-26).

* Proposals are axis-aligned boxes ``[cx, cy, cz, sx, sy, sz]`` per scene (ground truth in training, the
  detector's in evaluation). A box's feature is the mean of the projected SigLIP patches (before pooling,
  fusion and the position code) whose 14 x 14 pixels fall at least half inside the box, over all frames,
  plus the 3-D position code of the box centre (``patch14-pe``).
* The head scores every proposal and a learnable *zero-target* ("no object") against the hidden state of
  the ``<ground>`` token: cosine of the two MLP outputs; InfoNCE at temperature 0.07 trains it.
* Any batch size: every function takes one sample's tensors, the model loops over its samples (the
  released code only reads sample 0, fact 54).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vega3d.fusion import world_position_code

TEMPERATURE = 0.07
MULTI3DREFER_MASS = 0.4
#: Pixel budget of one membership chunk (float32 [boxes, frames, H, W]), keeps 50 boxes x 32 frames lean.
MEMBERSHIP_CHUNK_BYTES = 64 * 2**20


def check_boxes(boxes: torch.Tensor, source: str = "boxes") -> torch.Tensor:
    boxes = torch.as_tensor(boxes)
    if boxes.ndim != 2 or boxes.shape[-1] != 6:
        raise ValueError(f"{source}: boxes must be [N, 6] as [cx, cy, cz, sx, sy, sz]; got shape {tuple(boxes.shape)}")
    if (boxes[:, 3:] < 0).any():
        raise ValueError(f"{source}: box sizes must be >= 0")
    return boxes


def patch_membership(world: torch.Tensor, boxes: torch.Tensor, patch_size: int = 14,
                     min_fraction: float = 0.5) -> torch.Tensor:
    """``[N, V, h, w]`` bool: patch (row, col) of frame v is inside box n when at least
    ``int(patch_size**2 * min_fraction)`` (98 of 196) of its pixels lie in the box (min <= p <= max on all
    three axes). ``world`` is ``[V, H, W, 3]``; only the top-left ``h * patch x w * patch`` pixels are used.

    Boxes are handled in chunks so no ``[frames x pixels x boxes]`` tensor is ever built.
    """
    boxes = check_boxes(boxes)
    if world.ndim != 4 or world.shape[-1] != 3:
        raise ValueError(f"world coordinates must be [frames, H, W, 3]; got {tuple(world.shape)}")
    frames, h, w = world.shape[0], world.shape[1] // patch_size, world.shape[2] // patch_size
    world = world[:, :h * patch_size, :w * patch_size]
    low = (boxes[:, :3] - boxes[:, 3:] / 2).to(world.dtype)
    high = (boxes[:, :3] + boxes[:, 3:] / 2).to(world.dtype)
    needed = int(patch_size * patch_size * min_fraction)
    chunk = max(1, MEMBERSHIP_CHUNK_BYTES // max(1, world[..., 0].numel() * 4))
    out = torch.zeros(len(boxes), frames, h, w, dtype=torch.bool, device=world.device)
    for start in range(0, len(boxes), chunk):
        lo, hi = low[start:start + chunk, None, None, None], high[start:start + chunk, None, None, None]
        inside = torch.ones((len(lo), *world.shape[:3]), dtype=torch.bool, device=world.device)
        for axis in range(3):  # one axis at a time: bool [chunk, V, H, W], never [..., 3]
            value = world[None, ..., axis]
            inside &= (value >= lo[..., axis]) & (value <= hi[..., axis])
        counts = F.avg_pool2d(inside.flatten(0, 1)[:, None].float(), patch_size, divisor_override=1)
        out[start:start + chunk] = counts.reshape(len(lo), frames, h, w) >= needed
    return out


def object_features(patch_features: torch.Tensor, world: torch.Tensor, boxes: torch.Tensor, patch_size: int = 14,
                    min_fraction: float = 0.5) -> torch.Tensor:
    """``[N, C]`` features of ``boxes`` (fact 23): the mean of ``patch_features`` ``[V, h*w, C]`` over the
    patches of all frames that are inside the box (zero when none is), plus the position code of the
    box centre (in ``world``'s dtype arithmetic, as the token position code)."""
    boxes = check_boxes(boxes)
    members = patch_membership(world, boxes, patch_size, min_fraction).flatten(1)  # [N, V*h*w]
    flat = patch_features.reshape(-1, patch_features.shape[-1])
    if members.shape[1] != flat.shape[0]:
        raise ValueError(f"patch features have {flat.shape[0]} patches over all frames; the world coordinates give "
                         f"{members.shape[1]} (frames x {world.shape[1] // patch_size} x {world.shape[2] // patch_size})")
    weights = members.to(flat.dtype)
    mean = (weights @ flat) / weights.sum(dim=1, keepdim=True).clamp_min(1)
    centre = world_position_code(boxes[:, :3].to(world.dtype), flat.shape[-1])
    return mean + centre.to(mean.dtype)


def _mlp(dim: int) -> nn.Sequential:
    """Linear, ReLU, LayerNorm, Linear (the released ``ground_head_obj`` / ``ground_head_query``)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.LayerNorm(dim), nn.Linear(dim, dim))


class GroundingHead(nn.Module):
    """Cosine scores of N proposals plus the zero-target against a query (fact 24): ``[N + 1]``, the
    zero-target last."""

    def __init__(self, dim: int, temperature: float = TEMPERATURE) -> None:
        super().__init__()
        self.temperature = temperature
        self.object_mlp = _mlp(dim)
        self.query_mlp = _mlp(dim)
        self.zero_target = nn.Parameter(torch.randn(dim))

    def scores(self, objects: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        dtype = self.zero_target.dtype
        candidates = torch.cat([objects.to(dtype), self.zero_target[None]])
        keys = F.normalize(self.object_mlp(candidates), dim=-1)
        return keys @ F.normalize(self.query_mlp(query.to(dtype)), dim=-1)

    def loss(self, scores: torch.Tensor, positives) -> torch.Tensor:
        return infonce_loss(scores, positives, self.temperature)


def build_grounding_head(dim: int, seed: int, device: str | None = None) -> GroundingHead:
    """A seeded head: new models and checkpoints without a head get the same weights for the same seed."""
    with torch.random.fork_rng(devices=[]), torch.device(device or "cpu"):
        torch.manual_seed(seed)
        return GroundingHead(dim)


def infonce_loss(scores: torch.Tensor, positives, temperature: float = TEMPERATURE) -> torch.Tensor:
    """``-log(sum_{i in P} e^{s_i/T} / sum_j e^{s_j/T})`` over ``scores`` ``[N + 1]``; an empty ``P``
    (nothing referred to) means the zero-target, the last entry."""
    targets = [int(i) for i in positives]
    if any(not 0 <= i < len(scores) - 1 for i in targets):
        raise ValueError(f"object labels {targets} are outside the {len(scores) - 1} proposal(s)")
    targets = targets or [len(scores) - 1]
    logits = scores.float() / temperature
    return torch.logsumexp(logits, dim=0) - torch.logsumexp(logits[targets], dim=0)


def select_scanrefer(scores: torch.Tensor) -> int:
    """Fact 25: the best proposal; when the zero-target wins, the best real proposal instead."""
    if len(scores) < 2:
        raise ValueError("ScanRefer selection needs at least one proposal")
    best = int(scores.argmax())
    return int(scores[:-1].argmax()) if best == len(scores) - 1 else best


def select_multi3drefer(scores: torch.Tensor, temperature: float = TEMPERATURE,
                        mass: float = MULTI3DREFER_MASS) -> list[int]:
    """Fact 26: nothing when the zero-target wins; else proposals by descending probability
    (softmax over all N + 1 at ``temperature``) until their cumulative probability reaches ``mass``
    (the crossing proposal included; if the real proposals hold less, all of them, fact 55)."""
    if int(scores.argmax()) == len(scores) - 1:
        return []
    probability = torch.softmax(scores.float() / temperature, dim=0)[:-1]
    order = torch.argsort(probability, descending=True, stable=True)
    cumulative = torch.cumsum(probability[order], dim=0)
    count = int((cumulative < mass).sum()) + 1
    return order[:count].tolist()
