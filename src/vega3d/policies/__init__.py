"""Manipulation policies with the VEGA-3D generative prior: OpenVLA-OFT (paper Sec. 5.3, Tab. 3)."""

from vega3d.policies.checkpoint import build_policy, from_pretrained, save_pretrained
from vega3d.policies.config import OpenVLAConfig, PolicySettings, read_config
from vega3d.policies.inputs import PolicyInputs, PrismaticImageProcessor
from vega3d.policies.modeling import Vega3DOpenVLAForActionPrediction
from vega3d.policies.normalization import Normalizer, compute_statistics, load_statistics, save_statistics

__all__ = [
    "Normalizer", "OpenVLAConfig", "PolicyInputs", "PolicySettings", "PrismaticImageProcessor",
    "Vega3DOpenVLAForActionPrediction", "build_policy", "compute_statistics", "from_pretrained", "load_statistics",
    "read_config", "save_pretrained", "save_statistics",
]
